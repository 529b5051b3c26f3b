"""Pooling family: avgpool, maxpool (windowed), adaptive_avgpool (to a fixed size), gap / gmp (global, to a
feature vector), flatten."""

from __future__ import annotations

from ..shapes import Shape
from .registry import Int2, Op, OpError, OpParams, conv_geometry, pair, positive, register

S = Shape  # short name for the test samples below


class _Window(Op):
    family = "pool"
    layouts = ("nchw",)

    class Params(OpParams):
        k: Int2
        s: Int2 | None = None
        pad: Int2 = 0
        ceil: bool = False

    def _geom(self, p, s):
        positive(p, "k", "s")
        stride = p.k if p.s is None else p.s
        kh, kw = pair(p.k)
        ph, pw = pair(p.pad)
        if ph > kh // 2 or pw > kw // 2:
            raise OpError(f"padding {p.pad} is more than half the kernel {p.k}", arg="pad")
        if p.ceil:
            if s.h + 2 * ph < kh or s.w + 2 * pw < kw:
                raise OpError(f"window {kh}x{kw} is larger than the padded input", arg="k")
            sh, sw = pair(stride)
            h = -(-(s.h + 2 * ph - kh) // sh) + 1
            w = -(-(s.w + 2 * pw - kw) // sw) + 1
            # PyTorch drops a last window that starts inside the right padding
            h -= (h - 1) * sh >= s.h + ph
            w -= (w - 1) * sw >= s.w + pw
            return h, w, stride
        h, w, _ = conv_geometry(self.name, s, p.k, stride, p.pad, 1)
        return h, w, stride

    def infer(self, p, ins):
        h, w, _ = self._geom(p, ins[0])
        return Shape(ins[0].c, h, w)


@register
class AvgPool(_Window):
    """Average pooling: avgpool(k, s=k, pad=0, ceil=false)."""

    name = "avgpool"
    samples = [({"k": 2}, [S(4, 8, 8)]), ({"k": 3, "s": 2, "pad": 1, "ceil": True}, [S(4, 9, 9)])]

    def build(self, p, ins):
        from torch import nn

        _, _, stride = self._geom(p, ins[0])
        return nn.AvgPool2d(pair(p.k), pair(stride), pair(p.pad), ceil_mode=p.ceil)


@register
class MaxPool(_Window):
    """Max pooling: maxpool(k, s=k, pad=0, ceil=false)."""

    name = "maxpool"
    samples = [({"k": 3, "s": 2, "pad": 1}, [S(4, 9, 9)]), ({"k": 3, "s": 2, "ceil": True}, [S(4, 10, 10)])]

    def build(self, p, ins):
        from torch import nn

        _, _, stride = self._geom(p, ins[0])
        return nn.MaxPool2d(pair(p.k), pair(stride), pair(p.pad), ceil_mode=p.ceil)


@register
class AdaptiveAvgPool(Op):
    """Adaptive average pooling to a fixed size: adaptive_avgpool(out). Output bin i of n over a side of length L
    averages [floor(i L / n), ceil((i + 1) L / n)), as torch's AdaptiveAvgPool2d (VGG's 7x7 before its
    classifier, Inception's pools)."""

    name = "adaptive_avgpool"
    samples = [({"out": 7}, [S(4, 7, 7)]), ({"out": (2, 3)}, [S(4, 5, 7)]), ({"out": 3}, [S(4, 2, 2)])]
    family = "pool"
    layouts = ("nchw",)

    class Params(OpParams):
        out: Int2

    def infer(self, p, ins):
        positive(p, "out")
        oh, ow = pair(p.out)
        return Shape(ins[0].c, oh, ow)

    def build(self, p, ins):
        from torch import nn

        return nn.AdaptiveAvgPool2d(pair(p.out))


class _Global(Op):
    family = "pool"
    layouts = ("nchw", "nhwc")

    class Params(OpParams):
        keepdim: bool = False

    def infer(self, p, ins):
        s = ins[0]
        if not s.spatial:
            raise OpError(f"{self.name} needs a spatial input but got a feature vector of size {s.c}")
        return Shape(s.c, 1, 1, s.layout) if p.keepdim else Shape.vector(s.c)


@register
class GlobalAvgPool(_Global):
    """Global average pooling: gap(keepdim=false) -> a feature vector of C (or C x 1 x 1)."""

    name = "gap"
    samples = [({}, [S(8, 5, 5)]), ({"keepdim": True}, [S(8, 5, 5, "nhwc")])]

    def build(self, p, ins):
        from . import pool_nn as L

        return L.GlobalAvgPool(p.keepdim, ins[0].layout)


@register
class GlobalMaxPool(_Global):
    """Global max pooling: gmp(keepdim=false)."""

    name = "gmp"
    samples = [({}, [S(8, 5, 5)])]

    def build(self, p, ins):
        from . import pool_nn as L

        return L.GlobalMaxPool(p.keepdim, ins[0].layout)


@register
class Flatten(Op):
    """Flatten C x H x W into a feature vector of C*H*W (channels-first order)."""

    name = "flatten"
    samples = [({}, [S(8, 3, 3)]), ({}, [S(8, 3, 3, "nhwc")])]
    family = "pool"
    is_view = True

    def infer(self, p, ins):
        return Shape.vector(ins[0].numel())

    def build(self, p, ins):
        from . import pool_nn as L

        return L.Flatten(ins[0].layout)
