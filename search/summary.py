"""What a search hands back (`run_search` -> SearchSummary), and the text `archdsl search` prints at the end.

Takes: the finished search's counts, best record, Pareto front, top-k files, problems and comparisons (driver.py
fills them in). Returns: `SearchSummary`, whose `text()` is the closing summary (also written as summary.json).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .records import measurement_text


@dataclass
class SearchSummary:
    out: Path
    counts: dict[str, int]
    best: dict | None
    front: list[dict]
    top: list[Path]
    seconds: float
    interrupted: bool = False
    exhausted: str | None = None
    problems: list[str] = field(default_factory=list)
    predictor: dict | None = None  # how the prefilter's predictions compared with the measurements
    objective: str = "accuracy"  # "accuracy" trains each network within budget; a proxy only scores it
    measurements: dict = field(default_factory=dict)  # records.measurement_counts: disturbed / retried / unmeasured
    failures: list[tuple[str, int]] = field(default_factory=list)  # (error, trials) of failed trials, most first
    baselines: list[dict] = field(default_factory=list)  # baselines.compare_with_best: the best vs each baseline
    budget_ms: float = 0.0

    @property
    def all_failed(self) -> bool:
        """Trials ran and every one failed: nothing was measured or scored (`archdsl search` exits 3)."""
        c = self.counts
        return (c.get("failed", 0) > 0 and c.get("ok", 0) == 0 and c.get("over_budget", 0) == 0
                and c.get("unmeasured", 0) == 0)

    def text(self) -> str:
        c = self.counts
        done = {"accuracy": "trained", "oneshot": "scored with inherited weights and measured"}.get(
            self.objective, f"scored ({self.objective})")
        lines = []
        if self.all_failed:
            lines.append(f"every trial failed ({c['failed']} of {c['failed']}): no architecture was evaluated. "
                         "Most common errors:")
            lines += [f"  {n} x {err}" for err, n in self.failures[:3]]
        lines += [f"{c.get('ok', 0)} {done}, {c.get('over_budget', 0)} over budget, {c.get('failed', 0)} failed, "
                  f"{c.get('rejected', 0)} rejected by the checker, {_n(c.get('duplicate', 0), 'duplicate')} skipped, "
                 f"{c.get('predicted_over_budget', 0)} discarded by the latency predictor"
                 + (f", {c['screened']} scored below the top and never measured" if c.get("screened") else "")
                 + f" ({self.seconds:.0f} s)"]
        if self.measurements.get("measurements"):
            lines.append(measurement_text(self.measurements))
        if self.measurements.get("unmeasured"):
            lines.append(f"{self.measurements['unmeasured']} architecture(s) have no clean latency yet (the machine "
                         f"stayed busy): they are measured first when you continue with --resume --out {self.out}")
        if self.best:
            b = self.best
            seeds = (f", mean over {len(b['scores'])} training seeds; its trial scored {b['score_trial']:.4f}"
                     if b.get("rescored") else "")
            lines.append(f"best under the budget: score {b['score']:.4f} at {b['latency_ms']:.2f} ms "
                         f"(trial {b['trial']}, {b['params']:,} params{seeds})")
        elif not self.all_failed:
            lines.append("no architecture met the budget")
        if self.baselines:
            from .baselines import baseline_lines

            lines += baseline_lines(self.baselines, self.budget_ms)
        if self.top:
            lines.append("top architectures: " + ", ".join(str(p) for p in self.top))
        lines.append(f"plot: {self.out / 'pareto.png'}")
        lines.append(f"report: archdsl report {shlex.quote(str(self.out))} -o report.html")
        if self.exhausted:
            lines.append(self.exhausted)
        if self.interrupted:
            lines.append(f"interrupted: finished trials are kept; continue with --resume --out {self.out}")
        lines += [f"note: {p}" for p in self.problems]
        return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    """`1 duplicate`, `2 duplicates`: the noun in the plural only where the count is."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
