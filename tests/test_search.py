"""`archdsl search` end to end on real Ray Tune (embedded, loopback only) and a tiny space: the budget holds for
every reported architecture, a crashing trial is recorded and the search goes on, a killed run resumes without
redoing finished trials, identical networks are never evaluated twice, impossible searches fail clearly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("optuna")

from archdsl.search.space import Candidate, SearchSpace, canonical_hash  # noqa: E402
from compile_check import assert_compiles_and_runs  # noqa: E402

from archdsl.api import check_file, require_resolved  # noqa: E402
from archdsl.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "search" / "tiny_space.arch"

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _ray_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]


# --- the space, without Ray -------------------------------------------------------------------------------

def test_space_is_define_by_run_and_conditional():
    space = SearchSpace(TINY)
    assert {"width", "stages.0.kind", "stages.0.kernel", "stages.0.blocks"} <= set(space.dims)
    asked: list[str] = []

    def pick(values):
        def sample(cp):
            asked.append(cp.name)
            return values.get(cp.name, cp.domain().get("values", [cp.domain().get("lo")])[0])
        return sample

    c = space.resolve(pick({"stages.0.kind": "inception"}))
    assert isinstance(c, Candidate) and not any("dilation" in n for n in asked)
    asked.clear()
    c = space.resolve(pick({"stages.0.kind": "dilated", "stages.0.kernel": 5}))
    assert isinstance(c, Candidate) and "stages.0.blocks.0.mixer.dilation" in asked
    assert "stages.0.blocks.0.mixer.dilation" in space.dims  # discovered when met
    # the spec's own require rejects an invalid combination, positioned
    bad = space.resolve(pick({"stages.0.kind": "dilated", "stages.0.kernel": 3,
                              "stages.0.blocks.0.mixer.dilation": 2}))
    assert not isinstance(bad, Candidate) and "tiny_space.arch:" in bad.first and "must fit" in bad.error


def test_canonical_hash_ignores_unused_choices_and_positions():
    a = check_file(TINY, {"stages.0.kind": "inception", "stages.0.kernel": 5})
    b = check_file(TINY, {"stages.0.kind": "inception", "stages.0.kernel": 5, "stages.1.blocks": 1})
    c = check_file(TINY, {"stages.0.kind": "inception", "stages.0.kernel": 7})
    assert canonical_hash(a) == canonical_hash(b) != canonical_hash(c)


def test_impossible_space_is_refused_before_ray_starts(tmp_path, capsys):
    spec = tmp_path / "impossible.arch"
    spec.write_text('model m() {\n    input(1, 8, 8)\n    let k = choice(3, 5)\n'
                    '    require k > 7, "k must exceed 7"\n    conv(4, k=k)\n}\n')
    rc = main(["search", str(spec), "--latency-ms", "10", "--trials", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "no valid architecture" in err and "impossible.arch:4:5" in err and "k must exceed 7" in err
    assert "Traceback" not in err


def test_spec_without_choices_and_bad_options(tmp_path, capsys):
    spec = tmp_path / "fixed.arch"
    spec.write_text("model m() {\n    input(1, 8, 8)\n    conv(4, k=3)\n}\n")
    assert main(["search", str(spec), "--latency-ms", "10", "--out", str(tmp_path / "o")]) == 1
    assert "no open choice point" in capsys.readouterr().err
    assert main(["search", str(TINY), "--latency-ms", "-1", "--out", str(tmp_path / "o")]) == 2
    assert main(["search", str(TINY), "--latency-ms", "5", "--algo", "bogus", "--out", str(tmp_path / "o")]) == 1
    assert "unknown search algorithm" in capsys.readouterr().err
    broken = tmp_path / "broken.arch"
    broken.write_text("model m( {\n")
    assert main(["search", str(broken), "--latency-ms", "5", "--out", str(tmp_path / "o")]) == 1
    assert "broken.arch:1:" in capsys.readouterr().err


def test_summary_counts_in_words_and_where_the_plot_and_report_are(tmp_path):
    from archdsl.search.driver import SearchSummary

    out = tmp_path / "my run"
    best = {"score": 0.9, "latency_ms": 1.5, "trial": 3, "params": 1234}
    one = SearchSummary(out=out, counts={"ok": 1, "over_budget": 1, "failed": 1, "rejected": 1, "duplicate": 1,
                                         "predicted_over_budget": 1}, best=best, front=[], top=[], seconds=3)
    text = one.text()
    assert "1 trained, 1 over budget, 1 failed, 1 rejected by the checker, 1 duplicate skipped, 1 discarded" in text
    assert text.splitlines()[-2:] == [f"plot: {out / 'pareto.png'}", f"report: archdsl report '{out}' -o report.html"]
    two = SearchSummary(out=out, counts={"duplicate": 2}, best=None, front=[], top=[], seconds=3, objective="naswot")
    assert "0 scored (naswot)," in two.text() and "2 duplicates skipped" in two.text()
    assert "0 duplicates skipped" in SearchSummary(out=out, counts={}, best=None, front=[], top=[], seconds=1).text()


def test_progress_lines_count_the_trials_running_after_a_freed_slot_is_taken():
    """Tune refills a finished trial's slot only after its callback returns, and calls on_trial_start before it marks
    the trial RUNNING: counted at either moment, a search running 2 at a time read "1 running" on every line."""
    from types import SimpleNamespace

    from archdsl.search.driver import _make_callback_class, _Recorder

    class Run:
        def append(self, rec):
            pass

    lines: list[str] = []
    recorder = _Recorder(Run(), 5.0, lines.append, total=4, history=[])
    left = {"n": 2}  # trials the searcher will still suggest
    cb = _make_callback_class()(recorder, more_to_start=lambda: left["n"] > 0)
    trials = [SimpleNamespace(trial_id=f"t{i}", status="PENDING", config={"index": i, "point": {}, "hash": f"h{i}"},
                              last_result={"status": "ok", "score": 0.5, "latency_ms": 1.0}) for i in range(4)]

    def start(i):  # Tune's list holds the trials created so far
        cb.on_trial_start(0, trials[:i + 1], trials[i])  # status still PENDING, as Tune has it then
        trials[i].status = "RUNNING"

    def finish(i):
        trials[i].status = "TERMINATED"
        cb.on_trial_complete(0, [t for t in trials if t.status != "PENDING"], trials[i])

    start(0), start(1)
    finish(0)
    assert lines == []  # its slot is free: the line waits until it is taken again
    left["n"] -= 1
    start(2)
    assert lines == ["[1/4 trials done, 2 running, 0 rejected, 0 over budget, 0 failed] best 0.5000 @ 1.00 ms"]
    finish(1), finish(2)  # two finish before the next start: one line for both
    left["n"] -= 1
    start(3)
    assert len(lines) == 2 and lines[-1].startswith("[3/4 trials done, 1 running,")
    finish(3)  # nothing left to start: at once
    assert lines[-1].startswith("[4/4 trials done, 0 running,")
    cb.on_experiment_end(trials)
    assert len(lines) == 3


# --- real searches --------------------------------------------------------------------------------------------

def _search(out: Path, *extra: str, trials: int = 6, budget: str = "50") -> int:
    # one measuring thread: robust to whatever else runs on a shared CI machine (the budget is generous)
    return main(["search", str(TINY), "--latency-ms", budget, "--trials", str(trials), "--epochs", "2",
                 "--out", str(out), "--seed", "1", "--latency-threads", "1", *extra])


@pytest.mark.slow
def test_search_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert _search(out, "--top", "3") == 0
    text = capsys.readouterr().out
    recs = _records(out)
    finished = [r for r in recs if r["status"] in ("ok", "over_budget", "failed")]
    assert len(finished) == 6, recs
    ok = [r for r in finished if r["status"] == "ok"]
    assert ok and all(r["accuracy"] is not None and 0 <= r["accuracy"] <= 1 for r in ok), finished
    assert all(r["latency_ms"] > 0 and r["latency"]["runs"] >= 1 for r in finished if r["status"] != "failed")
    hashes = [r["hash"] for r in finished]
    assert len(hashes) == len(set(hashes))  # never the same network twice
    # outputs: csv, pareto, plot, concrete top-k specs within budget that check with every choice fixed
    assert (out / "trials.csv").read_text().count("\n") == len(recs) + 1
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front = json.loads((out / "pareto.json").read_text())
    assert front and all(r["latency_ms"] <= 50 for r in front)
    tops = sorted((out / "top").glob("*.arch"))
    assert 1 <= len(tops) <= 3
    for p in tops:
        g = check_file(p)
        require_resolved(g)
        assert main(["check", str(p)]) == 0
    assert "best under the budget" in text
    # every reported architecture meets the budget as measured
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["latency_ms"] <= 50


@pytest.mark.slow
def test_tiny_budget_stops_before_training_and_crash_is_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    assert _search(out, "--no-predictor", trials=3, budget="0.001") == 0
    recs = [r for r in _records(out) if r["status"] in ("ok", "over_budget", "failed")]
    assert len(recs) == 3 and all(r["status"] == "over_budget" and r["epochs"] == 0 for r in recs)
    assert "no architecture met the budget" in capsys.readouterr().out
    assert not (out / "top").exists() or not list((out / "top").glob("*.arch"))


@pytest.mark.slow
def test_crashing_trial_is_recorded_and_search_finishes(tmp_path):
    from archdsl.search.driver import SearchConfig, run_search

    spec = tmp_path / "crashy.arch"
    spec.write_text(TINY.read_text().replace(
        'let width = choice(16, 24, 32, name="width")',
        'let width = choice(16, 24, 32, name="width")\n    let mode = choice("fine", "crash", name="mode")'))
    out = tmp_path / "run"
    s = run_search(SearchConfig(spec=str(spec), budget_ms=50, trials=6, epochs=1, out=str(out), algo="random",
                                seed=3, crash_marker="mode", latency_threads=1), progress=lambda s: None)
    recs = [r for r in _records(out) if r["status"] in ("ok", "over_budget", "failed")]
    assert len(recs) == 6
    failed = [r for r in recs if r["status"] == "failed"]
    assert failed and all("deliberate crash" in r["error"] for r in failed)
    assert any(r["status"] == "ok" for r in recs) and s.counts["failed"] == len(failed)


@pytest.mark.slow
def test_killed_search_resumes_without_redoing_finished_trials(tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "archdsl", "search", str(TINY), "--latency-ms", "50", "--trials", "6",
           "--epochs", "2", "--out", str(out), "--seed", "2", "--latency-threads", "1", "--concurrency", "1"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            n = 0
            if (out / "trials.jsonl").exists():
                n = sum(1 for r in _records(out) if r["status"] in ("ok", "over_budget", "failed"))
            if n >= 2 or p.poll() is not None:
                break
            time.sleep(0.2)
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        os.killpg(p.pid, signal.SIGKILL)  # the driver and its Ray processes, no chance to clean up
        p.wait(30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    before = (out / "trials.jsonl").read_bytes()
    done_before = [r for r in _records(out) if r["status"] in ("ok", "over_budget", "failed")]
    assert 2 <= len(done_before) < 6
    # a second search on the same directory without --resume is refused; with --resume it completes
    assert main(cmd[3:]) == 1
    assert "--resume" in capsys.readouterr().err
    (out / "top").mkdir(exist_ok=True)
    (out / "top" / "01_0123456789abcdef.arch").write_text("# a rank written by an earlier end of this search\n")
    rc = main(["search", str(TINY), "--latency-ms", "50", "--trials", "6", "--epochs", "2", "--out", str(out),
               "--seed", "2", "--latency-threads", "1", "--resume"])
    assert rc == 0
    tops = sorted(p.name for p in (out / "top").glob("*.arch"))  # the ranks of all trials, none left from before
    assert "01_0123456789abcdef.arch" not in tops and [t[:2] for t in tops] == [f"{i:02d}" for i in
                                                                              range(1, len(tops) + 1)]
    after = (out / "trials.jsonl").read_bytes()
    assert after.startswith(before.rstrip(b"\n").rsplit(b"\n", 1)[0])  # finished records never rewritten
    recs = [r for r in _records(out) if r["status"] in ("ok", "over_budget", "failed")]
    assert len(recs) == 6
    assert len({r["hash"] for r in recs}) == 6  # no finished network was evaluated again


@pytest.mark.slow
def test_search_on_a_two_node_cluster_measures_on_the_marked_node(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from archdsl.search import cluster
    from ray_cluster import LoopbackCluster

    out = tmp_path / "run"
    with LoopbackCluster(tmp_path / "c", targets=(False, True)) as c:
        rc = main(["search", str(TINY), "--latency-ms", "50", "--trials", "4", "--epochs", "1", "--out", str(out),
                   "--seed", "4", "--address", c.address, "--no-predictor", "--latency-threads", "1"])
        assert rc == 0
        info = cluster.connect(c.address, temp_dir=tmp_path / "t")
        try:
            marked = {n.node_id for n in info.target_nodes}
            all_nodes = {n.node_id for n in info.nodes}
        finally:
            cluster.shutdown()
    recs = [r for r in _records(out) if r["status"] in ("ok", "over_budget", "failed")]
    assert len(recs) == 4
    assert len(marked) == 1 and len(all_nodes) == 2
    assert {r["node"] for r in recs} == all_nodes  # trials ran on both nodes
    assert {r["latency_node"] for r in recs} == marked  # every latency was measured on the marked one


# --- searches on one shared Ray cluster ---------------------------------------------------------------------------

ALGOS = ("random", "tpe", "nsga2")  # search/searcher.py ALGORITHMS (checked below)
OBJECTIVES = ("accuracy", "naswot", "synflow")  # docs/search.md; the proxies are search/proxy.py PROXIES

ACTS_SPACE = """\
# choice values that are strings but no .arch expression ("gelu tanh" is two words, "relu-6" a subtraction)
block act(kind: str) {
    if kind == "gelu tanh" {
        gelu(approximate="tanh")
    } elif kind == "relu-6" {
        relu6()
    } else {
        relu()
    }
}

model acts() {
    input(1, 16, 16)
    stem: conv(choice(8, 16, name="width"), k=2, s=2, pad=0)
    a: act(choice("gelu tanh", "relu-6", "relu", name="act"))
    head: {
        pool: gap()
        fc: linear(10)
    }
}
"""


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """One loopback Ray cluster (its head marked as the target, 1 CPU) that the searches below join with --address,
    instead of each starting and stopping an embedded Ray of its own."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ray_cluster import LoopbackCluster

    base = tmp_path_factory.mktemp("shared-ray")
    with pytest.MonkeyPatch.context() as mp:  # the cluster's processes (trials, meters) inherit these
        for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                     "RAY_USAGE_STATS_ENABLED": "0", "ARCHDSL_LOCK_DIR": str(base / "locks"),
                     "ARCHDSL_CACHE_DIR": str(base / "cache"),
                     # the busy-machine tests disturb the meter with busy processes of its own session, which a
                     # priority boost would outrank (disturb.Boost; it is tested in test_disturb.py)
                     "ARCHDSL_MEASURE_BOOST": "0"}.items():
            mp.setenv(k, v)
        c = LoopbackCluster(base, targets=(True,)).start()
    try:
        yield c
    finally:
        c.stop()


def _joined(spec: Path, out: Path, cluster, *extra: str, trials: int = 2) -> int:
    return main(["search", str(spec), "--latency-ms", "50", "--trials", str(trials), "--epochs", "1",
                 "--dataset-limit", "300", "--out", str(out), "--seed", "5", "--address", cluster.address,
                 "--latency-threads", "1", *extra])


def _finished(out: Path) -> list[dict]:
    return [r for r in _records(out) if r["status"] in ("ok", "over_budget", "failed")]


def test_the_matrix_names_every_algorithm_and_objective():
    from archdsl.search.proxy import PROXIES
    from archdsl.search.searcher import ALGORITHMS

    assert set(ALGOS) == set(ALGORITHMS) and set(OBJECTIVES) == {"accuracy", *PROXIES}


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_with_every_objective(algo, objective, shared_ray, tmp_path, capsys):
    """Each documented --algo x --objective pair end to end (tune.Tuner pickles the searcher: NSGA-II's sampler
    must survive that), and the top architectures it writes compile and run, both forms."""
    out = tmp_path / "run"
    assert _joined(TINY, out, shared_ray, "--algo", algo, "--objective", objective, "--top", "2") == 0
    assert "best under the budget" in capsys.readouterr().out
    recs = _finished(out)
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), recs
    assert all(isinstance(r["score"], float) and math.isfinite(r["score"]) for r in recs)
    if objective == "accuracy":
        assert all(r["accuracy"] is not None and r["epochs"] == 1 and "train" in r["seconds"] for r in recs)
    else:
        assert all(r["accuracy"] is None and r["epochs"] == 0 for r in recs)
        assert all("proxy" in r["seconds"] and "train" not in r["seconds"] for r in recs)
    assert json.loads((out / "pareto.json").read_text())  # the front is ranked by the score
    tops = sorted((out / "top").glob("*.arch"))
    assert len(tops) == 2
    for top in tops:
        assert_compiles_and_runs(top, tmp_path / "compiled" / top.stem)


@pytest.mark.slow
def test_a_start_point_is_trained_first_end_to_end(shared_ray, tmp_path, capsys):
    """--start: the file's point is the first trial, measured and trained like any other, labelled in its record;
    the settings record the starts and ASHA's grace."""
    point = {"width": 16, "stages.0.kind": "dwconv", "stages.0.kernel": 3, "stages.0.blocks": 1,
             "stages.1.kind": "inception", "stages.1.kernel": 5, "stages.1.blocks": 1}
    start = tmp_path / "start.arch"
    start.write_text("".join(f'fix "{k}" = {json.dumps(v)}\n' for k, v in point.items()))
    out = tmp_path / "run"
    assert _joined(TINY, out, shared_ray, "--start", str(start), "--epochs", "2", "--asha-grace", "2") == 0
    recs = _finished(out)
    first = min(recs, key=lambda r: r["trial"])
    assert first["point"] == point and first["start"] == str(start) and first["status"] == "ok"
    assert first["epochs"] == 2
    assert [r for r in recs if r.get("start")] == [first]
    settings = json.loads((out / "run.json").read_text())
    assert settings["starts"] == [str(start)] and settings["asha_grace"] == 2


def test_string_choice_values_stay_values(tmp_path):
    """A point's strings reach the elaboration as strings, never as .arch text: in the space, in a trial's check and
    in the concrete file written for it (no Ray)."""
    from archdsl.search.trial import TrialSettings, check_point

    from archdsl.concrete import write_concrete

    spec = tmp_path / "acts.arch"
    spec.write_text(ACTS_SPACE)
    space = SearchSpace(spec)
    assert space.dims["act"].domain["values"] == ["gelu tanh", "relu-6", "relu"]
    settings = TrialSettings(files=space.files(), spec_name="acts.arch", budget_ms=5, fixed={"width": 8})
    for act, op in (("gelu tanh", "gelu"), ("relu-6", "relu6"), ("relu", "relu")):
        cand = space.check_point({"act": act, "width": 16})
        assert isinstance(cand, Candidate), cand.error
        g = check_point(settings, {"act": act})
        assert g.node("a").op == op and {c.name: c.value for c in g.choices} == {"act": act, "width": 8}
        top = write_concrete(spec, {}, tmp_path / "top", f"c_{op}", values={"act": act, "width": 8})
        assert f'fix "act" = "{act}"' in top.read_text().splitlines()
        assert canonical_hash(check_file(top)) == canonical_hash(g)


@pytest.mark.slow
def test_search_with_string_choice_values(shared_ray, tmp_path):
    spec = tmp_path / "acts.arch"
    spec.write_text(ACTS_SPACE)
    out = tmp_path / "run"
    assert _joined(spec, out, shared_ray, "--algo", "random", "--objective", "naswot", "--top", "3",
                   trials=3) == 0
    recs = _finished(out)
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs), recs
    assert {r["point"]["act"] for r in recs} <= {"gelu tanh", "relu-6", "relu"}
    assert any(" " in r["point"]["act"] or "-" in r["point"]["act"] for r in recs), recs  # seed 5 samples one
    for top in sorted((out / "top").glob("*.arch")):
        assert_compiles_and_runs(top, tmp_path / "compiled" / top.stem)


@pytest.mark.slow
def test_search_where_every_trial_fails_exits_3(shared_ray, tmp_path, capsys):
    """Every trial fails (10 classes of digits, 7 outputs: found only when a trial trains): the summary says so
    plainly, with the error, and the exit code is 3, not 0."""
    from archdsl.search.cli import EXIT_ALL_FAILED

    out = tmp_path / "run"
    assert _joined(TINY, out, shared_ray, "--set", "num_classes=7") == EXIT_ALL_FAILED == 3
    cap = capsys.readouterr()
    assert cap.out.startswith("every trial failed (2 of 2): no architecture was evaluated")
    assert "2 x DatasetError: the architecture outputs 7 classes but data set 'digits' has 10" in cap.out
    assert "no architecture met the budget" not in cap.out
    assert "archdsl search: every trial failed (2)" in cap.err and "Traceback" not in cap.err
    assert [r["status"] for r in _finished(out)] == ["failed", "failed"]
    assert json.loads((out / "summary.json").read_text())["failures"][0][1] == 2


# --- latency on a busy machine ------------------------------------------------------------------------------

def _busy_spec(tmp_path: Path) -> Path:
    """tiny_space.arch plus an unused choice `mode`: a point with mode "busy<N>" has its first N latency
    measurements made beside real busy processes, three per core (trial.TrialSettings.load_marker). At 320x320
    a round takes 20-40 ms, longer than a scheduler tick (10 ms at HZ=100), so no round of it runs unpreempted."""
    spec = tmp_path / "busy.arch"
    spec.write_text(TINY.read_text().replace(
        'let width = choice(16, 24, 32, name="width")',
        'let width = choice(16, 24, 32, name="width")\n    let mode = choice("calm", "busy1", "busy9", name="mode")'))
    return spec


def _busy_search(spec: Path, out: Path, cluster, trials: int, seed: int, **kw):
    from archdsl.search.driver import SearchConfig, run_search

    lines: list[str] = []
    cfg = dict(spec=str(spec), budget_ms=200, trials=trials, out=str(out), algo="random", seed=seed,
               # a measurement without the hook's load may meet the CI machine's own noise: it may retry for 20 s
               objective="synflow", load_marker="mode", latency_quiet_wait=20.0, latency_max_seconds=0.6,
               latency_threads=1, input_shape=(3, 320, 320), predictor=False, address=cluster.address)
    return run_search(SearchConfig(**{**cfg, **kw}), progress=lines.append), lines


@pytest.mark.slow
def test_a_disturbed_measurement_is_never_decided_on_and_is_retried(shared_ray, tmp_path):
    s, lines = _busy_search(_busy_spec(tmp_path), tmp_path / "run", shared_ray, trials=5, seed=4)
    recs = _records(tmp_path / "run")
    busy = [r for r in recs if r.get("point", {}).get("mode", "").startswith("busy") and r.get("latency")
            and not r.get("retry")]
    assert busy, "the seed must draw a busy point"
    first = busy[0]
    assert first["status"] == "unmeasured" and first["latency_ms"] is None and first["score"] in (None, 0.0)
    assert first["latency"]["disturbed"] and "no clean latency measurement" in first["error"]
    # measured again later in the same run, under the same hash, and decided only then
    again = [r for r in recs if r.get("hash") == first["hash"] and r.get("retry")]
    assert again and again[0]["trial"] > first["trial"]
    if first["point"]["mode"] == "busy1":
        assert again[0]["status"] == "ok" and not again[0]["latency"]["disturbed"]
    m = s.measurements
    assert m["disturbed"] >= 1 and m["retried"] >= 1 and m["measurements"] >= len([r for r in recs if r.get("latency")])
    assert sum(1 for r in recs if r["status"] in ("ok", "over_budget", "failed")) == 5
    assert any("disturbed measurement(s)" in ln for ln in lines)
    assert "latency measurements disturbed by other programs" in s.text()
    data = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert data["measurements"] == m


@pytest.mark.slow
def test_a_point_left_unmeasured_is_measured_first_on_resume(shared_ray, tmp_path):
    spec = tmp_path / "b.arch"
    spec.write_text(_busy_spec(tmp_path).read_text().replace('choice("calm", "busy1", "busy9", name="mode")',
                                                               'choice("busy9", name="mode")'))
    out = tmp_path / "run"
    s, _ = _busy_search(spec, out, shared_ray, trials=1, seed=0)
    recs = _records(out)
    assert [r["status"] for r in recs if r.get("latency")] == ["unmeasured"] * 3  # first try + 2 retries in the run
    assert s.measurements["unmeasured"] == 1 and not s.best and "--resume" in s.text()
    # the load is gone: the resumed search measures that point before anything else
    s2, lines = _busy_search(spec, out, shared_ray, trials=1, seed=0, resume=True, load_marker=None)
    assert any("1 left unmeasured to measure again" in ln for ln in lines)
    recs = _records(out)
    last = [r for r in recs if r.get("latency")][-1]
    assert last["hash"] == recs[-1]["hash"] == [r for r in recs if r.get("latency")][0]["hash"]
    assert last["status"] == "ok" and s2.measurements["unmeasured"] == 0 and s2.best
