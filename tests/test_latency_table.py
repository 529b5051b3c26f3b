"""The per-operator latency table (archdsl.bench.table) and the predictor's calibration (archdsl.bench.predict).

No test asserts on a measured time: the timings are replaced by a counter where the logic is under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from archdsl.api import check_file
from archdsl.bench import predict as P
from archdsl.bench import table as T
from archdsl.cli import main

SPACE = Path(__file__).resolve().parent.parent / "examples" / "search" / "convnext_space.arch"


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_graph():
    from archdsl.passes import deploy_graph

    g = check_file(SPACE, None, (3, 32, 32))
    return deploy_graph(g)[0]


@pytest.fixture
def fake_measure(monkeypatch):
    """Replace the timing of one configuration by a counter; returns the list of signatures timed."""
    calls: list[dict] = []

    def fake(sig, **kw):
        calls.append(sig)
        return {"median_ms": 1.0 + len(calls), "p10_ms": 1.0, "p90_ms": 2.0, "min_ms": 1.0, "runs": 10,
                "rel_ci": 0.01, "stable": True}

    monkeypatch.setattr(T, "measure_signature", fake)
    monkeypatch.setattr(P, "measure_signature", fake)
    return calls


def test_signatures_are_stable_and_distinct(small_graph):
    sigs = T.graph_signatures(small_graph, threads=1)
    again = T.graph_signatures(small_graph, threads=1)
    assert sigs == again and json.dumps(sigs, sort_keys=True) == json.dumps(again, sort_keys=True)
    names = [n for n in small_graph.order() if not T.is_free(small_graph, n)]
    assert small_graph.input_node not in names and len(sigs) == len(names)
    by_key = {T.sig_key(s, "m"): s for s in sigs}
    # equal keys only for equal signatures; a node of another op or shape has another key
    assert len(by_key) == len({json.dumps(s, sort_keys=True) for s in sigs})
    assert len(by_key) < len(sigs)  # the repeated blocks share configurations
    s0 = sigs[0]
    for change in ({"threads": 2}, {"batch": 4}, {"dtype": "float16"},
                   {"in_shapes": [[3, 32, 32, "nhwc"]]}, {"params": {**s0["params"], "k": 5}}):
        assert T.sig_key({**s0, **change}, "m") != T.sig_key(s0, "m")
    assert T.sig_key(s0, "m") != T.sig_key(s0, "other-machine")
    assert all(set(s) == {"op", "params", "in_shapes", "dtype", "batch", "threads"} for s in sigs)


def test_measure_signature_runs_one_op(small_graph):
    sig = T.graph_signatures(small_graph, threads=1)[0]
    r = T.measure_signature(sig, max_seconds=0.05, rel_ci=0.5, min_runs=2, lock=False)
    assert r["runs"] >= 2 and r["median_ms"] > 0


def test_cache_round_trip_reuse_and_validation(tmp_path, small_graph, fake_measure):
    table = T.LatencyTable(tmp_path / "c", machine="aaaa")
    rep = T.fill_table(table, [small_graph])
    assert rep.measured == rep.configs == len(fake_measure) > 3 and rep.reused == 0

    again = T.LatencyTable(tmp_path / "c", machine="aaaa")
    assert again.report.valid == rep.configs and not again.report.corrupt and not again.report.foreign
    rep2 = T.fill_table(again, [small_graph])
    assert rep2.measured == 0 and rep2.reused == rep.configs and len(fake_measure) == rep.configs
    sig = T.graph_signatures(small_graph)[0]
    assert again.ms(sig) == table.ms(sig)

    # corrupt one line (a changed number: valid JSON, bad checksum), truncate another, add a foreign record
    path = tmp_path / "c" / T.TABLE_FILE
    lines = path.read_text().splitlines()
    rec0 = json.loads(lines[0])
    rec0["median_ms"] += 1.0
    lines[0] = json.dumps(rec0)
    lines[1] = lines[1][: len(lines[1]) // 2]
    other = T.LatencyTable(tmp_path / "elsewhere", machine="bbbb")
    rec2 = json.loads(lines[2])
    foreign = other.add(rec2["sig"], {"median_ms": 99.0})
    lines[2] = json.dumps(foreign)  # this machine's record of that signature is gone: only a foreign one
    path.write_text("\n".join(lines) + "\n")

    t3 = T.LatencyTable(tmp_path / "c", machine="aaaa")
    assert len(t3.report.corrupt) == 2 and t3.report.foreign == 1
    assert any("checksum" in c for c in t3.report.corrupt) and any("not JSON" in c for c in t3.report.corrupt)
    report_text = "\n".join(t3.report.lines())
    assert "corrupt" in report_text and "another machine" in report_text
    assert t3.get(rec0["sig"]) is None and t3.get(rec2["sig"]) is None  # never silently used
    n_before = len(fake_measure)
    rep3 = T.fill_table(t3, [small_graph])
    assert rep3.measured == 3 and len(fake_measure) == n_before + 3
    assert t3.ms(rec2["sig"]) != 99.0
    assert "corrupt" in rep3.text() and "measured 3," in rep3.text()
    t4 = T.LatencyTable(tmp_path / "c", machine="aaaa")  # rewritten: corrupt lines gone, foreign kept
    assert not t4.report.corrupt and t4.report.foreign == 1 and t4.report.valid == rep.configs


def test_calibration_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    sums = rng.uniform(1, 20, 12)
    nodes = rng.integers(20, 120, 12)
    a, b, c = 1.3, 0.004, 0.25
    y = a * sums + b * nodes + c
    got = P.fit_calibration(np.column_stack([sums, nodes]), y)
    assert got == pytest.approx((a, b, c), rel=1e-6, abs=1e-9)
    got = P.fit_calibration(np.column_stack([sums, np.full(12, 50)]), 2 * sums + 1)  # b not identifiable
    assert got == pytest.approx((2.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        P.fit_calibration([[1, 2], [2, 3]], [1, 2])


def test_predictor_fit_predict_save_load(tmp_path, small_graph, fake_measure):
    table = T.LatencyTable(tmp_path / "c", machine="aaaa")
    pred = P.Predictor(table)
    s, n = pred.features(small_graph)  # measures the missing configurations (faked)
    assert n == len(T.graph_signatures(small_graph)) and s > 0 and fake_measure
    with pytest.raises(KeyError):
        P.Predictor(T.LatencyTable(tmp_path / "empty", machine="aaaa"), measure_missing=False).predict(small_graph)
    pred.coef = (2.0, 0.01, 0.5)
    assert pred.predict(small_graph) == pytest.approx(2.0 * s + 0.01 * n + 0.5)
    path = pred.save()
    assert path.parent == table.dir
    fresh = P.Predictor(table)
    assert fresh.load() and fresh.coef == pred.coef
    assert not P.Predictor(table, threads=4).load()  # another setting: not this calibration


def test_cli_build_table_then_reuse(tmp_path, capsys):
    argv = ["bench", "--build-table", str(SPACE), "--samples", "2", "--input", "3x32x32", "--threads", "1",
            "--max-seconds", "0.1", "--rel-ci", "0.2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "distinct configurations" in out and "reused 0 " in out
    first = int(out.split("measured ")[1].split(",")[0])
    assert first > 0 and (tmp_path / "cache" / T.TABLE_FILE).exists()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "measured 0," in out and f"reused {first} " in out


def test_cli_bench_without_file_is_usage_error(capsys):
    assert main(["bench"]) == 2
    assert "--build-table" in capsys.readouterr().err


def test_calibration_points_span_the_predicted_range():
    from archdsl.bench.predict import Predictor

    p = Predictor.__new__(Predictor)  # only features() is needed: stub it with known table sums
    sums = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    p.features = lambda g: (sums[g], 10)
    picks = p.select_calibration(list(range(len(sums))), 3)
    assert sorted(sums[i] for i in picks) == [1.0, 5.0, 9.0]  # smallest, middle, largest
    assert p.select_calibration(list(range(len(sums))), 7) == list(range(7))


def test_sample_space_draws_ranges_and_conditional_choices():
    tiny = Path(__file__).resolve().parent.parent / "examples" / "search" / "tiny_space.arch"
    points, rejected = T.sample_space(tiny, 8, seed=1)
    assert len(points) == 8
    assert all(p["stages.0.blocks"] in (1, 2) for p, _ in points)  # an int_range choice point
    conditional = [p for p, _ in points if p["stages.0.kind"] == "dilated"]
    assert conditional and all("stages.0.blocks.0.mixer.dilation" in p for p in conditional)  # met only there
    assert all("stages.0.blocks.0.mixer.dilation" not in p for p, _ in points if p["stages.0.kind"] != "dilated")


def test_sample_space_passes_string_values_as_values(tmp_path):
    """A sampled string that reads as an .arch constant ("none") stays a string (values, never text)."""
    from archdsl.bench.table import sample_space

    spec = tmp_path / "none.arch"
    spec.write_text('model m() {\n    input(1, 8, 8)\n    let a = choice("none", "relu", name="act")\n'
                    '    stem: conv(8, k=3)\n    x: if a == "relu" { relu() }\n'
                    '    head: { pool: gap(); fc: linear(10) }\n}\n')
    pts, rejected = sample_space(spec, 8, seed=1)
    assert rejected == 0 and {p["act"] for p, _ in pts} == {"none", "relu"}
