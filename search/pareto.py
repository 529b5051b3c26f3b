"""Analysis of a search's trial records: the accuracy/latency Pareto front, its hypervolume, the best trials, a plot.

Takes: trial records (dicts with status, accuracy, latency_ms, predicted_ms, hash, trial; see search/records.py)
and a latency budget in ms. Returns: lists of records, a float (hypervolume), or a PNG written with matplotlib's
Agg canvas (no display needed; the global backend is left alone).

Only records with status "ok" and finite accuracy and latency_ms take part in the front and the rankings.
`metric="score"` ranks by the record's `score` (the objective's value, e.g. a zero-cost proxy) instead.
Orders are total, so every result is deterministic: ties fall back to the trial number, then the trial id.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .records import measurement_counts, measurement_text

__all__ = ["pareto_front", "hypervolume", "best_under_budget", "top_k", "latency_axis", "pareto_figure",
           "plot_pareto"]


def _num(value: Any) -> float | None:
    """`value` as a finite float, else None (null, NaN, inf, bools and strings do not count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _trial_key(record: dict) -> tuple:
    trial = record.get("trial")
    number = trial if isinstance(trial, int) and not isinstance(trial, bool) else math.inf
    return (number, str(record.get("trial_id") or ""))


def _measured(records: Iterable[dict], budget_ms: float | None, metric: str) -> list[tuple[float, float, dict]]:
    """(latency_ms, metric, record) of the ok records with both numbers, within the budget when one is given."""
    out = []
    for r in records:
        if r.get("status") != "ok":
            continue
        lat, acc = _num(r.get("latency_ms")), _num(r.get(metric))
        if lat is None or acc is None or (budget_ms is not None and lat > budget_ms):
            continue
        out.append((lat, acc, r))
    return out


def _unique_by_hash(rows: list[tuple[float, float, dict]]) -> list[tuple[float, float, dict]]:
    """The rows in order, keeping the first of each architecture hash (rows without a hash are all kept)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        h = row[2].get("hash")
        if h is not None:
            if h in seen:
                continue
            seen.add(h)
        out.append(row)
    return out


def pareto_front(records: Iterable[dict], *, budget_ms: float | None = None, metric: str = "accuracy") -> list[dict]:
    """The non-dominated ok records (maximize `metric`, minimize latency_ms), sorted by latency, then by trial.

    A record is dominated when another is at least as good in both and strictly better in one. Two different
    architectures with exactly the same (latency, accuracy) dominate neither each other: both stay. Records of
    the same hash count once (the first in latency, then accuracy, then trial order). With `budget_ms`, only
    records with latency_ms <= budget_ms take part.
    """
    rows = sorted(_measured(records, budget_ms, metric), key=lambda row: (row[0], -row[1], _trial_key(row[2])))
    front: list[tuple[float, float, dict]] = []
    for row in _unique_by_hash(rows):
        lat, acc, _ = row
        if not front or acc > front[-1][1]:
            front.append(row)
        elif acc == front[-1][1] and lat == front[-1][0]:  # an exact tie with the last point of the front
            front.append(row)
    return [r for _, _, r in front]


def hypervolume(points: Iterable[Sequence[float]], ref: Sequence[float]) -> float:
    """The exact 2-D hypervolume of `points` (latency_ms, accuracy) against `ref` (ref_latency_ms, ref_accuracy):
    the area of the region with latency in [point latency, ref latency] and accuracy in [ref accuracy, point
    accuracy], united over the points. Points outside the reference box (latency >= ref or accuracy <= ref) and
    non-finite points add nothing; dominated points add nothing."""
    ref_lat, ref_acc = (float(v) for v in ref)
    if not (math.isfinite(ref_lat) and math.isfinite(ref_acc)):
        raise ValueError(f"the reference point must be finite, got {tuple(ref)!r}")
    inside = []
    for p in points:
        lat, acc = _num(p[0]), _num(p[1])
        if lat is not None and acc is not None and lat < ref_lat and acc > ref_acc:
            inside.append((lat, acc))
    # Sweep by latency: each point that raises the best accuracy so far adds the strip between the old best and
    # its accuracy, which reaches from its latency to the reference latency.
    inside.sort(key=lambda p: (p[0], -p[1]))
    strips = []
    best = ref_acc
    for lat, acc in inside:
        if acc > best:
            strips.append((ref_lat - lat) * (acc - best))
            best = acc
    return math.fsum(strips)


def _ranked(records: Iterable[dict], budget_ms: float | None, metric: str) -> list[dict]:
    """Ok records by the metric (highest first), then latency (lowest first), then trial; one per hash. Records
    trained again with more seeds (`rescored`, search/rescore.py) come before the rest: their mean is a surer
    score than one run's."""
    rows = sorted(_measured(records, budget_ms, metric),
                  key=lambda row: (not row[2].get("rescored"), -row[1], row[0], _trial_key(row[2])))
    return [r for _, _, r in _unique_by_hash(rows)]


def best_under_budget(records: Iterable[dict], budget_ms: float | None, *, metric: str = "accuracy") -> dict | None:
    """The most accurate ok record with latency_ms <= budget_ms (lower latency breaks ties); None if there is none."""
    ranked = _ranked(records, budget_ms, metric)
    return ranked[0] if ranked else None


def top_k(records: Iterable[dict], k: int, budget_ms: float | None = None, *, metric: str = "accuracy") -> list[dict]:
    """The k most accurate ok records within the budget (lower latency, then trial, breaks ties), one per hash."""
    return _ranked(records, budget_ms, metric)[: max(0, k)]


def latency_axis(latencies: Iterable[float], ok_latencies: Iterable[float],
                 budget_ms: float | None) -> tuple[float, float, bool]:
    """The latency axis of a Pareto plot (pareto.png here, the report's SVG in report_plots.py): (lo, hi, log).
    `latencies`: every plotted point's latency; `ok_latencies`: those of the trials within the budget. lo..hi is
    the range to show, the budget included; a point beyond 100 x the slowest ok trial or the budget (a prediction
    can be off by far more) does not stretch it. `log` is true when the range spans more than 12x (1 ms trials
    beside a 40 ms outlier or under a 50 ms budget: on a linear axis they would all sit against 0)."""
    extra = [budget_ms] if budget_ms else []
    far = 100 * max(list(ok_latencies) + extra, default=1.0)
    lats = [min(v, far) for v in latencies if v > 0] + extra
    lo, hi = min(lats, default=0.5), max(lats, default=1.0)
    return lo, hi, lo > 0 and hi / lo > 12


def pareto_figure(records: Iterable[dict], budget_ms: float | None, title: str | None = None, *,
                  metric: str = "accuracy", ylabel: str | None = None, baselines: Iterable[dict] = ()):
    """A matplotlib Figure (on an Agg canvas) of accuracy vs latency: every ok trial, the Pareto front as a step
    line, over-budget trials in grey at their latency (predicted latency for "predicted_over_budget"; at the
    bottom edge when not trained), and the budget as a dashed vertical line labelled "budget X ms". The latency
    axis is logarithmic when the latencies spread widely (`latency_axis`). `baselines` (search/baselines.py
    records) are drawn as labelled stars at their measured latency and score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = list(records)
    fig = Figure(figsize=(8.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    ok = sorted(_measured(records, None, metric), key=lambda row: (row[0], -row[1], _trial_key(row[2])))
    if ok:
        ax.scatter([r[0] for r in ok], [r[1] for r in ok], s=18, color="tab:blue", alpha=0.6,
                   label=f"trials ({len(ok)})", zorder=2)
    front = pareto_front(records, metric=metric)
    if front:
        ax.step([r["latency_ms"] for r in front], [r[metric] for r in front], where="post",
                color="tab:orange", marker="o", markersize=5, linewidth=1.5, label=f"Pareto front ({len(front)})",
                zorder=3)

    plotted = [r[0] for r in ok]  # every point's latency, for the axis
    for status, key, marker, label in (("over_budget", "latency_ms", "x", "over budget (measured)"),
                                       ("predicted_over_budget", "predicted_ms", "+", "over budget (predicted)")):
        trained, untrained = [], []
        for r in sorted(records, key=_trial_key):
            if r.get("status") != status:
                continue
            lat = _num(r.get(key))
            lat = lat if lat is not None else _num(r.get("latency_ms"))
            if lat is None:
                continue
            acc = _num(r.get(metric))
            (trained if acc is not None else untrained).append((lat, acc))
            plotted.append(lat)
        if not trained and not untrained:
            continue
        n = len(trained) + len(untrained)
        if trained:
            ax.plot([p[0] for p in trained], [p[1] for p in trained], linestyle="none", marker=marker,
                    color="0.6", label=f"{label} ({n})", zorder=1)
        if untrained:  # no accuracy: a tick along the bottom edge at its latency
            ax.plot([p[0] for p in untrained], [0.02] * len(untrained), linestyle="none", marker=marker,
                    color="0.6", transform=ax.get_xaxis_transform(), zorder=1,
                    label=None if trained else f"{label} ({n})")

    base = [(b["latency_ms"], b["score"], b["name"]) for b in baselines
            if b.get("status") == "ok" and _num(b.get("latency_ms")) is not None and _num(b.get("score")) is not None]
    if base:
        ax.scatter([b[0] for b in base], [b[1] for b in base], marker="*", s=110, color="tab:green",
                   edgecolor="black", linewidth=0.5, label=f"baselines, scaled ({len(base)})", zorder=4)
        for lat, score, name in base:
            ax.annotate(name, (lat, score), textcoords="offset points", xytext=(5, -10), fontsize=7,
                        color="tab:green")
        plotted += [b[0] for b in base]
    if budget_ms is not None:
        ax.axvline(budget_ms, linestyle="--", color="tab:red", linewidth=1.2, label=f"budget {budget_ms:g} ms")
        ax.text(budget_ms, 0.98, f" budget {budget_ms:g} ms", transform=ax.get_xaxis_transform(), color="tab:red",
                fontsize=8, ha="left", va="top")
    if not ok and not any(r.get("status") in ("over_budget", "predicted_over_budget") for r in records):
        ax.text(0.5, 0.5, "no finished trials", transform=ax.transAxes, ha="center", va="center", color="0.4")

    xlog = latency_axis(plotted, [r[0] for r in ok], budget_ms)[2]  # the report's rule for a log axis
    if xlog:
        ax.set_xscale("log")
    quality = measurement_text(measurement_counts(records))
    ax.set_xlabel(("latency (ms, log scale)" if xlog else "latency (ms)") + (f"\n{quality}" if quality else ""))
    ax.set_ylabel(ylabel or metric)
    ax.set_title(title or f"{metric} vs latency")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never hides a trial
    fig.tight_layout()
    return fig


def plot_pareto(records: Iterable[dict], budget_ms: float | None, path: str | os.PathLike,
                title: str | None = None, *, metric: str = "accuracy", ylabel: str | None = None,
                baselines: Iterable[dict] = ()) -> Path:
    """Write `pareto_figure(records, budget_ms, title, metric=...)` as a PNG to `path` (same records, same bytes).
    Returns the path."""
    path = Path(path)
    fig = pareto_figure(records, budget_ms, title, metric=metric, ylabel=ylabel, baselines=baselines)
    # No Software/time metadata, so the bytes depend only on the records.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
