"""Weight initialisation schemes named by a model's `init(...)` statement, applied to a built nn.Module.

Takes: the module and the graph's init dict {scheme, std, head_scale}. Returns nothing; re-initialises
convolution and linear weights in place (norms keep weight 1 / bias 0; layer scales keep their init=).
  trunc_normal  weights ~ N(0, std) truncated to [-2, 2], biases 0 (ConvNeXt, InceptionNeXt, UniRepLKNet)
  kaiming       conv weights kaiming-normal (fan_out, relu), linear weights N(0, 0.01), biases 0
                (torchvision ResNet / MobileNet)
  default       PyTorch's own initialisation (what a spec without init() gets)
head_scale multiplies the weights and bias of the last linear layer (timm's head_init_scale).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ir import INIT_SCHEMES as SCHEMES  # noqa: E402,F401  (re-exported)


def _weighted(module: nn.Module):
    from ..ops.conv_nn import DCLS, FFTConv

    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, DCLS, FFTConv)):
            yield m


@torch.no_grad()
def apply_init(module: nn.Module, init: dict | None) -> None:
    if not init or init["scheme"] == "default":
        return
    last = None
    for m in _weighted(module):
        if init["scheme"] == "trunc_normal":
            nn.init.trunc_normal_(m.weight, std=init["std"], a=-2.0, b=2.0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Linear):
            last = m
    if last is not None and init["head_scale"] != 1.0:
        last.weight.mul_(init["head_scale"])
        if last.bias is not None:
            last.bias.mul_(init["head_scale"])
