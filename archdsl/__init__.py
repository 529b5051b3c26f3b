"""archdsl: a declarative architecture language and hardware-aware NAS engine for modern ConvNets.

Public API (torch is imported only when a model is built):
    archdsl.check_file(path, **overrides) -> ArchGraph  parse + elaborate + check a .arch file
    archdsl.load(path, **overrides) -> nn.Module         the training-form model of a .arch file
                                                         (weights=FILE: with trained weights, e.g. archdsl train's)
    archdsl.build(text, **overrides) -> nn.Module        the same, from spec text
    archdsl.deploy(module) -> nn.Module                  the inference form of a (trained) training-form model:
                                                         BN folded, branches merged, same function in eval mode
load/build take form="deploy" to get the inference form directly, form="fast" for its measured fused-kernel
runtime (archdsl.deploy(module, kernels="auto")).
Overrides fix model parameters or choice points by name; names that are not Python identifiers
(e.g. 'stages.2.blocks.5.k') go in `overrides={...}`. Every mistake in a spec raises `ArchError`.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ArchError
from .version import __version__


def check_file(path: str | os.PathLike, overrides: dict[str, Any] | None = None, *,
               input_shape: tuple[int, int, int] | None = None, model: str | None = None, **kw: Any):
    """The checked ArchGraph of a .arch file (shapes, exact costs, choice points)."""
    from . import api

    return api.check_file(path, {**(overrides or {}), **kw}, input_shape, model)


def _module(graph, form: str = "train", max_memory: int | str | None = None, weights=None):
    from .api import require_resolved
    from .codegen.module import build_module

    if form not in ("train", "deploy", "fast"):
        raise ValueError(f"form must be 'train', 'deploy' or 'fast', got {form!r}")
    require_resolved(graph)
    m = build_module(graph, max_memory)
    if weights is not None:
        from .weights import load_weights

        load_weights(m, weights)
    if form == "train":
        return m
    return deploy(m, kernels="auto" if form == "fast" else "torch")


def deploy(module, debug: bool = False, *, kernels: str = "torch", batch: int | None = None,
           dtype: str = "float32"):
    """The deploy (inference) form of a training-form model built by archdsl, its weights and BN statistics
    converted exactly; returned in eval mode. `module.deploy_reports` says what each pass changed.

    kernels="torch" (default): an ArchModule of plain PyTorch modules (what `archdsl compile` emits).
    kernels="auto": a FastModule: fused C++ kernels where a block pattern matches, and for every step the
    implementation and memory layout measured fastest on this machine (tuned on the first input of each
    shape, or now for `batch` x the spec's input shape; choices cached on disk). archdsl's kernels are CPU code:
    for a model on another device (CUDA) "auto" returns the plain form, and a FastModule moved to one runs its
    plain form there.
    dtype="bfloat16" (either kernels): a Bf16Module, the deploy form with bfloat16 weights run by torch's
    bfloat16 kernels (oneDNN; float32 accumulation), float32 in and out; only on a CPU with avx512_bf16 or AMX
    (else ValueError saying so). archdsl's fused kernels are float32, so "auto" has no other choice to make."""
    from .codegen.deploy import deploy as _deploy

    if kernels not in ("torch", "auto"):
        raise ValueError(f"kernels must be 'torch' or 'auto', got {kernels!r}")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if dtype == "bfloat16":
        from .codegen.lowp import Bf16Module, bf16_unsupported

        why = bf16_unsupported()  # before the passes run
        if why is not None:
            raise ValueError(why)
        return Bf16Module(_deploy(module, debug))
    dep = _deploy(module, debug)
    if kernels == "torch" or any(t.device.type != "cpu" for t in dep.parameters()):
        return dep
    from .codegen.fast import fast

    return fast(dep, batch=batch)


def load(path: str | os.PathLike, overrides: dict[str, Any] | None = None, *,
         input_shape: tuple[int, int, int] | None = None, model: str | None = None, form: str = "train",
         max_memory: int | str | None = None, weights: str | os.PathLike | dict | None = None, **kw: Any):
    """The training-form nn.Module of a .arch file. Every choice point must be fixed by an override or by
    its default=; otherwise ArchError lists the open ones. A model whose float32 parameters plus one batch-1
    inference pass would need more than `max_memory` (bytes or '8G', '25%'; default $ARCHDSL_MAX_MEMORY, else
    half of this machine's RAM) is refused with an ArchError at the responsible layer before anything is
    allocated; each forward call checks its batch against the same limit (InputError). `weights`: a
    training-form state_dict (a dict, or a file such as `archdsl train`'s weights.pt, read with
    weights_only=True) loaded strictly before the form is made (archdsl.weights.WeightsError if it does not
    fit). A model parameter named `weights` then goes in `overrides`."""
    return _module(check_file(path, overrides, input_shape=input_shape, model=model, **kw), form, max_memory,
                   weights)


def build(text: str, overrides: dict[str, Any] | None = None, *, file: str = "<spec>",
          input_shape: tuple[int, int, int] | None = None, model: str | None = None, form: str = "train",
          max_memory: int | str | None = None, weights: str | os.PathLike | dict | None = None, **kw: Any):
    """Like load(), from spec text."""
    from .api import check_text

    return _module(check_text(text, file, {**(overrides or {}), **kw}, input_shape, model), form, max_memory,
                   weights)


__all__ = ["ArchError", "build", "check_file", "deploy", "load", "__version__"]
