"""Token-mixer family: inception_dw (InceptionNeXt), dilated_reparam (UniRepLKNet), gnconv (HorNet), lsconv
(LSNet), global_filter (GFNet) and fourier_unit (FFC). The layer classes are in mixers_nn.py.

inception_dw and dilated_reparam are composite in training form; the deploy passes merge them into one conv.
global_filter's MACs are its per-frequency complex products, fourier_unit's its 1x1 conv over the frequency grid
(the FFTs themselves are not counted).
"""

from __future__ import annotations

from ..shapes import Cost
from ..shapes import Shape as _Shape
from .registry import Op, OpError, OpParams, odd, register, require_spatial

S = _Shape  # short name for the test samples below

# UniRepLKNet's default branches for each large kernel size K: (kernels, dilations).
DILATED_DEFAULTS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


@register
class InceptionDW(Op):
    """InceptionNeXt token mixer: inception_dw(ratio=0.125, square=3, band=11).
    g = int(C * ratio); channels split (C-3g, g, g, g) into identity, square x square dw, 1 x band dw,
    band x 1 dw (each with bias), concatenated in that order."""

    name = "inception_dw"
    samples = [({}, [S(64, 9, 9)]), ({"ratio": 0.25, "band": 9}, [S(40, 9, 9)])]
    family = "mixer"
    layouts = ("nchw",)

    class Params(OpParams):
        ratio: float = 0.125
        square: int = 3
        band: int = 11

    def groups(self, p, c: int) -> int:
        if not 0.0 < p.ratio <= 1.0:  # (also keeps int(c * ratio) finite)
            raise OpError(f"ratio must be in (0, 1], got {p.ratio}", arg="ratio")
        g = int(c * p.ratio)
        if g <= 0:
            raise OpError(f"ratio {p.ratio} gives g = int({c} * {p.ratio}) = 0 branch channels", arg="ratio")
        if c - 3 * g < 0:
            raise OpError(f"ratio {p.ratio} leaves C - 3g = {c - 3 * g} identity channels", arg="ratio")
        for f in ("square", "band"):
            k = getattr(p, f)
            if k <= 0 or k % 2 == 0:
                raise OpError(f"{f} kernel must be odd and positive, got {k}", arg=f)
        return g

    def infer(self, p, ins):
        require_spatial("inception_dw", ins[0])
        self.groups(p, ins[0].c)
        return ins[0]

    def cost(self, p, ins, out):
        s = ins[0]
        g = self.groups(p, s.c)
        taps = p.square**2 + 2 * p.band
        return Cost(params=g * taps + 3 * g, macs=g * taps * s.h * s.w)

    def build(self, p, ins):
        from . import mixers_nn as L

        c = ins[0].c
        return L.InceptionDW(c, self.groups(p, c), p.square, p.band)


@register
class DilatedReparam(Op):
    """UniRepLKNet dilated re-param block (training form): dilated_reparam(k, kernels=default, dilations=default,
    eps=1e-5). A k x k depthwise conv (no bias) + BN plus parallel depthwise branches (kernel ki, dilation ri,
    no bias, each + BN), summed. Defaults by k follow UniRepLKNet (k in 5..17, odd)."""

    name = "dilated_reparam"
    samples = [({"k": 13}, [S(4, 16, 16)]), ({"k": 7}, [S(4, 9, 9)]),
               ({"k": 9, "kernels": (3, 5), "dilations": (3, 2)}, [S(4, 12, 12)])]
    family = "mixer"
    layouts = ("nchw",)

    class Params(OpParams):
        k: int
        kernels: tuple[int, ...] | None = None
        dilations: tuple[int, ...] | None = None
        eps: float = 1e-5

    def branches(self, p) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if p.k <= 0 or p.k % 2 == 0:
            raise OpError(f"kernel must be odd and positive, got {p.k}", arg="k")
        if p.kernels is None and p.dilations is None:
            if p.k not in DILATED_DEFAULTS:
                raise OpError(f"no default branches for k={p.k}",
                              f"give kernels= and dilations=, or use k in {sorted(DILATED_DEFAULTS)}", arg="k")
            return DILATED_DEFAULTS[p.k]
        if p.kernels is None or p.dilations is None:
            raise OpError("give both kernels= and dilations=, or neither",
                          arg="kernels" if p.kernels is None else "dilations")
        if len(p.kernels) != len(p.dilations):
            raise OpError(f"{len(p.kernels)} kernels but {len(p.dilations)} dilations", arg="dilations")
        seen = set()
        for ks, r in zip(p.kernels, p.dilations):
            if ks <= 0 or ks % 2 == 0 or r <= 0:
                raise OpError(f"branch kernel {ks} dilation {r}: kernels must be odd and positive, dilations positive",
                              arg="kernels")
            if r * (ks - 1) + 1 > p.k:
                raise OpError(f"branch kernel {ks} with dilation {r} spans {r * (ks - 1) + 1} > k={p.k}",
                              "a branch must fit inside the large kernel to be merged into it", arg="kernels")
            if (ks, r) in seen:
                raise OpError(f"branch (kernel {ks}, dilation {r}) appears twice", arg="kernels")
            seen.add((ks, r))
        return p.kernels, p.dilations

    def infer(self, p, ins):
        require_spatial("dilated_reparam", ins[0])
        self.branches(p)
        return ins[0]

    def cost(self, p, ins, out):
        s = ins[0]
        kernels, _ = self.branches(p)
        taps = p.k**2 + sum(k * k for k in kernels)
        return Cost(params=s.c * taps + 2 * s.c * (1 + len(kernels)), macs=s.c * taps * s.h * s.w)

    def build(self, p, ins):
        from . import mixers_nn as L

        kernels, dilations = self.branches(p)
        return L.DilatedReparam(ins[0].c, p.k, kernels, dilations, p.eps)

    def reparam(self, p, ins, weights):
        """Deploy form: one k x k depthwise conv with bias; each branch's BN folded in, its dilated kernel
        expanded (E[r*i, r*j] = K[i, j]) and centre-padded, all summed."""
        from . import convview as cv

        c = ins[0].c
        kernels, dilations = self.branches(p)
        w = b = None
        if weights is not None:
            bn = cv.BNParams(p.eps)
            w = weights["lk_origin.weight"].new_zeros(c, 1, p.k, p.k)
            b = w.new_zeros(c)
            parts = [("lk_origin", "origin_bn", p.k, 1)] + [
                (f"dil_conv_k{k}_{r}", f"dil_bn_k{k}_{r}", k, r) for k, r in zip(kernels, dilations)]
            for conv, norm, k, r in parts:
                v = cv.ConvView("dwconv", c, c, (k, k), (1, 1), (r * (k - 1) // 2,) * 2, (r, r), c, False,
                                weights[f"{conv}.weight"], w.new_zeros(c))
                scale, shift = cv.bn_affine(bn, {k2[len(norm) + 1:]: t for k2, t in weights.items()
                                                 if k2.startswith(norm + ".")}, c)
                v = cv.fold_after(v, scale, shift)
                w = w + cv.dense(v, (p.k, p.k))
                b = b + v.b
        return "dwconv", {"k": p.k, "bias": True}, None if w is None else {"weight": w, "bias": b}


@register
class GnConv(Op):
    """HorNet recursive gated convolution: gnconv(order=3, k=7, scale=1/3). 1x1 proj to 2C; channel dims
    C/2^(n-1) ... C; a k x k dw conv over the gate channels (times scale); recursive 1x1 convs with
    elementwise products; 1x1 proj out. C must be divisible by 2^(order-1)."""

    name = "gnconv"
    samples = [({"order": 3}, [S(16, 7, 7)]), ({"order": 1, "k": 3, "scale": 1.0}, [S(8, 5, 5)]),
               ({"order": 5}, [S(32, 7, 7)])]
    family = "mixer"
    layouts = ("nchw",)

    class Params(OpParams):
        order: int = 3
        k: int = 7
        scale: float = 1.0 / 3.0

    def dims(self, p, c: int) -> list[int]:
        if not 1 <= p.order <= 8:
            raise OpError(f"order must be in 1..8, got {p.order}", arg="order")
        odd(p, "k")
        if c % (2 ** (p.order - 1)):
            raise OpError(f"{c} channels are not divisible by 2^(order-1) = {2 ** (p.order - 1)}", arg="order")
        return [c // 2**i for i in range(p.order)][::-1]

    def infer(self, p, ins):
        require_spatial("gnconv", ins[0])
        self.dims(p, ins[0].c)
        return ins[0]

    def cost(self, p, ins, out):
        c, hw = ins[0].c, ins[0].h * ins[0].w
        dims = self.dims(p, c)
        g = sum(dims)
        pws = sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
        params = (c * 2 * c + 2 * c) + (g * p.k * p.k + g) + (c * c + c) + pws + sum(dims[1:])
        return Cost(params=params, macs=hw * (2 * c * c + g * p.k * p.k + c * c + pws))

    def build(self, p, ins):
        from . import mixers_nn as L

        self.dims(p, ins[0].c)
        return L.GnConv(ins[0].c, p.order, p.k, p.scale)


@register
class LSConv(Op):
    """LSNet large-small convolution (Wang et al., CVPR 2025): lsconv(lks=7, sks=3, groups=8).
    Large-kernel perception (1x1 -> lks x lks dw -> 1x1, conv+BN units with ReLU) predicts per-pixel
    sks x sks kernels (1x1 conv + GroupNorm), shared by channel groups (channel c uses kernel c % (C/groups));
    small-kernel aggregation applies them; then BN and the residual (x + ...), as in the authors' LSConv."""

    name = "lsconv"
    samples = [({}, [S(16, 7, 7)]), ({"lks": 5, "sks": 3, "groups": 4}, [S(8, 6, 6)])]
    family = "mixer"
    layouts = ("nchw",)

    class Params(OpParams):
        lks: int = 7
        sks: int = 3
        groups: int = 8

    def check(self, p, c: int) -> None:
        odd(p, "lks")
        odd(p, "sks")
        if c % 2 or p.groups <= 0 or c % p.groups:
            raise OpError(f"lsconv needs an even channel count divisible by groups={p.groups}, got {c}", arg="groups")

    def infer(self, p, ins):
        require_spatial("lsconv", ins[0])
        self.check(p, ins[0].c)
        return ins[0]

    def cost(self, p, ins, out):
        c, hw = ins[0].c, ins[0].h * ins[0].w
        self.check(p, c)
        half, kc = c // 2, p.sks * p.sks * c // p.groups
        params = (c * half + 2 * half) + (half * p.lks**2 + 2 * half) + (half * half + 2 * half) \
            + (half * kc + kc) + 2 * kc + 2 * c
        macs = hw * (c * half + half * p.lks**2 + half * half + half * kc + c * p.sks**2)
        return Cost(params=params, macs=macs)

    def build(self, p, ins):
        from . import mixers_nn as L

        return L.LSConv(ins[0].c, p.lks, p.sks, p.groups)


@register
class GlobalFilter(Op):
    """GFNet global filter: global_filter(). rfft2 -> a learnable complex filter per channel and frequency
    (C x H x (W//2+1) x 2 parameters, fixed to the input size) -> irfft2."""

    name = "global_filter"
    samples = [({}, [S(4, 8, 8)]), ({}, [S(3, 7, 6)])]
    family = "mixer"
    layouts = ("nchw",)

    def infer(self, p, ins):
        require_spatial("global_filter", ins[0])
        return ins[0]

    def cost(self, p, ins, out):
        s = ins[0]
        freq = s.h * (s.w // 2 + 1)
        return Cost(params=2 * s.c * freq, macs=s.c * freq * 4)

    def build(self, p, ins):
        from . import mixers_nn as L

        s = ins[0]
        return L.GlobalFilter(s.c, s.h, s.w)


@register
class FourierUnit(Op):
    """FFC's Fourier unit (Chi et al., "Fast Fourier Convolution", NeurIPS 2020): fourier_unit(out, local=false,
    eps=1e-5). rfft2 (orthonormal) of every channel; the real and imaginary parts as 2C channels (re, im of
    channel 0, then of channel 1, ...); a 1x1 conv (no bias) to 2*out, BatchNorm, ReLU; irfft2 back to H x W. A
    convolution in the frequency domain: every output position sees the whole input. local=true is FFC's local
    Fourier unit: the first C/4 channels cut into 2x2 spatial quadrants stacked on channels (top-left,
    bottom-left, top-right, bottom-right: C channels of H/2 x W/2), the unit, then the result tiled 2x2 back to
    H x W (C divisible by 4, H and W even)."""

    name = "fourier_unit"
    samples = [({"out": 4}, [S(4, 8, 8)]), ({"out": 6}, [S(3, 7, 6)]), ({"out": 8, "local": True}, [S(8, 6, 4)])]
    family = "mixer"
    layouts = ("nchw",)

    class Params(OpParams):
        out: int
        local: bool = False
        eps: float = 1e-5

    def infer(self, p, ins):
        s = ins[0]
        require_spatial("fourier_unit", s)
        if p.out <= 0:
            raise OpError(f"out must be positive, got {p.out}", arg="out")
        if p.local and (s.c % 4 or s.h % 2 or s.w % 2):
            raise OpError(f"local=true needs channels divisible by 4 and an even H and W, got {s}",
                          "the local unit stacks 2x2 quadrants of the first quarter of the channels", arg="local")
        return s.with_c(p.out)

    def cost(self, p, ins, out):
        s = ins[0]
        h, w = (s.h // 2, s.w // 2) if p.local else (s.h, s.w)
        freq = h * (w // 2 + 1)
        return Cost(params=4 * s.c * p.out + 4 * p.out, macs=4 * s.c * p.out * freq)

    def build(self, p, ins):
        from . import mixers_nn as L

        return L.FourierUnit(ins[0].c, p.out, p.eps, p.local)
