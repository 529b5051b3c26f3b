"""The torch half of archdsl/ops/conv.py: convolution variants: DCLS, FasterNet's partial conv, FFT conv, RepVGG's
conv (op family `conv`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layer import recorded


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
class ConvBN(nn.Sequential):
    """conv (no bias) + BatchNorm, the unit of RepVGG / LSNet / RepLKNet branches."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, pad: int | None = None):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad, groups=groups,
                                       bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


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
