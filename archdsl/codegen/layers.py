"""PyTorch building blocks that the operator registry's `build` methods instantiate.

Takes: sizes and options decided by the ops (archdsl/ops/*). Returns: nn.Module classes whose
forward takes batched tensors in the layout the IR recorded ((N, C, H, W), (N, H, W, C) or (N, C)).
Depends on torch only, so emitted standalone model source can include these classes verbatim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def recorded(cls):
    """Class decorator: remember each instance's constructor arguments (the source emitter writes them back)."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self) is cls:
            self._archdsl_ctor = (args, kwargs)

    __init__.__wrapped__ = init
    cls.__init__ = __init__
    return cls


def channel_dim(layout: str) -> int:
    return -1 if layout in ("nhwc", "nc") else 1


def _bcast(v: torch.Tensor, layout: str) -> torch.Tensor:
    """Reshape a per-channel vector (C,) so it broadcasts over a tensor in `layout`."""
    return v.view(-1, 1, 1) if layout == "nchw" else v


@recorded
class LayerNorm(nn.LayerNorm):
    """LayerNorm over channels in any layout (channels-first via permute, like timm's LayerNorm2d)."""

    def __init__(self, c: int, eps: float, affine: bool, bias: bool, layout: str):
        super().__init__(c, eps=eps, elementwise_affine=affine, bias=bias)
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nchw":
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


@recorded
class BatchNormNHWC(nn.BatchNorm2d):
    """BatchNorm2d applied to a channels-last (N, H, W, C) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@recorded
class GroupNorm(nn.GroupNorm):
    pass


@recorded
class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt-V2 / UniRepLKNet): (gamma * Nx + 1) * x + beta."""

    def __init__(self, c: int, eps: float, bias: bool, layout: str):
        super().__init__()
        self.eps, self.layout = eps, layout
        self.gamma = nn.Parameter(torch.zeros(c))
        self.beta = nn.Parameter(torch.zeros(c)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nchw":
            gx = torch.norm(x, p=2, dim=(2, 3), keepdim=True)  # N,C,1,1
            nx = gx / (gx.mean(dim=1, keepdim=True) + self.eps)
        else:
            gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # N,1,1,C
            nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        out = (_bcast(self.gamma, self.layout) * nx + 1) * x
        return out if self.beta is None else out + _bcast(self.beta, self.layout)


@recorded
class Linear(nn.Linear):
    """nn.Linear over the channel dimension in any layout (channels-first runs as a 1x1 convolution)."""

    def __init__(self, cin: int, cout: int, bias: bool, layout: str):
        super().__init__(cin, cout, bias=bias)
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nchw":
            return F.conv2d(x, self.weight[:, :, None, None], self.bias)
        return F.linear(x, self.weight, self.bias)


@recorded
class LayerScale(nn.Module):
    def __init__(self, c: int, init: float, layout: str):
        super().__init__()
        self.layout = layout
        self.gamma = nn.Parameter(torch.full((c,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _bcast(self.gamma, self.layout)


@recorded
class DropPath(nn.Module):
    """Stochastic depth: drops the whole sample's branch with probability p while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


@recorded
class Permute(nn.Module):
    def __init__(self, to: str):
        super().__init__()
        self.to = to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.to == "nhwc" else x.permute(0, 3, 1, 2)


@recorded
class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@recorded
class Mul(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


@recorded
class Concat(nn.Module):
    def __init__(self, layout: str):
        super().__init__()
        self.dim = channel_dim(layout)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


@recorded
class Split(nn.Module):
    def __init__(self, sizes: list[int], layout: str):
        super().__init__()
        self.sizes, self.dim = list(sizes), channel_dim(layout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes, dim=self.dim)


@recorded
class GlobalAvgPool(nn.Module):
    def __init__(self, keepdim: bool, layout: str):
        super().__init__()
        self.keepdim, self.layout = keepdim, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (2, 3) if self.layout == "nchw" else (1, 2)
        return x.mean(dims, keepdim=self.keepdim)


@recorded
class GlobalMaxPool(GlobalAvgPool):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (2, 3) if self.layout == "nchw" else (1, 2)
        return x.amax(dims, keepdim=self.keepdim)


@recorded
class SE(nn.Module):
    """Squeeze-and-excitation: avg pool -> 1x1 conv (down) -> act -> 1x1 conv (up) -> gate -> scale."""

    def __init__(self, c: int, hidden: int, bias: bool, act: nn.Module, gate: nn.Module):
        super().__init__()
        self.down = nn.Conv2d(c, hidden, 1, bias=bias)
        self.act = act
        self.up = nn.Conv2d(hidden, c, 1, bias=bias)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.up(self.act(self.down(s))))


@recorded
class ECA(nn.Module):
    """Efficient channel attention: avg pool -> 1-D conv over channels (kernel k) -> sigmoid -> scale."""

    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))  # N, C
        s = self.conv(s.unsqueeze(1)).squeeze(1)
        return x * torch.sigmoid(s)[:, :, None, None]


@recorded
class InceptionDW(nn.Module):
    """InceptionNeXt token mixer: split C into (C-3g, g, g, g) -> identity, k x k, 1 x band, band x 1 dw."""

    def __init__(self, c: int, g: int, square: int, band: int):
        super().__init__()
        self.dwconv_hw = nn.Conv2d(g, g, square, padding=square // 2, groups=g)
        self.dwconv_w = nn.Conv2d(g, g, (1, band), padding=(0, band // 2), groups=g)
        self.dwconv_h = nn.Conv2d(g, g, (band, 1), padding=(band // 2, 0), groups=g)
        self.split_indexes = (c - 3 * g, g, g, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_indexes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)


@recorded
class DilatedReparam(nn.Module):
    """UniRepLKNet dilated re-param block (training form): K x K dw conv + BN, plus dilated dw branches + BN."""

    def __init__(self, c: int, k: int, kernels: tuple[int, ...], dilations: tuple[int, ...], eps: float):
        super().__init__()
        self.lk_origin = nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
        self.origin_bn = nn.BatchNorm2d(c, eps=eps)
        self.kernels, self.dilations = tuple(kernels), tuple(dilations)
        for ks, r in zip(self.kernels, self.dilations):
            pad = (r * (ks - 1) + 1) // 2
            self.add_module(f"dil_conv_k{ks}_{r}", nn.Conv2d(c, c, ks, padding=pad, dilation=r, groups=c, bias=False))
            self.add_module(f"dil_bn_k{ks}_{r}", nn.BatchNorm2d(c, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.origin_bn(self.lk_origin(x))
        for ks, r in zip(self.kernels, self.dilations):
            conv = self.__getattr__(f"dil_conv_k{ks}_{r}")
            bn = self.__getattr__(f"dil_bn_k{ks}_{r}")
            out = out + bn(conv(x))
        return out


@recorded
class Identity(nn.Identity):
    pass


@recorded
class Flatten(nn.Module):
    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        return x.flatten(1)


# ---------------------------------------------------------------- modern ConvNet operator families


@recorded
class DCLS(nn.Module):
    """Dilated convolution with learnable spacings (Hassani et al.): `kernel_count` taps per (out, in) pair,
    each at a learnable real-valued position inside a size x size window, rasterized by bilinear
    interpolation into a dense kernel, then a plain convolution."""

    def __init__(self, cin: int, cout: int, kernel_count: int, size: int, groups: int, bias: bool):
        super().__init__()
        self.size, self.groups = size, groups
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, kernel_count))
        self.P = nn.Parameter(torch.empty(2, cout, cin // groups, kernel_count))  # (row, col) offsets from centre
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[1] * self.weight.shape[2]
        bound = 1.0 / fan_in**0.5
        nn.init.uniform_(self.weight, -bound, bound)
        lim = (self.size - 1) / 2
        nn.init.uniform_(self.P, -lim, lim)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def kernel(self) -> torch.Tensor:
        """The dense (out, in/groups, size, size) kernel the taps rasterize to."""
        lim = (self.size - 1) / 2
        pos = self.P.clamp(-lim, lim) + lim  # in [0, size-1]
        p0 = pos.floor().clamp(max=self.size - 2) if self.size > 1 else pos.floor()
        frac = pos - p0  # bilinear weights
        r0, c0 = p0[0].long(), p0[1].long()
        fr, fc = frac[0], frac[1]
        o, i, _ = self.weight.shape
        dense = self.weight.new_zeros(o, i, self.size * self.size)
        w = self.weight
        corners = ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc))
        for dr, dc, coef in corners:
            r = (r0 + dr).clamp(max=self.size - 1)
            c = (c0 + dc).clamp(max=self.size - 1)
            dense = dense.scatter_add(2, r * self.size + c, w * coef)
        return dense.view(o, i, self.size, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), self.bias, padding=self.size // 2, groups=self.groups)


@recorded
class GnConv(nn.Module):
    """HorNet recursive gated convolution of order n (g^n Conv)."""

    def __init__(self, dim: int, order: int, k: int, scale: float):
        super().__init__()
        self.order, self.scale = order, scale
        self.dims = [dim // 2**i for i in range(order)][::-1]  # C/2^(n-1) ... C
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), k, padding=k // 2, groups=sum(self.dims))
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList([nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        dw = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = pwa * dw[0]
        for i in range(self.order - 1):
            x = self.pws[i](x) * dw[i + 1]
        return self.proj_out(x)


@recorded
class ConvBN(nn.Sequential):
    """conv (no bias) + BatchNorm, the unit of RepVGG / LSNet / RepLKNet branches."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, pad: int | None = None):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad, groups=groups,
                                       bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


def ska(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """LSNet small-kernel aggregation: out[b,c] = sum_k unfold(x)[b,c,k] * w[b, c % G, k] (per-pixel kernels)."""
    b, c, h, wd = x.shape
    g, k2 = w.shape[1], w.shape[2]
    ks = int(round(k2**0.5))
    cols = F.unfold(x, ks, padding=(ks - 1) // 2).view(b, c // g, g, k2, h, wd)
    return (cols * w.unsqueeze(1)).sum(3).view(b, c, h, wd)


@recorded
class LSConv(nn.Module):
    """LSNet "see large, focus small" conv: large-kernel perception (LKP) predicts per-pixel sks x sks kernels,
    small-kernel aggregation (SKA) applies them; then BN and the residual, as in the authors' LSConv."""

    def __init__(self, dim: int, lks: int, sks: int, groups: int):
        super().__init__()
        half = dim // 2
        self.sks, self.groups, self.dim = sks, groups, dim
        self.cv1 = ConvBN(dim, half)
        self.act = nn.ReLU()
        self.cv2 = ConvBN(half, half, lks, groups=half)
        self.cv3 = ConvBN(half, half)
        self.cv4 = nn.Conv2d(half, sks * sks * dim // groups, 1)
        self.norm = nn.GroupNorm(dim // groups, sks * sks * dim // groups)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.cv3(self.cv2(self.act(self.cv1(x)))))
        w = self.norm(self.cv4(y))
        b, _, h, wd = w.shape
        w = w.view(b, self.dim // self.groups, self.sks * self.sks, h, wd)
        return self.bn(ska(x, w)) + x


@recorded
class PartialConv(nn.Module):
    """FasterNet partial convolution: a k x k conv on the first C/div channels, the rest untouched."""

    def __init__(self, dim: int, part: int, k: int, bias: bool):
        super().__init__()
        self.part = part
        self.partial_conv = nn.Conv2d(part, part, k, padding=k // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, (self.part, x.shape[1] - self.part), dim=1)
        return torch.cat((self.partial_conv(x1), x2), dim=1)


@recorded
class FFTConv(nn.Module):
    """A depthwise k x k convolution ('same' zero padding) computed with FFTs: long convolutions at a cost
    independent of k. Same weights as nn.Conv2d(C, C, k, groups=C)."""

    def __init__(self, c: int, k: int, bias: bool):
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.empty(c, 1, k, k))
        self.bias = nn.Parameter(torch.empty(c)) if bias else None
        ref = nn.Conv2d(c, c, k, groups=c, bias=bias)  # PyTorch's default init, for the same statistics
        with torch.no_grad():
            self.weight.copy_(ref.weight)
            if bias:
                self.bias.copy_(ref.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.k // 2
        fh, fw = h + self.k - 1, w + self.k - 1  # linear (not circular) convolution size
        xf = torch.fft.rfft2(x, s=(fh, fw))
        # cross-correlation = convolution with the flipped kernel
        kf = torch.fft.rfft2(self.weight[:, 0].flip(-1, -2), s=(fh, fw))
        # full linear convolution has length h + k - 1; the 'same' window starts at k // 2
        y = torch.fft.irfft2(xf * kf, s=(fh, fw))[..., p:p + h, p:p + w]
        return y if self.bias is None else y + self.bias.view(-1, 1, 1)


@recorded
class GlobalFilter(nn.Module):
    """GFNet global filter: rfft2 (orthonormal) -> learnable complex per-channel filter -> irfft2."""

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        self.h, self.w = h, w
        self.complex_weight = nn.Parameter(torch.randn(c, h, w // 2 + 1, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")
        xf = xf * torch.view_as_complex(self.complex_weight)
        return torch.fft.irfft2(xf, s=(self.h, self.w), dim=(2, 3), norm="ortho")


@recorded
class RepConv(nn.Module):
    """RepVGG-style block (training form): k x k conv+BN, 1x1 conv+BN and (when shapes allow) an identity BN,
    summed. Re-parameterizes into one k x k conv with bias."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int, identity: bool):
        super().__init__()
        self.rbr_dense = ConvBN(cin, cout, k, stride, groups)
        self.rbr_1x1 = ConvBN(cin, cout, 1, stride, groups, pad=0)
        self.rbr_identity = nn.BatchNorm2d(cout) if identity else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        return out if self.rbr_identity is None else out + self.rbr_identity(x)


@recorded
class Classifier(nn.Module):
    """Classifier head: global average pool -> dropout -> linear."""

    def __init__(self, c: int, classes: int, drop: float, pooled: bool):
        super().__init__()
        self.pooled = pooled
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pooled:
            x = x.mean((2, 3))
        return self.fc(self.drop(x))
