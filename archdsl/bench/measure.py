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
     worker) waited in the run queue, i.e. another program took its core, or after which the team probe found
     the measuring threads stalling each other (a host state that no counter shows), is never summarized. A measurement
     left with fewer than `min_runs` clean rounds at its cap, or with steal time from the hypervisor, is
     `disturbed` (and not `stable`); `disturbance` records the rounds, the discarded ones, the wait, the other
     processes' CPU use, the load average and the reason. `measure_until_clean` waits for the machine to quiet
     down (bounded backoff) and measures again. A disturbed measurement still carries `lower_bound`: the median
     over its rounds of the clean times and of each discarded round's time less twice its wait, under the
     undisturbed latency (disturb.BOUND_WAIT), so a network far over a budget is known to be over it without a
     clean round (`measure_until_clean(settle=...)`).
  4. A stop rule: runs continue until the 95% confidence interval of the median over the clean rounds
     (order statistics, no distribution assumed) is within +-`rel_ci` of it, or a run/time cap is hit (then
     `stable` is False).
  5. A reference workload (a fixed 128x128 fp32 GEMM) timed in the same rounds; if its median moves by more
     than 10% between the first and the second half of the rounds the machine changed regime (frequency,
     a neighbour process): the measurement is repeated once and flagged `drift` if it happens again.
     With `normalize=True` the reference is regime.py's ConvNeXt-like block instead, and the latency to decide
     on is the median of the per-round ratios model / block times this machine's anchor R* (`normalized`);
     the stop rule and the drift check then look at the ratios.
  6. Every timing loop holds the measurement lock (`lock.py`) and runs under torch.inference_mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import regime, stats
from .disturb import (
    BOUND_WAIT,
    TEAM_TOL,
    Boost,
    Disturbance,
    LoadWindow,
    TeamProbe,
    ThreadProbe,
    round_disturbed,
    usable_cores,
    wait_for_quiet,
)
from .lock import LockTimeout, default_lock_path, measurement_lock
from .machine import fingerprint

__all__ = ["Measurement", "measure", "compare", "compare_micro", "measure_until_clean", "fingerprint",
           "steady_state_allocator", "measurement_lock", "default_lock_path", "LockTimeout", "reference_workload"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 128 << 20
DRIFT_TOL = 0.10


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
    # regime normalization (compare(normalize=True), regime.py): median of the per-round ratios to the reference
    # block, the machine's anchor R* (s) and their product, the latency in this machine's reference regime (s)
    regime_ratio: float | None = None
    regime_anchor: float | None = None
    normalized: float | None = None
    # a disturbed measurement's lower bound on `latency` (s, normalized as `latency` is), from its clean rounds and
    # its discarded rounds less BOUND_WAIT x their wait; None when clean, or when the discards are not bounded
    # (team probe, steal, no schedstat) or too few rounds are left
    lower_bound: float | None = None

    @property
    def latency(self) -> float:
        """The figure to decide on: the normalized latency when there is one, else the raw median (s)."""
        return self.normalized if self.normalized is not None else self.median

    def to_json(self) -> dict[str, Any]:
        """Times in milliseconds (null when there is no clean sample); rel_ci as a fraction (null when infinite)."""
        def ms(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(v * 1e3, 6)

        return {"median_ms": ms(self.median), "p10_ms": ms(self.p10), "p90_ms": ms(self.p90),
                "min_ms": ms(self.min), "runs": self.runs,
                "rel_ci": round(self.rel_ci, 6) if math.isfinite(self.rel_ci) else None,
                "stable": self.stable, "stop": self.stop, "reference_median_ms": ms(self.reference_median),
                "reference_change": round(self.reference_change, 6), "drift": self.drift,
                "remeasured": self.remeasured, "disturbed": self.disturbed, "disturbance": self.disturbance,
                "normalized_ms": ms(self.normalized), "latency_ms": ms(self.latency),
                "regime_ratio": None if self.regime_ratio is None or not math.isfinite(self.regime_ratio)
                else round(self.regime_ratio, 6), "regime_anchor_ms": ms(self.regime_anchor),
                **({"lower_bound_ms": ms(self.lower_bound)} if self.lower_bound is not None else {})}


def reference_workload(n: int = 128) -> Callable[[], Any]:
    """A fixed small fp32 GEMM (n x n x n, ~4 MFLOP at n=128): its time tracks the machine's regime."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    return lambda: torch.mm(a, b, out=out)


def _rounds(fns: dict[str, Callable[[], Any]], ref: Callable[[], Any] | None, *, warmup: int, min_runs: int,
            max_runs: int, max_seconds: float, rel_ci: float, timer: Callable[[], float], probe: ThreadProbe | None,
            normalize: bool = False, team: bool = True):
    """Warm up, then time rounds (each candidate once, in order, then the reference) until every candidate's
    median CI over the clean rounds is within rel_ci (after min_runs clean rounds) or a cap is hit; with
    `normalize`, the CI of its per-round ratios to the reference. A round in
    which a measuring thread waited for a CPU (`probe`) is disturbed: its samples are kept apart and never
    summarized. Returns (clean samples, clean ref samples, stop, Disturbance)."""
    start = timer()
    team = TeamProbe() if probe is not None and team else None
    if team is not None and not team.active:
        team = None
    if team is not None:
        team.calibrate()
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
                             boost=None if probe is None else boost.state, normalize=normalize,
                             team=team)


def _timed_rounds(fns, ref, *, min_runs, max_runs, max_seconds, rel_ci, timer, probe, start, boost, normalize,
                  team=None):
    window = LoadWindow()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    ref_samples: list[float] = []
    dist = Disturbance(probe="none" if probe is None else probe.probe,
                        threads=0 if probe is None else probe.threads, boost=boost, team=team)
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
        apart = team is not None and team.check() > TEAM_TOL
        wait = preempt = 0
        if probe is not None:
            wait, preempt = probe.read() - w0, probe.nivcsw() - c0
        if apart or (probe is not None and round_disturbed(wait, preempt, timer() - r0, probe.probe)):
            dist.apart += apart
            dist.discarded += 1
            dist.raw.append(next(iter(times.values())))
            if not apart and len(times) == 1:
                dist.bounded.append((max(0.0, dist.raw[-1] - BOUND_WAIT * wait / 1e9), tref))
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
        if n >= min_runs and all(stats.rel_ci_halfwidth(_series(s, ref_samples, normalize)) <= rel_ci
                                 for s in samples.values()):
            stop = "converged"
            break
        if timer() - start >= max_seconds:
            stop = "max_seconds"
            break
    dist.load = window.sample()
    return samples, ref_samples, stop, dist


def _series(s: list[float], ref: list[float], normalize: bool) -> list[float]:
    """What the stop rule and the drift check look at: the times, or with `normalize` the per-round ratios."""
    return regime.ratio_summary(s, ref)[0] if normalize else s


def _summarize(s: list[float], stop: str, rel_ci_target: float, ref: list[float], dist: Disturbance,
               min_clean: int, normalize: bool = False) -> Measurement:
    """One candidate's Measurement from its clean samples. With `normalize` the CI and the drift check are
    those of the per-round ratios (a regime change that the reference tracks is no drift) and `regime_ratio`
    is their median; the anchor is applied by `compare`."""
    series = _series(s, ref, normalize)
    rel = stats.rel_ci_halfwidth(series) if series else math.inf
    watch = series if normalize else ref
    drift, change = stats.drifted(watch, DRIFT_TOL) if watch else (False, 0.0)
    reason = dist.verdict(min_clean)
    bound = _lower_bound(s, ref, dist, min_clean, normalize) if reason is not None else None
    nan = math.nan
    return Measurement(median=stats.median(s) if s else nan, p10=stats.percentile(s, 10) if s else nan,
                       p90=stats.percentile(s, 90) if s else nan, min=min(s) if s else nan, runs=len(s),
                       rel_ci=rel, stable=rel <= rel_ci_target and not drift and reason is None, stop=stop,
                       reference_median=stats.median(ref) if ref else None, reference_change=change, drift=drift,
                       disturbed=reason is not None, disturbance=dist.to_json(min_clean), samples=list(s),
                       regime_ratio=stats.median(series) if normalize and series else None, lower_bound=bound)


def _lower_bound(s: list[float], ref: list[float], dist: Disturbance, min_clean: int,
                 normalize: bool) -> float | None:
    """A disturbed measurement's lower bound (see Measurement.lower_bound): the median over the clean rounds'
    times and the discarded rounds' bounds, each as a ratio to its round's reference with `normalize` (a
    reference slowed by the same disturbance only lowers the ratio). The anchor is applied by `_apply_anchor`.
    None unless the discards are boundable and at least min_clean rounds count."""
    if not dist.boundable() or len(dist.bounded) != dist.discarded - dist.apart:  # one candidate only
        return None
    if normalize:
        vals = [t / r for t, r in zip(s, ref) if r > 0] + [b / r for b, r in dist.bounded if r]
    else:
        vals = list(s) + [b for b, _ in dist.bounded]
    return stats.median(vals) if len(vals) >= min_clean else None


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
            detect: bool | None = None, normalize: bool = False,
            anchor: float | None = None, team: bool = True) -> dict[str, Measurement]:
    """Measure several candidates interleaved round-robin (A B C [ref] A B C [ref] ...) so a change of the
    machine's regime hits them all alike. `rounds` caps the rounds, `max_seconds` the wall time (warm-up
    included). `reference`: True for the built-in GEMM, a callable of your own, or False. `detect`: discard
    rounds in which a measuring thread waited for a CPU (disturb.py); default on with the real clock, off with
    an injected `timer`. `normalize`: the built-in reference is regime.regime_block() (on the CPU, with torch's
    current threads) and each Measurement also gets `regime_ratio` (median of model / reference per clean round) and
    `normalized` = ratio x this machine's anchor R* (the first clean normalized measurement records R*); with
    `anchor` (s), the latency of a `reference` of your own, normalized = ratio x anchor instead. Returns
    name -> Measurement; all share the reference, the drift flag and the disturbance record. A drifting run is
    repeated once."""
    if not fns:
        raise ValueError("compare() needs at least one callable")
    if min(rounds, min_runs) < 1 or warmup < 0 or max_seconds <= 0 or rel_ci <= 0:
        raise ValueError("rounds and min_runs must be >= 1, warmup >= 0, max_seconds and rel_ci > 0")
    steady_state_allocator()
    if reference is True:
        ref = regime.regime_block() if normalize else reference_workload()
    else:
        ref = reference or None
    if normalize and ref is None:
        raise ValueError("normalize=True needs a reference (True for the built-in block)")
    if detect is None:
        detect = timer is time.perf_counter
    guard = measurement_lock(lock_path, lock_timeout) if lock else contextlib.nullcontext()
    min_clean = min(min_runs, rounds)
    with guard, _inference_mode():
        kw = dict(warmup=warmup, min_runs=min_clean, max_runs=rounds, max_seconds=max_seconds,
                  rel_ci=rel_ci, timer=timer, normalize=normalize, team=team)
        probe = ThreadProbe() if detect else None
        try:
            samples, refs, stop, dist = _rounds(fns, ref, probe=probe, **kw)
            remeasured = False
            watched = [_series(s, refs, True) for s in samples.values()] if normalize else [refs]
            if refs and any(stats.drifted(w, DRIFT_TOL)[0] for w in watched):
                samples, refs, stop, dist = _rounds(fns, ref, probe=probe, **kw)
                remeasured = True
        finally:
            if probe is not None:
                probe.close()
        out = {k: _summarize(s, stop, rel_ci, refs, dist, min_clean, normalize) for k, s in samples.items()}
        if normalize:
            _apply_anchor(out, refs, anchor)
    for m in out.values():
        m.remeasured = remeasured
    return out


def _batched(fn: Callable[[], Any], sample_s: float, warmup: int,
             timer: Callable[[], float]) -> tuple[Callable[[], None], int]:
    """`fn` wrapped so that one call runs it n times, n sized from one timed call (after `warmup` calls) so that
    a call lasts about `sample_s`. Returns (wrapped, n)."""
    for _ in range(warmup):
        fn()
    t0 = timer()
    fn()
    n = max(1, int(sample_s / max(timer() - t0, 1e-7)))

    def many() -> None:
        for _ in range(n):
            fn()
    return many, n


def _per_call(m: Measurement, n: int) -> Measurement:
    return replace(m, median=m.median / n, p10=m.p10 / n, p90=m.p90 / n, min=m.min / n,
                               samples=[s / n for s in m.samples])


def compare_micro(fns: dict[str, Callable[[], Any]], rounds: int, *, sample_s: float = 0.01, warmup: int = 1,
                  drop_slower_than: float | None = None, keep: str | None = None,
                  max_seconds: float = 600.0, timer: Callable[[], float] = time.perf_counter) -> dict[str, Measurement]:
    """`compare` for micro-benchmarks: candidates too fast to time one call at a time. Each candidate is batched
    so one timed call lasts about `sample_s`, then exactly `rounds` clean interleaved rounds are kept (disturbed
    ones are discarded and made up, up to 3x `rounds` or `max_seconds`), with no reference workload. With
    `drop_slower_than` = r, three screening rounds come first and a candidate r times slower than the fastest
    (other than `keep`) is not timed further: it cannot decide a ratio; it keeps its screening Measurement.
    Returns name -> Measurement of ONE call (seconds). `timer` is injectable as in `compare`."""
    batched = {k: _batched(f, sample_s, warmup, timer) for k, f in fns.items()}
    # no team probe (disturb.TeamProbe): a micro-benchmark's batched samples are judged by the run queues alone
    kw = dict(warmup=0, rel_ci=math.inf, reference=False, max_seconds=max_seconds, timer=timer, team=False)
    calls = {k: b[0] for k, b in batched.items()}
    out: dict[str, Measurement] = {}
    if drop_slower_than is not None and len(calls) > 1:
        screen = compare(calls, 9, min_runs=3, **kw)
        best = min(m.median / batched[k][1] for k, m in screen.items() if math.isfinite(m.median))
        for k, m in screen.items():
            if k != keep and not m.median / batched[k][1] < drop_slower_than * best:
                out[k] = _per_call(m, batched[k][1])
                del calls[k]
    timed = compare(calls, 3 * rounds, min_runs=rounds, **kw)
    out.update({k: _per_call(m, batched[k][1]) for k, m in timed.items()})
    return {k: out[k] for k in fns}


def _apply_anchor(out: dict[str, Measurement], refs: list[float], given: float | None = None) -> None:
    """Set `normalized` = regime_ratio x R* for this machine and thread count (still under the lock), or x
    `given`, the caller's own reference's latency. Without an anchor yet, a clean measurement's reference median
    becomes R*; a disturbed one anchors nothing."""
    import torch

    key = regime.anchor_key(torch.get_num_threads())
    r_star = given if given is not None else regime.anchor(key)
    clean = refs and not any(m.disturbed for m in out.values())
    if r_star is None and clean:
        r_star = regime.set_anchor(key, stats.median(refs), source="first clean measurement")
    for m in out.values():
        if r_star is not None and m.regime_ratio is not None and math.isfinite(m.regime_ratio):
            m.regime_anchor, m.normalized = r_star, m.regime_ratio * r_star
        if m.lower_bound is not None:  # a ratio until here: a bound in seconds needs the anchor
            m.lower_bound = None if r_star is None else m.lower_bound * r_star


def measure(fn: Callable[[], Any], *, warmup: int = 3, min_runs: int = 10, max_runs: int = 1000,
            max_seconds: float = 10.0, rel_ci: float = 0.02, reference: bool | Callable[[], Any] = True,
            timer: Callable[[], float] = time.perf_counter, lock: bool = True,
            lock_path: str | os.PathLike | None = None, lock_timeout: float | None = None,
            detect: bool | None = None, normalize: bool = False, anchor: float | None = None) -> Measurement:
    """Time `fn()` (under the measurement lock and torch.inference_mode) until the median's 95% CI half-width
    over the clean rounds is within `rel_ci` of it or `max_runs` / `max_seconds` is reached. See the module
    docstring for how steady state is ensured and disturbed rounds are discarded. `timer` is injectable (tests
    use a fake clock). `normalize` (and `anchor`): also the regime-normalized latency (see `compare`)."""
    return compare({"fn": fn}, max_runs, warmup=warmup, min_runs=min_runs, max_seconds=max_seconds,
                   rel_ci=rel_ci, reference=reference, timer=timer, lock=lock, lock_path=lock_path,
                   lock_timeout=lock_timeout, detect=detect, normalize=normalize, anchor=anchor)["fn"]


def measure_until_clean(fn: Callable[[], Any], *, quiet_wait: float = 30.0, threads: int | None = None,
                        clock: Callable[[], float] = time.monotonic, lock_path: str | os.PathLike | None = None,
                        settle: Callable[[Measurement], bool] | None = None,
                        **measure_kw: Any) -> tuple[Measurement, dict[str, Any]]:
    """`measure(fn)`, and while the result is disturbed: wait for the machine to leave `threads` cores free
    (`wait_for_quiet`, each wait capped at 1, 2, 4, 8 ... s) and measure again, until `quiet_wait` seconds have
    passed. A load that never fully ends still leaves clean rounds now and then, so each pause ends in a new
    measurement even when the machine is not yet quiet. Holds the measurement lock throughout, so this process's
    own compute slices (a search's training) pause and only other programs count as load. `settle(m)`: a
    disturbed measurement for which it is true ends the waiting at once (the caller decides on its
    `lower_bound`, e.g. a network far over a latency budget; info["settled"] is then True). Returns (the clean
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
            if settle is not None and settle(m):
                info["settled"] = True
                return m, info
            if clock() >= deadline:
                return m, info
            _, waited, _ = wait_for_quiet(threads, min(deadline, clock() + pause))
            info["waited_s"] = round(info["waited_s"] + waited, 3)
            pause *= 2
