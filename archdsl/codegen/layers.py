"""PyTorch building blocks that the operator registry's `build` methods instantiate.

Takes: sizes and options decided by the ops (archdsl/ops/*). Returns: nn.Module classes whose
forward takes batched tensors in the layout the IR recorded ((N, C, H, W), (N, H, W, C) or (N, C)).
Depends on torch only, so emitted standalone model source can include these classes verbatim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_dim(layout: str) -> int:
    return -1 if layout in ("nhwc", "nc") else 1


def _bcast(v: torch.Tensor, layout: str) -> torch.Tensor:
    """Reshape a per-channel vector (C,) so it broadcasts over a tensor in `layout`."""
    return v.view(-1, 1, 1) if layout == "nchw" else v


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


class BatchNormNHWC(nn.BatchNorm2d):
    """BatchNorm2d applied to a channels-last (N, H, W, C) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class GroupNorm(nn.GroupNorm):
    pass


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


class Linear(nn.Linear):
    """nn.Linear over the channel dimension in any layout (channels-first runs as a 1x1 convolution)."""

    def __init__(self, cin: int, cout: int, bias: bool, layout: str):
        super().__init__(cin, cout, bias=bias)
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nchw":
            return F.conv2d(x, self.weight[:, :, None, None], self.bias)
        return F.linear(x, self.weight, self.bias)


class LayerScale(nn.Module):
    def __init__(self, c: int, init: float, layout: str):
        super().__init__()
        self.layout = layout
        self.gamma = nn.Parameter(torch.full((c,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _bcast(self.gamma, self.layout)


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


class Permute(nn.Module):
    def __init__(self, to: str):
        super().__init__()
        self.to = to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.to == "nhwc" else x.permute(0, 3, 1, 2)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mul(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class Concat(nn.Module):
    def __init__(self, layout: str):
        super().__init__()
        self.dim = channel_dim(layout)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class Split(nn.Module):
    def __init__(self, sizes: list[int], layout: str):
        super().__init__()
        self.sizes, self.dim = list(sizes), channel_dim(layout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes, dim=self.dim)


class GlobalAvgPool(nn.Module):
    def __init__(self, keepdim: bool, layout: str):
        super().__init__()
        self.keepdim, self.layout = keepdim, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (2, 3) if self.layout == "nchw" else (1, 2)
        return x.mean(dims, keepdim=self.keepdim)


class GlobalMaxPool(GlobalAvgPool):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (2, 3) if self.layout == "nchw" else (1, 2)
        return x.amax(dims, keepdim=self.keepdim)


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


class ECA(nn.Module):
    """Efficient channel attention: avg pool -> 1-D conv over channels (kernel k) -> sigmoid -> scale."""

    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))  # N, C
        s = self.conv(s.unsqueeze(1)).squeeze(1)
        return x * torch.sigmoid(s)[:, :, None, None]


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


class Identity(nn.Identity):
    pass


class Flatten(nn.Module):
    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        return x.flatten(1)
