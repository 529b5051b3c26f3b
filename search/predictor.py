"""The latency predictor as the search uses it: discard candidates far over budget before building them.

Takes: candidates (checked training-form graphs) and, as trials finish, their measured latencies. Returns:
predicted ms per candidate, or None when the per-operator table (archdsl.bench.table, cached on disk per
machine, built by `archdsl bench --build-table SPACE.arch --threads N`) lacks one of its configurations.

The search never times operators itself: op timings taken while trials start up and train beside them came out
up to 100x too slow (measured: 83-433 ms predicted for 1-2 ms models) and would poison the cache.

The prediction is `scale * (sum of the table's op times)`. `scale` starts at 1: the plain sum underestimates a
whole model, so the prefilter then only discards what is over budget by its ops alone. Once `min_fit` trials
are measured, `scale` becomes the median of measured / sum over them. A median ratio, not a least-squares line:
a few noisy early measurements must not swing the prefilter (a 3-parameter fit on 4 points can extrapolate to
seconds). Only a prefilter: every candidate kept is measured for real by the trial.
"""

from __future__ import annotations

from typing import Any

from ..bench.predict import Predictor
from ..bench.table import LatencyTable
from ..passes import deploy_graph

__all__ = ["SearchPredictor"]


class SearchPredictor:
    def __init__(self, *, threads: int, batch: int = 1, min_fit: int = 3, cache_dir=None):
        self.table = LatencyTable(cache_dir)
        self.p = Predictor(self.table, batch=batch, threads=threads, measure_missing=False)
        self.covered = 0  # candidates the table could predict
        self.uncovered = 0
        self.scale = 1.0
        self.min_fit = min_fit
        self.feats: list[tuple[float, int]] = []
        self.measured: list[float] = []
        self._predicted: dict[str, tuple[float, int]] = {}  # hash -> features, until its measurement arrives
        self.errors: list[float] = []  # relative error of each prediction made before its measurement

    def _features(self, graph) -> tuple[float, int] | None:
        dg, _ = deploy_graph(graph)
        try:
            return self.p.features(dg)
        except KeyError:  # a configuration the table has not measured
            return None

    def predict_candidate(self, cand) -> float | None:
        f = self._features(cand.graph)
        if f is None:
            self.uncovered += 1
            return None
        self.covered += 1
        self._predicted[cand.hash] = f
        return self.scale * f[0]

    def observe(self, arch_hash: str, measured_ms: float) -> None:
        """A trial measured the candidate `arch_hash` (predicted before) at `measured_ms`: keep it, and refit once
        enough are in. Candidates the table could not predict are ignored."""
        f = self._predicted.pop(arch_hash, None)
        if f is None:
            return
        self.errors.append((self.scale * f[0] - measured_ms) / measured_ms)
        self.feats.append(f)
        self.measured.append(float(measured_ms))
        if len(self.feats) >= self.min_fit:
            ratios = sorted(m / x[0] for m, x in zip(self.measured, self.feats) if x[0] > 0)
            if ratios:
                self.scale = ratios[len(ratios) // 2]

    def accuracy(self) -> dict[str, Any]:
        """How the predictions made during this search compared with the measurements that followed."""
        e = self.errors
        cover = {"covered": self.covered, "uncovered": self.uncovered, "scale": self.scale}
        if not e:
            return {"n": 0, **cover}
        return {"n": len(e), **cover, "within_10pct": sum(abs(x) <= 0.10 for x in e) / len(e),
                "within_5pct": sum(abs(x) <= 0.05 for x in e) / len(e)}

