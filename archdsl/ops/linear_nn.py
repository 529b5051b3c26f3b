"""The torch half of archdsl/ops/linear.py: the linear layer and the classifier head (op family `linear`).

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
