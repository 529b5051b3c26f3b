"""`bench_model`: build the model of a .arch file and measure one forward pass with the engine (measure.py).

Takes: a .arch path and the measurement's settings. Returns: one JSON-ready dict (the Measurement's fields in
ms, the settings, params / MACs, `fingerprint()`). Raises ModelRunError / OutOfMemory for a model that cannot
run, ArchError for spec mistakes. Without regime normalization, the run's reference median is also compared
with the best recorded on this machine (`reference_best.json` in the latency cache dir): over BUSY_FACTOR x
that, the machine was busy for the whole run and the result is flagged `busy`, not `stable`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..limits import is_oom  # noqa: F401 - re-exported
from .machine import default_cache_dir, load_json_cache, save_json_cache, torch_threads
from .measure import fingerprint, measure, steady_state_allocator

__all__ = ["bench_model", "forward_fn", "ModelRunError", "OutOfMemory", "is_oom", "reference_busy",
           "BUSY_FACTOR"]

class ModelRunError(RuntimeError):
    """The model could not run on the given input (its message names the model, the input and the cause)."""


class OutOfMemory(MemoryError):
    """Building or running the model ran out of (host or device) memory."""


BUSY_FACTOR = 1.5  # a reference median this many times its best here: another process is using the CPU


def _reference_best_path() -> Path:
    """Beside the per-operator latency table: the same per-machine measurement cache."""
    return default_cache_dir() / "reference_best.json"


def reference_busy(median: float | None, key: str) -> tuple[float | None, bool]:
    """Compare a run's reference median (s) with the best recorded on this machine for `key` (fingerprint,
    threads, device). Returns (that earlier best, busy): busy when the median is over BUSY_FACTOR x the best,
    i.e. the whole machine was slower than it can be, which drift detection inside one run cannot see when the
    load lasts the whole run. Records the median as the new best when lower. (None, False) on a first run or
    an unusable cache file."""
    if median is None or not median > 0:
        return None, False
    path = _reference_best_path()
    data = load_json_cache(path)
    best = data.get(key)
    best = float(best) if isinstance(best, (int, float)) and best > 0 else None
    if best is None or median < best:
        data[key] = median
        save_json_cache(path, data)
    return best, best is not None and median > BUSY_FACTOR * best


@contextlib.contextmanager
def _model_errors(g, form: str, batch: int, device: str):
    """A forward pass that fails in the body, as ModelRunError, or OutOfMemory when memory ran out, naming the
    model, its form, the input and the device."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        c, h, w = g.input_shape.to_json()
        where = f"{g.model} ({form} form) at input {batch}x{c}x{h}x{w} on {device}"
        if is_oom(e):
            raise OutOfMemory(f"out of memory running {where}; try a smaller --batch or --input") from e
        raise ModelRunError(f"{where} failed: {e}") from e


def forward_fn(g, form: str = "deploy", batch: int = 1, device: str = "cpu", *,
               seed: int | None = None, dtype: str = "float32") -> Callable[[], Any]:
    """What every latency measurement times: the checked graph `g` built (form "train", "deploy", "fast" or "ort":
    the deploy form in ONNX Runtime, bench/runtimes.py), in
    eval mode on `device`, and a random input batch (from `seed` when given); returns a callable running one
    forward pass (on CUDA, up to a synchronize), which has already run once outside any timing so that a
    failure is the model's. Runs with torch's current threads (set them first: the fast form tunes for them).
    dtype "bfloat16": the deploy form in bfloat16 (codegen/lowp.py; forms deploy and fast, the CPU).
    Raises ModelRunError / OutOfMemory when the model cannot run."""
    import torch

    from ..codegen.deploy import deploy
    from ..codegen.module import build_module

    c, h, w = g.input_shape.to_json()
    with _model_errors(g, form, batch, device):
        m = build_module(g)
        if form != "train":
            m = deploy(m)
        m = m.eval().to(device)
        gen = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(batch, c, h, w, device=device, generator=gen)
        if form == "ort":  # the deploy form exported to ONNX, run by ONNX Runtime (runtimes.py)
            from .runtimes import ort_runner

            t0 = time.perf_counter()
            fn = ort_runner(m, x, torch.get_num_threads())
            fn.build_seconds = time.perf_counter() - t0  # the export and the session, outside the timing
            fn()
            return fn
        if dtype == "bfloat16":  # archdsl's fused kernels are float32: fast and deploy are the same form here
            from ..codegen.lowp import Bf16Module

            m = Bf16Module(m)
        elif form == "fast":
            from ..codegen.fast import FastModule

            m = FastModule(m).tune(x)  # measured choices, outside the timing (cached on disk)
        if device == "cuda":
            def fn():
                m(x)
                torch.cuda.synchronize()  # kernels run asynchronously: time until they finish
        else:
            def fn():
                m(x)
        if form == "fast" and dtype == "float32":
            fn.plan = m.plan  # where each step's choice came from (the tune cache, with its age, or measured now)
            fn.build_seconds = m.tune_seconds  # measuring the steps' candidates (none when all were cached)
        with torch.inference_mode():
            fn()
    return fn


def measure_model(g, timing: Callable[[Callable[[], Any]], Any], *, form: str = "deploy", batch: int = 1,
                  device: str = "cpu", threads: int | None = None,
                  dtype: str = "float32") -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The one path from a checked graph to its latency, shared by `archdsl bench` (bench_model) and every search
    trial (search/trial.py): the allocator in its steady state, `threads` torch threads (restored afterwards), the
    model built in `form` and run once (forward_fn), then `timing(fn)` (bench/measure.py's `measure`, or a trial's
    measure-until-clean policy), a failing forward pass raised as ModelRunError / OutOfMemory. Returns (what
    `timing` returned, the machine's fingerprint under those threads, the allocator settings)."""
    allocator = steady_state_allocator()  # before the model's and the input's buffers are allocated
    with torch_threads(threads):
        fn = forward_fn(g, form, batch, device, dtype=dtype)
        with _model_errors(g, form, batch, device):
            result = timing(fn)
        fp = fingerprint()
    return result, fp, allocator


def bench_model(path: str | os.PathLike, form: str = "deploy", batch: int = 1,
                input_shape: tuple[int, int, int] | None = None, threads: int | None = None,
                overrides: dict[str, Any] | None = None, *, model: str | None = None, device: str | None = None,
                import_paths: tuple[str, ...] = (), allow_outside_imports: bool = False,
                normalize: bool | None = None, dtype: str = "float32", **measure_kw: Any) -> dict[str, Any]:
    """Build the model of a .arch file (form "deploy", "fast", "ort" or "train", in eval mode) and measure one forward
    pass on a random batch. `threads` sets torch.set_num_threads for the measurement (restored afterwards);
    `device` is "cpu", "cuda" or None (cuda when available; each run then ends with a synchronize).
    `normalize` (default: on the CPU) also reports the regime-normalized latency (regime.py) as `latency_ms`;
    the whole-run busy check against the best reference is made only without it (a slow regime slows the
    reference block as much as the model). Extra keywords go to `measure`. Raises ArchError for spec mistakes
    and inputs the model cannot take, ModelRunError when the forward pass fails, OutOfMemory when memory runs
    out, ValueError for bad arguments. Returns a JSON-ready dict: the model and settings, the Measurement's
    fields (ms) and the fingerprint."""
    import torch

    from ..api import check_file, require_resolved

    if form not in ("train", "deploy", "fast", "ort"):
        raise ValueError(f"form must be 'train', 'deploy', 'fast' or 'ort', got {form!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device")
    if form in ("fast", "ort") and device != "cpu":
        raise ValueError(f"form '{form}' runs on the CPU here: use --device cpu, or form 'deploy'")
    if form == "ort":
        from .runtimes import require

        require("ort")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if dtype == "bfloat16":
        from ..codegen.lowp import bf16_unsupported

        if form not in ("deploy", "fast") or device != "cpu":
            raise ValueError("bfloat16 is the deploy form on the CPU: use --form deploy or fast, --device cpu")
        why = bf16_unsupported()
        if why is not None:
            raise ValueError(why)
    if normalize is None:
        normalize = device == "cpu"
    if normalize and device != "cpu":
        raise ValueError("the regime-normalized latency uses a CPU reference block: measure on the CPU, or without "
                         "normalization")
    g = check_file(path, overrides, input_shape, model, tuple(import_paths), allow_outside_imports)
    require_resolved(g)
    c, h, w = g.input_shape.to_json()
    timed: list = []
    meas, fp, allocator = measure_model(g, lambda fn: timed.append(fn) or measure(fn, normalize=normalize,
                                                                                  **measure_kw),
                                        form=form, batch=batch, device=device, threads=threads, dtype=dtype)
    total = g.total()
    best, busy = (None, False) if normalize else reference_busy(meas.reference_median,
                                                                 f"{fp['hash']}-{fp['torch_threads']}-{device}")
    runtime = {"deploy": "torch", "fast": "fast", "ort": "ort"}.get(form)
    out = {"model": g.model, "file": str(path), "form": form, "runtime": runtime, "dtype": dtype, "batch": batch,
           "input_shape": [c, h, w],
           "device": device, "threads": fp["torch_threads"], "reference": "block" if normalize else "gemm",
           "params": total.params, "macs": total.macs,
           **meas.to_json(), "reference_best_ms": None if best is None else round(best * 1e3, 6), "busy": busy,
           "allocator": allocator, "fingerprint": fp}
    if form == "fast" and dtype == "float32" and timed and hasattr(timed[0], "plan"):
        out["tune"] = tune_summary(timed[0].plan())
    if busy:  # the whole run was slow: its median is not this machine's latency
        out["stable"] = False
    return out


def tune_summary(plan: list[dict[str, Any]]) -> dict[str, Any]:
    """The fast form's step choices by where they came from: the tune cache (with the age of the oldest and the
    narrowest margin), measured now, or preferred; and each cached one (node, choice, age in hours, margin)."""
    import time

    now = time.time()
    cached = [p for p in plan if p["source"]["from"] == "cache"]
    ages = [now - p["source"]["measured_at"] for p in cached if p["source"].get("measured_at")]
    margins = [p["source"]["margin"] for p in cached if p["source"].get("margin") is not None]
    return {"steps": len(plan), "from_cache": len(cached),
            "measured": sum(p["source"]["from"].startswith("measured") for p in plan),
            "oldest_cache_hours": round(max(ages) / 3600, 2) if ages else None,
            "narrowest_margin": round(min(margins), 4) if margins else None,
            "cached": [{"node": p["node"], "choice": p["choice"],
                        "age_hours": round((now - p["source"]["measured_at"]) / 3600, 2)
                        if p["source"].get("measured_at") else None, "margin": p["source"].get("margin")}
                       for p in cached]}
