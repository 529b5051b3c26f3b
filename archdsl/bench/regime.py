"""Regime-normalized latency: a model's time in units of a fixed reference block timed in the same rounds.

Takes: the number of torch threads a measurement runs with. Returns: the reference block (`regime_block`), the
machine's anchor R* (`anchor`, `set_anchor`) and the per-round ratio summary (`ratio_summary`).

Why: the cores of a virtual machine (and of a laptop) change speed by up to 2x over seconds, a host-level effect
the guest sees neither as run-queue wait nor as steal. A model measured a minute later then reads 20-40% off
with every round clean. Dividing each round's time by that of a ConvNeXt-like block timed right after it
(same threads, same caches, same moment) cancels most of it: the median of the per-round ratios, U, is
repeatable to a few per cent where the raw median is not (docs/latency.md). The latency reported is U x R*,
R* being the block's median recorded once per machine, thread count and device: the first clean measurement
anchors it (`regime.json` in the latency cache dir), and `archdsl bench --calibrate` (anchors.py) measures it
again on purpose. The raw median is always kept beside the normalized one.

A reference network: the block tracks a small model's speed only in part (a model of 0.3-1.5 ms read 10-35% off
from one measurement to the next, normalized by the block, on this project's VM), while the per-round ratio of
one small network to another of the same kind repeats within about 1%. A caller that measures many networks of
one family (the search, docs/search.md) therefore times them against a fixed network of that family, whose own
latency `reference_net_latency` establishes once per machine (the median of several block-normalized
measurements, recorded in `regime.json` under the network's hash; anchors.py) and which then anchors theirs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from . import stats
from .machine import default_cache_dir, load_json_cache, machine_hash, save_json_cache

__all__ = ["regime_block", "anchor_key", "anchor", "set_anchor", "ratio_summary", "REGIME_FILE"]

REGIME_FILE = "regime.json"


def regime_block() -> Callable[[], Any]:
    """A fixed ConvNeXt-like block on a 1x32x32x32 input (3x3 conv 32->32, depthwise 7x7, GELU, a channels-last
    32->128 linear), seeded, about 10 MFLOP: dense conv, depthwise conv, an elementwise op and a GEMM, the mix of
    a modern ConvNet, so its speed follows the machine's the way a model's does. Runs with torch's current
    thread count (set it before calling, as the measurement does)."""
    import torch

    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    dw = torch.nn.Conv2d(32, 32, 7, padding=3, groups=32)
    lin = torch.nn.Linear(32, 128)
    with torch.no_grad():
        for p in (*conv.parameters(), *dw.parameters(), *lin.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    x = torch.randn(1, 32, 32, 32, generator=g)
    gelu = torch.nn.functional.gelu

    def run():
        return lin(gelu(dw(conv(x))).permute(0, 2, 3, 1))

    return run


def anchor_key(threads: int, device: str = "cpu") -> str:
    """The anchor's key: this machine's fingerprint hash (without torch's thread count), threads, device."""
    return f"{machine_hash()}-t{threads}-{device}"


def _path() -> Path:
    return default_cache_dir() / REGIME_FILE


def anchor(key: str) -> float | None:
    """R* (seconds) recorded for `key`, or None (none yet, or an unusable file)."""
    rec = load_json_cache(_path()).get(key)
    v = rec.get("reference_s") if isinstance(rec, dict) else None
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


def set_anchor(key: str, reference_s: float, *, source: str, force: bool = False) -> float:
    """Record R* = `reference_s` for `key` unless one exists (or `force`); returns the anchor in force. Called
    under the measurement lock, so two processes never anchor the same key differently. A cache that cannot be
    written leaves R* unrecorded: this process uses `reference_s` and the next one anchors again."""
    data = load_json_cache(_path())
    old = data.get(key)
    if isinstance(old, dict) and not force:
        v = old.get("reference_s")
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    data[key] = {"reference_s": reference_s, "source": source,
                 "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    save_json_cache(_path(), data)
    return reference_s


def ratio_summary(samples: list[float], refs: list[float]) -> tuple[list[float], float]:
    """The per-round ratios model / reference (rounds aligned; rounds with a non-positive reference skipped)
    and their median (nan when there are none)."""
    ratios = [s / r for s, r in zip(samples, refs) if r > 0]
    return ratios, (stats.median(ratios) if ratios else float("nan"))
