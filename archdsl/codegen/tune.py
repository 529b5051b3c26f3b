"""Stage 5 (deploy runtime): measured choice between candidate implementations, cached on disk.

Takes: a step's candidates (name -> zero-argument callable running it on its real input) and a key describing
everything the choice depends on (op signature, shapes, memory formats, dtype). Returns: the fastest candidate's
name and every candidate's median time. Choices are kept in `<cache>/kernels/tune.jsonl`, one JSON line per key,
where the key also carries the thread count, the CPU, the torch version and the fused-kernel library's hash, so a
choice made on one machine or build is never reused on another.

A choice can be poisoned by a bad moment: so only a clean comparison is stored (no round in which another
program took a measuring thread's core), each record keeps its margin over the runner-up (`margin`) and when it
was measured (`t`), and a narrow one (margin under NARROW) is measured again the next time its step is built on
a quiet machine (`is_quiet`), until NARROW_CHECKS clean comparisons agree it is the choice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.machine import _cpuinfo
from ..kernels import native

TUNE_VERSION = 1
NARROW = 0.10        # a choice less than 10% faster than the runner-up is measured again on a quiet machine ...
NARROW_CHECKS = 2    # ... until this many clean comparisons stand behind it


def machine_context() -> dict[str, Any]:
    """What every tuning choice depends on besides the step itself."""
    import torch

    cpu = _cpuinfo()[0] or platform.processor() or platform.machine()
    return {"v": TUNE_VERSION, "threads": torch.get_num_threads(), "cpu": cpu, "torch": torch.__version__,
            "native": native.build_info().path.name if native.available() else None}


def tune_key(signature: dict[str, Any]) -> str:
    """A stable 24-hex-digit key for a step signature on this machine and build."""
    blob = json.dumps({"sig": signature, "ctx": machine_context()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class TuneCache:
    """Key -> {"choice", "ms"} records in a JSON-lines file ($ARCHDSL_TUNE_CACHE, else <cache>/kernels/tune.jsonl);
    later lines win. Unreadable lines are skipped."""

    def __init__(self, path: str | os.PathLike | None = None):
        env = os.environ.get("ARCHDSL_TUNE_CACHE")
        self.path = Path(path) if path is not None else Path(env) if env else native.cache_dir() / "tune.jsonl"
        self._data: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            self._data = {}
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError:
                text = ""
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                    self._data[rec["key"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue
        return self._data

    def get(self, key: str) -> dict[str, Any] | None:
        return self._load().get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        rec = {"key": key, **record}
        self._load()[key] = rec
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:  # one short append: atomic enough for a cache
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache only costs re-tuning


def pick(candidates: dict[str, Callable[[], Any]], *, max_seconds: float = 1.0, min_runs: int = 5,
         rounds: int = 40, fallback: str | None = None) -> tuple[str, dict[str, float], bool]:
    """Time the candidates interleaved (archdsl.bench's compare: warm-up, round-robin, the measurement lock, rounds
    in which another program took a measuring thread's core discarded) and return (fastest name by median,
    name -> median ms, clean). `clean` is False when the comparison was disturbed (too few clean rounds): the
    choice is then made from the clean rounds there were, or is `fallback` (else the first candidate) when there
    were none, and must not be cached. A single candidate is returned unmeasured (clean)."""
    if len(candidates) == 1:
        (name,) = candidates
        return name, {}, True
    from ..bench.measure import compare

    res = compare(candidates, rounds=rounds, warmup=2, min_runs=min_runs, max_seconds=max_seconds, rel_ci=0.03,
                  reference=False, team=False)  # kernel choices: the run queues judge, as compare_micro
    ms = {k: 1e3 * m.median for k, m in res.items() if math.isfinite(m.median)}
    clean = not any(m.disturbed for m in res.values())
    if len(ms) < len(res):  # no clean round at all
        name = fallback if fallback in candidates else next(iter(candidates))
        return name, ms, False
    return min(ms, key=ms.__getitem__), ms, clean


def margin(ms: dict[str, float], choice: str) -> float | None:
    """How much faster `choice` was than the fastest other candidate: runner-up / choice - 1 (None with one)."""
    others = [v for k, v in ms.items() if k != choice]
    if not others or choice not in ms or ms[choice] <= 0:
        return None
    return min(others) / ms[choice] - 1.0


def is_quiet(threads: int) -> bool:
    """Whether other programs leave `threads` cores free right now (a quarter-second look, disturb.py)."""
    import time

    from ..bench.disturb import wait_for_quiet

    return wait_for_quiet(threads, time.monotonic())[0]
