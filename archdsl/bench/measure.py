"""The measurement engine: time a callable (or a model of a .arch file) until its median latency is known.

Takes: a zero-argument callable, or several to compare, or a .arch path. Returns: `Measurement`s (seconds) and,
for `bench_model`, one JSON-ready dict with the machine's `fingerprint()`.

How steady state is ensured, before a single sample is kept:
  1. Allocator policy. In a fresh process glibc's malloc returns big freed blocks to the kernel (trim) and
     serves big requests with fresh mmaps, so every new activation buffer page-faults and small convs run
     2.5-3.5x slower than in a long-lived process until malloc's dynamic thresholds happen to grow.
     `steady_state_allocator()` fixes the thresholds at engine start through `mallopt` (M_MMAP_THRESHOLD =
     64 MiB, M_TRIM_THRESHOLD = 128 MiB), so every measuring process sees the long-lived regime at once.
     It is a no-op (reported as such) on non-glibc platforms.
  2. Warm-up runs of every candidate and of the reference workload, which are discarded.
  3. Disturbed rounds are discarded (disturb.py): a round in which a measuring thread (the caller or an OpenMP
     worker) waited in the run queue, i.e. another program took its core, is never summarized. A measurement
     left with fewer than `min_runs` clean rounds at its cap, or with steal time from the hypervisor, is
     `disturbed` (and not `stable`); `disturbance` records the rounds, the discarded ones, the wait, the other
     processes' CPU use, the load average and the reason. `measure_until_clean` waits for the machine to quiet
     down (bounded backoff) and measures again.
  4. A stop rule: runs continue until the 95% confidence interval of the median over the clean rounds
     (order statistics, no distribution assumed) is within +-`rel_ci` of it, or a run/time cap is hit (then
     `stable` is False).
  5. A reference workload (a fixed 128x128 fp32 GEMM) timed in the same rounds; if its median moves by more
     than 10% between the first and the second half of the rounds the machine changed regime (frequency,
     a neighbour process): the measurement is repeated once and flagged `drift` if it happens again.
  6. Every timing loop holds the measurement lock (`lock.py`) and runs under torch.inference_mode.
  7. `bench_model` also compares the reference's median with the best recorded on this machine (a small JSON in
     the latency cache dir, table.default_cache_dir()): over BUSY_FACTOR x that, the machine was busy for the
     whole run (a load drift detection cannot see), and the result is flagged `busy` and not `stable`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import stats
from .disturb import Boost, Disturbance, LoadWindow, ThreadProbe, round_disturbed, usable_cores, wait_for_quiet
from .lock import LockTimeout, default_lock_path, measurement_lock
from .table import default_cache_dir

__all__ = ["Measurement", "measure", "compare", "measure_until_clean", "bench_model", "fingerprint",
           "steady_state_allocator", "measurement_lock", "default_lock_path", "LockTimeout", "ModelRunError",
           "OutOfMemory"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 128 << 20
DRIFT_TOL = 0.10


class ModelRunError(RuntimeError):
    """The model could not run on the given input (its message names the model, the input and the cause)."""


class OutOfMemory(MemoryError):
    """Building or running the model ran out of (host or device) memory."""


# ---------------------------------------------------------------------------------------------------------
# machine state


_ALLOCATOR: dict[str, Any] | None = None


def steady_state_allocator() -> dict[str, Any]:
    """Fix glibc malloc's mmap and trim thresholds (once per process) so freed activation buffers are reused
    instead of returned to the kernel and page-faulted back. Returns {"applied": bool, "detail": str}."""
    global _ALLOCATOR
    if _ALLOCATOR is not None:
        return _ALLOCATOR
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        _ALLOCATOR = {"applied": False, "detail": f"not glibc ({sys.platform} {platform.libc_ver()[0] or '?'})"}
        return _ALLOCATOR
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        mallopt = libc.mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        ok_mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1  # mallopt returns 1 on success
        ok_trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        ok = ok_mmap and ok_trim
    except (OSError, AttributeError) as e:
        _ALLOCATOR = {"applied": False, "detail": f"mallopt unavailable: {e}"}
        return _ALLOCATOR
    detail = "mallopt: mmap threshold 64 MiB, trim threshold 128 MiB" if ok else "mallopt returned an error"
    _ALLOCATOR = {"applied": bool(ok), "detail": detail}
    return _ALLOCATOR


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, int | None]:
    """(CPU model name, physical core count) from /proc/cpuinfo; (None, None) where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None, None
    model = None
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        kv = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                kv[key.strip()] = value.strip()
        model = model or kv.get("model name") or kv.get("Hardware") or kv.get("cpu model")
        if "core id" in kv:
            cores.add((kv.get("physical id", "0"), kv["core id"]))
    return model, (len(cores) or None)


def fingerprint() -> dict[str, Any]:
    """What the timings depend on: CPU model, physical/logical/usable cores, torch threads and version, the CUDA
    device (if any), and `hash`, a stable 12-hex-digit digest of those fields."""
    import torch

    model, physical = _cpuinfo()
    logical = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    fp: dict[str, Any] = {
        "cpu_model": model or platform.processor() or platform.machine() or "unknown",
        "machine": platform.machine(),
        "physical_cores": physical or logical,
        "logical_cores": logical,
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_device": cuda,
    }
    fp["hash"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    return fp


# ---------------------------------------------------------------------------------------------------------
# measurement


@dataclass
class Measurement:
    """The latency of one callable, in seconds. `stable`: converged (CI within the target) and no drift."""

    median: float
    p10: float
    p90: float
    min: float
    runs: int
    rel_ci: float  # half-width of the median's 95% CI relative to the median (0.02 = +-2%)
    stable: bool
    stop: str  # "converged", "max_runs" or "max_seconds"
    reference_median: float | None = None
    reference_change: float = 0.0  # relative change of the reference's median, second half vs first
    drift: bool = False
    remeasured: bool = False
    disturbed: bool = False  # too few clean rounds (or steal time): the median is not this machine's latency
    disturbance: dict[str, Any] = field(default_factory=dict)  # rounds, discarded, wait, load, reason
    samples: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Times in milliseconds (null when there is no clean sample); rel_ci as a fraction (null when infinite)."""
        def ms(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(v * 1e3, 6)

        return {"median_ms": ms(self.median), "p10_ms": ms(self.p10), "p90_ms": ms(self.p90),
                "min_ms": ms(self.min), "runs": self.runs,
                "rel_ci": round(self.rel_ci, 6) if math.isfinite(self.rel_ci) else None,
                "stable": self.stable, "stop": self.stop, "reference_median_ms": ms(self.reference_median),
                "reference_change": round(self.reference_change, 6), "drift": self.drift,
                "remeasured": self.remeasured, "disturbed": self.disturbed, "disturbance": self.disturbance}


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
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    best = data.get(key)
    best = float(best) if isinstance(best, (int, float)) and best > 0 else None
    if best is None or median < best:
        data[key] = median
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except OSError:
            pass
    return best, best is not None and median > BUSY_FACTOR * best


def reference_workload(n: int = 128) -> Callable[[], Any]:
    """A fixed small fp32 GEMM (n x n x n, ~4 MFLOP at n=128): its time tracks the machine's regime."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    return lambda: torch.mm(a, b, out=out)


def _rounds(fns: dict[str, Callable[[], Any]], ref: Callable[[], Any] | None, *, warmup: int, min_runs: int,
            max_runs: int, max_seconds: float, rel_ci: float, timer: Callable[[], float], probe: ThreadProbe | None):
    """Warm up, then time rounds (each candidate once, in order, then the reference) until every candidate's
    median CI over the clean rounds is within rel_ci (after min_runs clean rounds) or a cap is hit. A round in
    which a measuring thread waited for a CPU (`probe`) is disturbed: its samples are kept apart and never
    summarized. Returns (clean samples, clean ref samples, stop, Disturbance)."""
    start = timer()
    if probe is not None:
        probe.begin_warmup()
    for _ in range(warmup):
        for f in fns.values():
            f()
        if ref is not None:
            ref()
    boost = contextlib.nullcontext()
    if probe is not None:
        probe.end_warmup()
        boost = Boost(probe.tids())
    with boost:
        return _timed_rounds(fns, ref, min_runs=min_runs, max_runs=max_runs, max_seconds=max_seconds,
                             rel_ci=rel_ci, timer=timer, probe=probe, start=start,
                             boost=None if probe is None else boost.state)


def _timed_rounds(fns, ref, *, min_runs, max_runs, max_seconds, rel_ci, timer, probe, start, boost):
    window = LoadWindow()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    ref_samples: list[float] = []
    dist = Disturbance(probe="none" if probe is None else probe.probe,
                        threads=0 if probe is None else probe.threads, boost=boost)
    stop = "max_runs"
    for _r in range(1, max_runs + 1):
        if probe is not None:
            w0, c0 = probe.read(), probe.nivcsw()
        r0 = timer()
        times = {}
        for k, f in fns.items():
            t0 = timer()
            f()
            times[k] = timer() - t0
        tref = None
        if ref is not None:
            t0 = timer()
            ref()
            tref = timer() - t0
        dist.rounds += 1
        if probe is not None:
            wait, preempt = probe.read() - w0, probe.nivcsw() - c0
            if round_disturbed(wait, preempt, timer() - r0, probe.probe):
                dist.discarded += 1
                dist.raw.append(next(iter(times.values())))
                dist.wait_ns += wait
                dist.preempted += preempt > 0
                if timer() - start >= max_seconds:
                    stop = "max_seconds"
                    break
                continue
        for k, t in times.items():
            samples[k].append(t)
        if tref is not None:
            ref_samples.append(tref)
        n = len(ref_samples) if ref is not None else len(next(iter(samples.values())))
        if n >= min_runs and all(stats.rel_ci_halfwidth(s) <= rel_ci for s in samples.values()):
            stop = "converged"
            break
        if timer() - start >= max_seconds:
            stop = "max_seconds"
            break
    dist.load = window.sample()
    return samples, ref_samples, stop, dist


def _summarize(s: list[float], stop: str, rel_ci_target: float, ref: list[float], dist: Disturbance,
               min_clean: int) -> Measurement:
    rel = stats.rel_ci_halfwidth(s) if s else math.inf
    drift, change = stats.drifted(ref, DRIFT_TOL) if ref else (False, 0.0)
    reason = dist.verdict(min_clean)
    nan = math.nan
    return Measurement(median=stats.median(s) if s else nan, p10=stats.percentile(s, 10) if s else nan,
                       p90=stats.percentile(s, 90) if s else nan, min=min(s) if s else nan, runs=len(s),
                       rel_ci=rel, stable=rel <= rel_ci_target and not drift and reason is None, stop=stop,
                       reference_median=stats.median(ref) if ref else None, reference_change=change, drift=drift,
                       disturbed=reason is not None, disturbance=dist.to_json(min_clean), samples=list(s))


def _inference_mode():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return contextlib.nullcontext()
    return torch.inference_mode()


def compare(fns: dict[str, Callable[[], Any]], rounds: int = 1000, *, warmup: int = 3, min_runs: int = 10,
            max_seconds: float = 10.0, rel_ci: float = 0.02, reference: bool | Callable[[], Any] = True,
            timer: Callable[[], float] = time.perf_counter, lock: bool = True,
            lock_path: str | os.PathLike | None = None, lock_timeout: float | None = None,
            detect: bool | None = None) -> dict[str, Measurement]:
    """Measure several candidates interleaved round-robin (A B C [ref] A B C [ref] ...) so a change of the
    machine's regime hits them all alike. `rounds` caps the rounds, `max_seconds` the wall time (warm-up
    included). `reference`: True for the built-in GEMM, a callable of your own, or False. `detect`: discard
    rounds in which a measuring thread waited for a CPU (disturb.py); default on with the real clock, off with
    an injected `timer`. Returns name -> Measurement; all share the reference, the drift flag and the
    disturbance record. A drifting run is repeated once."""
    if not fns:
        raise ValueError("compare() needs at least one callable")
    if min(rounds, min_runs) < 1 or warmup < 0 or max_seconds <= 0 or rel_ci <= 0:
        raise ValueError("rounds and min_runs must be >= 1, warmup >= 0, max_seconds and rel_ci > 0")
    steady_state_allocator()
    ref = reference_workload() if reference is True else (reference or None)
    if detect is None:
        detect = timer is time.perf_counter
    guard = measurement_lock(lock_path, lock_timeout) if lock else contextlib.nullcontext()
    min_clean = min(min_runs, rounds)
    with guard, _inference_mode():
        kw = dict(warmup=warmup, min_runs=min_clean, max_runs=rounds, max_seconds=max_seconds,
                  rel_ci=rel_ci, timer=timer)
        probe = ThreadProbe() if detect else None
        try:
            samples, refs, stop, dist = _rounds(fns, ref, probe=probe, **kw)
            remeasured = False
            if refs and stats.drifted(refs, DRIFT_TOL)[0]:
                samples, refs, stop, dist = _rounds(fns, ref, probe=probe, **kw)
                remeasured = True
        finally:
            if probe is not None:
                probe.close()
    out = {k: _summarize(s, stop, rel_ci, refs, dist, min_clean) for k, s in samples.items()}
    for m in out.values():
        m.remeasured = remeasured
    return out


def measure(fn: Callable[[], Any], *, warmup: int = 3, min_runs: int = 10, max_runs: int = 1000,
            max_seconds: float = 10.0, rel_ci: float = 0.02, reference: bool | Callable[[], Any] = True,
            timer: Callable[[], float] = time.perf_counter, lock: bool = True,
            lock_path: str | os.PathLike | None = None, lock_timeout: float | None = None,
            detect: bool | None = None) -> Measurement:
    """Time `fn()` (under the measurement lock and torch.inference_mode) until the median's 95% CI half-width
    over the clean rounds is within `rel_ci` of it or `max_runs` / `max_seconds` is reached. See the module
    docstring for how steady state is ensured and disturbed rounds are discarded. `timer` is injectable (tests
    use a fake clock)."""
    return compare({"fn": fn}, max_runs, warmup=warmup, min_runs=min_runs, max_seconds=max_seconds,
                   rel_ci=rel_ci, reference=reference, timer=timer, lock=lock, lock_path=lock_path,
                   lock_timeout=lock_timeout, detect=detect)["fn"]


def measure_until_clean(fn: Callable[[], Any], *, quiet_wait: float = 30.0, threads: int | None = None,
                        clock: Callable[[], float] = time.monotonic, lock_path: str | os.PathLike | None = None,
                        **measure_kw: Any) -> tuple[Measurement, dict[str, Any]]:
    """`measure(fn)`, and while the result is disturbed: wait for the machine to leave `threads` cores free
    (`wait_for_quiet`, each wait capped at 1, 2, 4, 8 ... s) and measure again, until `quiet_wait` seconds have
    passed. A load that never fully ends still leaves clean rounds now and then, so each pause ends in a new
    measurement even when the machine is not yet quiet. Holds the measurement lock throughout, so this process's
    own compute slices (a search's training) pause and only other programs count as load. Returns (the clean
    measurement, or the last disturbed one, and {"tries", "disturbed_tries", "waited_s", "attempts": [reason]})."""
    threads = min(threads or 1, usable_cores())
    info: dict[str, Any] = {"tries": 0, "disturbed_tries": 0, "waited_s": 0.0, "attempts": []}
    deadline = clock() + quiet_wait
    pause = 1.0
    with measurement_lock(lock_path):
        while True:
            m = measure(fn, lock_path=lock_path, **measure_kw)
            info["tries"] += 1
            if not m.disturbed:
                return m, info
            info["disturbed_tries"] += 1
            info["attempts"].append(m.disturbance.get("reason"))
            if clock() >= deadline:
                return m, info
            _, waited, _ = wait_for_quiet(threads, min(deadline, clock() + pause))
            info["waited_s"] = round(info["waited_s"] + waited, 3)
            pause *= 2


# ---------------------------------------------------------------------------------------------------------
# models


def is_oom(e: BaseException) -> bool:
    """CUDA's "out of memory", the CPU allocator's "not enough memory" / "can't allocate memory", MemoryError."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or any(s in text for s in ("out of memory", "not enough memory", "can't allocate memory",
                                       "cannot allocate memory")))


def bench_model(path: str | os.PathLike, form: str = "deploy", batch: int = 1,
                input_shape: tuple[int, int, int] | None = None, threads: int | None = None,
                overrides: dict[str, Any] | None = None, *, model: str | None = None, device: str | None = None,
                import_paths: tuple[str, ...] = (), allow_outside_imports: bool = False,
                **measure_kw: Any) -> dict[str, Any]:
    """Build the model of a .arch file (form "deploy", "fast" or "train", in eval mode) and measure one forward pass
    on a random batch. `threads` sets torch.set_num_threads for the measurement (restored afterwards);
    `device` is "cpu", "cuda" or None (cuda when available; each run then ends with a synchronize).
    Extra keywords go to `measure`. Raises ArchError for spec mistakes and inputs the model cannot take,
    ModelRunError when the forward pass fails, OutOfMemory when memory runs out, ValueError for bad arguments.
    Returns a JSON-ready dict: the model and settings, the Measurement's fields (ms) and the fingerprint."""
    import torch

    from ..api import check_file, require_resolved
    from ..codegen.module import build_module
    from ..passes import deploy

    if form not in ("train", "deploy", "fast"):
        raise ValueError(f"form must be 'train', 'deploy' or 'fast', got {form!r}")
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
    if form == "fast" and device != "cpu":
        raise ValueError("form 'fast' runs archdsl's CPU kernels: use --device cpu, or form 'deploy'")
    allocator = steady_state_allocator()  # before the model's and the input's buffers are allocated

    g = check_file(path, overrides, input_shape, model, tuple(import_paths), allow_outside_imports)
    require_resolved(g)
    c, h, w = g.input_shape.to_json()
    where = f"{g.model} ({form} form) at input {batch}x{c}x{h}x{w} on {device}"
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        try:
            m = build_module(g)
            if form != "train":
                m = deploy(m)
            m = m.eval().to(device)
            x = torch.randn(batch, c, h, w, device=device)
            if form == "fast":
                from ..codegen.fast import FastModule

                m = FastModule(m).tune(x)  # measured choices, outside the timing (cached on disk)
            if device == "cuda":
                def fn():
                    m(x)
                    torch.cuda.synchronize()  # kernels run asynchronously: time until they finish
            else:
                def fn():
                    m(x)
            with torch.inference_mode():
                fn()  # one trial run, outside the timing, so a failure is reported as the model's
            meas = measure(fn, **measure_kw)
        except (RuntimeError, MemoryError) as e:
            if is_oom(e):
                raise OutOfMemory(f"out of memory running {where}; try a smaller --batch or --input") from e
            raise ModelRunError(f"{where} failed: {e}") from e
        fp = fingerprint()
    finally:
        torch.set_num_threads(old_threads)
    total = g.total()
    best, busy = reference_busy(meas.reference_median, f"{fp['hash']}-{fp['torch_threads']}-{device}")
    out = {"model": g.model, "file": str(path), "form": form, "batch": batch, "input_shape": [c, h, w],
           "device": device, "threads": fp["torch_threads"], "params": total.params, "macs": total.macs,
           **meas.to_json(), "reference_best_ms": None if best is None else round(best * 1e3, 6), "busy": busy,
           "allocator": allocator, "fingerprint": fp}
    if busy:  # the whole run was slow: its median is not this machine's latency
        out["stable"] = False
    return out
