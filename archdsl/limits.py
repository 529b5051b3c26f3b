"""Resource limits applied before anything is allocated: file size, line length, nesting, graph size.

Takes: source text, ASTs and counts from the other stages. Returns nothing; raises `ArchError` naming
the place when a limit is exceeded. The numbers are module constants so tools and tests can read them.
"""

from __future__ import annotations

import math
import re

from .errors import ArchError, Diagnostic, Span

MAX_FILE_BYTES = 2_000_000
MAX_LINE_CHARS = 10_000
MAX_TOKENS = 50_000           # words, numbers and symbols of one file (the bundled specs have under 2,200; the
                              # parser takes about 1 s per 50,000 on 2 cores)
MAX_SYNTAX_ERRORS = 20
MAX_EXPR_DEPTH = 200          # nesting of expressions / bodies in the AST
MAX_CALL_DEPTH = 64           # nested block calls (catches recursion that does not terminate)
# operator nodes in one graph, and loop iterations + block calls in one elaboration (empty nested loops make no
# nodes): the bundled specs have at most ~500 nodes; at these limits a runaway spec is refused within about a
# second on 2 cores (at 200,000 a binary recursion took 7 s to reach them)
MAX_NODES = 50_000
MAX_LIST = 100_000            # elements of one list value / range
MAX_STEPS = 50_000
MAX_NAME_CHARS = 5_000_000    # characters of all layer names (full paths) of one graph, charged as each is made
# values built and compared by expressions in one elaboration: list and string elements (charged as each list,
# string or range is made), comprehension steps, elements compared by == (one budget: nested comprehensions and
# huge comparisons in loops cannot run for hours or fill the memory)
MAX_WORK = 1_000_000  # the bundled specs use at most ~150
MAX_INT = 2**62
RUNAWAY = 4                   # a loop foreseen to pass MAX_STEPS / MAX_NODES this many times over stops at once


_TOKEN = re.compile(r"[A-Za-z_0-9.]+|[^\sA-Za-z_0-9.]")


def check_text(text: str, file: str) -> None:
    if len(text) > MAX_FILE_BYTES:
        raise too_big_file(file, len(text))
    for i, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE_CHARS:
            raise ArchError([Diagnostic(Span(file, i, 1, i, 2), f"line is {len(line)} characters long",
                                        f"archdsl reads lines of at most {MAX_LINE_CHARS} characters")])
    # parsing costs time and memory per token, not per byte: a file of dense tokens is refused before it
    n = 0
    for n, m in enumerate(_TOKEN.finditer(text), 1):
        if n > MAX_TOKENS:
            line = text.count("\n", 0, m.start()) + 1
            raise ArchError([Diagnostic(Span(file, line, 1, line, 2), f"the file has more than {MAX_TOKENS:,} tokens",
                                        "no architecture needs a spec this long: generate repeats with for loops "
                                        "and blocks")])


def too_big_file(file: str, size: int) -> ArchError:
    return ArchError([Diagnostic(Span(file, 1, 1, 1, 2), f"file is {size} bytes",
                                 f"archdsl reads spec files of at most {MAX_FILE_BYTES} bytes")])


_FIELDS: dict[type, tuple[str, ...]] = {}  # dataclass type -> its field names (dataclasses.fields is slow)


def _fields(cls: type) -> tuple[str, ...] | None:
    names = _FIELDS.get(cls)
    if names is None and hasattr(cls, "__dataclass_fields__") and cls is not Span:  # spans hold no nodes
        names = _FIELDS[cls] = tuple(f for f in cls.__dataclass_fields__ if f != "span")
    return names


def check_ast_depth(items, file: str) -> None:
    """Reject ASTs nested deeper than MAX_EXPR_DEPTH (the evaluator recurses over them)."""
    stack = [(it, 1, Span.unknown(file)) for it in items]
    while stack:
        node, depth, near = stack.pop()
        span = getattr(node, "span", near)
        span = span if type(span) is Span else near  # the innermost enclosing node that has a place
        if depth > MAX_EXPR_DEPTH:
            raise ArchError([Diagnostic(span, f"nesting is deeper than {MAX_EXPR_DEPTH} levels",
                                        "split the expression or body into named parts")])
        for name in _fields(type(node)) or ():
            v = getattr(node, name)
            if _fields(type(v)) is not None:
                stack.append((v, depth + 1, span))
            elif isinstance(v, tuple):
                for x in v:
                    if _fields(type(x)) is not None:
                        stack.append((x, depth + 1, span))
                    elif isinstance(x, tuple):
                        stack.extend((y, depth + 1, span) for y in x if _fields(type(y)) is not None)


# ---------------------------------------------------------------- memory

BYTES_PER_VALUE = 4           # float32 parameters and activations
DEFAULT_MEMORY_FRACTION = 0.5  # of this machine's RAM (or its cgroup's limit), when ARCHDSL_MAX_MEMORY is unset
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def machine_memory() -> int:
    """Bytes of RAM this process may use: the physical memory, or the cgroup's limit where that is lower."""
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                v = f.read().strip()
        except OSError:
            continue
        if v.isdigit() and 0 < int(v) < total:
            total = int(v)
    return total


def parse_memory(text: str | int | float, what: str = "memory limit") -> int:
    """'8G', '512MiB', '1.5e9', '25%' (of this machine's memory), or a number of bytes -> bytes.
    Raises ValueError naming `what` for anything else."""
    import re

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"{what} must be positive, got {text}")
        return int(text)
    s = str(text).strip().lower().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:e\d+)?)(%|[kmgt]?i?b?)", s)
    if not m or (m.group(2) not in _UNITS and m.group(2) != "%"):
        raise ValueError(f"{what} {text!r} is not a size: write e.g. 8G, 512MiB, 25% (of this machine's memory) "
                         "or a number of bytes")
    n = float(m.group(1))
    scaled = n / 100 * machine_memory() if m.group(2) == "%" else n * _UNITS[m.group(2)]
    if not math.isfinite(scaled) or scaled > MAX_INT:
        raise ValueError(f"{what} {text!r} is beyond any machine's memory (at most {MAX_INT:.3g} bytes)")
    out = int(scaled)
    if out <= 0:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return out


def memory_limit(value: str | int | float | None = None) -> int:
    """The byte limit for one model's parameters plus activations: `value` if given, else $ARCHDSL_MAX_MEMORY,
    else DEFAULT_MEMORY_FRACTION of machine_memory()."""
    import os

    if value is not None:
        return parse_memory(value)
    env = os.environ.get("ARCHDSL_MAX_MEMORY")
    if env:
        return parse_memory(env, "ARCHDSL_MAX_MEMORY")
    return int(DEFAULT_MEMORY_FRACTION * machine_memory())


def describe_limit(limit: int) -> str:
    """'1.00 GB (ARCHDSL_MAX_MEMORY=1G)', '12.6 GB (50% of this machine's 25.3 GB)' or '2.00 GB (max_memory=)'."""
    import os

    env = os.environ.get("ARCHDSL_MAX_MEMORY")
    try:
        if env and parse_memory(env) == limit:
            return f"{gb(limit)} (--max-memory / ARCHDSL_MAX_MEMORY={env})"
    except ValueError:
        pass
    if not env and limit == int(DEFAULT_MEMORY_FRACTION * machine_memory()):
        return f"{gb(limit)} ({DEFAULT_MEMORY_FRACTION:.0%} of this machine's {gb(machine_memory())})"
    return f"{gb(limit)} (max_memory=)"


def gb(n: int) -> str:
    """Bytes as text: '1.20 GB', '640.0 MB', '12.0 KB'."""
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}" if n / div < 100 else f"{n / div:.0f} {unit}"
    return f"{n} bytes"


def activation_peak(graph) -> tuple[int, str | None]:
    """(values, node): the most activation values alive at once in one batch-1 forward pass of a checked graph in
    eval mode (each value freed after its last use, by the same plan as ArchModule: ir.free_after), and the node
    whose output is the largest of them. Views (reshapes, layout changes) count 0: they share their input's
    storage."""
    from .ir import free_after

    order = graph.order()
    frees = free_after([graph.inputs(n) for n in order], graph.output[0] if graph.output else "")
    live: dict[str, int] = {}
    now = peak = 0
    at = None
    for name, freed in zip(order, frees):
        live[name] = graph.cost(name).acts if name != graph.input_node else _numel(graph.input_shape)
        now += live[name]
        if now > peak:
            peak, at = now, max(live, key=live.__getitem__)
        for src in freed:
            now -= live.pop(src)
    return peak, at


def activation_total(graph) -> int:
    """Activation values of one image kept for a training pass: every node's output, and the input."""
    return graph.total().acts + _numel(graph.input_shape)


def _numel(shape) -> int:
    return 0 if shape is None else shape.numel()


def check_memory(graph, limit: int, batch: int = 1, training: bool = False) -> int:
    """Refuse (ArchError at the responsible layer) a checked graph whose float32 parameters plus the activations of
    one forward pass at `batch` exceed `limit` bytes: before any tensor is allocated. Training keeps every
    activation for the backward pass; eval frees each after its last use (activation_peak). Returns the
    activation values of one image it counted (the eval peak, or the training total)."""
    params = graph.total().params
    p_bytes = params * BYTES_PER_VALUE

    def hint() -> str:  # reads the machine's memory: only for an error
        return (f"the limit is {describe_limit(limit)}; change it with archdsl --max-memory, ARCHDSL_MAX_MEMORY "
                "or max_memory=")

    def layers() -> list[str]:  # in data-flow order: for naming the culprit of an error
        return [n for n in graph.order() if n != graph.input_node]

    if p_bytes > limit:
        top = sorted(layers(), key=lambda n: -graph.cost(n).params)[:3]
        notes = tuple(f"'{n}' ({graph.node(n).op}) has {graph.cost(n).params:,} parameters, at {graph.node(n).span}"
                      for n in top)
        raise ArchError([Diagnostic(graph.node(top[0]).span, f"the model has {params:,} parameters "
                                    f"({gb(p_bytes)} as float32), more than the memory limit", hint(), notes)])
    if training:
        acts = activation_total(graph)
        at = max(layers(), key=lambda n: graph.cost(n).acts, default=None)
        kind = "keeps"
    else:
        acts, at = activation_peak(graph)
        kind = "holds at its peak"
    a_bytes = acts * batch * BYTES_PER_VALUE
    if p_bytes + a_bytes > limit and at is not None:
        node = graph.node(at)
        raise ArchError([Diagnostic(node.span, f"one {'training' if training else 'inference'} pass at batch "
                                    f"{batch} {kind} {gb(a_bytes)} of activations (the largest: '{at}' ({node.op}), "
                                    f"output {graph.attrs(at).get('shape')}); with {gb(p_bytes)} of parameters "
                                    f"that exceeds the memory limit", hint() + "; use a smaller input or batch",
                                    node.notes)])
    return acts


def is_oom(e: BaseException) -> bool:
    """CUDA's "out of memory", the CPU allocator's "not enough memory" / "can't allocate memory", MemoryError."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or any(s in text for s in ("out of memory", "not enough memory", "can't allocate memory",
                                       "cannot allocate memory")))


class FileRefused(ValueError):
    """A file that is not a regular one, or larger than it may be (read_bounded)."""


def read_bounded(path, limit: int, what: str = "not a regular file") -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes. A directory, a device
    (/dev/zero never ends) or a FIFO (opened non-blocking, so it cannot hang) raises FileRefused ("cannot read
    PATH: it is a directory, WHAT"), as does a larger file; a missing one FileNotFoundError."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
            raise FileRefused(f"cannot read {path}: it is {kind}, {what}")
        if st.st_size > limit:
            raise FileRefused(f"cannot read {path}: it holds {st.st_size:,} bytes, more than {limit:,}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)
