"""Establishing the anchors of regime-normalized latency (regime.py) by measuring: R*, the reference block's own
latency (`calibrate`, what `archdsl bench --calibrate` runs), and the latency of a reference network
(`reference_net_latency`, what the search times its trials against). Both are recorded in `regime.json`.

Takes: a thread count (and a network's forward callable and name). Returns: the anchor in seconds and a record
of how it was measured; a measurement that never got clean records nothing.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from . import stats
from .machine import torch_threads
from .regime import _path, anchor, anchor_key, regime_block, set_anchor

__all__ = ["calibrate", "reference_net_latency", "NET_TRIES", "NET_PAUSE"]

NET_TRIES, NET_PAUSE = 7, 0.5  # block-normalized measurements of a reference network (median), s between them


def calibrate(threads: int, *, max_seconds: float = 10.0) -> dict[str, Any]:
    """Measure the reference block alone with `threads` torch threads (disturbed rounds discarded, waiting for
    quiet as the search does) and record its median as this machine's anchor R*, replacing any earlier one.
    Every normalized latency recorded before is in units of the old anchor: compare figures of one anchor only.
    Returns {"key", "path", "reference_ms", "previous_ms", "stable", "disturbed", "runs", "reason"}; a
    disturbed measurement anchors nothing."""
    from .measure import measure_until_clean

    key = anchor_key(threads)
    old = anchor(key)
    with torch_threads(threads):
        m, _ = measure_until_clean(regime_block(), threads=threads, max_seconds=max_seconds, reference=False,
                                   rel_ci=0.01)
    if not m.disturbed:
        set_anchor(key, m.median, source=f"archdsl bench --calibrate ({m.runs} clean rounds)", force=True)
    return {"key": key, "path": str(_path()), "reference_ms": None if m.disturbed else m.median * 1e3,
            "previous_ms": None if old is None else old * 1e3, "stable": m.stable, "disturbed": m.disturbed,
            "runs": m.runs, "reason": (m.disturbance or {}).get("reason")}


def reference_net_latency(name: str, fn: Callable[[], Any], threads: int, *, tries: int | None = None,
                          pause: float | None = None, **measure_kw: Any) -> tuple[float | None, dict[str, Any]]:
    """The latency (s) of a reference network `fn` (run with torch's current threads, `threads` of them),
    identified by `name` (e.g. its graph hash): recorded in `regime.json` under this machine, the thread count
    and `name`, or else established now as the median of `tries` (NET_TRIES) block-normalized measurements
    `pause` (NET_PAUSE) s apart (each waits for quiet as the search does; disturbed ones are dropped) and
    recorded. The measurement lock is held throughout, so concurrent processes establish it once. Returns
    (seconds, or None when no measurement was clean, and {"key", "source", "tries_ms"})."""
    from .lock import measurement_lock
    from .measure import measure_until_clean

    key = f"{anchor_key(threads)}-net-{name}"
    tries, pause = NET_TRIES if tries is None else tries, NET_PAUSE if pause is None else pause
    with measurement_lock(measure_kw.get("lock_path")):
        known = anchor(key)
        if known is not None:
            return known, {"key": key, "source": "recorded", "tries_ms": []}
        got = []
        for i in range(tries):
            if i:
                time.sleep(pause)
            m, _ = measure_until_clean(fn, threads=threads, normalize=True, **measure_kw)
            if not m.disturbed and m.normalized is not None:
                got.append(m.normalized)
        info = {"key": key, "source": "measured", "tries_ms": [round(v * 1e3, 6) for v in got]}
        if not got:
            return None, info
        value = stats.median(got)
        return set_anchor(key, value, source=f"median of {len(got)} block-normalized measurements"), info
