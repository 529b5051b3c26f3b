"""Interleaved micro-timing shared by benchmarks/gemm_micro.py and benchmarks/kernels_micro.py.

Takes candidates (name -> zero-argument callable); returns name -> ms per call, one sample per round, each sample a
batch of calls lasting about `sample_ms`, the candidates timed in turn (A B C A B C ...) so that load from other
processes hits them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_samples(cands: dict[str, Callable[[], object]], reps: int, sample_ms: float, warmup: int = 1,
                        drop_slower_than: float | None = None, keep: str | None = None) -> dict[str, list[float]]:
    """`warmup` calls per candidate, then one more to size its sample. With `drop_slower_than` = r, after three
    rounds a candidate r times slower than the fastest (other than `keep`) is no longer timed: it cannot decide a
    ratio, and timing it only costs time."""
    inner = {}
    for name, fn in cands.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        inner[name] = max(1, int(sample_ms / 1e3 / max(dt, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in cands}
    live = list(cands)
    for rep in range(reps):
        for name in live:
            fn = cands[name]
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner[name] * 1e3)
        if drop_slower_than is not None and rep == 2:
            best = min(statistics.median(samples[n]) for n in live)
            live = [n for n in live if n == keep or statistics.median(samples[n]) < drop_slower_than * best]
    return samples
