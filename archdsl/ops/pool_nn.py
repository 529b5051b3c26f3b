"""The torch half of archdsl/ops/pool.py: global pooling and flatten (op family `pool`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layer import recorded


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
class Flatten(nn.Module):
    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        return x.flatten(1)
