"""Fuzzing the front end (hypothesis): invalid specs only ever raise ArchError, with real positions.

Inputs: character-level and token-level mutations of examples/*.arch, random op / form / block calls with
random argument values, random expressions in every place an expression goes, deep nesting, and runaway
specs (exponential values, recursion, loops). Each must either check or raise `ArchError` whose every
diagnostic names a file and a line/column inside it; rendering the error must work too.

Each generated strategy runs in-process as its own test (ARCHDSL_FUZZ_EXAMPLES inputs, default 60, where a
failure shrinks to a minimal example), and all of them again in `test_ten_thousand_inputs`: ARCHDSL_FUZZ_TOTAL
inputs (default 10,000) shared out over the strategies and run in one process per core. Every
ROUND_TRIP_EVERY-th input also goes through the formatter round trip. The counts are printed at the end of the
pytest run; `python benchmarks/fuzz_long.py --total 60000` is the longer run.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from archdsl import limits
from archdsl.api import check_text
from archdsl.errors import ArchError, source_text
from archdsl.fmt import format_module, format_text
from archdsl.interp import builtin_names
from archdsl.ops import registry
from archdsl.parse import parse_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
N = int(os.environ.get("ARCHDSL_FUZZ_EXAMPLES", "60"))
TOTAL = int(os.environ.get("ARCHDSL_FUZZ_TOTAL", "10000"))
ROUND_TRIP_EVERY = 10
STATS = {"cases": 0, "inputs": 0, "checked": 0, "arch_errors": 0, "round_trips": 0}  # reported by conftest at the end
FUZZ = settings(max_examples=N, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

FORMS = ("seq", "residual", "parallel", "split")
KEYWORDS = ("import", "as", "block", "model", "fix", "let", "require", "input", "scaling", "init", "for", "in", "if",
            "elif", "else", "true", "false", "none", "and", "or", "not")


def check_only_arch_errors(text: str, file: str = "fuzz.arch", **kw) -> None:
    """check_text must succeed or raise ArchError whose diagnostics all point into a real file position."""
    STATS["inputs"] += 1
    try:
        check_text(text, file, **kw)
        STATS["checked"] += 1
    except ArchError as e:
        STATS["arch_errors"] += 1
        assert e.diagnostics, "an ArchError without diagnostics"
        for d in e.diagnostics:
            s = d.span
            assert s.file, d
            assert s.line >= 1 and s.col >= 1, d
            assert isinstance(d.message, str) and d.message, d
            src = source_text(s.file)
            if src is not None:
                lines = src.split("\n")
                assert s.line <= len(lines), (d, len(lines))
                assert s.col <= len(lines[s.line - 1]) + 1, (d, lines[s.line - 1])
        e.render()
        str(e)


def formats_back(text: str, file: str) -> None:
    """Whatever parses (mutants included) must survive the formatter: same AST after a round trip. Run on every
    ROUND_TRIP_EVERY-th input (it parses four times)."""
    if STATS["inputs"] % ROUND_TRIP_EVERY:
        return
    STATS["round_trips"] += 1
    try:
        mod = parse_text(text, file)
    except ArchError:
        return
    out = format_module(mod)
    assert parse_text(out, file) == mod, out
    kept = format_text(text, file)  # the comment-keeping path
    assert parse_text(kept, file) == mod, kept
    assert format_text(kept, file) == kept


FUZZERS: dict = {}  # test name -> (strategy, body): every generated strategy, for test_ten_thousand_inputs


def fuzzer(strategy):
    """Register `body(case)` with its strategy and return it as an in-process hypothesis test."""
    def wrap(body):
        @functools.wraps(body)
        def counted(*args, **kwargs):
            STATS["cases"] += 1
            return body(*args, **kwargs)

        FUZZERS[body.__name__] = (strategy, counted)
        return FUZZ(given(strategy)(counted))
    return wrap


@pytest.fixture(scope="module", autouse=True)
def _report_counts(fuzz_stats):
    yield
    for k, v in STATS.items():
        fuzz_stats[k] = fuzz_stats.get(k, 0) + v


# ---------------------------------------------------------------- corpus


def _examples() -> list[tuple[str, str]]:
    """(file name to check as, text): each example as it is, and self-contained (its imports inlined)."""
    out = []
    for p in sorted(EXAMPLES.glob("*.arch")):
        text = p.read_text(encoding="utf-8")
        rel = os.path.relpath(p, ROOT)
        out.append((rel, text))
        here = p.parent
        inlined = re.sub(r'^import "([^"]+)".*$', lambda m, here=here: (here / m.group(1)).read_text(encoding="utf-8"),
                         text, flags=re.M)
        out.append(("inlined_" + p.name, inlined))
    return out


CORPUS = _examples()
corpus = st.sampled_from(CORPUS)

# ---------------------------------------------------------------- character-level mutations

CHARS = list('{}()[]:;,.="\\#\n\t -+*/%<>!0123456789eE_axyz') + ["\r", "\x00", "é", "\u0663", "\u2028", "\ufb00",
                                                                  "\U0001d7d8", "\u00a0"]
SNIPPETS = ["if ", " else ", "elif ", "for i in ", "let x = ", "require ", "input(", "scaling(s=2, width=dims)",
            "block ", "model ", 'import "x.arch"', "residual ", "parallel ", "split(sizes=[1, 2]) ", "seq ",
            "none", "true", "not ", " and ", "**", "//", "1e400", "9" * 30, "-1", "0", '"', "#", "\n}", "{\n",
            "range(", "choice(1, 2)", "int_range(1, 8)", "conv(", "dwconv(4)", "[", "]", "x: ", ";"]
payloads = st.one_of(st.sampled_from(CHARS), st.sampled_from(SNIPPETS), st.text(max_size=4))


@st.composite
def char_mutants(draw):
    file, text = draw(corpus)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        i = draw(st.integers(0, len(text)))
        n = draw(st.integers(1, 30))
        if kind == "insert":
            text = text[:i] + draw(payloads) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + n:]
        elif kind == "replace":
            text = text[:i] + draw(payloads) + text[i + n:]
        else:
            j = draw(st.integers(0, len(text)))
            text = text[:j] + text[i:i + n] + text[j:]
    return file, text


@fuzzer(char_mutants())
def test_char_mutations(case):
    file, text = case
    check_only_arch_errors(text, file)
    formats_back(text, file)


def _errors_by_reparsing(text: str, file: str) -> list:
    """The syntax errors as recovery found them before issue 21: after each, the whole (changed) file parsed again
    from its start. The reference for the resumed parse."""
    from lark.exceptions import UnexpectedInput

    from archdsl.parse import _parser
    from archdsl.syntax_errors import _balanced, _syntax_diagnostic, _unclosed_diagnostic

    diags, work = [], text
    for _ in range(limits.MAX_SYNTAX_ERRORS):
        try:
            _parser().parse(work, start="start")
            break
        except UnexpectedInput as e:
            d = _syntax_diagnostic(e, file, work)
            unclosed = _unclosed_diagnostic(d, e, work, file)
            if unclosed is not None:
                diags.append(unclosed[0])
                if unclosed[1] is None:
                    break
                work = unclosed[1]
                continue
            diags.append(d)
            lines = work.split("\n")
            i = d.span.line - 1
            if not (0 <= i < len(lines)) or not _balanced(lines[i]) or not lines[i].strip():
                break
            lines[i] = " " * len(lines[i])
            work = "\n".join(lines)
    return diags


BREAKERS = ["+*", ")", "(", "}", "{", "= =", '"', ",,", "let", ":", "[", "]", "1 2", "if", "else {"]


@st.composite
def many_errors(draw):
    """An example with a few lines broken, so that recovery resumes several times."""
    file, text = draw(corpus)
    lines = text.split("\n")
    for _ in range(draw(st.integers(2, 8))):
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:j] + draw(st.sampled_from(BREAKERS)) + lines[i][j:]
    return file, "\n".join(lines)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(many_errors())
def test_resumed_parse_finds_the_errors_a_parse_from_the_start_finds(case):
    """Issue 21: recovery once parsed the whole file again after each error (20 errors in 100 KB: 35 s); it now
    resumes from the parser's state before the changed line. The errors must be exactly those found before."""
    from archdsl.parse import _parser
    from archdsl.syntax_errors import parse_recovering

    file, text = case
    tree, diags = parse_recovering(_parser(), text, file)
    assert diags == _errors_by_reparsing(text, file)
    assert (tree is None) == bool(diags)


@contextlib.contextmanager
def _small_limits():
    """The same guards, reached sooner: a fuzz input that runs into one must stay cheap. Restored after."""
    names = ("MAX_WORK", "MAX_STEPS", "MAX_NODES", "MAX_NAME_CHARS")
    saved = [getattr(limits, n) for n in names]
    for n, v in zip(names, (20_000, 2_000, 2_000, 50_000)):
        setattr(limits, n, v)
    try:
        yield
    finally:
        for n, v in zip(names, saved):
            setattr(limits, n, v)


@fuzzer(many_errors())
def test_many_syntax_errors(case):
    file, text = case
    check_only_arch_errors(text, file)


COUNTS = ["0", "1", "3", "100", "1000", "100000", "-1", "i", "j", "len(dims)", "10 ** 9"]
ELEMENTS = ["i", "0", "[0] * 100", '"ab" * 50', "[i, i]", "i + j", "dims", "range(i)", '"x"']


@st.composite
def comprehensions(draw):
    """Nested comprehensions, repeated lists and long comparisons: every value built counts against one budget."""
    def comp(depth):
        inner = comp(depth - 1) if depth else draw(st.sampled_from(ELEMENTS))
        var = draw(st.sampled_from(["i", "j", "k"]))
        cond = draw(st.sampled_from(["", f" if {var} % 2 == 0", " if true", " if i"]))
        return f"[{inner} for {var} in range({draw(st.sampled_from(COUNTS))}){cond}]"
    e = comp(draw(st.integers(0, 3)))
    use = draw(st.sampled_from(["let x = {e}\n    relu()", "conv(len({e}))", "require {e} == {e}\n    relu()",
                                "for x in {e} {{ relu() }}", "for r in range({n}) {{ let x = {e} }}\n    relu()",
                                "let x = {e} * {n}\n    relu()"]))
    return "let dims = [8, 16]\n    " + use.format(e=e, n=draw(st.sampled_from(COUNTS)))


@fuzzer(comprehensions())
def test_comprehensions(stmts):
    with _small_limits():
        check_only_arch_errors(_model(stmts))


@st.composite
def long_names(draw):
    """Long layer names in loops, recursions and nested scopes: names are charged as they are made."""
    name = draw(st.one_of(st.sampled_from(["n", "_x", "x.y", "forward", "é"]),
                          st.integers(1, 20000).map(lambda k: "n" * k)))
    n = str(draw(st.integers(0, 200000)))
    form = draw(st.sampled_from([
        "for i in range({n}) {{ {name}: relu() }}",
        "{name}: {{ {name}: {{ {name}: relu() }} }}",
        "t({n})",
        "{name}: relu()\n    {name}: relu()",
        "for i in range({n}) {{ {name}: {{ a: relu(); b: relu() }} }}",
    ]))
    block = "block t(n: int) {{ if n > 0 {{ {name}: t(n - 1) }} else {{ relu() }} }}\n".format(name=name)
    return block + _model(form.format(name=name, n=n))


@fuzzer(long_names())
def test_long_names(text):
    with _small_limits():
        check_only_arch_errors(text)


CONTROL = ["\x00", "\x07", "\x1b", "\x1b[2J", "\x1b]0;pwned\x07", "\x08", "\x7f", "\x9b", "\r", "\u202e", "\ufeff",
           "\u2028", "\x0c", "\x0b"]


@st.composite
def control_bytes(draw):
    """Control characters anywhere: in names, strings, comments and between tokens; never echoed raw."""
    file, text = draw(corpus)
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(CONTROL)) + text[i:]
    return file, text


@fuzzer(control_bytes())
def test_control_bytes(case):
    file, text = case
    check_only_arch_errors(text, file)
    try:
        check_text(text, file)
    except ArchError as e:
        shown = e.render()
        assert not any(c in shown for c in "\x00\x07\x1b\x08\x7f\x9b\x0b\x0c"), repr(shown)


HUGE = ["9" * 5000, "1e400", "-1", "0", "3x8x8", "3x" + "9" * 30 + "x8", "3x10^26x10^26", "1" + "0" * 19, "nan",
        "inf", "1e-400", "0x10", "１", "", "x" * 3000, "3,8,8", "3x8", "3x8x8x8"]


NUMBER_TEXT = st.one_of(st.sampled_from(HUGE), st.integers(-10**40, 10**40).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.tuples(*[st.integers(-3, 10**30)] * 3).map(lambda t: "x".join(map(str, t))),
                        st.text(max_size=12))


@fuzzer(st.tuples(st.sampled_from(["--input", "--set", "--max-memory", "--set-choice"]), NUMBER_TEXT, NUMBER_TEXT))
def test_huge_numbers_on_the_command_line(case):
    """`archdsl check` with huge or malformed numbers in its flags: exit 1 or 2 with one line, never 70, no
    traceback."""
    from archdsl.cli import main

    flag, a, b = case
    value = {"--set": f"num_classes={a}", "--set-choice": f"dims={b}"}.get(flag, a)
    if flag == "--set-choice":
        flag = "--set"
    argv = ["--max-memory", value, "check", str(EXAMPLES / "convnext_atto.arch")] if flag == "--max-memory" \
        else ["check", str(EXAMPLES / "convnext_atto.arch"), flag, value]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
    out = buf.getvalue()
    assert rc in (0, 1, 2), (argv, rc, out[-2000:])
    assert "Traceback" not in out and "internal error" not in out, (argv, out[-2000:])


# ---------------------------------------------------------------- token-level mutations

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|\*\*|//|==|!=|<=|>='
                   r'|#[^\n]*|\S')
NUMBERS = ["0", "1", "2", "3", "7", "-1", "-7", "0.0", "0.5", "1.5", "1e-9", "1e308", "1e400", "1000000000000000000",
           "10000000000000000000", "4611686018427387904", "999999999", "65536", "100001", ".5", "2."]
NAMES = sorted({*registry.all_ops(), *FORMS, *KEYWORDS, *builtin_names(), "dims", "depths", "x", "dim", "i", "j",
                "convnext_block", "metanext_block", "mlp_head", "lib", "k", "out", "sizes", "merge", "input"})
OTHERS = list("{}()[]:;,.=") + ["**", "//", "==", "<", "+", "-", '"s"', '""', '"add"', '"concat"', '"\\n"']


def _tokens(text: str) -> tuple[list[str], list[str]]:
    """Tokens and the text before each (whitespace), so that joining them gives the text back."""
    toks, seps, pos = [], [], 0
    for m in TOKEN.finditer(text):
        seps.append(text[pos:m.start()])
        toks.append(m.group())
        pos = m.end()
    seps.append(text[pos:])
    return toks, seps


@st.composite
def token_mutants(draw):
    file, text = draw(corpus)
    toks, seps = _tokens(text)
    for _ in range(draw(st.integers(1, 4))):
        if not toks:
            break
        i = draw(st.integers(0, len(toks) - 1))
        kind = draw(st.sampled_from(["swap", "delete", "duplicate", "number", "name", "other", "drop_kind"]))
        if kind == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "delete":
            del toks[i], seps[i + 1]
        elif kind == "duplicate":
            toks.insert(i, toks[i])
            seps.insert(i + 1, " ")
        elif kind == "number":
            nums = [k for k, t in enumerate(toks) if t[:1].isdigit()]
            toks[draw(st.sampled_from(nums)) if nums else i] = draw(st.sampled_from(NUMBERS))
        elif kind == "name":
            names = [k for k, t in enumerate(toks) if t[:1].isalpha() or t[:1] == "_"]
            toks[draw(st.sampled_from(names)) if names else i] = draw(st.sampled_from(NAMES))
        elif kind == "other":
            toks[i] = draw(st.sampled_from(OTHERS))
        else:  # drop every occurrence of one bracket kind
            ch = draw(st.sampled_from(list("{}()[]")))
            toks = ["" if t == ch else t for t in toks]
    return file, "".join(s + t for s, t in zip(seps, toks)) + seps[len(toks)]


@fuzzer(token_mutants())
def test_token_mutations(case):
    file, text = case
    check_only_arch_errors(text, file)
    formats_back(text, file)


# ---------------------------------------------------------------- random op / form / block calls

VALUE_ATOMS = ["0", "1", "2", "3", "4", "5", "7", "8", "16", "-1", "-3", "0.0", "0.5", "1.0", "2.5", "-0.5", "1e-6",
               "1e30", "1e308", "1000000000000000000", "4611686018427387903", "true", "false", "none", '"relu"',
               '"tanh"', '"first"', '"last"', '"add"', '"concat"', '"mul"', '"x"', '""', "dims", "c", "nan_name",
               "[]", "[1]", "[2, 2]", "[1, 11]", "[3, 3, 3]", "[0, 8]", "[-1, 9]", "[[1]]", '["a"]', "[1.5, 2]",
               "[true]", "range(3)", "choice(1, 2)", "int_range(1, 4)", "float_range(0.1, 0.5)", "8 // 0",
               "[1, 2][5]", "dims[9]", "2 ** 62", "2 ** 63", "-2 ** 62 * 4"]


def _values(depth: int = 2):
    atoms = st.sampled_from(VALUE_ATOMS)
    if depth == 0:
        return atoms
    sub = _values(depth - 1)
    return st.one_of(atoms, st.lists(sub, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
                     st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "<", "==", "and"]),
                               sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"))


values = _values()
OP_NAMES = sorted(registry.all_ops())
PARAM_NAMES = sorted({f for op in registry.all_ops().values() for f in op.Params.model_fields}
                     | {"layer_scale", "drop_path", "merge", "sizes", "ratios", "remainder", "dim", "k", "bogus",
                        "kernel", "stride", "c", "h", "w"})
CALLEES = OP_NAMES + list(FORMS) + ["blk", "blk2", "lib.blk", "nonexistent", "range", "len", "choice", "input"]
PREFIXES = ["", "gap()", "nhwc()", "flatten()", "conv(8, k=1)", "conv(1, k=1)", "maxpool(2)", "linear(5)",
            "split(sizes=[1, 2]) { relu() relu() }", "dwconv(k=7, s=4)"]
BODIES = ["", " { }", " { relu() }", " { relu() gelu() }", " { conv(4, k=1); bn() }", " { identity() relu() }",
          " { a: relu() a: gelu() }", " { input(3, 8, 8) }", " { let q = 1 relu() }", " { {} {} {} }"]
HEADER = """block blk(dim: int, k: int = 3, act: str = "gelu") {
    residual { dwconv(k); conv(dim, k=1) }
}
block blk2(n: int) { if n > 0 { relu(); blk2(n - 1) } }
"""


@st.composite
def op_calls(draw):
    callee = draw(st.sampled_from(CALLEES))
    args = draw(st.lists(st.tuples(st.none() | st.sampled_from(PARAM_NAMES), values), max_size=4))
    arg_text = ", ".join(v if k is None else f"{k}={v}" for k, v in args)
    c, h, w = draw(st.sampled_from(["3", "1", "0", "-1", "8", "64", "1e308"])), \
        draw(st.sampled_from(["1", "2", "8", "224", "0", "100000000"])), draw(st.sampled_from(["1", "3", "8", "224"]))
    prefix = draw(st.sampled_from(PREFIXES))
    body = draw(st.sampled_from(BODIES))
    named = draw(st.sampled_from(["", "x: ", "stem: ", "add: ", "training: ", "_hidden: "]))
    return (f"{HEADER}model m(dims: list[int] = [8, 16], c: int = 4) {{\n    input({c}, {h}, {w})\n"
            f"    {prefix}\n    {named}{callee}({arg_text}){body}\n    relu()\n}}\n")


@fuzzer(op_calls())
def test_random_op_calls(text):
    check_only_arch_errors(text)


@fuzzer(st.tuples(st.sampled_from(OP_NAMES), st.lists(values, min_size=1, max_size=3),
                  st.sampled_from(["3, 16, 16", "4, 1, 1", "2, 5, 7"])))
def test_every_op_with_random_positional_values(case):
    op, vals, shape = case
    text = f"model m(dims: list[int] = [8, 16], c: int = 4) {{ input({shape}) {op}({', '.join(vals)}) }}"
    check_only_arch_errors(text)


@st.composite
def op_keyword_calls(draw):
    """Each op called with its own parameter names (and the odd unknown one), random values."""
    op = draw(st.sampled_from(OP_NAMES))
    fields = [*registry.get(op).Params.model_fields, "bogus"]
    kws = draw(st.lists(st.tuples(st.sampled_from(fields), values), max_size=len(fields), unique_by=lambda t: t[0]))
    shape = draw(st.sampled_from(["3, 16, 16", "4, 1, 1", "2, 5, 7", "64, 7, 7", "8, 2, 64"]))
    prefix = draw(st.sampled_from(["", "nhwc()", "gap()"]))
    args = ", ".join(f"{k}={v}" for k, v in kws)
    return f"model m(dims: list[int] = [8, 16], c: int = 4) {{ input({shape}) {prefix} {op}({args}) }}"


@fuzzer(op_keyword_calls())
def test_every_op_with_random_keywords(text):
    check_only_arch_errors(text)


# ---------------------------------------------------------------- random expressions in every place

ENV = ('let a = 3\n    let b = [1, 2, 3]\n    let s = "ab"\n    let f = 1.5\n    let t = true\n    let n = none\n'
       '    let z = 0\n    let nested = [[1, 2], [3]]\n')
EXPR_LEAVES = ["a", "b", "s", "f", "t", "n", "z", "nested", "undefined_name", "0", "1", "2", "-1", "0.0", "1e308",
               "1000000000000000000", "true", "none", '"x"', "[]", "[1, [2]]", "range(4)"]
BUILTINS = builtin_names()


def _exprs():
    leaves = st.sampled_from(EXPR_LEAVES)

    def extend(sub):
        return st.one_of(
            st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", ">=", "and", "or"]),
                      sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(["-", "+", "not "]), sub).map(lambda t: f"({t[0]}{t[1]})"),
            st.tuples(sub, sub).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(sub, st.none() | sub, st.none() | sub).map(lambda t: f"{t[0]}[{t[1] or ''}:{t[2] or ''}]"),
            st.tuples(sub, sub, sub).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
            st.lists(sub, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.tuples(st.sampled_from(BUILTINS), st.lists(sub, max_size=3),
                      st.sampled_from(["", ", default=1", ", name=\"q\"", ", step=0", ", divisor=0", ", log=true"]))
            .map(lambda t: f"{t[0]}({', '.join(t[1])}{t[2] if t[1] else ''})"),
        )

    return st.recursive(leaves, extend, max_leaves=8)


exprs = _exprs()
PLACES = [
    "let x = {e}\n    conv(x)",
    "require {e}",
    'require {e}, "message"',
    "for i in {e} {{ relu() }}",
    "for i, j in {e} {{ relu() }}",
    "if {e} {{ relu() }} elif {e} {{ gelu() }} else {{ }}",
    "residual(layer_scale={e}) {{ relu() }}",
    "residual(drop_path={e}) {{ relu() }}",
    "parallel(merge={e}) {{ relu() gelu() }}",
    "split(sizes={e}) {{ relu() gelu() }}",
    "split(ratios={e}, remainder={e}) {{ relu() gelu() }}",
    "conv({e}, k={e}, s={e}, pad={e}, d={e}, groups={e})",
    "dwconv(k={e}, mult={e})",
    "blk({e}, k={e})",
    "blk2({e})",
    "linear(out={e}, bias={e})",
    "se(hidden={e}, ratio={e})",
    "x: conv(8) {{ {e} }}",
]


@st.composite
def expr_specs(draw):
    place = draw(st.sampled_from(PLACES))
    stmt = place.format(e=draw(exprs))
    default = draw(st.sampled_from(["8", "{e}"])).format(e=draw(exprs))
    head = draw(st.sampled_from(["input(3, 16, 16)", "input({e}, 16, {e})", "scaling(s={e}, width=p)"]))
    head = head.format(e=draw(exprs))
    if head.startswith("scaling"):
        head += "\n    input(3, 16, 16)"
    return f"{HEADER}model m(p: int = {default}) {{\n    {head}\n    {ENV}    {stmt}\n    relu()\n}}\n"


@fuzzer(expr_specs())
def test_random_expressions(text):
    check_only_arch_errors(text)
    formats_back(text, "fuzz.arch")


BAD_OVERRIDES = ["1e400", "9" * 30, "-" * 3000 + "1", "[" * 300 + "]" * 300, "not " * 1000 + "true", "choice(1, 2)",
                 "x" * 20000]


@fuzzer(st.tuples(st.one_of(exprs, st.text(max_size=12), st.sampled_from(BAD_OVERRIDES)),
                  st.sampled_from(["p", "q", "depths", "num_classes", "dims"])))
def test_random_overrides(case):
    e, key = case
    file, text = CORPUS[1]
    check_only_arch_errors(text, file, overrides={key: e})
    check_only_arch_errors(text, file, overrides={key: e}, strict_overrides=False)


@fuzzer(st.tuples(st.integers(-2, 10**6), st.integers(-2, 10**5), st.integers(-2, 10**5)))
def test_random_input_shapes(shape):
    file, text = CORPUS[1]
    check_only_arch_errors(text, file, input_shape=shape)


# ---------------------------------------------------------------- deep nesting and runaway specs


def _wrap(n: int, open_: str, close: str, inner: str) -> str:
    return open_ * n + inner + close * n


def _model(stmts: str) -> str:
    return f"model m() {{\n    input(3, 8, 8)\n    {stmts}\n}}\n"


DEEP = {
    "parens": lambda n: _model(f"conv({_wrap(n, '(', ')', '8')})"),
    "lists": lambda n: _model(f"let x = {_wrap(n, '[', ']', '8')}\n    relu()"),
    "minus": lambda n: _model(f"conv({'-' * n}8)"),
    "not": lambda n: _model(f"require {'not ' * n}true"),
    "power": lambda n: _model(f"conv({' ** '.join(['1'] * n)})"),
    "sum": lambda n: _model(f"conv({' + '.join(['1'] * n)})"),
    "index": lambda n: _model(f"let x = [1]\n    conv(x{'[0]' * n})"),
    "ternary": lambda n: _model(f"conv({' if true else '.join(['1'] * n)})"),
    "bodies": lambda n: _model(_wrap(n, "{ ", " }", "relu()")),
    "ifs": lambda n: _model(_wrap(n, "if true { ", " }", "relu()")),
    "residuals": lambda n: _model(_wrap(n, "residual { ", " }", "relu()")),
    "calls": lambda n: _model("let x = " + _wrap(n, "abs(", ")", "1") + "\n    conv(x)"),
    "unclosed": lambda n: _model("{ " * n),
    "unopened": lambda n: _model("} " * n),
}


@pytest.mark.parametrize("kind", sorted(DEEP))
@pytest.mark.parametrize("n", [50, 199, 201, 2000])
def test_deep_nesting(kind, n):
    check_only_arch_errors(DEEP[kind](n))


RUNAWAY = {
    "doubling lists": _model("let l0 = [1, 2]\n    " + "\n    ".join(f"let l{i + 1} = [l{i}, l{i}]" for i in range(60))
                             + "\n    conv(l60)"),
    "doubling strings": _model('let s0 = "ab"\n    ' + "\n    ".join(f"let s{i + 1} = s{i} + s{i}" for i in range(60))
                               + "\n    conv(s60)"),
    "nested values": _model("let l0 = [1]\n    " + "\n    ".join(f"let l{i + 1} = [l{i}]" for i in range(1000))
                            + "\n    conv(l1000)"),
    "list repeat": _model("let x = [1] * 1000000000000\n    relu()"),
    "huge range": _model("for i in range(1000000000000) { relu() }"),
    "huge literal": _model("conv(" + "9" * 5000 + ")"),
    "huge float": _model("conv(int(1e400))"),
    "inf arithmetic": _model("conv(int(1e308 * 10))"),
    "round_to overflow": _model("conv(round_to(1e300, 1e-300))"),
    "linspace overflow": _model("for x in linspace(-1e308, 1e308, 3) { conv(int(x)) }"),
    "power overflow": _model("conv(2 ** 100000)"),
    "float power": _model("conv(int(2.5 ** 100000))"),
    "recursion": "block b() { b() }\n" + _model("b()"),
    "double recursion": "block b() { b() b() }\n" + _model("b()"),
    "mutual recursion": "block a() { b() }\nblock b() { a() a() }\n" + _model("a()"),
    "cheap double recursion": "block b(n: int) { if n > 0 { b(n - 1) b(n - 1) } }\n" + _model("b(40)\n    relu()"),
    "empty nested loops": _model("for i in range(100000) { for j in range(100000) { } }"),
    "scaling overflow": "model m(d: list[int] = [1000000000000]) {\n    scaling(s=1e300, d=1, w=0, r=0, depth=d)\n"
                        "    input(3, 8, 8)\n    conv(8)\n}\n",
    "scaling rounding": "model m(w: int = 8) {\n    scaling(w_round=1e300, width=w)\n    input(3, 8, 8)\n"
                        "    conv(w)\n}\n",
    "long line": _model("relu() " * 3000),
    "many errors": _model("\n    ".join("cnov(8)" for _ in range(500))),
    "many syntax errors": _model("\n    ".join("conv(8" for _ in range(500))),
    "nul bytes": _model("conv(8)\x00\x00"),
    "crlf": _model("conv(8)\r\n    relu()\r\n"),
    "bom": "\ufeff" + _model("relu()"),
    "self import": 'import "fuzz.arch"\n' + _model("relu()"),
    "absolute import": 'import "/etc/passwd.arch"\n' + _model("relu()"),
    "escaping import": 'import "../../../../x.arch"\n' + _model("relu()"),
    "directory import": 'import "examples.arch"\nimport "."\nimport ""\n' + _model("relu()"),
    "NUL in import": 'import "a\x00b.arch"\n' + _model("relu()"),
    "import name too long": 'import "' + "a" * 300 + '.arch"\n' + _model("relu()"),
    "import path too long": 'import "' + "a/" * 3000 + '.arch"\n' + _model("relu()"),
    "range past 2^63": _model("for i in range(-(2 ** 62), 2 ** 62) { relu() }"),
    "range step 0": _model("for i in range(1, 2, 0) { relu() }"),
    "zero to a negative power": _model("conv(int(0 ** -1))"),
    "eca gamma 0": _model("eca(gamma=0.0)"),
    "eca tiny gamma": _model("eca(gamma=1e-308, b=1e308)"),
    "inception_dw huge ratio": _model("inception_dw(ratio=1e308)"),
    "se huge ratio": _model("se(ratio=1e308)"),
    "split huge ratios": _model("split(ratios=[1e308, 0.5]) { relu() relu() }"),
    "cascading let": _model("let a = 1 // 0\n    let b = a + 1\n    conv(b)"),
}


@pytest.mark.parametrize("name", sorted(RUNAWAY))
def test_runaway_specs(name, monkeypatch):
    monkeypatch.setattr(limits, "MAX_STEPS", 20_000)  # the same guard, reached sooner
    check_only_arch_errors(RUNAWAY[name])


# ---------------------------------------------------------------- the 10,000-input run


def run_fuzzer(name: str, n: int, seed_value: int) -> dict:
    """Run one registered strategy for `n` inputs from `seed_value` (in a worker process); its counts."""
    strategy, body = FUZZERS[name]
    for k in STATS:
        STATS[k] = 0
    test = settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
        seed(seed_value)(given(strategy)(body)))
    test()
    return dict(STATS)


@pytest.mark.slow
def test_ten_thousand_inputs():
    """TOTAL inputs over every strategy, each strategy's share split over one process per core (spawned: no
    forked OpenMP state); an input that raises anything but a well-placed ArchError fails the worker and this."""
    import multiprocessing
    import random
    from concurrent.futures import ProcessPoolExecutor

    workers = max(1, min(2, len(os.sched_getaffinity(0))))
    share = -(-TOTAL // len(FUZZERS))
    base = int(os.environ.get("ARCHDSL_FUZZ_SEED") or random.randrange(2**32))
    # the costly strategies (whole example specs) first, so the two processes end together
    order = sorted(FUZZERS, key=lambda n: ("mutations" not in n, "shapes" not in n and "overrides" not in n, n))
    jobs = [(name, share // workers + (i < share % workers), base + 7919 * j + i)
            for j, name in enumerate(order) for i in range(workers)]
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_fuzzer, *zip(*jobs)))
    except Exception as e:  # the worker's hypothesis report (falsifying example) is in its captured output
        raise AssertionError(f"a fuzz worker failed; ARCHDSL_FUZZ_SEED={base} repeats this run: {e}") from e
    for r in results:
        for k, v in r.items():
            STATS[k] += v
    assert sum(r["cases"] for r in results) >= TOTAL
