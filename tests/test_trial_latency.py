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


def _space_reference():
    from archdsl.search.space import SearchSpace
    from archdsl.search.trial import reference_net

    return reference_net(SearchSpace(TINY))


def test_the_reference_network_is_the_spaces_first_values():
    ref = _space_reference()
    assert ref["point"] == {} and ref["spec_name"] == TINY.name and len(ref["hash"]) >= 16
    assert ref["files"][TINY.name] == TINY.read_text()


def test_a_reference_net_of_a_space_whose_first_values_are_rejected_is_a_valid_random_point(tmp_path):
    from archdsl.search.space import Candidate, SearchSpace
    from archdsl.search.trial import reference_net

    spec = tmp_path / "s.arch"
    spec.write_text('model m(k: int = choice(4, 3, 5)) {\n    input(3, 8, 8)\n    require k % 2 == 1, "odd"\n'
                    '    conv(8, k=k)\n}\n')
    space = SearchSpace(spec)
    ref = reference_net(space)
    assert ref is not None and ref["point"]["k"] in (3, 5)
    assert isinstance(space.check_point(ref["point"]), Candidate)


def test_trials_are_timed_against_the_reference_network_and_anchored_by_its_latency(monkeypatch, tmp_path):
    """The reference network's latency is established once (recorded in regime.json) and every trial's latency
    is its per-round ratio to that network times that latency."""
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    calls = []

    def fake(fn, **kw):
        calls.append(kw)
        if "anchor" in kw:  # a trial: the model takes 1.5x the reference network
            m = Measurement(median=9e-4, p10=9e-4, p90=9e-4, min=9e-4, runs=20, rel_ci=0.01, stable=True,
                            stop="converged", regime_ratio=1.5, regime_anchor=kw["anchor"],
                            normalized=1.5 * kw["anchor"])
        else:  # the reference network against the block: 0.6, 0.5, 0.7, ... ms
            v = [0.6, 0.5, 0.7, 0.65, 0.55, 0.62, 0.58][len(calls) - 1] * 1e-3
            m = Measurement(median=v, p10=v, p90=v, min=v, runs=20, rel_ci=0.01, stable=True, stop="converged",
                            regime_ratio=1.0, regime_anchor=v, normalized=v)
        return m, {"tries": 1, "disturbed_tries": 0, "waited_s": 0.0, "attempts": []}

    monkeypatch.setattr(sys.modules["archdsl.bench.measure"], "measure_until_clean", fake)
    monkeypatch.setattr(sys.modules["archdsl.bench.anchors"], "NET_PAUSE", 0.0)
    s = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=100.0,
                      reference=_space_reference())
    lat = measure_latency_local(s, POINT)
    n_ref = len(calls) - 1
    assert n_ref == 7 and all("reference" not in c for c in calls[:n_ref])  # the reference vs the block
    assert callable(calls[-1]["reference"]) and calls[-1]["anchor"] == pytest.approx(0.6e-3)  # the median of 7
    assert lat["latency_ms"] == pytest.approx(0.9)
    assert lat["reference_net"]["source"] == "measured" and lat["reference_net"]["latency_ms"] == pytest.approx(0.6)
    again = measure_latency_local(s, POINT)  # recorded: not measured again
    assert len(calls) == n_ref + 2 and again["reference_net"]["source"] == "recorded"
    assert again["latency_ms"] == pytest.approx(0.9)


def test_a_reference_network_never_measured_cleanly_falls_back_to_the_block(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    calls = []

    def fake(fn, **kw):
        calls.append(kw)
        disturbed = "normalize" in kw and len(calls) <= 7
        m = Measurement(median=1e-3, p10=1e-3, p90=1e-3, min=1e-3, runs=20, rel_ci=0.01, stable=not disturbed,
                        stop="converged", disturbed=disturbed, regime_ratio=1.0, regime_anchor=1e-3,
                        normalized=None if disturbed else 1e-3)
        return m, {"tries": 1, "disturbed_tries": int(disturbed), "waited_s": 0.0, "attempts": []}

    monkeypatch.setattr(sys.modules["archdsl.bench.measure"], "measure_until_clean", fake)
    monkeypatch.setattr(sys.modules["archdsl.bench.anchors"], "NET_PAUSE", 0.0)
    s = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=100.0,
                      reference=_space_reference())
    lat = measure_latency_local(s, POINT)
    assert "reference" not in calls[-1] and "anchor" not in calls[-1]
    assert "fallback" in lat["reference_net"] and lat["latency_ms"] == pytest.approx(1.0)


def test_a_real_measurement_against_the_reference_network(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.setattr(sys.modules["archdsl.bench.anchors"], "NET_TRIES", 2)
    s = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=1000.0,
                      reference=_space_reference(), latency_max_seconds=0.5, latency_rel_ci=0.2)
    lat = measure_latency_local(s, POINT)
    ref = lat["reference_net"]
    assert "fallback" not in ref and ref["latency_ms"] > 0 and len(ref["tries_ms"]) >= 1
    assert lat["regime_anchor_ms"] == pytest.approx(ref["latency_ms"])
    assert lat["latency_ms"] == pytest.approx(lat["regime_ratio"] * ref["latency_ms"], rel=1e-4)


def test_a_reference_network_that_does_not_build_falls_back_to_the_block(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    calls = _fake(monkeypatch, [1.0])
    # a kernel the dilated branch does not fit in: the spec rejects it
    ref = {**_space_reference(), "point": {"stages.0.kind": "dilated", "stages.0.kernel": 3,
                                     "stages.0.blocks.0.mixer.dilation": 2}, "hash": "0" * 16}
    s = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=100.0, reference=ref)
    lat = measure_latency_local(s, POINT)
    assert "reference" not in calls[-1] and lat["latency_ms"] == pytest.approx(1.0)
    assert "did not build" in lat["reference_net"]["fallback"]


def test_a_trial_that_checked_its_point_sends_the_graph_and_the_meter_does_not_check_again(monkeypatch):
    _fake(monkeypatch, [1.0])
    s = _settings(2.0)
    g = trial.check_point(s, POINT)

    def no_second_check(*a, **k):
        raise AssertionError("the spec was checked a second time")

    monkeypatch.setattr(trial, "check_point", no_second_check)
    assert trial._measure(s, POINT, 0, graph=g)["latency_ms"] == pytest.approx(1.0)


def test_a_trial_measures_on_the_search_runtime_and_says_which(monkeypatch, tmp_path):
    """Issue 19: `--runtime fast`: the trial's network and the reference network both run on archdsl's fused
    kernels (the reference's latency recorded under its own key); the record names the runtime and the batch."""
    import archdsl.bench.anchors  # noqa: F401 - patched below
    import archdsl.bench.model  # noqa: F401

    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.setenv("ARCHDSL_TUNE_CACHE", str(tmp_path / "tune.jsonl"))
    monkeypatch.setattr(sys.modules["archdsl.bench.anchors"], "NET_TRIES", 1)
    seen = []
    real = sys.modules["archdsl.bench.model"].forward_fn
    monkeypatch.setattr(sys.modules["archdsl.bench.model"], "forward_fn",
                        lambda g, form="deploy", *a, **k: seen.append(form) or real(g, form, *a, **k))
    s = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=1000.0, runtime="fast",
                      reference=_space_reference(), latency_max_seconds=0.5, latency_rel_ci=0.5)
    lat = measure_latency_local(s, POINT)
    assert lat["runtime"] == "fast" and lat["batch"] == 1 and seen == ["fast", "fast"]
    assert lat["runtime_build_s"] is not None and lat["runtime_build_s"] >= 0  # the candidate's tuning time
    assert lat["reference_net"]["key"].endswith("-fast")


def test_search_on_the_ort_runtime_without_its_extra_is_a_usage_error(monkeypatch, capsys):
    from archdsl.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the [export] extra were not installed
    assert main(["search", str(TINY), "--latency-ms", "5", "--runtime", "ort"]) == 2
    err = capsys.readouterr().err
    assert "--runtime ort: the ort runtime needs the [export] extra" in err and "Traceback" not in err


def test_a_trial_measures_in_bfloat16_with_dtype_bf16(monkeypatch, tmp_path):
    """Issue 20: `archdsl search --dtype bf16`: the trial's network and the reference network both run as the
    bfloat16 deploy form (the reference's latency recorded under its own key); the record names the dtype."""
    from archdsl.codegen.lowp import bf16_unsupported

    why = bf16_unsupported()
    if why is not None:
        pytest.skip(why)
    import archdsl.bench.anchors  # noqa: F401 - patched below
    import archdsl.bench.model  # noqa: F401

    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.setattr(sys.modules["archdsl.bench.anchors"], "NET_TRIES", 1)
    seen = []
    real = sys.modules["archdsl.bench.model"].forward_fn
    monkeypatch.setattr(sys.modules["archdsl.bench.model"], "forward_fn",
                        lambda g, *a, dtype="float32", **k: seen.append(dtype) or real(g, *a, dtype=dtype, **k))
    s = TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=1000.0, dtype="bfloat16",
                      reference=_space_reference(), latency_max_seconds=0.5, latency_rel_ci=0.5)
    lat = measure_latency_local(s, POINT)
    assert lat["dtype"] == "bfloat16" and seen == ["bfloat16", "bfloat16"]
    assert lat["reference_net"]["key"].endswith("-bfloat16") and lat["latency_ms"] > 0


def test_search_dtype_bf16_is_refused_where_it_cannot_run(monkeypatch, capsys):
    from archdsl.cli import main
    from archdsl.codegen import lowp

    assert main(["search", str(TINY), "--latency-ms", "5", "--runtime", "ort", "--dtype", "bf16"]) == 2
    assert "--dtype bf16 is the deploy form in bfloat16 on PyTorch" in capsys.readouterr().err
    monkeypatch.setattr(lowp, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert main(["search", str(TINY), "--latency-ms", "5", "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "--dtype bf16: this CPU has neither avx512_bf16 nor AMX" in err and "Traceback" not in err


def test_resume_refuses_another_runtime_dtype_or_thread_count(tmp_path):
    """Latencies of two runtimes, number formats or thread counts are not comparable: a search resumes only with
    the ones it started with; a run.json written before they were recorded reads as torch, float32, every core."""
    from archdsl.search.driver import MATCH_ON_RESUME, SETTING_DEFAULTS
    from archdsl.search.records import RunDir, RunDirError

    base = {"spec_sha256": "a" * 64, "budget_ms": 5.0, "val_fraction": 0.2}
    with RunDir.open(tmp_path, base, resume=False):
        pass  # an old run.json: no runtime, dtype or latency_threads
    now = {**base, "runtime": "torch", "dtype": "float32", "latency_threads": None}
    with RunDir.open(tmp_path, now, resume=True, must_match=MATCH_ON_RESUME, defaults=SETTING_DEFAULTS):
        pass
    for key, value in (("runtime", "fast"), ("dtype", "bfloat16"), ("latency_threads", 1)):
        with pytest.raises(RunDirError, match=rf"settings differ \({key} was"):
            RunDir.open(tmp_path, {**now, key: value}, resume=True, must_match=MATCH_ON_RESUME,
                        defaults=SETTING_DEFAULTS)


def test_a_network_far_over_the_budget_is_decided_on_its_lower_bound(monkeypatch):
    # a disturbed measurement (every round waited a little: a cluster's daemons beside a 50 ms network) whose lower
    # bound is far over the budget ends the waiting, and the trial is over budget on it, never trained
    import math

    seen = []

    def fake(fn, **kw):
        m = Measurement(median=math.nan, p10=math.nan, p90=math.nan, min=math.nan, runs=0, rel_ci=math.inf,
                        stable=False, stop="max_seconds", disturbed=True,
                        disturbance={"reason": "0 of 30 rounds clean"}, lower_bound=bound["s"])
        seen.append(kw["settle"](m))
        return m, {"tries": 1, "disturbed_tries": 1, "waited_s": 0.0, "attempts": ["waits"], "settled": seen[-1]}

    monkeypatch.setattr(sys.modules["archdsl.bench.measure"], "measure_until_clean", fake)
    bound = {"s": 0.047}
    lat = measure_latency_local(_settings(9.0), POINT)
    assert seen == [True] and lat["disturbed"] and lat["lower_bound_ms"] == pytest.approx(47.0)
    assert trial.bounded_over(lat["lower_bound_ms"], _settings(9.0), ms=True)
    # within the near-budget band (20%) a bound decides nothing: a clean figure is needed
    bound["s"] = 0.0105
    lat = measure_latency_local(_settings(9.0), POINT)
    assert seen[-1] is False and not trial.bounded_over(lat["lower_bound_ms"], _settings(9.0), ms=True)

    reports = []
    monkeypatch.setattr("ray.tune.report", reports.append)
    monkeypatch.setattr(trial, "_measure", lambda s, point, index, load=False, graph=None: measure_latency_local(
        s, point, load, graph))
    for bound["s"], status in ((0.047, "over_budget"), (0.0105, "unmeasured")):
        reports.clear()
        trial.run_trial({"point": POINT, "index": 0, "hash": "h"}, _settings(9.0))
        (r,) = reports
        assert r["status"] == status and r["score"] == 0.0
        if status == "over_budget":
            assert r["latency_bound"] == "lower" and r["latency_ms"] == pytest.approx(47.0)
        else:
            assert r["latency_ms"] is None and "latency_bound" not in r
