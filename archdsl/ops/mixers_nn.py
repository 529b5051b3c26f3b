"""The torch half of archdsl/ops/mixers.py: token mixers: InceptionNeXt, UniRepLKNet's dilated re-param block,
HorNet's gnconv, LSNet's lsconv, GFNet's global filter, FFC's Fourier unit (op family `mixer`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layer import recorded
from .conv_nn import ConvBN


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
class GlobalFilter(nn.Module):
    """GFNet global filter: rfft2 (orthonormal) -> learnable complex per-channel filter -> irfft2."""

    # one-shot search (search/supernet.py): the filter is a frequency grid of the input's size; a network with
    # another input size cannot take a part of it
    inelastic_dims = {"complex_weight": (1, 2, 3)}

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        self.h, self.w = h, w
        self.complex_weight = nn.Parameter(torch.randn(c, h, w // 2 + 1, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")
        xf = xf * torch.view_as_complex(self.complex_weight)
        return torch.fft.irfft2(xf, s=(self.h, self.w), dim=(2, 3), norm="ortho")


@recorded
class FourierUnit(nn.Module):
    """FFC's Fourier unit: rfft2 (orthonormal) -> (re, im) of each channel as 2C channels -> 1x1 conv to 2*out
    (no bias) -> BN -> ReLU -> back to complex -> irfft2 to the input's H x W. `local`: FFC's local unit, on the
    first C/4 channels' 2x2 quadrants stacked on channels, its output tiled 2x2."""

    def __init__(self, c: int, out: int, eps: float = 1e-5, local: bool = False):
        super().__init__()
        self.local = local
        self.conv_layer = nn.Conv2d(2 * c, 2 * out, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out, eps=eps)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.local:  # quadrants of the first quarter: [top-left, bottom-left, top-right, bottom-right]
            h, w = x.shape[2] // 2, x.shape[3] // 2
            q = x[:, : x.shape[1] // 4]
            q = torch.cat((q[:, :, :h, :w], q[:, :, h:, :w], q[:, :, :h, w:], q[:, :, h:, w:]), dim=1)
            return self._unit(q).repeat(1, 1, 2, 2)
        return self._unit(x)

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        f = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")
        f = torch.stack((f.real, f.imag), dim=2).flatten(1, 2)  # b, 2C, h, w//2+1: re, im per channel
        f = self.relu(self.bn(self.conv_layer(f)))
        f = f.unflatten(1, (-1, 2))
        return torch.fft.irfft2(torch.complex(f[:, :, 0], f[:, :, 1]), s=(h, w), dim=(2, 3), norm="ortho")
