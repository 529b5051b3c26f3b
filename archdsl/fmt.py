"""The canonical .arch printer: AST (`archdsl.syntax`) -> spec text that parses back to the same AST.

Takes: a parsed `syntax.Module` (`format_module`), one expression (`format_expr`) or a path (`format_file`).
Returns: deterministic source text — 4-space indentation, one statement per line, imports first, then the
definitions separated by blank lines, numbers written from their original text, and the fewest
parentheses that keep the grammar's precedence. `parse_text(format_module(m), m.file) == m` holds for
every module, and formatting is idempotent.
"""

from __future__ import annotations

import os

from . import syntax as S

INDENT = "    "

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


def format_string(value: str) -> str:
    """A string literal: the grammar's only escapes are \\", \\\\ and \\n."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _args(args: tuple[S.Arg, ...]) -> str:
    return ", ".join(_expr(a.value, TERNARY) if a.name is None else f"{a.name}={_expr(a.value, TERNARY)}"
                     for a in args)


def format_call(c: S.Call) -> str:
    return f"{c.name}({_args(c.args)})"


# ---------------------------------------------------------------- statements


def _body(body: S.Body, indent: str) -> list[str]:
    """A body as lines; the first line is only the opening brace's tail ('{' or '{ }')."""
    if not body.stmts:
        return ["{ }"]
    lines = ["{"]
    lines += _stmts(body.stmts, indent + INDENT)
    lines.append(indent + "}")
    return lines


def _needs_semicolon(stmt: S.Stmt, nxt: S.Stmt | None) -> bool:
    """Where the next statement would otherwise continue this one (the grammar's two shift/reduce points)."""
    if nxt is None:
        return False
    layer = stmt.layer if isinstance(stmt, S.Named) else stmt
    if isinstance(layer, S.LayerCall) and layer.body is None and isinstance(nxt, S.Seq):
        return True  # `conv(8)` then `{ ... }` would read as one form with a body
    if isinstance(stmt, (S.Let, S.Require)) and isinstance(nxt, S.If):
        # `let x = a` then `if c { ... }` would read as the start of `a if c else ...`
        return not (isinstance(stmt, S.Require) and stmt.message is not None)
    return False


def _stmts(stmts: tuple[S.Stmt, ...], indent: str) -> list[str]:
    out: list[str] = []
    for i, stmt in enumerate(stmts):
        lines = _stmt(stmt, indent)
        if _needs_semicolon(stmt, stmts[i + 1] if i + 1 < len(stmts) else None):
            lines[-1] += ";"
        lines[0] = indent + lines[0]
        out += lines
    return out


def _stmt(stmt: S.Stmt, indent: str) -> list[str]:
    """A statement as lines; the first line carries no indentation (the caller adds it)."""
    if isinstance(stmt, S.Let):
        return [f"let {stmt.name} = {format_expr(stmt.value)}"]
    if isinstance(stmt, S.Require):
        msg = "" if stmt.message is None else ", " + format_string(stmt.message)
        return [f"require {format_expr(stmt.test)}{msg}"]
    if isinstance(stmt, S.Input):
        return [f"input({_args(stmt.args)})"]
    if isinstance(stmt, S.Scaling):
        return [f"scaling({_args(stmt.args)})"]
    if isinstance(stmt, S.Named):
        lines = _stmt(stmt.layer, indent)
        lines[0] = f"{stmt.name}: {lines[0]}"
        return lines
    if isinstance(stmt, S.LayerCall):
        head = format_call(stmt.call)
        if stmt.body is None:
            return [head]
        return _attach(head + " ", _body(stmt.body, indent))
    if isinstance(stmt, S.Seq):
        return _body(stmt.body, indent)
    if isinstance(stmt, S.For):
        head = f"for {', '.join(stmt.names)} in {format_expr(stmt.iterable)} "
        return _attach(head, _body(stmt.body, indent))
    if isinstance(stmt, S.If):
        lines: list[str] = []
        for i, (test, body) in enumerate(stmt.branches):
            kw = "if" if i == 0 else "elif"
            lines = _attach_after(lines, f"{kw} {format_expr(test)} ", _body(body, indent))
        if stmt.orelse is not None:
            lines = _attach_after(lines, "else ", _body(stmt.orelse, indent))
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


MAX_LINE = 120  # a definition header longer than this lists one parameter per line


def format_def(d: S.Def) -> str:
    params = [_param(p) for p in d.params]
    head = f"{d.kind} {d.name}({', '.join(params)}) "
    if len(head) + 1 > MAX_LINE and params:
        head = f"{d.kind} {d.name}(\n" + "".join(f"{INDENT}{p},\n" for p in params) + ") "
    return "\n".join(_attach(head, _body(d.body, "")))


def format_import(imp: S.Import) -> str:
    return f"import {format_string(imp.path)}" + (f" as {imp.alias}" if imp.alias else "")


def format_module(mod: S.Module) -> str:
    """The whole file: imports (one per line), a blank line, then each definition separated by a blank line."""
    parts = []
    if mod.imports:
        parts.append("\n".join(format_import(i) for i in mod.imports))
    parts += [format_def(d) for d in mod.defs]
    return "\n\n".join(parts) + "\n" if parts else ""


def format_file(path: str | os.PathLike) -> str:
    """Read, parse and re-print one .arch file (raises ArchError on syntax errors). Comments are not kept."""
    from .parse import parse_text

    with open(path, encoding="utf-8") as f:
        text = f.read()
    return format_module(parse_text(text, os.fspath(path)))
