"""Stage 1: text -> Lark tree -> AST (`archdsl.syntax`).

Takes: .arch source text. Returns: `syntax.Module` for one file (`parse_text`) or one expression (`parse_expr`).
Raises `ArchError` with every syntax error it can find, each with file:line:col (syntax_errors.py words them and
recovers to find the next); spec text is only ever parsed, never evaluated by Python. Files and their imports:
program.py.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedInput, VisitError

from . import limits
from . import syntax as S
from .errors import ArchError, Diagnostic, Span, register_source
from .syntax_errors import _syntax_diagnostic, parse_recovering


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


_CACHE: OrderedDict[tuple[str, str], S.Module] = OrderedDict()  # (file, text) -> its AST, most recent last
_CACHE_LOCK = threading.Lock()
CACHE_CHARS = 8_000_000  # the texts kept, in all: a search or a checker re-reads the same specs and imports


def parse_text(text: str, file: str = "<string>") -> S.Module:
    """Parse one file's text. Raises ArchError with all syntax errors found (re-parsing past each bad line).
    ASTs are immutable, so the last few parsed texts are remembered and given back as they are. A leading UTF-8
    byte order mark (as some editors save) is not part of the text."""
    text = text.removeprefix("\ufeff")
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
    tree, diags = parse_recovering(_parser(), text, file)
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
