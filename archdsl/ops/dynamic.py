"""Dynamic-kernel family: involution (Li et al., "Involution: Inverting the Inherence of Convolution for Visual
Recognition", CVPR 2021), whose kernel is generated at each position from the input. The layer class is in
dynamic_nn.py.
"""

from __future__ import annotations

from ..shapes import Cost, Shape
from .registry import Op, OpError, OpParams, odd, positive, register, require_spatial

S = Shape  # short name for the test samples below


@register
class Involution(Op):
    """Involution: involution(k=7, s=1, group_channels=16, reduction=4). At each output position a k x k kernel
    per group of `group_channels` channels is generated from the input there (avg-pooled by s when s > 1): 1x1
    conv to C/reduction (no bias) -> BN -> ReLU -> 1x1 conv to k*k*(C/group_channels) (bias); the kernel then
    weighs the k x k neighbourhood (stride s, padding k // 2) of every channel of its group. As the authors'
    mmcls `involution` (conv1.conv, conv1.bn, conv2.conv)."""

    name = "involution"
    samples = [({"k": 3, "group_channels": 4}, [S(8, 6, 6)]), ({"k": 7, "s": 2}, [S(32, 8, 8)])]
    family = "dynamic"
    layouts = ("nchw",)

    class Params(OpParams):
        k: int = 7
        s: int = 1
        group_channels: int = 16
        reduction: int = 4

    def geometry(self, p, s: Shape) -> tuple[int, int, int, int]:
        """(groups, reduced channels, output H, output W)."""
        require_spatial("involution", s)
        odd(p, "k")
        positive(p, "s", "group_channels", "reduction")
        if s.c % p.group_channels:
            raise OpError(f"{s.c} channels are not a multiple of group_channels={p.group_channels}",
                          arg="group_channels")
        if s.c // p.reduction < 1:
            raise OpError(f"{s.c} channels / reduction {p.reduction} leaves no channel", arg="reduction")
        if s.h % p.s or s.w % p.s:
            raise OpError(f"stride {p.s} does not divide the input's {s.h}x{s.w} (the kernels are generated on the "
                          f"input average-pooled by {p.s}, the unfolded neighbourhoods at stride {p.s}: the two grids "
                          "must agree)", arg="s")
        return s.c // p.group_channels, s.c // p.reduction, s.h // p.s, s.w // p.s

    def infer(self, p, ins):
        _, _, h, w = self.geometry(p, ins[0])
        return Shape(ins[0].c, h, w)

    def cost(self, p, ins, out):
        c = ins[0].c
        g, r, h, w = self.geometry(p, ins[0])
        kk = p.k * p.k
        params = c * r + 2 * r + r * kk * g + kk * g
        return Cost(params=params, macs=h * w * (c * r + r * kk * g + c * kk))

    def build(self, p, ins):
        from . import dynamic_nn as L

        g, r, _, _ = self.geometry(p, ins[0])
        return L.Involution(ins[0].c, p.k, p.s, g, r)
