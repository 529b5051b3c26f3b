"""The torch half of archdsl/ops/dynamic.py: involution (op family `dynamic`).

Takes: sizes decided by the family's ops. Returns: nn.Module classes whose forward takes batched tensors in the
layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into standalone source
(codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layer import recorded


class _ConvModule(nn.Module):
    """mmcv's ConvModule as the authors' involution uses it: conv, then BN and ReLU when asked."""

    def __init__(self, cin: int, cout: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=not norm)
        self.bn = nn.BatchNorm2d(cout) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.bn is None else F.relu(self.bn(x))


@recorded
class Involution(nn.Module):
    """Kernels generated per position (conv1: 1x1 to C/r + BN + ReLU; conv2: 1x1 to k*k*groups), applied to the
    k x k neighbourhoods of each group's channels (unfolded at stride s)."""

    def __init__(self, c: int, k: int, s: int, groups: int, reduced: int):
        super().__init__()
        self.k, self.s, self.groups = k, s, groups
        self.conv1 = _ConvModule(c, reduced, norm=True)
        self.conv2 = _ConvModule(reduced, k * k * groups, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        src = x if self.s == 1 else F.avg_pool2d(x, self.s, self.s)
        weight = self.conv2(self.conv1(src))
        ho, wo = weight.shape[2:]
        weight = weight.view(b, self.groups, 1, self.k * self.k, ho, wo)
        cols = F.unfold(x, self.k, padding=(self.k - 1) // 2, stride=self.s)
        cols = cols.view(b, self.groups, c // self.groups, self.k * self.k, ho, wo)
        return (weight * cols).sum(dim=3).view(b, c, ho, wo)
