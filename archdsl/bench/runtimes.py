"""The runtimes a latency is measured on: torch (the deploy form on PyTorch), fast (the deploy form on archdsl's
fused kernels, each step's implementation measured) and ort (the deploy form exported to ONNX and run by ONNX
Runtime, as many users deploy). The search, `archdsl bench` and the latency table name theirs.

Takes: a runtime name and (ort_runner) a deploy-form module with an example input. Returns: the build form
measure_model uses (`form_of`), or a zero-argument callable running ONNX Runtime once (`ort_runner`). The ort
runtime needs the `[export]` extra; without it RuntimeUnavailable says so in one line. Exporting takes a few
seconds per network (torch.onnx.export with dynamo=True), paid once per candidate, outside the timing.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

RUNTIMES = ("torch", "fast", "ort")
_FORMS = {"torch": "deploy", "fast": "fast", "ort": "ort"}


class RuntimeUnavailable(ValueError):
    """A runtime that cannot run here (its package is not installed): one line saying what to install."""


def form_of(runtime: str) -> str:
    """The build form measure_model / forward_fn takes for a runtime."""
    if runtime not in _FORMS:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return _FORMS[runtime]


def require(runtime: str) -> None:
    """Raise RuntimeUnavailable when `runtime` cannot run on this machine (checked before a search starts)."""
    form_of(runtime)
    if runtime == "ort":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise RuntimeUnavailable(f"the ort runtime needs the [export] extra ({e.name} is not installed): pip "
                                     "install 'archdsl[export]'") from None


def ort_runner(module, x, threads: int) -> Callable[[], Any]:
    """`module` (eval mode, CPU) exported to ONNX with input `x`, in an ONNX Runtime session of `threads` intra-op
    threads with spinning off (a spinning pool would steal the cores of whatever runs next); returns a callable
    running it once on x with the output bound once."""
    require("ort")
    import warnings

    import onnxruntime as ort
    import torch

    fd, path = tempfile.mkstemp(suffix=".onnx", prefix="archdsl-ort-")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), path, dynamo=True, external_data=False, verbose=False,
                              input_names=["x"], output_names=["y"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    finally:
        os.unlink(path)
    feed = {"x": x.detach().cpu().numpy()}

    def run():
        session.run(None, feed)
    return run
