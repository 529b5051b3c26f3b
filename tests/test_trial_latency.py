"""How a search trial turns measurements into the latency it decides on (search/trial.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from archdsl.search import trial
from archdsl.search.trial import TrialSettings, measure_latency_local

from archdsl.bench.measure import Measurement

TINY = Path(__file__).resolve().parent.parent / "examples" / "search" / "tiny_space.arch"
POINT = {"width": 16, "stages.0.kind": "dwconv", "stages.0.kernel": 3, "stages.0.blocks": 1,
         "stages.1.kind": "dwconv", "stages.1.kernel": 3, "stages.1.blocks": 1}


def _fake(monkeypatch, latencies_ms):
    """measure_until_clean returns clean measurements with these normalized latencies, in order."""
    seq = iter(latencies_ms)
    calls = []

    def fake(fn, **kw):
        calls.append(kw)
        v = next(seq) * 1e-3
        m = Measurement(median=v * 1.3, p10=v, p90=v, min=v, runs=20, rel_ci=0.01, stable=True, stop="converged",
                        regime_ratio=2.0, regime_anchor=v / 2, normalized=v)
        return m, {"tries": 1, "disturbed_tries": 0, "waited_s": 0.0, "attempts": []}

    # the module (the package attribute `archdsl.bench.measure` is the function of that name)
    monkeypatch.setattr(sys.modules["archdsl.bench.measure"], "measure_until_clean", fake)
    monkeypatch.setattr(trial, "NEAR_PAUSE", 0.0)
    return calls


def _settings(budget):
    return TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=budget)


def test_a_latency_near_the_budget_is_measured_three_times_and_the_median_decides(monkeypatch):
    calls = _fake(monkeypatch, [1.9, 2.3, 2.05])
    lat = measure_latency_local(_settings(2.0), POINT)
    assert len(calls) == 3 and all(c["normalize"] for c in calls)
    assert lat["near_budget_ms"] == [1.9, 2.3, 2.05]
    assert lat["latency_ms"] == pytest.approx(2.05)  # the median: over the budget, where the first said under
    assert lat["median_ms"] == pytest.approx(2.05 * 1.3)  # the raw median is kept beside it


def test_a_latency_far_from_the_budget_is_measured_once(monkeypatch):
    calls = _fake(monkeypatch, [1.0])
    lat = measure_latency_local(_settings(2.0), POINT)
    assert len(calls) == 1 and "near_budget_ms" not in lat and lat["latency_ms"] == pytest.approx(1.0)
