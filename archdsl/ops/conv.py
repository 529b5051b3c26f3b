"""Convolution family: conv (plain / grouped / dilated / band), dwconv (depthwise), dcls (learnable spacings),
pconv (FasterNet's partial conv), fft_conv (a long depthwise conv by FFT) and repconv (RepVGG-style branches).
The layer classes are in conv_nn.py.

Shape rule: out = floor((H + 2*pad - d*(k-1) - 1) / s) + 1 per axis; "same" padding (the default,
pad=none) is d*(k-1)/2 and exists only when d*(k-1) is even. Cost: params = out*(in/groups)*kh*kw
(+ out for bias); MACs = out*Ho*Wo*(in/groups)*kh*kw. Costs count exact parameters; MACs count the dense
multiply-accumulates actually run (dcls: the rasterized size x size kernel; fft_conv: the equivalent direct
convolution).
"""

from __future__ import annotations

from ..shapes import Cost, Shape
from .registry import Int2, Op, OpError, OpParams, conv_geometry, odd, pair, positive, register, require_spatial

S = Shape  # short name for the test samples below

class _ConvBase(Op):
    family = "conv"
    layouts = ("nchw",)
    conv_view = True

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


@register
class DCLS(Op):
    """Dilated convolution with learnable spacings (Hassani et al., ICLR 2023):
    dcls(out=none (= C, depthwise), kernel_count=26, size=17, groups=none (= C), bias=true, positions=none).
    Each (out, in) pair has kernel_count taps at learnable positions within a size x size window, rasterized
    by bilinear interpolation into a dense kernel. Parameters: weights and 2 position coordinates per tap.
    positions="NAME": every dcls given the same name shares one tensor of positions (the authors' ConvNeXt-dcls
    shares them across a stage's blocks), counted and trained once."""

    name = "dcls"
    samples = [({"kernel_count": 5, "size": 7}, [S(4, 9, 9)]),
               ({"out": 6, "kernel_count": 3, "size": 5, "groups": 2, "bias": False}, [S(4, 9, 9)])]
    family = "conv"
    layouts = ("nchw",)

    class Params(OpParams):
        out: int | None = None
        kernel_count: int = 26
        size: int = 17
        groups: int | None = None
        bias: bool = True
        positions: str | None = None

    def geometry(self, p, cin: int) -> tuple[int, int]:
        cout = cin if p.out is None else p.out
        groups = cin if p.groups is None else p.groups
        positive(p, "kernel_count")
        odd(p, "size")
        if cout <= 0:
            raise OpError(f"out must be positive, got {cout}", arg="out")
        if groups <= 0 or cin % groups or cout % groups:
            raise OpError(f"groups={groups} must divide the {cin} input and {cout} output channels", arg="groups")
        return cout, groups

    def infer(self, p, ins):
        cout, _ = self.geometry(p, ins[0].c)
        h, w, _ = conv_geometry("dcls", ins[0], p.size, 1, None, 1)
        return Shape(cout, h, w)

    def cost(self, p, ins, out):
        cout, groups = self.geometry(p, ins[0].c)
        per = ins[0].c // groups
        return Cost(params=3 * cout * per * p.kernel_count + (cout if p.bias else 0),
                    macs=cout * per * p.size * p.size * out.h * out.w)

    def shared(self, p, ins):
        if p.positions is None:
            return {}
        cout, groups = self.geometry(p, ins[0].c)
        return {"P": (f"dcls positions {p.positions!r}", (2, cout, ins[0].c // groups, p.kernel_count), "positions")}

    def build(self, p, ins):
        from . import conv_nn as L

        cout, groups = self.geometry(p, ins[0].c)
        return L.DCLS(ins[0].c, cout, p.kernel_count, p.size, groups, p.bias)

    def reparam(self, p, ins, weights):
        """Deploy form: the taps rasterized (bilinear) into a dense size x size conv."""
        from . import conv_nn as L

        c = ins[0].c
        cout, groups = self.geometry(p, c)
        params = {"out": cout, "k": p.size, "groups": groups, "bias": p.bias}
        new = None
        if weights is not None:
            m = L.DCLS(c, cout, p.kernel_count, p.size, groups, p.bias).to(weights["weight"].dtype)
            m.load_state_dict(weights)
            new = {"weight": m.kernel().detach()}
            if p.bias:
                new["bias"] = weights["bias"]
        return "conv", params, new


@register
class PartialConv(Op):
    """FasterNet partial convolution: pconv(div=4, k=3, bias=false). A k x k conv over the first C // div
    channels; the other channels pass through untouched."""

    name = "pconv"
    samples = [({}, [S(8, 7, 7)]), ({"div": 2, "k": 5, "bias": True}, [S(6, 7, 7)])]
    family = "conv"
    layouts = ("nchw",)

    class Params(OpParams):
        div: int = 4
        k: int = 3
        bias: bool = False

    def part(self, p, c: int) -> int:
        positive(p, "div")
        odd(p, "k")
        part = c // p.div
        if part <= 0:
            raise OpError(f"div={p.div} leaves no channels to convolve out of {c}", arg="div")
        return part

    def infer(self, p, ins):
        require_spatial("pconv", ins[0])
        self.part(p, ins[0].c)
        return ins[0]

    def cost(self, p, ins, out):
        part = self.part(p, ins[0].c)
        return Cost(params=part * part * p.k * p.k + (part if p.bias else 0),
                    macs=part * part * p.k * p.k * ins[0].h * ins[0].w)

    def build(self, p, ins):
        from . import conv_nn as L

        return L.PartialConv(ins[0].c, self.part(p, ins[0].c), p.k, p.bias)


@register
class FFTConv(Op):
    """Depthwise long convolution computed with FFTs: fft_conv(k, bias=true). Same function and weights as
    dwconv(k) with 'same' zero padding; its cost does not grow with k^2 in time, only in parameters."""

    name = "fft_conv"
    samples = [({"k": 7}, [S(4, 9, 9)]), ({"k": 31, "bias": False}, [S(3, 12, 10)])]
    family = "conv"
    layouts = ("nchw",)

    class Params(OpParams):
        k: int
        bias: bool = True

    def infer(self, p, ins):
        require_spatial("fft_conv", ins[0])
        odd(p, "k")
        return ins[0]

    def cost(self, p, ins, out):
        c, hw = ins[0].c, ins[0].h * ins[0].w
        return Cost(params=c * p.k * p.k + (c if p.bias else 0), macs=c * hw * p.k * p.k)

    def build(self, p, ins):
        from . import conv_nn as L

        return L.FFTConv(ins[0].c, p.k, p.bias)


@register
class RepConv(Op):
    """RepVGG-style parallel branches (training form): repconv(out, k=3, s=1, groups=1, identity=true).
    k x k conv+BN + 1x1 conv+BN (+ an identity BN when out == in, s == 1 and identity=true), summed."""

    name = "repconv"
    samples = [({"out": 8}, [S(8, 7, 7)]), ({"out": 12, "s": 2, "groups": 2}, [S(4, 9, 9)]),
               ({"out": 8, "identity": False}, [S(8, 5, 5)])]
    family = "conv"
    layouts = ("nchw",)

    class Params(OpParams):
        out: int
        k: int = 3
        s: int = 1
        groups: int = 1
        identity: bool = True

    def has_identity(self, p, cin: int) -> bool:
        return p.identity and p.out == cin and p.s == 1

    def infer(self, p, ins):
        positive(p, "out", "s", "groups")
        odd(p, "k")
        c = ins[0].c
        if c % p.groups or p.out % p.groups:
            raise OpError(f"groups={p.groups} must divide the {c} input and {p.out} output channels", arg="groups")
        h, w, _ = conv_geometry("repconv", ins[0], p.k, p.s, None, 1)
        return Shape(p.out, h, w)

    def cost(self, p, ins, out):
        per = ins[0].c // p.groups
        params = p.out * per * (p.k * p.k + 1) + 4 * p.out + (2 * p.out if self.has_identity(p, ins[0].c) else 0)
        return Cost(params=params, macs=p.out * per * (p.k * p.k + 1) * out.h * out.w)

    def build(self, p, ins):
        from . import conv_nn as L

        return L.RepConv(ins[0].c, p.out, p.k, p.s, p.groups, self.has_identity(p, ins[0].c))

    def reparam(self, p, ins, weights):
        """Deploy form: one k x k conv with bias = k x k branch + centre-padded 1x1 branch + identity, BNs folded."""
        from . import convview as cv
        from .convview import BNParams as _BN

        c = ins[0].c
        params = {"out": p.out, "k": p.k, "s": p.s, "groups": p.groups, "bias": True}
        if weights is None:
            return "conv", params, None

        def unit(prefix, k, pad):
            bn = {key[len(prefix) + 4:]: t for key, t in weights.items() if key.startswith(prefix + ".bn.")}
            w = weights[f"{prefix}.c.weight"]
            v = cv.ConvView("conv", c, p.out, (k, k), (p.s, p.s), (pad, pad), (1, 1), p.groups, False, w,
                            w.new_zeros(p.out))
            return cv.fold_after(v, *cv.bn_affine(_BN(1e-5), bn, p.out))

        views = [unit("rbr_dense", p.k, p.k // 2), unit("rbr_1x1", 1, 0)]
        if self.has_identity(p, c):
            ident = cv.identity_view(c, p.groups, views[0].weight.dtype, True, views[0].weight.device)
            bn = {key[len("rbr_identity."):]: t for key, t in weights.items() if key.startswith("rbr_identity.")}
            views.append(cv.fold_after(ident, *cv.bn_affine(_BN(1e-5), bn, c)))
        w = sum(cv.dense(v, (p.k, p.k)) for v in views)
        b = sum(v.b for v in views)
        return "conv", params, {"weight": w, "bias": b}
