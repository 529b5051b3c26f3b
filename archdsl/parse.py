"""Stage 1: text -> Lark tree -> AST (`archdsl.syntax`), and file loading with imports.

Takes: .arch source text (or a path). Returns: `syntax.Module` for one file, or a `Program` holding the
root module and every module it imports. Raises `ArchError` with every syntax error it can find, each
with file:line:col; spec text is only ever parsed, never evaluated by Python.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import limits
from . import syntax as S
from .errors import ArchError, Collector, Diagnostic, Span, register_source


@lru_cache(maxsize=1)
def grammar_text() -> str:
    return resources.files("archdsl.grammar").joinpath("archdsl.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                start=["start", "expr"])


# ---------------------------------------------------------------- tree -> AST

_NUMBER_TOO_BIG = 10**18
# Words a value name cannot take: expressions read them as constants or operators.
KEYWORDS = frozenset("true false none and or not if elif else for in".split())
_ESCAPE = re.compile(r'\\(["\\n])')  # the grammar's only escapes: \" \\ \n
_UNESCAPED = {'"': '"', "\\": "\\", "n": "\n"}


class _ToAST(Transformer_NonRecursive):
    """Bottom-up, non-recursive (deep nesting cannot overflow Python's stack)."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True) and not hasattr(meta, "line"):
            return Span.unknown(self.file)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # -- expressions
    @v_args(meta=True)
    def number(self, meta, children):
        (tok,) = children
        text = str(tok)
        if any(c in text for c in ".eE"):
            value: int | float = float(text)
            if math.isinf(value):  # 1e400: infinities would reach int(), round(), range() ...
                raise ArchError([Diagnostic(self._tok(tok), f"number {text[:20]} is too large",
                                            "archdsl floats are limited to about 1.8e308")])
        else:
            # Check the length first: Python refuses int() of more than 4300 digits.
            value = int(text) if len(text.lstrip("0")) <= 19 else _NUMBER_TOO_BIG + 1
            if value > _NUMBER_TOO_BIG:
                raise ArchError([Diagnostic(self._tok(tok), f"integer literal {text[:20]}... is too large",
                                            "archdsl integers are limited to 10^18")])
        return S.Num(value, text, self._tok(tok))

    @v_args(meta=True)
    def string(self, meta, children):
        (tok,) = children
        raw = str(tok)[1:-1]
        # One left-to-right pass: chained str.replace would read the escaped backslash in `\\n` as `\n`.
        value = _ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], raw)
        return S.Str(value, self._tok(tok))

    @v_args(meta=True)
    def true(self, meta, children):
        return S.Const(True, self._span(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return S.Const(False, self._span(meta))

    @v_args(meta=True)
    def none(self, meta, children):
        return S.Const(None, self._span(meta))

    @v_args(meta=True)
    def var(self, meta, children):
        (tok,) = children
        return S.Var(str(tok), self._tok(tok))

    @v_args(meta=True)
    def list(self, meta, children):
        return S.ListExpr(tuple(c for c in children if c is not None), self._span(meta))

    @v_args(meta=True)
    def listcomp(self, meta, children):
        item, names, iterable, test = children
        return S.ListComp(item, names, iterable, test, self._span(meta))

    @v_args(meta=True)
    def index(self, meta, children):
        obj, idx = children
        return S.Index(obj, idx, self._span(meta))

    @v_args(meta=True)
    def slice(self, meta, children):
        obj, lo, _colon, hi = children
        return S.Slice(obj, lo, hi, self._span(meta))

    @v_args(meta=True)
    def binop(self, meta, children):
        left, op, right = children
        return S.BinOp(str(op), left, right, self._span(meta))

    @v_args(meta=True)
    def compare(self, meta, children):
        return self.binop(meta, children)

    @v_args(meta=True)
    def and_(self, meta, children):
        return S.BinOp("and", children[0], children[1], self._span(meta))

    @v_args(meta=True)
    def or_(self, meta, children):
        return S.BinOp("or", children[0], children[1], self._span(meta))

    @v_args(meta=True)
    def not_(self, meta, children):
        return S.Unary("not", children[0], self._span(meta))

    @v_args(meta=True)
    def signed(self, meta, children):  # a sign on a number in a `fix` literal
        op, tok = children
        return S.Unary(str(op), self.number(meta, [tok]), self._span(meta))

    @v_args(meta=True)
    def unary(self, meta, children):
        op, operand = children
        return S.Unary(str(op), operand, self._span(meta))

    @v_args(meta=True)
    def cond(self, meta, children):
        then, test, other = children
        return S.Cond(then, test, other, self._span(meta))

    @v_args(meta=True)
    def dotted(self, meta, children):
        return (".".join(str(t) for t in children), self._span(meta))

    @v_args(meta=True)
    def kwarg(self, meta, children):
        name, value = children
        return S.Arg(str(name), value, self._span(meta))

    def args(self, children):
        out = []
        for c in children:
            if c is None:
                continue
            out.append(c if isinstance(c, S.Arg) else S.Arg(None, c, c.span))
        return tuple(out)

    @v_args(meta=True)
    def call(self, meta, children):
        (name, name_span), args = children
        return S.Call(name, args or (), self._span(meta), name_span)

    # -- statements
    @v_args(meta=True)
    def body(self, meta, children):
        return S.Body(tuple(children), self._span(meta))

    @v_args(meta=True)
    def layer_call(self, meta, children):
        return S.LayerCall(children[0], None, self._span(meta))

    @v_args(meta=True)
    def layer_form(self, meta, children):
        return S.LayerCall(children[0], children[1], self._span(meta))

    @v_args(meta=True)
    def layer_bare_form(self, meta, children):
        (name, name_span), body = children[0], children[1]
        return S.LayerCall(S.Call(name, (), name_span, name_span), body, self._span(meta))

    @v_args(meta=True)
    def layer_seq(self, meta, children):
        return S.Seq(children[0], self._span(meta))

    @v_args(meta=True)
    def layer_for(self, meta, children):
        names, iterable, body = children
        return S.For(names, iterable, body, self._span(meta))

    def _bind(self, tok: Token) -> str:
        """A name being defined: keywords cannot be (they could never be read back)."""
        if str(tok) in KEYWORDS:
            raise ArchError([Diagnostic(self._tok(tok), f"'{tok}' is a keyword and cannot be used as a name",
                                        "choose another name")])
        return str(tok)

    def names(self, children):
        return tuple(self._bind(t) for t in children)

    def elif_clause(self, children):
        return (children[0], children[1])

    @v_args(meta=True)
    def layer_if(self, meta, children):
        test, body, *rest = children
        orelse = rest.pop() if rest and not isinstance(rest[-1], tuple) else None
        if rest and rest[-1] is None:
            rest.pop()
        return S.If(((test, body), *[r for r in rest if r is not None]), orelse, self._span(meta))

    @v_args(meta=True)
    def named(self, meta, children):
        name, layer = children
        return S.Named(str(name), layer, self._span(meta), self._tok(name))

    @v_args(meta=True)
    def let(self, meta, children):
        name, value = children
        return S.Let(self._bind(name), value, self._span(meta))

    @v_args(meta=True)
    def require(self, meta, children):
        test, msg = children
        return S.Require(test, None if msg is None else self.string(meta, [msg]).value, self._span(meta))

    @v_args(meta=True)
    def input_stmt(self, meta, children):
        return S.Input(children[0] or (), self._span(meta))

    @v_args(meta=True)
    def scaling(self, meta, children):
        return S.Scaling(children[0] or (), self._span(meta))

    @v_args(meta=True)
    def init_stmt(self, meta, children):
        return S.Init(children[0] or (), self._span(meta))

    # -- top level
    @v_args(meta=True)
    def type(self, meta, children):
        name, arg = children
        return S.TypeRef(str(name), arg, self._span(meta))

    @v_args(meta=True)
    def param(self, meta, children):
        name, typ, default = children
        return S.Param(self._bind(name), typ, default, self._span(meta))

    def params(self, children):
        return tuple(c for c in children if c is not None)

    def _def(self, kind, meta, children):
        name, params, body = children
        return S.Def(kind, str(name), params or (), body, self._span(meta), self._tok(name))

    @v_args(meta=True)
    def blockdef(self, meta, children):
        return self._def("block", meta, children)

    @v_args(meta=True)
    def modeldef(self, meta, children):
        return self._def("model", meta, children)

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        path, alias = children
        return S.Import(self.string(meta, [path]).value, None if alias is None else self._bind(alias),
                        self._span(meta))

    @v_args(meta=True)
    def fix_stmt(self, meta, children):
        name, value = children
        return S.Fix(self.string(meta, [name]).value, value, self._span(meta), self._tok(name))

    def start(self, children):
        return [c for c in children]


# ---------------------------------------------------------------- syntax errors

_READABLE = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'",
    "SLICE_COLON": "':'", "EQUAL": "'='", "SEMICOLON": "';'", "DOT": "'.'", "ADD_OP": "'+' or '-'",
    "MUL_OP": "an operator", "POW_OP": "'**'", "COMP_OP": "a comparison", "$END": "end of file",
}


def _expected(e: UnexpectedInput) -> list[str]:
    names = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
    ip = getattr(e, "interactive_parser", None)
    if ip is not None:
        try:  # exact: LALR state merging lists tokens that would fail after a reduction
            names = sorted(ip.accepts()) or names
        except Exception:  # noqa: BLE001 - fall back to the table's (wider) list
            pass
    out = []
    for n in names:
        if n in _READABLE:
            out.append(_READABLE[n])
        elif n.isupper() and len(n) <= 10 and n.isalpha():
            out.append(f"'{n.lower()}'")  # keywords: IF -> 'if'
        else:
            out.append(n)
    return sorted(set(out))


def _syntax_diagnostic(e: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line, col = max(1, getattr(e, "line", 1) or 1), max(1, getattr(e, "column", 1) or 1)
    exp = _expected(e)
    hint = None
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else "?"
        msg = f"unexpected character {ch!r}"
        end = col + 1
        if ch == "=" and exp:
            hint = "use ':' to name a layer (name: op(...)) or 'let name = value' to bind a value"
    elif isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        msg = "unexpected end of file"
        end = col + 1
        if "'}'" in exp:
            hint = "a '{' is never closed"
    else:
        tok = e.token
        msg = f"unexpected {str(tok)!r}"
        end = (tok.end_column or col + 1) if tok.end_line == tok.line else col + len(str(tok).split("\n")[0])
        if tok.type == "EQUAL" and "':'" in exp:
            hint = "use ':' to name a layer (name: op(...)) or 'let name = value' to bind a value"
        elif tok.type == "RBRACE" and "')'" in exp:
            hint = "missing ')'"
        elif tok.type == "ELSE" and "'{'" not in exp:
            hint = "after let / require / for / if, put a conditional expression in parentheses: " \
                   "let k = (7 if big else 3)"
        elif tok.type == "IF" and "'or'" in exp:
            hint = "put a conditional expression in parentheses: let k = (7 if big else 3)"
        elif tok.type == "LBRACE":
            hint = "if this '{' starts a new group of layers, end the previous statement with ';'"
    src_lines = text.split("\n")
    if hint is None and line <= len(src_lines) and _FIX_VALUE.match(src_lines[line - 1], 0, col - 1):
        hint = "a fix value is a literal: a number, a string in quotes, true, false, none, or a list of these"
    if exp and len(exp) <= 8:
        msg += f"; expected {', '.join(exp)}"
    return Diagnostic(Span(file, line, col, line, max(end, col + 1)), msg, hint)


# The start of a `fix "name" = ...` line up to the value, where a syntax error is in the (literal) value.
_FIX_VALUE = re.compile(r'\s*fix\s*"(?:[^"\\\n]|\\["\\n])*"\s*=.*')


def _balanced(line: str) -> bool:
    return all(line.count(a) == line.count(b) for a, b in ("()", "[]", "{}"))


_CLOSER = {"(": ")", "[": "]", "{": "}"}


def _unclosed(text: str) -> list[tuple[int, int, int]]:
    """Brackets that are never closed, as (offset, line, col); strings and comments are skipped.
    A closer that does not match the innermost opener closes an outer one, leaving the inner ones unclosed."""
    stack: list[tuple[int, int, int]] = []
    out: list[tuple[int, int, int]] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line, line_start = line + 1, i + 1
        elif ch == "#":
            while i + 1 < n and text[i + 1] != "\n":
                i += 1
        elif ch == '"':
            i += 1
            while i < n and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
            if i < n and text[i] == "\n":
                continue
        elif ch in _CLOSER:
            stack.append((i, line, i - line_start + 1))
        elif ch in ")]}":
            while stack and _CLOSER[text[stack[-1][0]]] != ch:
                out.append(stack.pop())
            if stack:
                stack.pop()
        i += 1
    return sorted(out + stack)


def _code_end(line: str) -> int:
    """Index just after the last code character of `line` (before a trailing comment)."""
    in_str, i = False, 0
    while i < len(line):
        if line[i] == '"':
            in_str = not in_str
        elif line[i] == "\\" and in_str:
            i += 1
        elif line[i] == "#" and not in_str:
            break
        i += 1
    return len(line[:i].rstrip())


def _unclosed_diagnostic(d: Diagnostic, e: UnexpectedInput, work: str, file: str):
    """When a syntax error is really a bracket opened on an earlier line and never closed, a diagnostic at that
    bracket, and `work` with a closer inserted so parsing can go on; else None."""
    at_eof = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
    pos = len(work) if at_eof else getattr(e, "pos_in_stream", None)
    if pos is None:
        return None
    before = [u for u in _unclosed(work) if u[0] < pos and u[1] < d.span.line]
    if not before:
        return None
    off, line, col = before[-1]
    opener = work[off]
    closer = _CLOSER[opener]
    err_line = work.split("\n")[d.span.line - 1].lstrip()
    if at_eof:
        found = "the end of the file"
    elif opener == "{" and err_line.startswith(("block ", "model ", "import ")):
        found = f"the next definition at line {d.span.line}"
    elif f"'{closer}'" in _expected(e):
        tok = getattr(e, "token", None)
        found = f"{str(tok)!r} at line {d.span.line}, column {d.span.col}" if tok is not None else \
            f"line {d.span.line}, column {d.span.col}"
    else:
        return None
    diag = Diagnostic(Span(file, line, col, line, col + 1), f"'{opener}' is never closed",
                      f"expected '{closer}' before {found}")
    if at_eof:
        return diag, None
    # Close it where the user most likely forgot to: a '(' or '[' at the end of its own line, a '{' at the end
    # of the line before the error (so the statements between stay inside the body).
    lines = work.split("\n")
    k = line - 1 if opener != "{" else d.span.line - 2
    cut = _code_end(lines[k])
    lines[k] = lines[k][:cut] + closer + lines[k][cut:]
    return diag, "\n".join(lines)


_CACHE: OrderedDict[tuple[str, str], S.Module] = OrderedDict()  # (file, text) -> its AST, most recent last
_CACHE_LOCK = threading.Lock()
CACHE_CHARS = 8_000_000  # the texts kept, in all: a search or a checker re-reads the same specs and imports


def parse_text(text: str, file: str = "<string>") -> S.Module:
    """Parse one file's text. Raises ArchError with all syntax errors found (re-parsing past each bad line).
    ASTs are immutable, so the last few parsed texts are remembered and given back as they are."""
    register_source(file, text)
    key = (file, text)
    with _CACHE_LOCK:
        mod = _CACHE.get(key)
        if mod is not None:
            _CACHE.move_to_end(key)
            return mod
    mod = _parse_text(text, file)
    with _CACHE_LOCK:
        _CACHE[key] = mod
        kept = sum(len(t) for _, t in _CACHE)
        while kept > CACHE_CHARS and len(_CACHE) > 1:
            kept -= len(_CACHE.popitem(last=False)[0][1])
    return mod


def _parse_text(text: str, file: str) -> S.Module:
    limits.check_text(text, file)
    diags: list[Diagnostic] = []
    work = text
    tree = None
    for _ in range(limits.MAX_SYNTAX_ERRORS):
        try:
            tree = _parser().parse(work, start="start")
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
            # Recovery: blank the offending line and parse again, but only where that cannot itself
            # unbalance brackets (which would produce errors the user did not make).
            lines = work.split("\n")
            i = d.span.line - 1
            if not (0 <= i < len(lines)) or not _balanced(lines[i]) or not lines[i].strip():
                break
            lines[i] = " " * len(lines[i])
            work = "\n".join(lines)
    if diags:
        raise ArchError(sorted(diags, key=lambda d: (d.span.line, d.span.col)))
    try:
        items = _ToAST(file).transform(tree)
    except VisitError as e:  # an ArchError raised inside the transformer
        if isinstance(e.orig_exc, ArchError):
            raise e.orig_exc from None
        raise
    limits.check_ast_depth(items, file)
    imports = tuple(i for i in items if isinstance(i, S.Import))
    defs = tuple(i for i in items if isinstance(i, S.Def))
    fixes = tuple(i for i in items if isinstance(i, S.Fix))
    return S.Module(file, imports, defs, fixes)


def parse_expr(text: str, file: str = "<expr>") -> S.Expr:
    """Parse one expression (used for --set name=value)."""
    register_source(file, text)
    limits.check_text(text, file)
    try:
        tree = _parser().parse(text, start="expr")
    except UnexpectedInput as e:
        raise ArchError([_syntax_diagnostic(e, file, text)]) from None
    try:
        expr = _ToAST(file).transform(tree)
    except VisitError as e:  # an ArchError raised inside the transformer (a literal too large)
        if isinstance(e.orig_exc, ArchError):
            raise e.orig_exc from None
        raise
    limits.check_ast_depth([expr], file)  # the evaluator recurses over the tree
    return expr


# ---------------------------------------------------------------- programs (files + imports)


@dataclass
class Program:
    """The root module and every module reachable through imports, keyed by resolved path."""

    root: S.Module
    modules: dict[str, S.Module] = field(default_factory=dict)  # display file name -> module
    # (importing display file, import path) -> imported display file
    links: dict[tuple[str, str], str] = field(default_factory=dict)


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def load_program(path: str | os.PathLike, search_paths: tuple[str, ...] = (), allow_outside: bool = False,
                 text: str | None = None) -> Program:
    """Parse `path` (or `text`, named `path`) and, recursively, every file it imports."""
    root_path = Path(path).resolve() if text is None else Path(os.path.abspath(path))
    roots = [root_path.parent] + [Path(p).resolve() for p in search_paths]
    col = Collector()
    modules: dict[str, S.Module] = {}
    links: dict[tuple[str, str], str] = {}

    def read(p: Path, display: str, given: str | None = None) -> S.Module | None:
        if given is not None:
            src = given
        else:
            try:
                size = p.stat().st_size
                if size > limits.MAX_FILE_BYTES:
                    raise limits.too_big_file(display, size)
                src = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                col.add(Span(display, 1, 1, 1, 2), "file is not valid UTF-8 text")
                return None
            except OSError as err:  # unreadable (permissions, a directory, ...)
                col.add(Span(display, 1, 1, 1, 2), f"cannot read the file: {err.strerror or err}")
                return None
        try:
            return parse_text(src, display)
        except ArchError as e:
            col.extend(e)
            return None

    def visit(p: Path, display: str, stack: list[str], given: str | None = None) -> None:
        mod = read(p, display, given)
        if mod is None:
            return
        modules[display] = mod
        for imp in mod.imports:
            target = _resolve_import(imp, p, roots, allow_outside, col)
            if target is None:
                continue
            tdisp = _display(target)
            links[(display, imp.path)] = tdisp
            if tdisp in stack or tdisp == display:
                cycle = stack[stack.index(tdisp):] if tdisp in stack else []
                chain = " -> ".join([*cycle, display, tdisp])
                col.add(imp.span, f"import cycle: {chain}", "remove one of the imports in the cycle")
                continue
            if tdisp not in modules:
                visit(target, tdisp, [*stack, display])

    if text is None and not root_path.is_file():
        raise ArchError([Diagnostic(Span(str(path), 1, 1, 1, 1), f"no such file: {path}")])
    root_display = _display(root_path) if text is None else str(path)
    visit(root_path, root_display, [], text)
    col.raise_if_any()
    return Program(modules[root_display], modules, links)


def _resolve_import(imp: S.Import, importer: Path, roots: list[Path], allow_outside: bool,
                    col: Collector) -> Path | None:
    if not imp.path.endswith(".arch"):
        col.add(imp.span, f"can only import .arch files, not {imp.path!r}")
        return None
    rel = Path(imp.path)
    if rel.is_absolute() and not allow_outside:
        col.add(imp.span, f"absolute import path {imp.path!r} is not allowed",
                "import relative to this file, or pass --allow-outside-imports")
        return None
    try:
        candidates = [(importer.parent / rel).resolve()] + [(r / rel).resolve() for r in roots[1:]]
        found = [c for c in candidates if c.is_file()]
    except (OSError, ValueError) as err:  # a NUL character, a name too long for the file system, ...
        col.add(imp.span, f"cannot use import path {imp.path!r}: {getattr(err, 'strerror', None) or err}")
        return None
    for c in found:
        if not allow_outside and not any(c.is_relative_to(r) for r in roots):
            col.add(imp.span, f"import {imp.path!r} leaves the spec's directory ({_display(roots[0])})",
                    "add the directory with --import-path, or pass --allow-outside-imports")
            return None
        return c
    where = ", ".join(dict.fromkeys(_display(c) for c in candidates))
    col.add(imp.span, f"imported file not found: {imp.path!r}", f"looked for {where} (import paths are relative "
            "to the importing file)")
    return None
