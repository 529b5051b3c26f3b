"""Test helper: a built model with random BatchNorm statistics and affine weights, layer scales and GRN parameters
(their initial values, e.g. a layer scale of 1e-6, would hide a wrong fold), in eval mode. Used by the deploy and
baseline equivalence tests."""

from __future__ import annotations

import torch

from archdsl.ops.merge_nn import LayerScale
from archdsl.ops.norm_nn import GRN


def randomize(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`m` in place, with the parameters above drawn from a generator seeded with `seed`; returns m.eval()."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.5)
            elif isinstance(mod, LayerScale):
                mod.gamma.copy_(torch.rand(mod.gamma.shape, generator=g) + 0.5)
            elif isinstance(mod, GRN):
                mod.gamma.copy_(torch.randn(mod.gamma.shape, generator=g) * 0.5)
                if mod.beta is not None:
                    mod.beta.copy_(torch.randn(mod.beta.shape, generator=g) * 0.5)
    return m.eval()
