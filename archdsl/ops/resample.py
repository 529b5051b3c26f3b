"""Resampling family: pixel_shuffle (sub-pixel upsampling) and space_to_depth (pixel unshuffle).

Both only move values between channels and space: no parameters, no multiply-accumulates.
"""

from __future__ import annotations

from ..shapes import Shape
from .registry import Op, OpError, OpParams, positive, register, require_spatial

S = Shape  # short name for the test samples below


@register
class PixelShuffle(Op):
    """Sub-pixel upsampling: pixel_shuffle(r). C x H x W -> C/r^2 x rH x rW."""

    name = "pixel_shuffle"
    samples = [({"r": 2}, [S(8, 3, 4)])]
    family = "resample"
    layouts = ("nchw",)
    is_view = False

    class Params(OpParams):
        r: int

    def infer(self, p, ins):
        positive(p, "r")
        s = ins[0]
        require_spatial("pixel_shuffle", s)
        if s.c % (p.r * p.r):
            raise OpError(f"{s.c} channels are not divisible by r^2 = {p.r * p.r}", arg="r")
        return Shape(s.c // (p.r * p.r), s.h * p.r, s.w * p.r)

    def build(self, p, ins):
        from torch import nn

        return nn.PixelShuffle(p.r)


@register
class SpaceToDepth(Op):
    """Space-to-depth (pixel unshuffle): space_to_depth(r). C x H x W -> r^2 C x H/r x W/r."""

    name = "space_to_depth"
    samples = [({"r": 2}, [S(3, 8, 6)])]
    family = "resample"
    layouts = ("nchw",)

    class Params(OpParams):
        r: int

    def infer(self, p, ins):
        positive(p, "r")
        s = ins[0]
        require_spatial("space_to_depth", s)
        if s.h % p.r or s.w % p.r:
            raise OpError(f"spatial size {s.h}x{s.w} is not divisible by r={p.r}", arg="r")
        return Shape(s.c * p.r * p.r, s.h // p.r, s.w // p.r)

    def build(self, p, ins):
        from torch import nn

        return nn.PixelUnshuffle(p.r)
