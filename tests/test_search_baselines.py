"""`archdsl search --baseline`: a hand-designed spec scaled to the budget by its knob `s` (bisection on measured
latency), trained with the trials' recipe, drawn on the plot and compared with the search's best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from archdsl.search.baselines import compare_with_best, scale_to_budget, validate_baselines
from archdsl.search.errors import SearchError

from archdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "search" / "tiny_space.arch"

BASE = """\
# a tiny ConvNeXt-like baseline for 1x16x16 digits, scaled by s over depth and width
model tinybase(depths: list[int] = [1, 1], dims: list[int] = [16, 32], s: float = 1.0, num_classes: int = 10) {
    scaling(s=s, d=1, w=1, r=0, depth=depths, width=dims)
    input(1, 16, 16)
    stem: conv(dims[0], k=2, s=2, pad=0)
    stages: for i in range(2) {
        down: if i > 0 { conv(dims[i], k=2, s=2, pad=0) }
        blocks: for j in range(depths[i]) {
            residual { dwconv(3); bn(); conv(2 * dims[i], k=1); gelu(); conv(dims[i], k=1) }
        }
    }
    head: { pool: gap(); fc: linear(num_classes) }
}
"""


def test_scaling_bisects_to_the_largest_s_that_fits():
    best, seen = scale_to_budget(lambda s: s, 3.0)  # latency = s ms: the answer is s = 3
    assert 2.9 < best <= 3.0 and len(seen) <= 3 + 6
    best, _ = scale_to_budget(lambda s: 10 * s, 0.5)  # going down from s = 1: 0.05
    assert 0.045 < best <= 0.05
    assert scale_to_budget(lambda s: 100.0, 1.0)[0] is None  # over the budget everywhere
    assert scale_to_budget(lambda s: 0.1, 1.0)[0] == 64.0  # fits everywhere: the top of the range
    # an s that gives no valid network (None) counts as not fitting; the search goes on below it
    best, _ = scale_to_budget(lambda s: None if s > 1.5 else s, 10.0)
    assert 1.0 <= best <= 1.5


def test_compare_with_best_says_who_wins():
    rows = compare_with_best({"score": 0.9}, [{"name": "a", "status": "ok", "score": 0.8, "latency_ms": 1.0, "s": 1},
                                              {"name": "b", "status": "ok", "score": 0.95, "latency_ms": 1.0, "s": 2},
                                              {"name": "c", "status": "over_budget", "score": None}])
    assert [r["beats"] for r in rows] == [True, False, None]
    assert rows[0]["margin"] == pytest.approx(0.1)


def test_a_baseline_without_a_knob_is_refused_before_the_search(tmp_path):
    spec = tmp_path / "noknob.arch"
    spec.write_text("model noknob() {\n    input(1, 16, 16)\n    stem: conv(8, k=2, s=2, pad=0)\n"
                    "    head: { pool: gap(); fc: linear(10) }\n}\n")
    with pytest.raises(SearchError, match="no parameter 's'"):
        validate_baselines([str(spec)], None)
    with pytest.raises(SearchError, match="no such file"):
        validate_baselines([str(tmp_path / "missing.arch")], None)
    good = tmp_path / "tinybase.arch"
    good.write_text(BASE)
    (b,) = validate_baselines([str(good)], None)
    assert b["name"] == "tinybase" and "tinybase.arch" in b["files"]


@pytest.mark.slow
def test_search_with_a_baseline_scales_trains_and_compares(tmp_path, monkeypatch, capsys):
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                 "RAY_USAGE_STATS_ENABLED": "0", "ARCHDSL_LOCK_DIR": str(tmp_path / "locks"),
                 "ARCHDSL_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    spec = tmp_path / "tinybase.arch"
    spec.write_text(BASE)
    out = tmp_path / "run"
    args = ["search", str(TINY), "--latency-ms", "1.5", "--trials", "2", "--epochs", "1", "--dataset-limit", "300",
            "--out", str(out), "--seed", "1", "--latency-threads", "1", "--baseline", str(spec),
            "--rescore", "1", "--val-fraction", "0.3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "baseline tinybase" in text
    (rec,) = json.loads((out / "baselines.json").read_text())
    if rec["status"] == "ok":  # scaled: the largest measured s under the budget, trained like a trial
        assert rec["latency_ms"] <= 1.5 and rec["s"] > 0 and 0 <= rec["accuracy"] <= 1 and len(rec["accuracies"]) == 1
        assert len(rec["scores"]) == 2 and rec["score"] == pytest.approx(sum(rec["scores"]) / 2)  # --rescore's seed
        assert any(st["latency_ms"] is not None and st["latency_ms"] > 1.5 for st in rec["steps"]) or rec["s"] == 64
        scaled = Path(rec["arch"])
        assert scaled.is_file()
        assert main(["check", str(scaled)]) == 0
    else:  # this machine was too slow or too busy to fit it: it says so
        assert rec["status"] in ("over_budget", "unmeasured") and rec["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baselines"][0]["name"] == "tinybase"
    if summary["best"]:  # --rescore 1: the best trial trained again with seed 2, scored by the mean of both
        assert summary["best"]["rescored"] and summary["best"]["seeds"] == [1, 2]
        assert "mean over 2 training seeds" in text
    assert json.loads((out / "run.json").read_text())["val_fraction"] == 0.3
    assert (out / "pareto.png").stat().st_size > 0
    from archdsl.search.report import build_report

    html = build_report(out)
    assert "Baselines at the budget" in html and "tinybase" in html
    if rec["status"] == "ok":
        assert 'class="pt-base"' in html  # the labelled star on the Pareto plot
    # a resumed search reuses the baseline instead of scaling and training it again
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "baseline tinybase: done earlier" in err
    if summary["best"]:
        assert "(done earlier)" in err.split("rescoring")[1]


def test_a_concrete_spec_pins_a_model_parameter_given_as_a_value(tmp_path):
    """write_concrete(values={"s": ...}): the knob is a model parameter, not a choice point (it once was dropped)."""
    from archdsl.api import check_file
    from archdsl.concrete import write_concrete

    spec = tmp_path / "tinybase.arch"
    spec.write_text(BASE)
    path = write_concrete(spec, {}, tmp_path / "out", "scaled", values={"s": 2.7})
    assert 'fix "s" = 2.7' in path.read_text() or "fix s = 2.7" in path.read_text()
    assert check_file(path).total().macs == check_file(spec, values={"s": 2.7}).total().macs


def test_max_minutes_stops_new_trials_but_not_the_running_ones():
    import time

    from archdsl.search.searcher import ArchSearcher
    from archdsl.search.space import SearchSpace
    from ray.tune.search import Searcher

    space = SearchSpace(TINY)
    live = ArchSearcher(space, budget_ms=2.0, max_trials=3, deadline=time.time() + 3600)
    first = live.suggest("t1")
    assert isinstance(first, dict) and not live.timed_out
    live.deadline = time.time() - 1  # the time is up: no new point, but t1 is still running
    assert live.suggest("t2") is None and live.timed_out and not live.has_more()
    gone = ArchSearcher(space, budget_ms=2.0, max_trials=3, deadline=time.time() - 1)
    assert gone.suggest("t1") == Searcher.FINISHED
    assert main(["search", str(TINY), "--latency-ms", "2", "--max-minutes", "0"]) == 2


def test_values_of_s_that_build_one_network_share_one_measurement(tmp_path, monkeypatch):
    """The knob is quantized (depths rounded, widths to multiples of 8), so neighbouring values of s often build
    the same network; measuring it again at each s let a noisy second reading turn the bisection back (a ResNet
    read 2.49 ms at one s and 4.25 ms at the next for the same 564,234-parameter network). One reading per
    network: here each reading of a network is 50% slower than the one before, as a drifting machine would be."""
    from archdsl.search import baselines as bl
    from archdsl.search.space import canonical_hash
    from archdsl.search.trial import TrialSettings, check_point

    spec = tmp_path / "tinybase.arch"
    spec.write_text(BASE.replace("scaling(s=s, d=1, w=1, r=0,", "scaling(s=s, d=1, w=0, r=0,"))  # depth only
    (base,) = validate_baselines([str(spec)], None)
    settings = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=1.0)
    s_base = bl.replace(settings, files=base["files"], spec_name=spec.name, fixed={}, model=None)
    macs = {k: check_point(s_base, {"s": k}).total().macs for k in (2.0, 3.0)}
    settings = bl.replace(settings, budget_ms=(macs[2.0] + macs[3.0]) / 2e5)  # between depth 2 and depth 3
    seen: list[str] = []

    def measure(s, point):
        g = check_point(s, point)
        h = canonical_hash(g, structure_only=True)
        ms = g.total().macs / 1e5 * 1.5 ** seen.count(h)
        seen.append(h)
        return {"latency_ms": ms, "disturbed": False}

    monkeypatch.setattr(bl, "_evaluate", lambda s, g, rec: rec.update(score=0.5, accuracy=0.5))
    (rec,) = bl.run_baselines([base], settings, tmp_path, lambda line: None, measure=measure)
    assert rec["status"] == "ok" and rec["macs"] == macs[2.0]  # the deepest network that fits
    steps = [st for st in rec["steps"] if st["status"] == "measured"]
    assert len(steps) > len(set(seen)), "the bisection met no network twice: the test tests nothing"
    assert len(seen) == len(set(seen)), "a network was measured twice"


def test_a_resumed_search_keeps_the_baselines_it_reuses_in_baselines_json(tmp_path, monkeypatch):
    """Run 3 lost UniRepLKNet this way: on resume, ResNet (before it in the list) was scaled again and the file
    was rewritten with what had run so far, dropping the reused UniRepLKNet that came after it."""
    from archdsl.search import baselines as bl
    from archdsl.search.trial import TrialSettings, check_point

    specs = []
    for name, w in (("first", "1"), ("second", "0")):
        p = tmp_path / f"{name}.arch"
        p.write_text(BASE.replace("scaling(s=s, d=1, w=1, r=0,", f"scaling(s=s, d=1, w={w}, r=0,")
                     .replace("model tinybase", f"model {name}"))
        specs.append(str(p))
    bases = validate_baselines(specs, None)
    settings = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=1.0)
    monkeypatch.setattr(bl, "_evaluate", lambda s, g, rec: rec.update(score=0.5, accuracy=0.5))

    def measure(s, point):
        return {"latency_ms": check_point(s, point).total().macs / 1e7, "disturbed": False}

    out = tmp_path / "out"
    out.mkdir()
    first = bl.run_baselines(bases, settings, out, lambda line: None, measure=measure)
    assert [r["status"] for r in first] == ["ok", "ok"]
    data = json.loads((out / "baselines.json").read_text())
    data[0]["status"] = "failed"  # the first must run again on resume; the second is reused
    (out / "baselines.json").write_text(json.dumps(data))
    lines: list[str] = []
    again = bl.run_baselines(bases, settings, out, lines.append, measure=measure)
    assert [r["status"] for r in again] == ["ok", "ok"] and "done earlier" in lines[-1]
    kept = json.loads((out / "baselines.json").read_text())
    assert sorted(r["name"] for r in kept) == sorted(b["name"] for b in bases), kept
