"""Trained weights for a model archdsl builds: read a training-form state_dict file safely and load it.

Takes: a path (a `torch.save` of a state_dict, or of {"state_dict": ...} as `archdsl train` writes, or of
{"model": ...} as many authors' checkpoints are; a .safetensors file, as timm's on the Hugging Face Hub, with the
[weights] extra) or a dict,
and a training-form module. Returns: the module with those weights, loaded strictly; a file that cannot be read
or does not fit (a missing or unexpected name, a wrong shape) raises WeightsError naming the file and the first
offending names. Files are read with weights_only=True: loading weights never runs code.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["WeightsError", "load_weights", "read_state_dict"]


class WeightsError(ValueError):
    """Weights that cannot be read, or that do not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The state_dict saved in `path` (unwrapping {"state_dict": ...})."""
    import pickle
    import warnings

    import torch

    if os.fspath(path).endswith(".safetensors"):  # timm's and the Hugging Face Hub's files: tensors only
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"cannot read {os.fspath(path)}: .safetensors files need the [weights] extra (pip "
                               "install 'archdsl[weights]')") from None
        try:
            return load_file(os.fspath(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"cannot read {os.fspath(path)}: {first}") from None
    try:
        with warnings.catch_warnings():  # torch's protocol warning is not the user's business
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, unsafe advice for a file that may be hostile
        raise WeightsError(f"cannot read {os.fspath(path)}: it holds more than tensors and plain values (Python "
                           "objects or code, which archdsl never loads); save the model's state_dict() alone") \
            from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read {os.fspath(path)}: {first}") from None
    if isinstance(sd, dict):  # a training checkpoint around the weights: {"state_dict": ...}, {"model": ...}
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(sd.get(wrapper), dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
                sd = sd[wrapper]
                break
    if not isinstance(sd, dict):
        raise WeightsError(f"{os.fspath(path)} holds a {type(sd).__name__}, not a state_dict")
    return sd


def load_weights(module, weights: str | os.PathLike | dict[str, Any], what: str | None = None):
    """Load `weights` (a path or a state_dict) into `module` strictly; returns the module."""
    sd = weights if isinstance(weights, dict) else read_state_dict(weights)
    what = what or (os.fspath(weights) if not isinstance(weights, dict) else "the state_dict")
    name = getattr(module, "arch_name", None) or type(module).__name__
    _check_shapes(module, sd, what, name)
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{what} does not fit {name}: {len(missing)} missing (e.g. {list(missing)[:3]}), "
                           f"{len(unexpected)} unexpected (e.g. {list(unexpected)[:3]})")
    return module


def _check_shapes(module, sd: dict[str, Any], what: str, name: str) -> None:
    own = module.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items()
             if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k, got, want = wrong[0]
        raise WeightsError(f"{what} does not fit {name}: {len(wrong)} tensor(s) of another shape, e.g. {k} is "
                           f"{list(got)} in the file but {list(want)} in the model")
