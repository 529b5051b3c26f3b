"""The canonical .arch printer: AST (`archdsl.syntax`) -> spec text that parses back to the same AST.

Takes: a parsed `syntax.Module` (`format_module`), one expression (`format_expr`), or source text / a path
(`format_text`, `format_file`, which also keep the file's comments and single blank lines).
Returns: deterministic source text — 4-space indentation, one statement per line, `fix` lines first, then
imports, then the definitions separated by blank lines, numbers written from their original text, and the fewest
parentheses that keep the grammar's precedence. `parse_text(format_module(m), m.file) == m` holds for
every module, and formatting is idempotent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from . import syntax as S

INDENT = "    "
MAX_LINE = 120  # a definition header longer than this lists one parameter per line

# Precedence levels, loosest first; an operand printed where a tighter level is required gets parentheses.
# These mirror grammar/archdsl.lark: ternary < or < and < not < comparison < +,- < *,/,//,% < unary +,-
# < ** < postfix (index, slice) < atoms.
TERNARY, OR, AND, NOT, COMPARE, ARITH, TERM, UNARY, POWER, POSTFIX, ATOM = range(11)

_COMPARE_OPS = ("==", "!=", "<=", ">=", "<", ">")
_ARITH_OPS = ("+", "-")
_TERM_OPS = ("*", "/", "//", "%")


def _level(e: S.Expr) -> int:
    if isinstance(e, S.Cond):
        return TERNARY
    if isinstance(e, S.BinOp):
        if e.op == "or":
            return OR
        if e.op == "and":
            return AND
        if e.op in _COMPARE_OPS:
            return COMPARE
        if e.op in _ARITH_OPS:
            return ARITH
        if e.op in _TERM_OPS:
            return TERM
        if e.op == "**":
            return POWER
        raise ValueError(f"unknown binary operator {e.op!r}")
    if isinstance(e, S.Unary):
        return NOT if e.op == "not" else UNARY
    if isinstance(e, (S.Index, S.Slice)):
        return POSTFIX
    return ATOM


# For each binary operator level: the level its left and right operands need (the grammar's associativity:
# left-associative arithmetic, non-associative comparison, right-associative power whose right side is a
# unary factor).
_OPERANDS = {
    OR: (OR, AND),
    AND: (AND, NOT),
    COMPARE: (ARITH, ARITH),
    ARITH: (ARITH, TERM),
    TERM: (TERM, UNARY),
    POWER: (POSTFIX, UNARY),
}


def format_expr(e: S.Expr) -> str:
    """One expression, with the minimal parentheses that parse back to the same tree."""
    return _expr(e, TERNARY)


def _expr(e: S.Expr, need: int) -> str:
    """`e` printed where the grammar expects at least precedence level `need`."""
    text = _bare(e)
    return f"({text})" if _level(e) < need else text


def _bare(e: S.Expr) -> str:
    if isinstance(e, S.Num):
        return e.text
    if isinstance(e, S.Str):
        return format_string(e.value)
    if isinstance(e, S.Const):
        return {True: "true", False: "false", None: "none"}[e.value]
    if isinstance(e, S.Var):
        return e.name
    if isinstance(e, S.ListExpr):
        return "[" + ", ".join(_expr(x, TERNARY) for x in e.items) + "]"
    if isinstance(e, S.ListComp):
        test = "" if e.test is None else f" if {_expr(e.test, OR)}"
        return f"[{_expr(e.item, TERNARY)} for {', '.join(e.names)} in {_expr(e.iterable, OR)}{test}]"
    if isinstance(e, S.Index):
        return f"{_expr(e.obj, POSTFIX)}[{_expr(e.index, TERNARY)}]"
    if isinstance(e, S.Slice):
        lo = "" if e.lo is None else _expr(e.lo, TERNARY)
        hi = "" if e.hi is None else _expr(e.hi, TERNARY)
        return f"{_expr(e.obj, POSTFIX)}[{lo}:{hi}]"
    if isinstance(e, S.Call):
        return format_call(e)
    if isinstance(e, S.Unary):
        if e.op == "not":
            return "not " + _expr(e.operand, NOT)
        return e.op + _expr(e.operand, UNARY)
    if isinstance(e, S.Cond):
        return f"{_expr(e.then, OR)} if {_expr(e.test, OR)} else {_expr(e.other, TERNARY)}"
    if isinstance(e, S.BinOp):
        left, right = _OPERANDS[_level(e)]
        return f"{_expr(e.left, left)} {e.op} {_expr(e.right, right)}"
    raise TypeError(f"not an expression: {type(e).__name__}")


def _stmt_expr(e: S.Expr) -> str:
    """An expression after let / require / for / if / elif: a conditional expression needs parentheses there."""
    return _expr(e, OR)


def format_string(value: str) -> str:
    """A string literal: the grammar's only escapes are \\", \\\\ and \\n."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _args(args: tuple[S.Arg, ...]) -> str:
    return ", ".join(_expr(a.value, TERNARY) if a.name is None else f"{a.name}={_expr(a.value, TERNARY)}"
                     for a in args)


def format_call(c: S.Call) -> str:
    return f"{c.name}({_args(c.args)})"


# ---------------------------------------------------------------- comments (kept only when formatting text)


@dataclass
class _Comment:
    line: int
    col: int
    text: str
    own_line: bool  # nothing but whitespace before it on its line
    taken: bool = False


class _Source:
    """The comments and blank lines of the formatted text, handed out as statements are printed.

    A comment goes before the first statement (or definition, import, parameter, closing brace) that
    follows it; a comment that ends a line on which a statement starts goes after that statement's first
    line. Nothing is dropped: what is left at the end of the file is printed there."""

    def __init__(self, text: str = ""):
        self.comments: list[_Comment] = []
        self.lines = text.split("\n") if text else []
        for m in _COMMENT_OR_STRING.finditer(text):
            if m.group().startswith("#"):
                line = text.count("\n", 0, m.start()) + 1
                start = text.rfind("\n", 0, m.start()) + 1
                self.comments.append(_Comment(line, m.start() - start + 1, m.group().rstrip(),
                                              not text[start:m.start()].strip()))

    def leading(self, line: int, col: int, after: tuple[int, int] = (0, 0)) -> list[_Comment]:
        """Comments not yet printed that come before (line, col) (and not before `after`)."""
        out = []
        for c in self.comments:
            if (c.line, c.col) >= (line, col):
                break
            if not c.taken and (c.line, c.col) >= after:
                c.taken = True
                out.append(c)
        return out

    def trailing(self, line: int) -> str:
        """The end-of-line comment of source line `line` (if not yet printed), with its separating spaces."""
        for c in self.comments:
            if c.line == line and not c.own_line and not c.taken:
                c.taken = True
                return "  " + c.text
        return ""

    def blank_before(self, line: int) -> bool:
        return 2 <= line <= len(self.lines) and not self.lines[line - 2].strip()


_COMMENT_OR_STRING = re.compile(r'"(?:[^"\\\n]|\\["\\n])*"|#[^\n]*')
_NO_SOURCE = _Source()


def _with_comments(src: _Source, line: int, col: int, indent: str, first: bool, closing: bool = False,
                   after: tuple[int, int] = (0, 0)) -> list[str]:
    """The leading comments of an item at (line, col), each on its own line, and the blank lines (at most one
    in a row) that preceded them and the item in the source; none first in a body, none before a `}`.
    Comments before `after` are left for the items printed later."""
    out = []
    for c in src.leading(line, col, after):
        if not first and src.blank_before(c.line):
            out.append("")
        out.append(indent + c.text)
        first = False
    if not first and not closing and src.blank_before(line) and out[-1:] != [""]:
        out.append("")
    return out


# ---------------------------------------------------------------- statements


def _body(body: S.Body, indent: str, src: _Source) -> list[str]:
    """A body as lines; the first line is only the opening brace's tail ('{' or '{ }')."""
    inner = indent + INDENT
    tail = src.trailing(body.span.line)  # a comment after `{` where no statement starts on that line
    lines = _stmts(body.stmts, inner, src)
    lines += _with_comments(src, body.span.end_line, body.span.end_col - 1, inner, not lines, closing=True)
    if not lines and not tail:
        return ["{ }"]
    return ["{" + tail, *lines, indent + "}"]


def _needs_semicolon(stmt: S.Stmt, nxt: S.Stmt | None) -> bool:
    """Where the next statement would otherwise continue this one (the grammar's one shift/reduce point):
    `conv(8)` followed by `{ ... }` would read as one form with a body."""
    layer = stmt.layer if isinstance(stmt, S.Named) else stmt
    return isinstance(layer, S.LayerCall) and layer.body is None and isinstance(nxt, S.Seq)


def _stmts(stmts: tuple[S.Stmt, ...], indent: str, src: _Source) -> list[str]:
    out: list[str] = []
    for i, stmt in enumerate(stmts):
        out += _with_comments(src, stmt.span.line, stmt.span.col, indent, not out)
        tail = src.trailing(stmt.span.line)  # claimed before nested statements on the same line can take it
        lines = _stmt(stmt, indent, src)
        if _needs_semicolon(stmt, stmts[i + 1] if i + 1 < len(stmts) else None):
            lines[-1] += ";"
        lines[0] = indent + lines[0] + tail
        out += lines
    return out


def _stmt(stmt: S.Stmt, indent: str, src: _Source) -> list[str]:
    """A statement as lines; the first line carries no indentation (the caller adds it)."""
    if isinstance(stmt, S.Let):
        return [f"let {stmt.name} = {_stmt_expr(stmt.value)}"]
    if isinstance(stmt, S.Require):
        msg = "" if stmt.message is None else ", " + format_string(stmt.message)
        return [f"require {_stmt_expr(stmt.test)}{msg}"]
    if isinstance(stmt, S.Input):
        return [f"input({_args(stmt.args)})"]
    if isinstance(stmt, S.Scaling):
        return [f"scaling({_args(stmt.args)})"]
    if isinstance(stmt, S.Init):
        return [f"init({_args(stmt.args)})"]
    if isinstance(stmt, S.Named):
        lines = _stmt(stmt.layer, indent, src)
        lines[0] = f"{stmt.name}: {lines[0]}"
        return lines
    if isinstance(stmt, S.LayerCall):
        if stmt.body is None:
            return [format_call(stmt.call)]
        # a form without arguments is written bare: `residual { ... }` (the same tree as `residual() { ... }`)
        head = stmt.call.name if not stmt.call.args else format_call(stmt.call)
        return _attach(head + " ", _body(stmt.body, indent, src))
    if isinstance(stmt, S.Seq):
        return _body(stmt.body, indent, src)
    if isinstance(stmt, S.For):
        head = f"for {', '.join(stmt.names)} in {_stmt_expr(stmt.iterable)} "
        return _attach(head, _body(stmt.body, indent, src))
    if isinstance(stmt, S.If):
        lines: list[str] = []
        for i, (test, body) in enumerate(stmt.branches):
            kw = "if" if i == 0 else "elif"
            lines = _attach_after(lines, f"{kw} {_stmt_expr(test)} ", _body(body, indent, src))
        if stmt.orelse is not None:
            lines = _attach_after(lines, "else ", _body(stmt.orelse, indent, src))
        return lines
    raise TypeError(f"not a statement: {type(stmt).__name__}")


def _attach(head: str, body_lines: list[str]) -> list[str]:
    return [head + body_lines[0], *body_lines[1:]]


def _attach_after(lines: list[str], head: str, body_lines: list[str]) -> list[str]:
    """Continue an if chain: `} elif ... {` goes on the line of the previous closing brace."""
    if not lines:
        return _attach(head, body_lines)
    return [*lines[:-1], lines[-1] + " " + head + body_lines[0], *body_lines[1:]]


# ---------------------------------------------------------------- top level


def _param(p: S.Param) -> str:
    text = p.name
    if p.type is not None:
        text += f": {p.type}"
    if p.default is not None:
        text += f" = {format_expr(p.default)}"
    return text


def format_def(d: S.Def, src: _Source = _NO_SOURCE) -> str:
    params = [_param(p) for p in d.params]
    head = f"{d.kind} {d.name}({', '.join(params)})"
    body_start = (d.body.span.line, d.body.span.col)
    in_header = any((d.span.line, d.span.col) <= (c.line, c.col) < body_start and not c.taken for c in src.comments)
    if (len(head) + 2 <= MAX_LINE and not in_header) or not params:
        tail = src.trailing(d.span.line)  # (claimed before a statement on the same line can take it)
        body = _body(d.body, "", src)
        return "\n".join([head + " " + body[0] + tail, *body[1:]])
    # one parameter per line; comments inside the header stay beside (or above) their parameters
    lines = [f"{d.kind} {d.name}("]
    for p, text in zip(d.params, params):
        lines += _with_comments(src, p.span.line, p.span.col, INDENT, True)
        lines.append(f"{INDENT}{text}," + src.trailing(p.span.line))
    lines[0] += src.trailing(d.span.line)
    lines += _with_comments(src, *body_start, INDENT, True, closing=True)
    body = _body(d.body, "", src)
    lines.append(") " + body[0])
    return "\n".join(lines + body[1:])


def format_fix(f: S.Fix) -> str:
    return f"fix {format_string(f.name)} = {format_expr(f.value)}"


def format_import(imp: S.Import) -> str:
    return f"import {format_string(imp.path)}" + (f" as {imp.alias}" if imp.alias else "")


def format_module(mod: S.Module) -> str:
    """The whole file: `fix` lines, imports (one per line), then each definition, groups separated by a blank
    line. Fix lines come first because the files that carry them (concrete architectures written by
    `archdsl.concrete`) open with them."""
    return _module(mod, _NO_SOURCE)


def _module(mod: S.Module, src: _Source) -> str:
    parts = []
    if mod.fixes:
        # Fix lines are printed first wherever they stand: each takes only the comments between it and the item
        # before it in the source, so the comments of later-printed items stay with them.
        ends = sorted((i.span.end_line, i.span.end_col) for i in (*mod.imports, *mod.defs, *mod.fixes))
        lines = []
        for f in mod.fixes:
            after = max((e for e in ends if e <= (f.span.line, f.span.col)), default=(0, 0))
            lines += _with_comments(src, f.span.line, f.span.col, "", not lines, after=after)
            lines.append(format_fix(f) + src.trailing(f.span.line))
        parts.append("\n".join(lines))
    if mod.imports:
        lines: list[str] = []
        for imp in mod.imports:
            lines += _with_comments(src, imp.span.line, imp.span.col, "", not lines)
            lines.append(format_import(imp) + src.trailing(imp.span.line))
        parts.append("\n".join(lines))
    for d in mod.defs:
        lead = _with_comments(src, d.span.line, d.span.col, "", True)
        parts.append("\n".join([*lead, format_def(d, src)]))
    rest = [c.text for c in src.comments if not c.taken]
    if rest:
        parts.append("\n".join(rest))
    return "\n\n".join(parts) + "\n" if parts else ""


def format_text(text: str, file: str = "<string>") -> str:
    """Parse and re-print source text, keeping its comments (each beside or above the statement it was
    beside or above) and single blank lines between statements. Raises ArchError on syntax errors."""
    from .parse import parse_text

    return _module(parse_text(text, file), _Source(text))


def format_file(path: str | os.PathLike) -> str:
    """Read, parse and re-print one .arch file with its comments (raises ArchError on syntax errors)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return format_text(text, os.fspath(path))
