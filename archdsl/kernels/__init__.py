"""Fused CPU inference kernels (C++ AVX2/FMA + OpenMP, compiled on first use and cached), each beside its
plain PyTorch reference.

Takes fp32 contiguous CPU tensors (NHWC activations, weights packed once by pack_dw / pack_mixer) and returns
fp32 tensors (or updates them in place, for the functions ending in ``_``). Without a C++ compiler, or with
ARCHDSL_NO_NATIVE=1, every function computes the same result with its PyTorch reference
(``native.available()`` / ``native.why_unavailable()`` say which). Inference only: no autograd.
"""

from . import library, native
from .ops import (
    PackedDW,
    PackedMixer,
    bias_act_,
    bias_act_ref_,
    dwconv_ln_nhwc,
    dwconv_ln_nhwc_ref,
    dwconv_nhwc,
    dwconv_nhwc_ref,
    layernorm_rows,
    layernorm_rows_ref,
    mixer_nhwc,
    mixer_nhwc_ref,
    pack_dw,
    pack_mixer,
    scale_channels_,
    scale_channels_ref_,
    unpack_mixer,
)

__all__ = [
    "PackedDW", "PackedMixer", "bias_act_", "bias_act_ref_", "dwconv_ln_nhwc", "dwconv_ln_nhwc_ref", "dwconv_nhwc",
    "dwconv_nhwc_ref", "layernorm_rows", "layernorm_rows_ref", "mixer_nhwc", "mixer_nhwc_ref", "native", "pack_dw",
    "pack_mixer", "scale_channels_", "scale_channels_ref_", "unpack_mixer", "library",
]
