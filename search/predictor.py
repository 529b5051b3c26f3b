"""The latency predictor as the search uses it: discard candidates far over budget before building them.

Takes: candidates (checked training-form graphs) and, as trials finish, their measured latencies. Returns:
predicted ms per candidate. The per-operator table (archdsl.bench.table, cached on disk per machine) supplies
op timings, measuring a configuration it lacks on the spot. The prediction is `scale * (sum of the table's op
times)`, where `scale` starts at 1 (the plain sum, which underestimates a whole model: the prefilter then only
discards what is over budget even by its ops alone) and becomes the median of measured / sum over this search's
own trials once `min_fit` are in. The median ratio, not a least-squares line, because a few noisy early
measurements must not swing the prefilter (a 3-parameter fit on 4 points can extrapolate to seconds).
Only a prefilter: every candidate kept is measured for real by the trial.
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
        self.p = Predictor(self.table, batch=batch, threads=threads, measure_missing=True)
        self.scale = 1.0
        self.min_fit = min_fit
        self.feats: list[tuple[float, int]] = []
        self.measured: list[float] = []
        self.errors: list[float] = []  # relative error of each prediction made before its measurement

    def _features(self, graph) -> tuple[float, int]:
        dg, _ = deploy_graph(graph)
        return self.p.features(dg)

    def predict_candidate(self, cand) -> float:
        return self.scale * self._features(cand.graph)[0]

    def observe_point(self, space, point: dict[str, Any], measured_ms: float) -> None:
        """A trial measured `point` at `measured_ms`: keep it, and refit once enough are in."""
        cand = space.check_point(point)
        graph = getattr(cand, "graph", None)
        if graph is None:
            return
        f = self._features(graph)
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
        if not e:
            return {"n": 0}
        return {"n": len(e), "within_10pct": sum(abs(x) <= 0.10 for x in e) / len(e),
                "within_5pct": sum(abs(x) <= 0.05 for x in e) / len(e)}

    def save(self) -> None:
        self.table.save()
