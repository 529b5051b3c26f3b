"""The torch half of archdsl/ops/attention.py: channel attention, SE and ECA (op family `attention`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layer import recorded


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
