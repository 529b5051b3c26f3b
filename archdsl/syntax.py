"""Stage 1 data: the abstract syntax tree of a .arch file. Every node carries its source `Span`.

Produced by `archdsl.parse`; consumed by the formatter (`archdsl.fmt`) and the IR builder (`archdsl.ir`).
All nodes are frozen dataclasses so trees compare by value (used by the print/parse round-trip tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import Span

# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num:
    value: int | float
    text: str
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Str:
    value: str
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Const:
    """true, false or none."""

    value: bool | None
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Var:
    name: str
    span: Span = field(compare=False)


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class ListComp:
    """`[item for a, b in iterable if test]`."""

    item: "Expr"
    names: tuple[str, ...]
    iterable: "Expr"
    test: "Expr | None"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Index:
    obj: "Expr"
    index: "Expr"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Slice:
    obj: "Expr"
    lo: "Expr | None"
    hi: "Expr | None"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // % ** == != < <= > >= and or
    left: "Expr"
    right: "Expr"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Unary:
    op: str  # - + not
    operand: "Expr"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Cond:
    """`then if test else other`."""

    then: "Expr"
    test: "Expr"
    other: "Expr"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Arg:
    """One call argument; `name` is None for a positional one."""

    name: str | None
    value: "Expr"
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Call:
    """`name(args)`: a helper function in expressions, an op / block / form in layer statements."""

    name: str  # dotted for imported namespaces: "lib.block"
    args: tuple[Arg, ...]
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)

    @property
    def positional(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.name is None)

    @property
    def keywords(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.name is not None)


Expr = Union[Num, Str, Const, Var, ListExpr, ListComp, Index, Slice, BinOp, Unary, Cond, Call]

# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Body:
    stmts: tuple["Stmt", ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class LayerCall:
    """An op, a user block, or a form (`residual`, `parallel`, `split`, `seq`) with an optional body."""

    call: Call
    body: Body | None
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Seq:
    body: Body
    span: Span = field(compare=False)


@dataclass(frozen=True)
class For:
    names: tuple[str, ...]
    iterable: Expr
    body: Body
    span: Span = field(compare=False)


@dataclass(frozen=True)
class If:
    branches: tuple[tuple[Expr, Body], ...]  # if / elif ...
    orelse: Body | None
    span: Span = field(compare=False)


Layer = Union[LayerCall, Seq, For, If]


@dataclass(frozen=True)
class Named:
    """`name: layer` — the name becomes the module name of what the layer builds."""

    name: str
    layer: Layer
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Require:
    test: Expr
    message: str | None
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Input:
    args: tuple[Arg, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Scaling:
    args: tuple[Arg, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Init:
    """init(scheme, ...): how the model's weights are initialised."""

    args: tuple[Arg, ...]
    span: Span = field(compare=False)


Stmt = Union[LayerCall, Seq, For, If, Named, Let, Require, Input, Scaling, Init]
LAYER_TYPES = (LayerCall, Seq, For, If, Named)

# ---------------------------------------------------------------- top level


@dataclass(frozen=True)
class TypeRef:
    name: str  # int float bool str list any
    arg: "TypeRef | None"  # the element type of a list: list[int], list[list[int]]
    span: Span = field(compare=False)

    def __str__(self) -> str:
        return f"{self.name}[{self.arg}]" if self.arg else self.name


@dataclass(frozen=True)
class Param:
    name: str
    type: TypeRef | None
    default: Expr | None
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Def:
    """A `block` or a `model` definition."""

    kind: str  # "block" | "model"
    name: str
    params: tuple[Param, ...]
    body: Body
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class Import:
    path: str
    alias: str | None
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Fix:
    """`fix "NAME" = literal`: fixes the choice point (or model parameter) NAME of the checked file's model."""

    name: str
    value: Expr  # a literal: Num, Str, Const, a Unary sign on a Num, or a ListExpr of literals
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    file: str
    imports: tuple[Import, ...]
    defs: tuple[Def, ...]
    fixes: tuple[Fix, ...] = ()
