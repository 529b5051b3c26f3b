"""Modern ConvNet operator families: dcls (learnable spacings), gnconv (HorNet), lsconv (LSNet),
pconv (FasterNet), fft_conv and global_filter (FFT long convolutions), repconv (RepVGG-style branches),
pixel_shuffle / space_to_depth, and the classifier head.

Each op's cost counts exact parameters; MACs count the dense multiply-accumulates actually run (DCLS:
the rasterized size x size kernel; FFT ops: the equivalent direct convolution for fft_conv, and the
per-frequency complex products for global_filter).
"""

from __future__ import annotations

from ..shapes import Cost, Shape
from .conv import conv_geometry
from .registry import Op, OpError, OpParams, positive, register, require_spatial

S = Shape  # short name for the test samples below


def _odd(p, field: str) -> int:
    v = getattr(p, field)
    if v <= 0 or v % 2 == 0:
        raise OpError(f"{field} must be odd and positive, got {v}", arg=field)
    return v


@register
class DCLS(Op):
    """Dilated convolution with learnable spacings (Hassani et al., ICLR 2023):
    dcls(out=none (= C, depthwise), kernel_count=26, size=17, groups=none (= C), bias=true).
    Each (out, in) pair has kernel_count taps at learnable positions within a size x size window, rasterized
    by bilinear interpolation into a dense kernel. Parameters: weights and 2 position coordinates per tap."""

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

    def geometry(self, p, cin: int) -> tuple[int, int]:
        cout = cin if p.out is None else p.out
        groups = cin if p.groups is None else p.groups
        positive(p, "kernel_count")
        _odd(p, "size")
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

    def build(self, p, ins):
        from ..codegen import layers as L

        cout, groups = self.geometry(p, ins[0].c)
        return L.DCLS(ins[0].c, cout, p.kernel_count, p.size, groups, p.bias)

    def reparam(self, p, ins, weights):
        """Deploy form: the taps rasterized (bilinear) into a dense size x size conv."""
        from ..codegen import layers as L

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
        _odd(p, "k")
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
        from ..codegen import layers as L

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
        _odd(p, "lks")
        _odd(p, "sks")
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
        from ..codegen import layers as L

        return L.LSConv(ins[0].c, p.lks, p.sks, p.groups)


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
        _odd(p, "k")
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
        from ..codegen import layers as L

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
        _odd(p, "k")
        return ins[0]

    def cost(self, p, ins, out):
        c, hw = ins[0].c, ins[0].h * ins[0].w
        return Cost(params=c * p.k * p.k + (c if p.bias else 0), macs=c * hw * p.k * p.k)

    def build(self, p, ins):
        from ..codegen import layers as L

        return L.FFTConv(ins[0].c, p.k, p.bias)


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
        from ..codegen import layers as L

        s = ins[0]
        return L.GlobalFilter(s.c, s.h, s.w)


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
        _odd(p, "k")
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
        from ..codegen import layers as L

        return L.RepConv(ins[0].c, p.out, p.k, p.s, p.groups, self.has_identity(p, ins[0].c))

    def reparam(self, p, ins, weights):
        """Deploy form: one k x k conv with bias = k x k branch + centre-padded 1x1 branch + identity, BNs folded."""
        from . import convview as cv
        from .mixers import _BN

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
            ident = cv.identity_view(c, p.groups, views[0].weight.dtype, True)
            bn = {key[len("rbr_identity."):]: t for key, t in weights.items() if key.startswith("rbr_identity.")}
            views.append(cv.fold_after(ident, *cv.bn_affine(_BN(1e-5), bn, c)))
        w = sum(cv.dense(v, (p.k, p.k)) for v in views)
        b = sum(v.b for v in views)
        return "conv", params, {"weight": w, "bias": b}


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


@register
class Classifier(Op):
    """Classifier head: classifier(classes=1000, drop=0.0). Global average pool (if the input is spatial),
    dropout, linear."""

    name = "classifier"
    samples = [({"classes": 10}, [S(8, 3, 3)]), ({"classes": 5, "drop": 0.2}, [S.vector(8)])]
    family = "linear"
    layouts = ("nchw", "nc")

    class Params(OpParams):
        classes: int = 1000
        drop: float = 0.0

    def infer(self, p, ins):
        positive(p, "classes")
        if not 0.0 <= p.drop < 1.0:
            raise OpError(f"drop must be in [0, 1), got {p.drop}", arg="drop")
        return Shape.vector(p.classes)

    def cost(self, p, ins, out):
        c = ins[0].c
        return Cost(params=c * p.classes + p.classes, macs=c * p.classes)

    def build(self, p, ins):
        from ..codegen import layers as L

        return L.Classifier(ins[0].c, p.classes, p.drop, not ins[0].spatial)
