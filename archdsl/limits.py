"""Resource limits applied before anything is allocated: file size, line length, nesting, graph size.

Takes: source text, ASTs and counts from the other stages. Returns nothing; raises `ArchError` naming
the place when a limit is exceeded. The numbers are module constants so tools and tests can read them.
"""

from __future__ import annotations

from .errors import ArchError, Diagnostic, Span

MAX_FILE_BYTES = 2_000_000
MAX_LINE_CHARS = 10_000
MAX_SYNTAX_ERRORS = 20
MAX_EXPR_DEPTH = 200          # nesting of expressions / bodies in the AST
MAX_CALL_DEPTH = 64           # nested block calls (catches recursion that does not terminate)
MAX_NODES = 200_000           # operator nodes in one graph
MAX_LIST = 100_000            # elements of one list value / range
MAX_STEPS = 200_000           # loop iterations + block calls in one elaboration (empty nested loops make no nodes)
MAX_INT = 2**62


def check_text(text: str, file: str) -> None:
    if len(text) > MAX_FILE_BYTES:
        raise too_big_file(file, len(text))
    for i, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE_CHARS:
            raise ArchError([Diagnostic(Span(file, i, 1, i, 2), f"line is {len(line)} characters long",
                                        f"archdsl reads lines of at most {MAX_LINE_CHARS} characters")])


def too_big_file(file: str, size: int) -> ArchError:
    return ArchError([Diagnostic(Span(file, 1, 1, 1, 2), f"file is {size} bytes",
                                 f"archdsl reads spec files of at most {MAX_FILE_BYTES} bytes")])


def check_ast_depth(items, file: str) -> None:
    """Reject ASTs nested deeper than MAX_EXPR_DEPTH (the evaluator recurses over them)."""
    import dataclasses

    stack = [(it, 1) for it in items]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPR_DEPTH:
            span = getattr(node, "span", Span.unknown(file))
            raise ArchError([Diagnostic(span, f"nesting is deeper than {MAX_EXPR_DEPTH} levels",
                                        "split the expression or body into named parts")])
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                v = getattr(node, f.name)
                if dataclasses.is_dataclass(v):
                    stack.append((v, depth + 1))
                elif isinstance(v, tuple):
                    for x in v:
                        if dataclasses.is_dataclass(x):
                            stack.append((x, depth + 1))
                        elif isinstance(x, tuple):
                            stack.extend((y, depth + 1) for y in x if dataclasses.is_dataclass(y))
