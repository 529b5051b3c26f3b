"""Stage 6 (accuracy side): zero-cost proxies, scores of an untrained network for very cheap screening.

Takes: an nn.Module and an input batch x (N x C x H x W; `synflow` needs only its shape). Returns: a float,
higher = better. Nothing is trained, and the module is left as it was (weights, buffers, modes, gradients).

    naswot   Mellor et al. 2021, "Neural Architecture Search without Training". Each image gets a binary code:
             for every unit feeding an activation module (ReLU, GELU, SiLU, Hardswish, ... see ACTIVATIONS),
             1 where the activation's input is > 0. K = C C^T + (1-C)(1-C)^T counts, for each pair of images,
             the units on which their codes agree; score = log|det K| (slogdet). Images the network tells apart
             give a well-conditioned K. Conventions: BatchNorm uses batch statistics (train mode, running stats
             restored afterwards), every other module runs in eval mode (no dropout), no gradients. The score
             depends on the batch; compare architectures on the same x. -inf when two codes coincide.
    synflow  Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving synaptic
             flow". Every parameter replaced by its absolute value, the module in float64 and eval mode
             (BatchNorm uses its running stats), one all-ones image (1 x C x H x W) forward, R = sum of the
             output, backward; score = log(sum over parameters of |theta * dR/dtheta|). Logarithm because the
             raw sum spans hundreds of orders of magnitude across depths; -inf when it underflows to 0.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "PROXIES", "naswot", "synflow"]

# Rectifier-like activations whose input sign is a unit's on/off state (gates such as sigmoid are left out).
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU,
                                            nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish)


def naswot(module: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the activation-pattern kernel of batch `x` (see the module docstring)."""
    acts = [m for m in module.modules() if isinstance(m, ACTIVATIONS)]
    if not acts:
        names = ", ".join(a.__name__ for a in ACTIVATIONS)
        raise ValueError(f"naswot: {type(module).__name__} has no activation module ({names})")
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_mod, inputs):  # a pre-hook: sees the input before an in-place activation overwrites it
        codes = (inputs[0].detach().reshape(n, -1) > 0).float()  # N x units
        agree = codes @ codes.T + (1 - codes) @ (1 - codes).T
        kernel.add_(agree.to(device="cpu", dtype=torch.float64))

    modes = {m: m.training for m in module.modules()}
    buffers = {k: v.detach().clone() for k, v in module.named_buffers()}
    handles = [m.register_forward_pre_hook(hook) for m in acts]
    try:
        module.eval()
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
        with torch.no_grad():
            for k, v in module.named_buffers():
                v.copy_(buffers[k])
    sign, logabsdet = torch.linalg.slogdet(kernel)
    return float(logabsdet) if sign > 0 else -math.inf


def synflow(module: nn.Module, x: torch.Tensor | Sequence[int]) -> float:
    """log of the synaptic flow sum(|theta * dR/dtheta|) for an all-ones input shaped like `x` (a tensor, or
    a shape: (C, H, W) or (N, C, H, W), of which one image is used); see the module docstring."""
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(int(d) for d in x)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"synflow: expected an input shape (C, H, W) or (N, C, H, W), got {shape}")
    params = list(module.parameters())
    if not params:
        raise ValueError(f"synflow: {type(module).__name__} has no parameters")
    device, dtype = params[0].device, params[0].dtype
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    modes = {m: m.training for m in module.modules()}
    try:
        module.double()
        module.eval()
        with torch.no_grad():
            for p in params:
                p.abs_()
                p.grad = None
        ones = torch.ones((1, *shape[1:]), dtype=torch.float64, device=device)
        with torch.enable_grad():
            module(ones).sum().backward()
        with torch.no_grad():
            total = sum(float((p * p.grad).abs().sum()) for p in params if p.grad is not None)
    finally:
        module.to(dtype)
        module.load_state_dict(state)
        for p, g in zip(params, grads):
            p.grad = g
        for m, training in modes.items():
            m.training = training
    return math.log(total) if total > 0 else -math.inf


PROXIES: dict[str, Callable[[nn.Module, torch.Tensor], float]] = {"naswot": naswot, "synflow": synflow}
