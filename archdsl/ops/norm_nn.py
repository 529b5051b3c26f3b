"""The torch half of archdsl/ops/norm.py: normalization layers (op family `norm`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layer import _bcast, recorded


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
