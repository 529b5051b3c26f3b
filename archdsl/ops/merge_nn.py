"""The torch half of archdsl/ops/merge.py: layer scale, position embedding, drop path, permute, add, mul, concat,
split (op family `structure`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layer import _bcast, channel_dim, recorded


@recorded
class LayerScale(nn.Module):
    def __init__(self, c: int, init: float, layout: str):
        super().__init__()
        self.layout = layout
        self.gamma = nn.Parameter(torch.full((c,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _bcast(self.gamma, self.layout)


@recorded
class PosEmbed(nn.Module):
    """x + a learned tensor of x's shape, stored channels first (C x H x W) whatever the layout."""

    # one-shot search (search/supernet.py): the embedding is a grid of the input's size; a network with another
    # input size cannot take a part of it
    inelastic_dims = {"pos": (1, 2)}

    def __init__(self, shape: tuple[int, ...], std: float, layout: str):
        super().__init__()
        self.layout = layout
        self.pos = nn.Parameter(nn.init.trunc_normal_(torch.zeros(shape), std=std) if std > 0 else torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.pos.permute(1, 2, 0) if self.layout == "nhwc" else self.pos)


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
