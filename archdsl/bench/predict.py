"""The latency predictor: a model's latency from the per-operator table, calibrated on a few real runs.

Takes: a `LatencyTable` and checked deploy-form graphs. Returns: predicted milliseconds per graph.

    t = a * sum(table ms of every non-free node) + b * (number of non-free nodes) + c

`a` absorbs the systematic gap between an op timed alone and inside a model (caches warm or cold, the
timing loop's own overhead), `b` the per-node dispatch cost of the ArchModule interpreter, `c` the
model-level constant (input handling, the forward call). (a, b, c) come from a least-squares fit over a few
end-to-end measurements; with no fit the predictor returns the plain sum (a=1, b=c=0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .table import LatencyTable, graph_signatures, measure_signature

__all__ = ["Predictor", "fit_calibration"]


def fit_calibration(features: Sequence[Sequence[float]], targets: Sequence[float]) -> tuple[float, float, float]:
    """Least squares for t = a * sum_ms + b * n_nodes + c. `features`: rows (sum_ms, n_nodes). Needs >= 3 rows;
    when the rows cannot separate b from c (all n_nodes equal) b is taken as 0."""
    x = np.asarray(features, dtype=float).reshape(-1, 2)
    y = np.asarray(targets, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"the calibration needs >= 3 (features, target) pairs, got {len(x)} and {len(y)}")
    a_mat = np.column_stack([x[:, 0], x[:, 1], np.ones(len(x))])
    if np.ptp(x[:, 1]) == 0:  # n_nodes constant: collinear with the intercept
        coef, *_ = np.linalg.lstsq(a_mat[:, [0, 2]], y, rcond=None)
        return float(coef[0]), 0.0, float(coef[1])
    coef, *_ = np.linalg.lstsq(a_mat, y, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


class Predictor:
    """Predicts the latency (ms) of deploy-form graphs at one (batch, threads, dtype) from a `LatencyTable`.
    `measure_missing`: time a configuration the table lacks on the spot (and add it) instead of raising."""

    def __init__(self, table: LatencyTable, *, batch: int = 1, threads: int = 1, dtype: str = "float32",
                 measure_missing: bool = True, coef: tuple[float, float, float] = (1.0, 0.0, 0.0)):
        self.table = table
        self.batch, self.threads, self.dtype = batch, threads, dtype
        self.measure_missing = measure_missing
        self.coef = coef
        self.fit_info: dict[str, Any] = {}

    def features(self, graph) -> tuple[float, int]:
        """(sum of the table's median ms over the non-free nodes, number of non-free nodes)."""
        total, n = 0.0, 0
        for sig in graph_signatures(graph, dtype=self.dtype, batch=self.batch, threads=self.threads):
            rec = self.table.get(sig)
            if rec is None:
                if not self.measure_missing:
                    self.table.ms(sig)  # raises KeyError naming the configuration
                timing = measure_signature(sig)
                if timing.get("disturbed"):  # never stored; this prediction alone uses the clean rounds it had
                    if timing.get("median_ms") is None:
                        raise RuntimeError(f"could not time {sig['op']!r} cleanly: the machine is busy")
                    rec = timing
                else:
                    rec = self.table.add(sig, timing)
            total += rec["median_ms"]
            n += 1
        return total, n

    def fit(self, graphs: Sequence[Any], measured_ms: Sequence[float]) -> tuple[float, float, float]:
        """Fit (a, b, c) on end-to-end medians (ms) of `graphs`. Returns and keeps the coefficients."""
        feats = [self.features(g) for g in graphs]
        self.coef = fit_calibration(feats, measured_ms)
        self.fit_info = {"n": len(feats), "features": [list(f) for f in feats], "measured_ms": list(measured_ms)}
        return self.coef

    def select_calibration(self, graphs: Sequence[Any], k: int) -> list[int]:
        """Indices of k graphs spread evenly over the table-predicted range (smallest and largest included), so
        the fitted line interpolates instead of extrapolating. Needs no end-to-end measurement."""
        if k >= len(graphs):
            return list(range(len(graphs)))
        order = sorted(range(len(graphs)), key=lambda i: self.features(graphs[i])[0])
        picks = {order[round(j * (len(order) - 1) / (k - 1))] for j in range(k)} if k > 1 else {order[0]}
        extra = (i for i in order if i not in picks)
        while len(picks) < k:  # rounding collisions on tiny inputs
            picks.add(next(extra))
        return sorted(picks)

    def predict_features(self, sum_ms: float, n_nodes: int) -> float:
        a, b, c = self.coef
        return a * sum_ms + b * n_nodes + c

    def predict(self, graph) -> float:
        """The predicted latency of one forward pass of `graph` (deploy form), in ms."""
        return self.predict_features(*self.features(graph))

    # -- persistence: next to the table, one file per machine and setting

    def calibration_path(self) -> Path:
        return self.table.dir / f"calibration-{self.table.machine}-{self.dtype}-b{self.batch}-t{self.threads}.json"

    def save(self, path: str | os.PathLike | None = None) -> Path:
        p = Path(path) if path is not None else self.calibration_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        a, b, c = self.coef
        data = {"machine": self.table.machine, "dtype": self.dtype, "batch": self.batch, "threads": self.threads,
                "a": a, "b": b, "c": c, "fit": self.fit_info}
        p.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return p

    def load(self, path: str | os.PathLike | None = None) -> bool:
        """Load the calibration; False (coefficients unchanged) when missing or fitted on another machine or
        setting."""
        p = Path(path) if path is not None else self.calibration_path()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        same = (data.get("machine"), data.get("dtype"), data.get("batch"), data.get("threads")) == (
            self.table.machine, self.dtype, self.batch, self.threads)
        if not same:
            return False
        self.coef = (float(data["a"]), float(data["b"]), float(data["c"]))
        self.fit_info = data.get("fit", {})
        return True
