"""Normalization family: bn, layernorm, groupnorm, grn. All normalize over channels, in any layout.

Cost: params are the affine weights (2*C, or C without bias); running statistics are buffers, not
parameters. MACs are not counted for normalizations (as in the published MAC figures).
"""

from __future__ import annotations

from ..shapes import Cost
from ..shapes import Shape as _Shape
from .registry import Op, OpError, OpParams, register

S = _Shape  # short name for the test samples below


class _Norm(Op):
    family = "norm"

    def infer(self, p, ins):
        return ins[0]


@register
class BatchNorm(_Norm):
    """Batch normalization: bn(eps=1e-5, momentum=0.1, affine=true)."""

    name = "bn"
    samples = [({}, [S(8, 5, 5)]), ({"eps": 1e-3}, [S(8, 5, 5, "nhwc")]), ({"affine": False}, [S.vector(8)])]

    class Params(OpParams):
        eps: float = 1e-5
        momentum: float = 0.1
        affine: bool = True

    def cost(self, p, ins, out):
        return Cost(params=2 * ins[0].c if p.affine else 0)

    def build(self, p, ins):
        from torch import nn

        from . import norm_nn as L

        s = ins[0]
        cls = {"nchw": nn.BatchNorm2d, "nhwc": L.BatchNormNHWC, "nc": nn.BatchNorm1d}[s.layout]
        return cls(s.c, eps=p.eps, momentum=p.momentum, affine=p.affine)


@register
class LayerNorm(_Norm):
    """Layer normalization over channels: layernorm(eps=1e-5, affine=true, bias=true).
    Channels-first inputs are normalized per pixel, like timm's LayerNorm2d."""

    name = "layernorm"
    samples = [({}, [S(8, 5, 5)]), ({"eps": 1e-6}, [S(8, 5, 5, "nhwc")]), ({"bias": False}, [S.vector(8)])]

    class Params(OpParams):
        eps: float = 1e-5
        affine: bool = True
        bias: bool = True

    def cost(self, p, ins, out):
        return Cost(params=(ins[0].c * (2 if p.bias else 1)) if p.affine else 0)

    def build(self, p, ins):
        from . import norm_nn as L

        return L.LayerNorm(ins[0].c, p.eps, p.affine, p.bias, ins[0].layout)


@register
class GroupNorm(_Norm):
    """Group normalization: groupnorm(groups, eps=1e-5, affine=true). Channels-first only."""

    name = "groupnorm"
    samples = [({"groups": 4}, [S(8, 5, 5)])]
    layouts = ("nchw",)

    class Params(OpParams):
        groups: int
        eps: float = 1e-5
        affine: bool = True

    def infer(self, p, ins):
        if p.groups <= 0 or ins[0].c % p.groups:
            raise OpError(f"groups={p.groups} does not divide the {ins[0].c} channels", arg="groups")
        return ins[0]

    def cost(self, p, ins, out):
        return Cost(params=2 * ins[0].c if p.affine else 0)

    def build(self, p, ins):
        from torch import nn

        return nn.GroupNorm(p.groups, ins[0].c, eps=p.eps, affine=p.affine)


@register
class GRN(_Norm):
    """Global response normalization (ConvNeXt-V2, UniRepLKNet): grn(eps=1e-6, bias=true).
    Gx = L2 norm over H,W; Nx = Gx / (mean_c Gx + eps); out = (gamma * Nx + 1) * x + beta."""

    name = "grn"
    samples = [({}, [S(8, 5, 5)]), ({"bias": False}, [S(8, 5, 5, "nhwc")])]
    layouts = ("nchw", "nhwc")

    class Params(OpParams):
        eps: float = 1e-6
        bias: bool = True

    def infer(self, p, ins):
        if not ins[0].spatial:
            raise OpError("grn needs a spatial input (C x H x W)")
        return ins[0]

    def cost(self, p, ins, out):
        return Cost(params=ins[0].c * (2 if p.bias else 1))

    def build(self, p, ins):
        from . import norm_nn as L

        return L.GRN(ins[0].c, p.eps, p.bias, ins[0].layout)

