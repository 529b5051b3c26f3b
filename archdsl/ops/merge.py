"""Structural family: input, identity, add / mul / concat (merges), split, layer_scale, pos_embed, drop_path,
dropout, and the layout changes nhwc() / nchw(). The forms `residual`, `parallel` and `split` in the IR
builder create most of these nodes."""

from __future__ import annotations

from typing import Literal

from ..shapes import Cost, Shape
from .registry import NoParams, Op, OpError, OpParams, register

S = Shape  # short name for the test samples below


@register
class Input(Op):
    """The model input: C x H x W (declared with input(c, h, w) in a model)."""

    name = "input"
    is_view = True  # the caller's tensor: not an activation the model produces
    samples = []
    family = "structure"
    arity = 0
    user = False

    class Params(OpParams):
        c: int
        h: int
        w: int

    def infer(self, p, ins):
        for f in ("c", "h", "w"):
            if getattr(p, f) <= 0:
                raise OpError(f"input size must be positive, got {f}={getattr(p, f)}", arg=f)
        return Shape(p.c, p.h, p.w)

    def cost(self, p, ins, out):
        return Cost(acts=0)


@register
class Identity(Op):
    """Passes its input through (an empty branch)."""

    name = "identity"
    family = "structure"
    is_view = True
    training_only = True  # nothing to run at inference either

    def infer(self, p, ins):
        return ins[0]

    def build(self, p, ins):
        from torch import nn

        return nn.Identity()

    def source(self, p, ins, args):
        return args[0]


def _channel_dim(layout: str) -> int:
    from ._layer import channel_dim  # source() runs only when writing a built model: torch is loaded

    return channel_dim(layout)


def _broadcast(op: str, ins: list[Shape]) -> Shape:
    """Inputs must agree, except that a C x 1 x 1 input broadcasts over C x H x W (channel gating)."""
    full = max(ins, key=lambda s: (s.h or 1) * (s.w or 1))
    for i, s in enumerate(ins):
        gate = s.spatial and s.h == 1 and s.w == 1 and s.c == full.c and s.layout == full.layout
        if s != full and not gate:
            j = ins.index(full) if i != ins.index(full) else 0
            raise OpError(f"{op}: input shapes differ: input {min(i, j)} is {ins[min(i, j)]}, "
                          f"input {max(i, j)} is {ins[max(i, j)]}",
                          "branches merged elementwise must produce the same shape (a residual body must keep "
                          "its input's shape)")
    return full


class _Elementwise(Op):
    family = "structure"
    arity = None

    def infer(self, p, ins):
        return _broadcast(self.name, ins)


@register
class Add(_Elementwise):
    """Elementwise sum of two or more inputs (merge of residual / parallel branches)."""

    name = "add"
    samples = [({}, [S(8, 5, 5), S(8, 5, 5)]), ({}, [S.vector(8)] * 3)]
    user = False

    def build(self, p, ins):
        from . import merge_nn as L

        return L.Add()

    def source(self, p, ins, args):
        return " + ".join(args)


@register
class Mul(_Elementwise):
    """Elementwise product of two or more inputs (gating)."""

    name = "mul"
    samples = [({}, [S(8, 5, 5), S(8, 5, 5)])]
    user = False

    def build(self, p, ins):
        from . import merge_nn as L

        return L.Mul()

    def source(self, p, ins, args):
        return " * ".join(args)


@register
class Concat(Op):
    """Channel concatenation of two or more inputs."""

    name = "concat"
    samples = [({}, [S(8, 5, 5), S(4, 5, 5)]), ({}, [S(2, 5, 5, "nhwc"), S(3, 5, 5, "nhwc")])]
    family = "structure"
    arity = None
    user = False

    def infer(self, p, ins):
        first = ins[0]
        for i, s in enumerate(ins[1:], 1):
            if (s.h, s.w, s.layout) != (first.h, first.w, first.layout):
                raise OpError(f"concat: spatial shapes differ: input 0 is {first}, input {i} is {s}",
                              "branches concatenated on channels must keep the same spatial size")
        return first.with_c(sum(s.c for s in ins))

    def build(self, p, ins):
        from . import merge_nn as L

        return L.Concat(ins[0].layout)

    def source(self, p, ins, args):
        return f"torch.cat(({', '.join(args)},), dim={_channel_dim(ins[0].layout)})"


@register
class Split(Op):
    """Channel split into branches by explicit sizes or by ratios (made by the split form).
    With ratios each branch gets int(C * r) channels and the branch `remainder` ("first" or "last")
    gets whatever is left so the sizes sum to C."""

    name = "split"
    samples = [({"sizes": (5, 1, 2)}, [S(8, 5, 5)]), ({"ratios": (0.25, 0.75), "remainder": "first"}, [S(9, 5, 5)])]
    family = "structure"
    user = False
    is_view = True

    class Params(OpParams):
        sizes: tuple[int, ...] | None = None
        ratios: tuple[float, ...] | None = None
        remainder: Literal["first", "last"] = "last"

    def n_outputs(self, p):
        return len(p.sizes if p.sizes is not None else p.ratios or ())

    def sizes(self, p, c: int) -> tuple[int, ...]:
        if (p.sizes is None) == (p.ratios is None):
            raise OpError("split needs exactly one of sizes= or ratios=", arg="sizes")
        if p.sizes is not None:
            if any(x <= 0 for x in p.sizes):
                raise OpError(f"split sizes must be positive, got {list(p.sizes)}", arg="sizes")
            if sum(p.sizes) != c:
                raise OpError(f"split sizes {list(p.sizes)} sum to {sum(p.sizes)}, but the input has {c} channels",
                              arg="sizes")
            return p.sizes
        if any(not 0 < r <= 1 for r in p.ratios):  # (a ratio past 1 leaves the remainder negative anyway)
            raise OpError(f"split ratios must be in (0, 1], got {list(p.ratios)}", arg="ratios")
        sizes = [int(c * r) for r in p.ratios]
        i = 0 if p.remainder == "first" else len(sizes) - 1
        sizes[i] = c - (sum(sizes) - sizes[i])
        if any(x <= 0 for x in sizes):
            raise OpError(f"split ratios {list(p.ratios)} of {c} channels give sizes {sizes}",
                          "every branch needs at least one channel", arg="ratios")
        return tuple(sizes)

    def infer(self, p, ins):
        return tuple(ins[0].with_c(c) for c in self.sizes(p, ins[0].c))

    def build(self, p, ins):
        from . import merge_nn as L

        return L.Split(self.sizes(p, ins[0].c), ins[0].layout)

    def source(self, p, ins, args):
        return f"torch.split({args[0]}, {list(self.sizes(p, ins[0].c))}, dim={_channel_dim(ins[0].layout)})"


@register
class LayerScale(Op):
    """Per-channel learnable scale (CaiT / ConvNeXt): layer_scale(init=1e-6)."""

    name = "layer_scale"
    samples = [({}, [S(8, 5, 5)]), ({"init": 0.5}, [S(8, 5, 5, "nhwc")])]
    family = "structure"

    class Params(OpParams):
        init: float = 1e-6

    def infer(self, p, ins):
        return ins[0]

    def cost(self, p, ins, out):
        return Cost(params=ins[0].c)

    def build(self, p, ins):
        from . import merge_nn as L

        return L.LayerScale(ins[0].c, p.init, ins[0].layout)


@register
class PosEmbed(Op):
    """A learned position embedding added to the input (ViT, GFNet): pos_embed(std=0.02). One parameter per value
    of the C x H x W input (C of a vector), initialized truncated-normal with that std; fixed to the input size."""

    name = "pos_embed"
    samples = [({}, [S(4, 3, 5)]), ({"std": 0.0}, [S(4, 3, 5, "nhwc")]), ({}, [S.vector(6)])]
    family = "structure"

    class Params(OpParams):
        std: float = 0.02

    def infer(self, p, ins):
        if not p.std >= 0:
            raise OpError(f"std must be at least 0, got {p.std}", arg="std")
        return ins[0]

    def cost(self, p, ins, out):
        return Cost(params=ins[0].numel())

    def build(self, p, ins):
        from . import merge_nn as L

        s = ins[0]
        return L.PosEmbed((s.c, s.h, s.w) if s.spatial else (s.c,), p.std, s.layout)


@register
class DropPath(Op):
    """Stochastic depth on a residual branch: drop_path(p). Identity at inference."""

    name = "drop_path"
    samples = [({"p": 0.2}, [S(8, 5, 5)])]
    family = "structure"
    is_view = True
    training_only = True

    class Params(OpParams):
        p: float = 0.0

    def infer(self, p, ins):
        if not 0.0 <= p.p < 1.0:
            raise OpError(f"drop_path probability must be in [0, 1), got {p.p}", arg="p")
        return ins[0]

    def build(self, p, ins):
        from . import merge_nn as L

        return L.DropPath(p.p)


@register
class Dropout(Op):
    """Dropout: dropout(p=0.5). Identity at inference."""

    name = "dropout"
    samples = [({"p": 0.1}, [S.vector(8)])]
    family = "structure"
    is_view = True
    training_only = True

    class Params(OpParams):
        p: float = 0.5

    def infer(self, p, ins):
        if not 0.0 <= p.p < 1.0:
            raise OpError(f"dropout probability must be in [0, 1), got {p.p}", arg="p")
        return ins[0]

    def build(self, p, ins):
        from torch import nn

        return nn.Dropout(p.p)


class _Layout(Op):
    family = "structure"
    Params = NoParams
    target: str

    def infer(self, p, ins):
        s = ins[0]
        if not s.spatial:
            raise OpError(f"{self.name}() needs a spatial input, got a feature vector")
        if s.layout == self.target:
            raise OpError(f"input is already {self.target}", "remove this layout change")
        return Shape(s.c, s.h, s.w, self.target)

    def build(self, p, ins):
        from . import merge_nn as L

        return L.Permute(self.target)

    def source(self, p, ins, args):
        return f"{args[0]}.permute(0, 2, 3, 1)" if self.target == "nhwc" else f"{args[0]}.permute(0, 3, 1, 2)"


@register
class ToNHWC(_Layout):
    """Permute to channels-last (N, H, W, C), as ConvNeXt does before its LayerNorm + MLP."""

    name = "nhwc"
    samples = [({}, [S(8, 5, 5)])]
    target = "nhwc"


@register
class ToNCHW(_Layout):
    """Permute back to channels-first (N, C, H, W)."""

    name = "nchw"
    samples = [({}, [S(8, 5, 5, "nhwc")])]
    target = "nchw"
