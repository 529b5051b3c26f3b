"""Tests of the search output directory (search/records.py) and the result analysis (search/pareto.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import pytest
from archdsl.search.pareto import (
    best_under_budget,
    hypervolume,
    latency_axis,
    pareto_figure,
    pareto_front,
    plot_pareto,
    top_k,
)
from archdsl.search.records import CORRUPT, CSV_COLUMNS, RunDir, RunDirError, checksum
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = {"spec": "examples/mbv2.arch", "spec_sha256": "a" * 64, "budget_ms": 5.0, "objective": "accuracy",
            "dataset": "cifar10", "algo": "random", "seeds": [0]}


def rec(trial: int, status: str = "ok", acc: float | None = 0.5, lat: float | None = 3.0, **kw) -> dict:
    return {"trial": trial, "trial_id": f"t{trial:04d}", "status": status, "point": {"width": 1.0, "k": 3},
            "hash": kw.pop("hash", f"h{trial}"), "accuracy": acc, "epochs": 1, "latency_ms": lat,
            "latency": None, "predicted_ms": kw.pop("predicted_ms", lat), "params": 1000, "macs": 20000,
            "activations": 300, "error": None, "node": "n0", "latency_node": "n0",
            "seconds": {"build": 0.1, "train": 2.0, "measure": 0.5}, "time": "2025-01-01T00:00:00+00:00", **kw}


def write_trials(tmp_path, n: int = 3) -> RunDir:
    with RunDir.open(tmp_path, SETTINGS, resume=False) as run:
        for i in range(n):
            run.append(rec(i, acc=0.5 + i / 100))
    return RunDir(tmp_path)


# -- records

def test_append_load_round_trip(tmp_path):
    with RunDir.open(tmp_path / "out", SETTINGS, resume=False) as run:
        written = [run.append(rec(i, acc=0.1 * i, seconds={"train": float("nan")})) for i in range(3)]
        assert (tmp_path / "out" / ".lock").exists()
    loaded = RunDir(tmp_path / "out").load()
    assert loaded.problems == []
    assert loaded.records == written
    assert [r["trial"] for r in loaded.records] == [0, 1, 2]
    assert all(r["record_v"] == 1 and r["checksum"] == checksum(r) and len(r["checksum"]) == 16
               for r in loaded.records)
    assert loaded.records[0]["seconds"] == {"train": None}  # NaN is not JSON
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["spec_sha256"] == SETTINGS["spec_sha256"] and meta["created"] and meta["archdsl_version"]


def test_kill_mid_write_drops_partial_last_line(tmp_path):
    run = write_trials(tmp_path)
    data = run.trials_path.read_bytes()
    run.trials_path.write_bytes(data[: len(data) - 25])  # the last write was cut short
    loaded = run.load()
    assert [r["trial"] for r in loaded.records] == [0, 1]
    assert len(loaded.problems) == 1 and ":3: partial last line" in loaded.problems[0]
    assert run.trials_path.read_bytes() == data[: len(data) - 25]  # a plain load changes nothing

    with RunDir.open(tmp_path, SETTINGS, resume=True) as again:
        resumed = again.load()  # the holder's load moves the partial line aside
        assert [r["trial"] for r in resumed.records] == [0, 1] and CORRUPT in resumed.problems[0]
        again.append(rec(2, acc=0.9))
    loaded = RunDir(tmp_path).load()
    assert loaded.problems == [] and [r["trial"] for r in loaded.records] == [0, 1, 2]
    assert (tmp_path / CORRUPT).read_bytes() == data.splitlines(keepends=True)[2][:-25] + b"\n"


def test_complete_record_missing_only_its_newline_is_kept(tmp_path):
    run = write_trials(tmp_path)
    run.trials_path.write_bytes(run.trials_path.read_bytes()[:-1])
    assert run.load().problems == [] and len(run.load().records) == 3
    with RunDir.open(tmp_path, SETTINGS, resume=True) as again:
        again.append(rec(3))
    assert [r["trial"] for r in RunDir(tmp_path).load().records] == [0, 1, 2, 3]


def test_corrupt_middle_line_is_reported_skipped_and_moved_aside_on_resume(tmp_path):
    run = write_trials(tmp_path)
    lines = run.trials_path.read_bytes().splitlines(keepends=True)
    bad = lines[1].replace(b"0.51", b"0.91")  # a flipped digit: still valid JSON
    assert bad != lines[1]
    run.trials_path.write_bytes(lines[0] + bad + lines[2])
    loaded = run.load()
    assert [r["trial"] for r in loaded.records] == [0, 2]
    assert len(loaded.problems) == 1 and ":2: corrupt: checksum mismatch" in loaded.problems[0]

    run.trials_path.write_bytes(lines[0] + bad + b"{not json\n" + lines[2])
    problems = run.load().problems
    assert [p.split(": ", 1)[0].rsplit(":", 1)[1] for p in problems] == ["2", "3"]
    assert "not valid JSON" in problems[1]

    with pytest.raises(RunDirError, match=r"holds 2 trials \(and 2 unreadable lines\)"):
        RunDir.open(tmp_path, SETTINGS, resume=False)
    assert not (tmp_path / CORRUPT).exists()  # a refused open changes nothing
    with RunDir.open(tmp_path, SETTINGS, resume=True) as again:
        problems = again.load().problems
        assert len(problems) == 2 and all(CORRUPT in p for p in problems)
    assert run.trials_path.read_bytes() == lines[0] + lines[2]
    assert (tmp_path / CORRUPT).read_bytes() == bad + b"{not json\n"
    assert RunDir(tmp_path).load().problems == []


HOLD = textwrap.dedent("""
    import sys
    from archdsl.search.records import RunDir
    run = RunDir.open(sys.argv[1], {"spec_sha256": "x"}, resume=False)
    print("locked", flush=True)
    sys.stdin.readline()
    run.close()
    print("released", flush=True)
    sys.stdin.readline()
""")


def test_lock_refuses_a_second_process_and_frees_on_close_or_kill(tmp_path):
    for how in ("close", "kill"):
        out = tmp_path / how
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "locked"
            with pytest.raises(RunDirError, match=rf"another search \(pid {proc.pid}, started .*\) is writing to "):
                RunDir.open(out, {"spec_sha256": "x"}, resume=True)
            if how == "close":
                proc.stdin.write("\n")
                proc.stdin.flush()
                assert proc.stdout.readline().strip() == "released"
            else:
                proc.kill()  # kill -9 mid-search: the kernel drops the flock
                proc.wait()
            with RunDir.open(out, {"spec_sha256": "x"}, resume=True) as run:
                assert run.is_open
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()


def test_resume_refuses_changed_settings(tmp_path):
    write_trials(tmp_path)
    changed = {**SETTINGS, "spec_sha256": "b" * 64, "budget_ms": 4.0, "seeds": [1]}
    with pytest.raises(RunDirError, match=r"settings differ \(spec_sha256 was .*; budget_ms was 5.0, now 4.0\)"):
        RunDir.open(tmp_path, changed, resume=True)
    with pytest.raises(RunDirError, match="budget_ms"):
        RunDir.open(tmp_path, changed, resume=True, must_match=("budget_ms",))
    # Settings that need not match may change; run.json records the change. The refused opens left no lock.
    with RunDir.open(tmp_path, {**SETTINGS, "seeds": [1]}, resume=True):
        pass
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["seeds"] == [1] and meta["resumed"][-1]["changed"] == {"seeds": [[0], [1]]}


def test_refuses_earlier_trials_without_resume_and_resume_without_run_json(tmp_path):
    write_trials(tmp_path / "a", n=2)
    with pytest.raises(RunDirError, match=r"holds 2 trials of an earlier search: add --resume to continue it, "
                                          r"or choose another --out"):
        RunDir.open(tmp_path / "a", SETTINGS, resume=False)
    write_trials(tmp_path / "one", n=1)
    with pytest.raises(RunDirError, match=r"holds 1 trial of an earlier search"):
        RunDir.open(tmp_path / "one", SETTINGS, resume=False)
    (tmp_path / "b").mkdir()
    with pytest.raises(RunDirError, match="no run.json"):
        RunDir.open(tmp_path / "b", SETTINGS, resume=True)
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir.open(tmp_path / "c", SETTINGS, resume=True)
    with pytest.raises(RunDirError, match="not open"):
        RunDir(tmp_path / "a").append(rec(9))


def test_csv_columns(tmp_path):
    records = [rec(0), rec(1, status="failed", acc=None, lat=None, error="boom, \"quoted\"\nline 2"),
               {**rec(2), "point": {"width": 0.5, "depth": [1, 2]}, "seconds": {"check": 0.01}}]
    path = RunDir(tmp_path).write_csv(records)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header == [*CSV_COLUMNS, "seconds_build", "seconds_train", "seconds_measure", "seconds_check",
                      "point.width", "point.k", "point.depth"]
    assert rows[0]["accuracy"] == "0.5" and rows[0]["point.k"] == "3" and rows[0]["seconds_train"] == "2.0"
    assert rows[1]["accuracy"] == "" and rows[1]["error"] == "boom, \"quoted\"\nline 2"
    assert rows[2]["point.depth"] == "[1, 2]" and rows[2]["point.k"] == "" and rows[2]["seconds_check"] == "0.01"


# -- pareto

def test_pareto_front_hand_made():
    records = [rec(0, acc=0.70, lat=2.0), rec(1, acc=0.80, lat=3.0), rec(2, acc=0.75, lat=3.5),  # 2: dominated
               rec(3, acc=0.80, lat=3.0, hash="h1"),  # the same architecture again: counted once
               rec(4, acc=0.80, lat=3.0),  # an exact tie of a different architecture: kept
               rec(5, acc=0.90, lat=6.0), rec(6, acc=0.70, lat=2.0, hash="h0"),
               rec(7, acc=0.95, lat=1.0, status="over_budget"), rec(8, acc=None, lat=0.5),
               rec(9, acc=0.60, lat=2.0)]
    assert [r["trial"] for r in pareto_front(records)] == [0, 1, 4, 5]
    assert [r["trial"] for r in pareto_front(records, budget_ms=5.0)] == [0, 1, 4]
    assert [r["trial"] for r in pareto_front(reversed(records))] == [0, 1, 4, 5]  # order-independent
    assert pareto_front([]) == []
    assert best_under_budget(records, 5.0)["trial"] == 1
    assert best_under_budget(records, 1.5) is None
    assert [r["trial"] for r in top_k(records, 4, 10.0)] == [5, 1, 4, 2]
    assert [r["trial"] for r in top_k(records, 2, None)] == [5, 1]


def test_rank_by_score_for_other_objectives():
    records = [{**rec(0, acc=None, lat=2.0), "score": 10.0}, {**rec(1, acc=None, lat=1.0), "score": 12.0},
               {**rec(2, acc=None, lat=3.0), "score": 15.0}]
    assert pareto_front(records) == [] and top_k(records, 3) == []
    assert [r["trial"] for r in pareto_front(records, metric="score")] == [1, 2]
    assert [r["trial"] for r in top_k(records, 3, 2.5, metric="score")] == [1, 0]
    assert best_under_budget(records, 5.0, metric="score")["trial"] == 2
    assert pareto_figure(records, 5.0, metric="score").axes[0].get_ylabel() == "score"


def test_hypervolume_hand_computed():
    ref = (10.0, 0.0)
    assert hypervolume([], ref) == 0.0
    assert hypervolume([(2.0, 0.5)], ref) == pytest.approx(8 * 0.5)
    # union of 9x0.9 and 8x0.95: 8.1 + 7.6 - 7.2
    assert hypervolume([(1.0, 0.9), (2.0, 0.95)], ref) == pytest.approx(8.5)
    assert hypervolume([(2.0, 0.95), (1.0, 0.9), (3.0, 0.5)], ref) == pytest.approx(8.5)
    assert hypervolume([(11.0, 0.9), (10.0, 0.9), (5.0, -0.1), (5.0, float("nan"))], ref) == 0.0
    assert hypervolume([(4.0, 0.8)], (6.0, 0.5)) == pytest.approx(2 * 0.3)


finite = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
points = st.lists(st.tuples(finite, st.floats(min_value=0.0, max_value=1.0)), max_size=12)
REF = (100.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(points, st.integers(min_value=0, max_value=11), finite, st.floats(min_value=0.0, max_value=1.0))
def test_hypervolume_ignores_dominated_points(pts, i, dlat, dacc):
    if not pts:
        return
    lat, acc = pts[i % len(pts)]
    dominated = (min(lat + dlat, 1e3), acc * dacc)  # no faster, no more accurate
    assert hypervolume(pts + [dominated], REF) == hypervolume(pts, REF)


@settings(max_examples=200, deadline=None)
@given(points, st.tuples(finite, st.floats(min_value=0.0, max_value=1.0)))
def test_hypervolume_is_monotone(pts, extra):
    before = hypervolume(pts, REF)
    after = hypervolume(pts + [extra], REF)
    assert after >= before - 1e-9 * max(1.0, before)
    assert 0.0 <= after <= REF[0] * 1.0 + 1e-9  # never more than the reference box


def test_plot_writes_a_png_with_the_budget_line(tmp_path):
    records = [rec(i, acc=0.5 + 0.04 * i, lat=1.0 + i) for i in range(6)]
    records += [rec(6, status="over_budget", acc=None, lat=9.0),
                rec(7, status="predicted_over_budget", acc=None, lat=None, predicted_ms=12.0),
                rec(8, status="failed", acc=None, lat=None)]
    path = plot_pareto(records, 5.0, tmp_path / "pareto.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert plot_pareto(records, 5.0, tmp_path / "again.png", title="test").read_bytes() == data  # deterministic

    fig = pareto_figure(records, 5.0)
    (ax,) = fig.axes
    budget = [ln for ln in ax.get_lines() if ln.get_label() == "budget 5 ms"]
    assert len(budget) == 1 and budget[0].get_linestyle() == "--" and list(budget[0].get_xdata()) == [5, 5]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "Pareto front (6)" in labels and "over budget (measured) (1)" in labels
    assert "over budget (predicted) (1)" in labels
    assert ax.get_xlabel() == "latency (ms)" and ax.get_ylabel() == "accuracy"
    assert ax.get_xlim()[1] >= 12.0  # the predicted-over trial is placed at its predicted latency

    empty = plot_pareto([], None, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_latency_axis_is_logarithmic_when_latencies_spread():
    """One 400 ms outlier beside 1-3 ms trials: a linear axis would squash them all against 0. pareto.png follows
    the report's rule (latency_axis, shared with report_plots.py)."""
    close = [rec(i, acc=0.5 + 0.1 * i, lat=1.0 + i) for i in range(3)]
    (ax,) = pareto_figure(close, 5.0).axes
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "latency (ms)"
    outlier = close + [rec(3, status="over_budget", acc=None, lat=400.0)]
    (ax,) = pareto_figure(outlier, 5.0).axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "latency (ms, log scale)"
    assert latency_axis([1.0, 2.0, 3.0, 400.0], [1.0, 2.0, 3.0], 5.0) == (1.0, 400.0, True)
    assert latency_axis([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 5.0) == (1.0, 5.0, False)  # the budget is shown
    assert latency_axis([1.0, 1e9], [1.0], None) == (1.0, 100.0, True)  # beyond 100x the ok trials: not stretched
    assert latency_axis([], [], None) == (0.5, 1.0, False)


def test_a_run_directory_whose_files_are_not_files_is_refused_without_hanging(tmp_path, capsys):
    """trials.jsonl as a link to /dev/zero (endless), a FIFO (blocks) or a directory: --resume and report say what
    it is in one line, at once (the FIFO is opened without blocking)."""
    import os

    from archdsl.cli import main

    for kind in ("zero", "fifo", "dir"):
        d = tmp_path / kind
        write_trials(d)
        t = d / "trials.jsonl"
        t.unlink()
        if kind == "zero":
            t.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(t)
        else:
            t.mkdir()
        with pytest.raises(RunDirError, match="not a file a search wrote"):
            RunDir(d).load()
        with pytest.raises(RunDirError, match="not a file a search wrote"):
            with RunDir.open(d, SETTINGS, resume=True) as run:
                run.load()
        assert main(["report", str(d), "-o", str(tmp_path / f"{kind}.html")]) == 1
        err = capsys.readouterr().err
        assert "not a file a search wrote" in err and err.count("\n") == 1, err
