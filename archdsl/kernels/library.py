"""The kernels as torch custom ops (``torch.ops.archdsl.*``), so they can appear in torch.compile / export graphs.

Takes plain tensors (packed weights as produced by ``pack_dw`` / ``pack_mixer``) and returns tensors; each op
runs the ctypes wrapper of archdsl.kernels.ops (or its PyTorch fallback) and has a fake (meta) implementation
that gives output shapes. Inference only: no op has a backward. The runtime calls the wrappers directly, which
skips the dispatcher; these registrations are for graphs.

    torch.ops.archdsl.dwconv_nhwc(x, weight, bias, stride, pad, dilation, act) -> y
    torch.ops.archdsl.dwconv_ln_nhwc(x, weight, bias, gamma, beta, eps) -> y
    torch.ops.archdsl.dwconv_ln_resid_nhwc(x, weight, bias, gamma, beta, eps, resid_bias) -> (y, resid)
    torch.ops.archdsl.mixer_nhwc(x, desc, wbuf, bbuf, act) -> y
    torch.ops.archdsl.layernorm_rows(x, gamma, beta, eps) -> y
    torch.ops.archdsl.bias_act_(h, bias, act, sumsq_images) -> sumsq ([n, N]; [0] when sumsq_images == 0)
    torch.ops.archdsl.scale_channels_(x, s) -> ()
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import ops


def _packed(weight: Tensor, bias: Tensor | None, channels: int) -> ops.PackedDW:
    return ops.PackedDW(weight, bias, weight.shape[1], weight.shape[2], channels)


def _dw_out_shape(x: Tensor, weight: Tensor, stride, pad, dilation) -> tuple[int, int, int, int]:
    n, h, w, c = x.shape
    kh, kw = weight.shape[1], weight.shape[2]
    return (n, (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1,
            (w + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1, c)


@torch.library.custom_op("archdsl::dwconv_nhwc", mutates_args=())
def dwconv_nhwc(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], pad: list[int],
                dilation: list[int], act: str) -> Tensor:
    return ops.dwconv_nhwc(x, _packed(weight, bias, x.shape[-1]), None, stride, pad, dilation, act)


@dwconv_nhwc.register_fake
def _(x, weight, bias, stride, pad, dilation, act):
    return x.new_empty(_dw_out_shape(x, weight, stride, pad, dilation))


@torch.library.custom_op("archdsl::dwconv_ln_nhwc", mutates_args=())
def dwconv_ln_nhwc(x: Tensor, weight: Tensor, bias: Tensor | None, gamma: Tensor | None, beta: Tensor | None,
                   eps: float) -> Tensor:
    return ops.dwconv_ln_nhwc(_packed(weight, bias, x.shape[-1]), x, gamma, beta, eps)


@dwconv_ln_nhwc.register_fake
def _(x, weight, bias, gamma, beta, eps):
    return torch.empty_like(x)


@torch.library.custom_op("archdsl::dwconv_ln_resid_nhwc", mutates_args=())
def dwconv_ln_resid_nhwc(x: Tensor, weight: Tensor, bias: Tensor | None, gamma: Tensor | None, beta: Tensor | None,
                         eps: float, resid_bias: Tensor) -> tuple[Tensor, Tensor]:
    return ops.dwconv_ln_nhwc(_packed(weight, bias, x.shape[-1]), x, gamma, beta, eps, resid_bias)


@dwconv_ln_resid_nhwc.register_fake
def _(x, weight, bias, gamma, beta, eps, resid_bias):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("archdsl::mixer_nhwc", mutates_args=())
def mixer_nhwc(x: Tensor, desc: Tensor, wbuf: Tensor, bbuf: Tensor, act: str) -> Tensor:
    return ops.mixer_nhwc(x, ops.unpack_mixer(desc, wbuf, bbuf), act)


@mixer_nhwc.register_fake
def _(x, desc, wbuf, bbuf, act):
    return torch.empty_like(x)


@torch.library.custom_op("archdsl::layernorm_rows", mutates_args=())
def layernorm_rows(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float) -> Tensor:
    return ops.layernorm_rows(x, gamma, beta, eps)


@layernorm_rows.register_fake
def _(x, gamma, beta, eps):
    return torch.empty_like(x)


@torch.library.custom_op("archdsl::bias_act_", mutates_args=("h",))
def bias_act_(h: Tensor, bias: Tensor | None, act: str, sumsq_images: int) -> Tensor:
    r = ops.bias_act_(h, bias, act, sumsq_images)
    return r[1] if sumsq_images else h.new_empty(0)


@bias_act_.register_fake
def _(h, bias, act, sumsq_images):
    return h.new_empty((sumsq_images, h.shape[-1]) if sumsq_images else (0,))


@torch.library.custom_op("archdsl::scale_channels_", mutates_args=("x",))
def scale_channels_(x: Tensor, s: Tensor) -> None:
    ops.scale_channels_(x, s)


@scale_channels_.register_fake
def _(x, s):
    return None
