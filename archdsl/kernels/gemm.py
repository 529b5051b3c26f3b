"""Packed fp32 GEMM with fused epilogues for nn.Linear / 1x1 conv at inference (csrc/gemm.cpp), beside its
plain PyTorch reference.

``pack_linear(weight [N, K], bias [N] | None) -> PackedLinear`` packs the weight once (deploy time) into the
16-column panels the microkernel streams. ``linear(a [..., K], p, ...) -> [..., N]`` computes
``act(a @ W^T + bias)`` in one pass, or ``out += a @ W^T + bias`` (``accumulate=True``: fc2 straight into the
residual), optionally scaling A's columns per image on the fly (``a_scale``: GlobalResponseNorm folded into
the next linear) and returning per-image column sums of squares of the output (``sumsq_images``: GRN's
statistics, from the epilogue). GELU is the exact erf form: |native - gelu| <= 9.6e-7 (and <= 2e-7 |x|) against the
exact GELU in float64, 0 at -inf (where torch gives NaN), x itself above 5.3.

All tensors are contiguous fp32 on the CPU; threads: torch.get_num_threads(). Shapes (M, K, N) of any size; the
result does not depend on the thread count (bitwise; sumsq up to float rounding).
Without the native library (``native.lib()`` is None) every call computes the same result with PyTorch.
Inference only: no autograd.
"""

from __future__ import annotations

import ctypes
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from .ops import gelu_ref

ACTS = {"none": 0, "relu": 1, "gelu": 2}
NR = 16  # columns per packed panel

_P, _I, _I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
_SIGNATURES = {
    # a, m, k, lda, packed b, bias, n, c, ldc, act, accumulate, a_scale, rows_per_image, sumsq, threads
    "ak_gemm_f32": (_P, _I64, _I, _I64, _P, _P, _I, _P, _I64, _I, _I, _P, _I64, _P, _I),
    "ak_gemm_pack_b": (_P, _I, _I, _P),
    "ak_gemm_set_blocking": (_I, _I, _I),
}
_bound: dict[int, ctypes.CDLL | None] = {}


def _lib() -> ctypes.CDLL | None:
    """native.lib() with this module's symbols typed (once per loaded library), or None."""
    lib = native.lib()
    if lib is None:
        return None
    if id(lib) not in _bound:
        try:
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, None
        except AttributeError as e:  # a library built without csrc/gemm.cpp
            warnings.warn(f"archdsl native GEMM unavailable ({e}); using PyTorch", RuntimeWarning, stacklevel=3)
            _bound[id(lib)] = None
        else:
            _bound[id(lib)] = lib
    return _bound[id(lib)]


@dataclass(frozen=True, slots=True)
class PackedLinear:
    """A linear layer packed for the kernel: panels [ceil(N/16), K, 16] (B = weight^T in 16-column panels, the
    last zero padded) and bias [ceil(N/16) * 16] (zero padded) or None."""

    panels: Tensor
    bias: Tensor | None
    in_features: int
    out_features: int

    def torch_weight(self) -> tuple[Tensor, Tensor | None]:
        """Back to nn.Linear's layout: (weight [N, K], bias [N] or None)."""
        n, k = self.out_features, self.in_features
        w = self.panels.transpose(1, 2).reshape(self.panels.shape[0] * NR, k)[:n]
        return w, (None if self.bias is None else self.bias[:n])


def _check(t: Tensor, name: str) -> None:
    if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous float32 CPU tensor, got {t.dtype} {t.device} "
                         f"contiguous={t.is_contiguous()}")


def pack_linear(weight: Tensor, bias: Tensor | None = None) -> PackedLinear:
    """Pack an nn.Linear weight [N, K] (or a 1x1 conv weight [N, K, 1, 1]) and bias [N] or None."""
    w = weight.detach().float().reshape(weight.shape[0], -1).contiguous()
    n, k = w.shape
    panels = -(-n // NR)
    lib = _lib()
    if lib is not None and n and k:
        packed = torch.empty(panels, k, NR)
        lib.ak_gemm_pack_b(w.data_ptr(), n, k, packed.data_ptr())
    else:
        wp = torch.zeros(panels * NR, k)
        wp[:n] = w
        packed = wp.view(panels, NR, k).transpose(1, 2).contiguous()
    b = None
    if bias is not None:
        if tuple(bias.shape) != (n,):
            raise ValueError(f"bias must be [{n}], got {tuple(bias.shape)}")
        b = torch.zeros(panels * NR)
        b[:n] = bias.detach().float()
    return PackedLinear(packed, b, k, n)


def _images(m: int, n_images: int, rows_per_image: int, what: str) -> int:
    """rows_per_image (derived from n_images when 0), checked to split m rows into n_images images."""
    rpi = rows_per_image or (m // n_images if n_images else 0)
    if n_images <= 0 or rpi <= 0 or rpi * n_images != m:
        raise ValueError(f"{what}: {m} rows do not split into {n_images} images of "
                         f"{rows_per_image or 'M / n'} rows")
    return rpi


def linear(a: Tensor, p: PackedLinear, act: str = "none", out: Tensor | None = None, accumulate: bool = False,
           a_scale: Tensor | None = None, rows_per_image: int = 0,
           sumsq_images: int = 0) -> Tensor | tuple[Tensor, Tensor]:
    """act(a @ W^T + bias) for a [..., K] -> [..., N]; act "none" | "relu" | "gelu" (exact erf form).

    out: the result tensor (shape [..., N], contiguous, not overlapping a), else a new one.
    accumulate=True (act "none", out required): out += a @ W^T + bias (fc2 into the residual).
    a_scale [n, K]: row i of a is multiplied by a_scale[i // rows_per_image] (rows_per_image = rows / n when 0).
    sumsq_images = n > 0: also return the per-image column sums of squares of the result, [n, N]
    (GlobalResponseNorm's statistics), i.e. return (out, sumsq)."""
    _check(a, "a")
    k, n = p.in_features, p.out_features
    if a.dim() == 0 or a.shape[-1] != k:
        raise ValueError(f"a must be [..., {k}], got {tuple(a.shape)}")
    code = ACTS.get(act)
    if code is None:
        raise ValueError(f"act must be one of {sorted(ACTS)}, got {act!r}")
    shape = (*a.shape[:-1], n)
    m = math.prod(a.shape[:-1])
    if accumulate:
        if act != "none":
            raise ValueError(f"accumulate=True needs act='none', got {act!r}")
        if out is None:
            raise ValueError("accumulate=True needs out")
    if out is None:
        out = torch.empty(shape)
    else:
        _check(out, "out")
        if tuple(out.shape) != shape:
            raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
        if out.numel() and a.numel() and out.untyped_storage().data_ptr() == a.untyped_storage().data_ptr():
            raise ValueError("out must not share memory with a (the kernel reads a while it writes out)")
    rpi = 0
    if a_scale is not None:
        _check(a_scale, "a_scale")
        if a_scale.dim() != 2 or a_scale.shape[1] != k:
            raise ValueError(f"a_scale must be [n_images, {k}], got {tuple(a_scale.shape)}")
        rpi = _images(m, a_scale.shape[0], rows_per_image, "a_scale")
    if sumsq_images:
        srpi = _images(m, sumsq_images, rows_per_image, "sumsq_images")
        if rpi and srpi != rpi:
            raise ValueError(f"a_scale has {a_scale.shape[0]} images but sumsq_images={sumsq_images}")
        rpi = srpi
    lib = _lib()
    if lib is None or m == 0 or k == 0 or n == 0:
        w, b = p.torch_weight()
        s = linear_ref(a, w, b, act, out, accumulate, a_scale, rpi, sumsq_images)
        return out if s is None else (out, s)
    s = torch.empty(sumsq_images, n) if sumsq_images else None
    lib.ak_gemm_f32(a.data_ptr(), m, k, k, p.panels.data_ptr(), None if p.bias is None else p.bias.data_ptr(), n,
                    out.data_ptr(), n, code, int(accumulate), None if a_scale is None else a_scale.data_ptr(), rpi,
                    None if s is None else s.data_ptr(), torch.get_num_threads())
    return out if s is None else (out, s)


def linear_ref(a: Tensor, weight: Tensor, bias: Tensor | None = None, act: str = "none", out: Tensor | None = None,
               accumulate: bool = False, a_scale: Tensor | None = None, rows_per_image: int = 0,
               sumsq_images: int = 0) -> Tensor | None:
    """Reference of linear() from the unpacked weight [N, K]: writes out (required) and returns the sumsq
    tensor [sumsq_images, N], or None."""
    k, n = weight.shape[1], weight.shape[0]
    m = math.prod(a.shape[:-1])
    a2 = a.reshape(m, k)
    if a_scale is not None:
        rpi = rows_per_image or m // a_scale.shape[0]
        a2 = (a2.view(-1, rpi, k) * a_scale[:, None, :]).view(m, k)
    y = F.linear(a2, weight, bias)
    o = out.view(m, n)
    if accumulate:
        o.add_(y)
    elif act == "gelu":
        o.copy_(gelu_ref(y))
    elif act == "relu":
        o.copy_(F.relu(y))
    else:
        o.copy_(y)
    if not sumsq_images:
        return None
    return o.reshape(sumsq_images, m // sumsq_images, n).square().sum(1)
