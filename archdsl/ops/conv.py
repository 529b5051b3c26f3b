"""Convolution family: conv (plain / grouped / dilated / band), dwconv (depthwise).

Shape rule: out = floor((H + 2*pad - d*(k-1) - 1) / s) + 1 per axis; "same" padding (the default,
pad=none) is d*(k-1)/2 and exists only when d*(k-1) is even. Cost: params = out*(in/groups)*kh*kw
(+ out for bias); MACs = out*Ho*Wo*(in/groups)*kh*kw.
"""

from __future__ import annotations

from ..shapes import Cost, Shape
from .registry import Op, OpError, OpParams, pair, positive, register, require_spatial

S = Shape  # short name for the test samples below

Int2 = int | tuple[int, int]


def conv_geometry(op: str, s: Shape, k: Int2, stride: Int2, pad: Int2 | None,
                  d: Int2) -> tuple[int, int, tuple[int, int]]:
    """Output (H, W) and the padding actually used; raises OpError for impossible configurations."""
    require_spatial(op, s)
    (kh, kw), (sh, sw), (dh, dw) = pair(k), pair(stride), pair(d)
    if pad is None:
        if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            raise OpError(f"kernel {kh}x{kw} has no 'same' padding (even size)",
                          "use an odd kernel, or give the padding explicitly (pad=0 for a patchify conv)", arg="k")
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    else:
        ph, pw = pair(pad)
        if ph < 0 or pw < 0:
            raise OpError(f"padding must be >= 0, got {pad}", arg="pad")
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if s.h + 2 * ph < eh or s.w + 2 * pw < ew:
        raise OpError(f"kernel {eh}x{ew} (after dilation) is larger than the padded input "
                      f"{s.h + 2 * ph}x{s.w + 2 * pw}", "use a smaller kernel or a larger input", arg="k")
    return (s.h + 2 * ph - eh) // sh + 1, (s.w + 2 * pw - ew) // sw + 1, (ph, pw)


class _ConvBase(Op):
    family = "conv"
    layouts = ("nchw",)

    def _channels(self, p, cin: int) -> tuple[int, int]:
        """(out channels, groups)."""
        raise NotImplementedError

    def infer(self, p, ins):
        (s,) = ins
        positive(p, "k", "s", "d")
        cout, groups = self._channels(p, s.c)
        h, w, _ = conv_geometry(self.name, s, p.k, p.s, p.pad, p.d)
        return Shape(cout, h, w)

    def cost(self, p, ins, out):
        (s,) = ins
        cout, groups = self._channels(p, s.c)
        kh, kw = pair(p.k)
        per_out = (s.c // groups) * kh * kw
        return Cost(params=cout * per_out + (cout if p.bias else 0), macs=cout * out.h * out.w * per_out)

    def build(self, p, ins):
        from torch import nn

        (s,) = ins
        cout, groups = self._channels(p, s.c)
        _, _, padding = conv_geometry(self.name, s, p.k, p.s, p.pad, p.d)
        return nn.Conv2d(s.c, cout, pair(p.k), stride=pair(p.s), padding=padding, dilation=pair(p.d),
                         groups=groups, bias=p.bias)


@register
class Conv(_ConvBase):
    """2-D convolution: conv(out, k=3, s=1, pad=none (same), d=1, groups=1, bias=true).
    k, s, pad and d take one integer or [h, w] (band kernels: k=[1, 11])."""

    name = "conv"
    samples = [({"out": 12}, [S(8, 9, 9)]), ({"out": 6, "k": 5, "s": 2, "groups": 2}, [S(8, 11, 10)]),
               ({"out": 8, "k": (1, 7)}, [S(8, 9, 9)]), ({"out": 4, "k": 3, "d": 2, "bias": False}, [S(8, 9, 9)]),
               ({"out": 16, "k": 4, "s": 4, "pad": 0}, [S(3, 16, 16)])]

    class Params(OpParams):
        out: int
        k: Int2 = 3
        s: Int2 = 1
        pad: Int2 | None = None
        d: Int2 = 1
        groups: int = 1
        bias: bool = True

    def _channels(self, p, cin):
        positive(p, "out", "groups")
        if cin % p.groups:
            raise OpError(f"groups={p.groups} does not divide the {cin} input channels", arg="groups")
        if p.out % p.groups:
            raise OpError(f"groups={p.groups} does not divide out={p.out}", arg="groups")
        return p.out, p.groups


@register
class DWConv(_ConvBase):
    """Depthwise convolution (groups = channels): dwconv(k=3, s=1, pad=none (same), d=1, bias=true, mult=1).
    Output channels = input channels x mult."""

    name = "dwconv"
    samples = [({}, [S(8, 9, 9)]), ({"k": 7, "bias": False}, [S(8, 9, 9)]), ({"k": 3, "s": 2, "mult": 2}, [S(4, 9, 9)]),
               ({"k": 5, "d": 3}, [S(6, 13, 13)]), ({"k": (11, 1)}, [S(6, 13, 13)])]

    class Params(OpParams):
        k: Int2 = 3
        s: Int2 = 1
        pad: Int2 | None = None
        d: Int2 = 1
        bias: bool = True
        mult: int = 1

    def _channels(self, p, cin):
        positive(p, "mult")
        return cin * p.mult, cin
