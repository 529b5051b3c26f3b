"""Regime-normalized latency (archdsl/bench/regime.py): per-round ratio to a reference, times a fixed anchor."""

from __future__ import annotations

import json
import math

import pytest
from fake_clock import FakeClock

from archdsl.bench import regime
from archdsl.bench.measure import measure
from archdsl.cli import main

ATTO = "examples/convnext_atto.arch"


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))


def _regime_run(clock, speed, n=40, ratio=3.0):
    """A model that takes `ratio` x the reference; the machine runs at `speed` (a list, one per round)."""
    ref = [1e-3 * s for s in speed]
    model = [ratio * r for r in ref]
    return measure(clock.work(model), reference=clock.work(ref), normalize=True, warmup=0, min_runs=n,
                   max_runs=n, max_seconds=1e9, timer=clock)


def test_the_normalized_latency_ignores_the_machines_regime():
    clock = FakeClock()
    # first run: the machine halves its speed half way; the ratio model/reference stays 3
    first = _regime_run(clock, [1.0] * 20 + [2.0] * 20)
    assert first.regime_ratio == pytest.approx(3.0)
    assert not first.drift and first.stable  # a regime change the reference tracks is no drift
    assert first.regime_anchor == pytest.approx(1.5e-3)  # the first clean measurement anchors R*: ref median
    assert first.normalized == pytest.approx(4.5e-3)
    # a later run 1.7x slower throughout: the raw median moves, the normalized latency does not
    later = _regime_run(clock, [1.7] * 40)
    assert later.median == pytest.approx(5.1e-3)
    assert later.normalized == pytest.approx(4.5e-3) and later.latency == later.normalized
    assert later.to_json()["latency_ms"] == pytest.approx(4.5)


def test_a_drift_the_reference_does_not_follow_is_flagged():
    clock = FakeClock()
    ref = [1e-3] * 80
    model = ([2e-3] * 20 + [3e-3] * 20) * 2  # the model slows, the reference does not: twice in a row
    m = measure(clock.work(model), reference=clock.work(ref), normalize=True, warmup=0, min_runs=40, max_runs=40,
                max_seconds=1e9, timer=clock)
    assert m.remeasured and m.drift and not m.stable


def test_without_normalize_there_is_no_normalized_figure():
    clock = FakeClock()
    m = measure(clock.work([2e-3] * 20), reference=clock.work([1e-3] * 20), warmup=0, min_runs=20, max_runs=20,
                max_seconds=1e9, timer=clock)
    assert m.normalized is None and m.regime_ratio is None and m.latency == m.median
    j = m.to_json()
    assert j["normalized_ms"] is None and j["latency_ms"] == pytest.approx(2.0)


def test_normalize_needs_a_reference():
    with pytest.raises(ValueError, match="needs a reference"):
        measure(lambda: None, reference=False, normalize=True)


def test_anchor_is_kept_unless_forced(tmp_path):
    key = regime.anchor_key(2)
    assert regime.anchor(key) is None
    assert regime.set_anchor(key, 1e-3, source="test") == 1e-3
    assert regime.set_anchor(key, 5e-3, source="test") == 1e-3  # the first anchor stays
    assert regime.anchor(key) == 1e-3
    assert regime.set_anchor(key, 5e-3, source="test", force=True) == 5e-3
    assert regime.anchor(key) == 5e-3
    assert regime.anchor(regime.anchor_key(1)) is None  # per thread count
    (tmp_path / "cache" / regime.REGIME_FILE).write_text("{not json")
    assert regime.anchor(key) is None  # an unusable file anchors nothing


def test_ratio_summary_skips_empty_reference_rounds():
    ratios, med = regime.ratio_summary([2.0, 4.0, 6.0], [1.0, 0.0, 2.0])
    assert ratios == [2.0, 3.0] and med == 2.5
    assert math.isnan(regime.ratio_summary([], [])[1])


def test_the_real_block_measures_and_anchors(tmp_path):
    import torch

    block = regime.regime_block()
    y = block()
    assert tuple(y.shape) == (1, 32, 32, 128) and torch.isfinite(y).all()
    m = measure(lambda: block(), normalize=True, max_seconds=1.0, min_runs=5)
    assert m.regime_ratio is not None and 0.5 < m.regime_ratio < 2.0  # the block against itself
    if not m.disturbed:
        assert regime.anchor(regime.anchor_key(torch.get_num_threads())) == pytest.approx(m.regime_anchor)


def test_bench_cli_prints_the_normalized_latency_and_raw_drops_it(capsys):
    args = ["bench", ATTO, "--input", "3x32x32", "--threads", "1", "--max-seconds", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "normalized " in out and "reference block median" in out
    assert main(args + ["--raw"]) == 0
    out = capsys.readouterr().out
    assert "normalized" not in out and "reference GEMM median" in out
    assert main(args + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["reference"] == "block"
    if not r["disturbed"]:
        assert r["latency_ms"] == r["normalized_ms"] and r["regime_anchor_ms"] > 0


def test_bench_calibrate_replaces_the_anchor(capsys, tmp_path):
    key = regime.anchor_key(1)
    regime.set_anchor(key, 123.0, source="test")
    rc = main(["bench", "--calibrate", "--threads", "1", "--max-seconds", "1"])
    out = capsys.readouterr()
    if rc == 3:  # the machine was too busy to calibrate: the anchor must be unchanged, and it says so
        assert "could not be measured cleanly" in out.err and regime.anchor(key) == 123.0
        return
    assert rc == 0 and "was 123000.0000 ms" in out.out
    assert 0 < regime.anchor(key) < 1.0
