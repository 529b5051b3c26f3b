"""The search driver behind `archdsl search`: space -> Ray Tune trials -> records, Pareto front, top-k specs.

Takes: a `SearchConfig` (spec, latency budget, trials, algorithm, objective, output dir, resume, Ray address).
Returns: a `SearchSummary` and, in the output directory (see records.py for the files): every trial's record
(trials.jsonl, trials.csv), pareto.json, top/<rank>_<hash>.arch (concrete specs, all choices fixed, each within
the budget as measured), pareto.png, summary.json.

Resume: the records are the source of truth. `--resume` replays the finished records into the algorithm (so it
continues where it stopped), never evaluates their networks again, and runs only the trials still missing;
trials that were running when the process died are run again (they had not finished).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..api import parse_override
from .errors import SearchError
from .records import FINISHED_STATUSES, measurement_counts  # FINISHED_STATUSES: re-exported
from .space import Candidate, SearchSpace
from .summary import SearchSummary, _n

__all__ = ["SearchConfig", "SearchSummary", "run_search", "FINISHED_STATUSES"]

# "unmeasured" is a Ray trial's outcome too, but not a finished one: its point is measured again (searcher.py)
MATCH_ON_RESUME = ("spec_sha256", "budget_ms", "objective", "dataset", "dataset_limit", "val_fraction", "fixed",
                   "model", "input_shape", "epochs", "runtime", "dtype", "latency_threads")
# what a run.json written before the setting existed used
SETTING_DEFAULTS = {"val_fraction": 0.2, "runtime": "torch", "dtype": "float32", "latency_threads": None}


@dataclass
class SearchConfig:
    spec: str
    budget_ms: float
    trials: int = 20
    algo: str = "tpe"
    objective: str = "accuracy"  # accuracy | naswot | synflow | oneshot
    dataset: str = "digits"
    dataset_limit: int | None = None
    epochs: int = 3
    out: str = "search-out"
    resume: bool = False
    address: str | None = None
    seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    input_shape: tuple[int, int, int] | None = None
    concurrency: int | None = None  # trials at once (default: the cluster's CPUs)
    latency_threads: int | None = None
    runtime: str = "torch"  # the runtime latency is measured on (bench/runtimes.py)
    dtype: str = "float32"  # float32 | bfloat16 (the deploy form in bfloat16, codegen/lowp.py)
    target_label: str = "archdsl-target"
    predictor: bool = True
    prefilter_margin: float = 1.5
    top_k: int = 5
    asha: bool = True
    asha_grace: int = 1  # epochs every trial trains before ASHA may stop it
    starts: list[str] = field(default_factory=list)  # --start files: points evaluated first (starts.py)
    batch_size: int = 64
    crash_marker: str | None = None  # tests only
    load_marker: str | None = None  # tests only (trial.TrialSettings.load_marker)
    latency_quiet_wait: float = 30.0  # s a trial waits for a quiet machine before it is left unmeasured
    latency_max_seconds: float = 2.0  # time cap of one latency measurement
    baselines: list[str] = field(default_factory=list)  # hand-designed specs scaled to the budget (baselines.py)
    max_minutes: float | None = None  # no new trial starts after this many minutes of this run
    val_fraction: float = 0.2  # of the (limited) training images, held out to score the trials
    rescore: int = 0  # the N best trials are trained again with rescore_seeds more seeds (rescore.py)
    rescore_seeds: int = 1
    supernet_epochs: int = 10  # --objective oneshot: the supernet's training (oneshot.py)
    supernet_samples: int = 200  # networks surveyed to size the supernet and drawn from while training it


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _settings(cfg: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    text = Path(cfg.spec).read_bytes()
    return {"spec": str(cfg.spec), "spec_sha256": hashlib.sha256(text).hexdigest(), "budget_ms": cfg.budget_ms,
            "trials": cfg.trials, "algo": cfg.algo, "objective": cfg.objective, "dataset": cfg.dataset,
            "dataset_limit": cfg.dataset_limit, "val_fraction": cfg.val_fraction,
            **({"supernet_epochs": cfg.supernet_epochs, "supernet_samples": cfg.supernet_samples}
               if cfg.objective == "oneshot" else {}),
            "epochs": cfg.epochs, "seed": cfg.seed, "fixed": cfg.fixed, "model": cfg.model,
            "input_shape": list(cfg.input_shape) if cfg.input_shape else None, "address": cfg.address,
            "runtime": cfg.runtime, "dtype": cfg.dtype, "latency_threads": cfg.latency_threads,
            "asha_grace": cfg.asha_grace, "starts": list(cfg.starts), "dimensions": space.describe()}


def preflight(space: SearchSpace, tries: int = 200, seed: int = 0) -> None:
    """Find one valid point by random sampling before any Ray process starts; an impossible space (every point
    rejected by the spec's own checks) is a SearchError naming the most common reasons, with their places."""
    import random

    rng = random.Random(seed)
    reasons: Counter[str] = Counter()
    for _ in range(tries):
        c = space.resolve(lambda cp: cp.sample(rng))
        if isinstance(c, Candidate):
            return
        reasons[c.first] += 1
    top = "\n".join(f"  {n} x {r}" for r, n in reasons.most_common(3))
    raise SearchError(f"the search space of {space.spec} has no valid architecture in {tries} random samples; "
                      f"every one was rejected by the spec's checks. Most common reasons:\n{top}")


class _Recorder:
    """Writes every outcome to the run directory as it happens, and prints progress."""

    def __init__(self, run, budget_ms: float, progress: Callable[[str], None], total: int, history: list[dict]):
        self.run, self.budget_ms, self.progress, self.total = run, budget_ms, progress, total
        self.records: list[dict] = list(history)
        self.running = 0

    def add(self, rec: dict) -> None:
        rec = {**rec, "time": _now()}
        self.run.append(rec)
        self.records.append(rec)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def best(self) -> dict | None:
        from .pareto import best_under_budget

        return best_under_budget(self.records, self.budget_ms, metric="score")

    def line(self) -> str:
        c = self.counts()
        done = sum(c.get(s, 0) for s in FINISHED_STATUSES)
        b = self.best()
        best = f"best {b['score']:.4f} @ {b['latency_ms']:.2f} ms" if b else "no architecture under budget yet"
        m = measurement_counts(self.records)
        busy = (f", {m['disturbed']} disturbed measurement(s), {m['unmeasured']} unmeasured"
                if m["disturbed"] or m["unmeasured"] else "")
        return (f"[{done}/{self.total} trials done, {self.running} running, {c.get('rejected', 0)} rejected, "
                f"{c.get('over_budget', 0)} over budget, {c.get('failed', 0)} failed{busy}] {best}")


def _trial_record(trial, result: dict, error: str | None = None) -> dict:
    cfg = trial.config
    r = result or {}
    status = "failed" if error else r.get("status", "failed")
    err = error or r.get("error")
    if status == "ok" and r.get("score") is None:
        status, err = "failed", err or "the trial ended without a result"
    return {"trial": cfg.get("index"), "trial_id": trial.trial_id, "status": status, "point": cfg.get("point"),
            "hash": cfg.get("hash"), "score": r.get("score"), "accuracy": r.get("accuracy"),
            "epochs": r.get("epoch", 0), "latency_ms": r.get("latency_ms"), "latency": r.get("latency"),
            "predicted_ms": cfg.get("predicted_ms"), "retry": cfg.get("retry", 0),
            "params": r.get("params"), "macs": r.get("macs"),
            "activations": r.get("activations"), "error": err, "node": r.get("node"),
            "latency_node": r.get("latency_node"), "seconds": r.get("seconds", {}),
            **({"bar": r["bar"]} if r.get("bar") is not None else {}),
            **({"latency_bound": r["latency_bound"]} if r.get("latency_bound") else {}),
            **({"start": cfg["start"]} if cfg.get("start") else {})}


def run_search(cfg: SearchConfig, progress: Callable[[str], None] | None = None) -> SearchSummary:
    """Run (or resume) a search. Raises ArchError (the spec is broken), SearchError (an impossible search,
    bad settings, a locked or mismatched output directory)."""
    from .records import RunDir

    progress = progress or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    if cfg.trials < 1:
        raise SearchError(f"--trials must be at least 1, got {cfg.trials}")
    if not (cfg.budget_ms > 0 and math.isfinite(cfg.budget_ms)):
        raise SearchError(f"--latency-ms must be a positive number, got {cfg.budget_ms}")
    if cfg.objective not in ("accuracy", "naswot", "synflow", "oneshot"):
        raise SearchError(f"unknown objective {cfg.objective!r}: choose accuracy, oneshot, naswot or synflow")
    if cfg.objective == "oneshot" and cfg.baselines:
        raise SearchError("--baseline trains each baseline with the trials' recipe, from scratch: compare it with "
                          "a trial-based search (--objective accuracy), not with inherited weights")
    if cfg.supernet_epochs < 1 or cfg.supernet_samples < 1:
        raise SearchError(f"--supernet-epochs and --supernet-samples must be at least 1, got {cfg.supernet_epochs} "
                          f"and {cfg.supernet_samples}")
    if cfg.rescore < 0 or cfg.rescore_seeds < 1:
        raise SearchError(f"--rescore must be >= 0 and --rescore-seeds >= 1, got {cfg.rescore} and "
                          f"{cfg.rescore_seeds}")
    if cfg.rescore and cfg.objective != "accuracy":
        raise SearchError(f"--rescore trains the best trials again with more seeds: it needs the accuracy "
                          f"objective, not {cfg.objective} (a zero-cost proxy has no training run to repeat)")
    from .searcher import ALGORITHMS

    if cfg.algo not in ALGORITHMS:
        raise SearchError(f"unknown search algorithm {cfg.algo!r}: choose one of {', '.join(ALGORITHMS)}")
    from .data import canonical_name

    cfg = replace(cfg, dataset=canonical_name(cfg.dataset))  # folder:/npz: paths absolute: trials run elsewhere
    if cfg.objective in ("accuracy", "oneshot"):
        from .data import load_dataset

        # DatasetError now, not in every trial
        load_dataset(cfg.dataset, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.dataset_limit)
    # --set values are .arch text (or Python values) once, here; from now on the search passes values only
    fixed = {k: parse_override(k, v) for k, v in cfg.fixed.items()}
    space = SearchSpace(Path(cfg.spec), model=cfg.model, input_shape=cfg.input_shape, fixed=fixed)
    preflight(space, seed=cfg.seed)
    if not 1 <= cfg.asha_grace <= cfg.epochs:
        raise SearchError(f"--asha-grace must be between 1 and --epochs ({cfg.epochs}), got {cfg.asha_grace}")
    from .starts import load_starts

    starts = load_starts(cfg.starts, space)  # before any trial: a start that is no point of the space stops here
    from .baselines import validate_baselines

    bases = validate_baselines(cfg.baselines, cfg.input_shape)  # before any trial: a broken baseline stops here
    settings = _settings(cfg, space)
    out = Path(cfg.out)
    run = RunDir.open(out, settings, resume=cfg.resume, must_match=MATCH_ON_RESUME, defaults=SETTING_DEFAULTS)
    try:
        return _run(cfg, space, run, out, progress, t0, bases, starts)
    finally:
        run.close()


def _run(cfg: SearchConfig, space: SearchSpace, run, out: Path, progress, t0: float,
         bases: list[dict] | None = None, starts: list | None = None) -> SearchSummary:
    import logging

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console tables off: our progress lines instead
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from . import cluster
    from .baselines import pending_baselines, run_baselines
    from .searcher import ArchSearcher
    from .trial import TrialSettings, reference_net, run_trial

    problems: list[str] = []
    history: list[dict] = []
    if cfg.resume:
        loaded = run.load()
        history = loaded.records
        problems += loaded.problems
    finished = sum(1 for r in history if r.get("status") in FINISHED_STATUSES)
    remaining = max(0, cfg.trials - finished)
    unmeasured = measurement_counts(history)["unmeasured"]
    recorder = _Recorder(run, cfg.budget_ms, progress, cfg.trials, history)
    if cfg.resume:
        again = f", {unmeasured} left unmeasured to measure again" if unmeasured else ""
        progress(f"resuming {out}: {_n(finished, 'trial')} finished earlier, {remaining} to run{again}")

    interrupted = False
    exhausted = None
    predictor_info = None
    bases = bases or []
    baseline_records: list[dict] = []
    tsettings = TrialSettings(files=space.files(), spec_name=Path(cfg.spec).name, budget_ms=cfg.budget_ms,
                              fixed=dict(space.fixed), model=cfg.model, input_shape=cfg.input_shape,
                              objective=cfg.objective, dataset=cfg.dataset, dataset_limit=cfg.dataset_limit,
                              val_fraction=cfg.val_fraction, extra_seeds=cfg.rescore_seeds if cfg.rescore else 0,
                              epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                              latency_threads=cfg.latency_threads, runtime=cfg.runtime, dtype=cfg.dtype,
                              target_label=cfg.target_label, crash_marker=cfg.crash_marker, load_marker=cfg.load_marker,
                              latency_quiet_wait=cfg.latency_quiet_wait,
                              latency_max_seconds=cfg.latency_max_seconds,
                              reference=reference_net(space), supernet_epochs=cfg.supernet_epochs,
                              supernet_samples=cfg.supernet_samples)
    if cfg.objective == "oneshot":
        from .oneshot import prepare

        try:
            tsettings.supernet = str(prepare(space, tsettings, out, progress, cfg.latency_threads).resolve())
        except KeyboardInterrupt:
            return _finish(cfg, space.fixed, run, out, recorder, problems, t0, True, None, None)
    if remaining > 0 or unmeasured or pending_baselines(bases, tsettings, out):
        info = cluster.connect(cfg.address, temp_dir=out / ".ray",
                               target_label=cfg.target_label)
        try:
            predictor = None
            # the predictor's table is of the torch runtime in float32: on another runtime or in bfloat16 it would
            # screen by the wrong latencies
            if cfg.predictor and info.local and cfg.runtime == "torch" and cfg.dtype == "float32":
                from .predictor import SearchPredictor

                predictor = SearchPredictor(threads=cfg.latency_threads or len(os.sched_getaffinity(0)))
            from .trial import start_meters

            meters = start_meters(info, cfg.target_label)
            tsettings.meters = meters
            searcher = ArchSearcher(space, algo=cfg.algo, budget_ms=cfg.budget_ms, seed=cfg.seed,
                                    max_trials=remaining, predictor=predictor,
                                    prefilter_margin=cfg.prefilter_margin, on_event=recorder.add, history=history,
                                    deadline=None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes,
                                    bar_rank=cfg.top_k if cfg.objective == "oneshot" else None, starts=starts)
            callback = _make_callback_class()(
                recorder, more_to_start=searcher.has_more)
            scheduler = None
            if cfg.asha and cfg.objective == "accuracy" and cfg.epochs > 1:
                scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.epochs, grace_period=cfg.asha_grace,
                                          reduction_factor=2)
            cpus = max(1, int(info.cpus))
            concurrency = min(cfg.concurrency or cpus, cpus)  # a trial holds 1 CPU: more at once would only queue
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(run_trial, settings=tsettings), {"cpu": 1}),
                tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=searcher, scheduler=scheduler,
                                            # the searcher ends the run (unmeasured points are retried)
                                            num_samples=-1, max_concurrent_trials=concurrency,
                                            reuse_actors=True),
                run_config=tune.RunConfig(name="ray", storage_path=str((out / "ray").resolve()), verbose=0,
                                          callbacks=[callback], log_to_file=True,
                                          failure_config=tune.FailureConfig(max_failures=0)))
            if remaining > 0 or unmeasured:
                progress(f"searching {cfg.spec}: {remaining} trials, {cfg.algo}, objective {cfg.objective}, budget "
                         f"{cfg.budget_ms:g} ms, {concurrency} at a time on {len(info.nodes)} node(s)"
                         + (f" (--concurrency {cfg.concurrency}, but {cpus} CPUs)" if (cfg.concurrency or 0) > cpus
                            else ""))
                ref = tsettings.reference
                progress("latencies are timed against the space's reference network ("
                         + ("no valid point found: timed against a fixed block" if ref is None else
                            "every choice at its first value" if not ref["point"] else "a valid random point")
                         + "; docs/latency.md)")
            try:
                if remaining > 0 or unmeasured:
                    tuner.fit()
            except KeyboardInterrupt:
                interrupted = True
            if searcher.exhausted:
                exhausted = searcher.exhausted_message()
            if searcher.timed_out:
                problems.append(f"--max-minutes {cfg.max_minutes:g} reached: no new trial was started after it; "
                                "continue with --resume to run the rest of --trials")
            if predictor is not None:
                predictor_info = predictor.accuracy()
            if bases and not interrupted:
                try:
                    baseline_records = run_baselines(bases, tsettings, out, progress)
                except KeyboardInterrupt:
                    interrupted = True
        finally:
            cluster.shutdown()
    elif bases:
        baseline_records = run_baselines(bases, tsettings, out, progress)  # every one done earlier: reused
    rescored: dict[str, dict] = {}
    if cfg.rescore and not interrupted:
        from .rescore import rescore

        try:
            rescored = rescore(recorder.records, tsettings, out, cfg.rescore, cfg.rescore_seeds, progress)
        except KeyboardInterrupt:
            interrupted = True
    weights = None
    if cfg.objective == "oneshot" and tsettings.supernet:
        from .oneshot import save_weights

        def weights(point, dest):
            return save_weights(space, Path(tsettings.supernet), point, dest, tsettings)
    return _finish(cfg, space.fixed, run, out, recorder, problems, t0, interrupted, exhausted, predictor_info,
                   baseline_records, rescored, weights)


def _make_callback_class():
    """The Ray Tune callback class (defined on first use: importing this module must not need Ray)."""
    from ray import tune

    class TuneCallback(tune.Callback):
        """Records every finished trial and prints the progress line. Tune fills the slot a trial frees only after
        that trial's callback has returned, so a count of running trials taken then always misses the one about
        to start (a search running 2 at a time read "1 running" on every line). A finished trial's line is
        therefore printed when the freed slot is taken again (at the next trial's start), or at once when no
        trial is left to start; two trials finishing before the next start share one line."""

        def __init__(self, recorder: _Recorder, more_to_start: Callable[[], bool] = lambda: False):
            self.recorder = recorder
            self.more_to_start = more_to_start  # the searcher will still suggest trials
            self.seen: set[str] = set()
            self.running: set[str] = set()  # ids of the trials started and not finished
            self.due = False  # a finished trial's progress line is waiting for the next start

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)  # Tune calls this before it marks the trial RUNNING: count by id
            self._flush()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._record(trial, trial.last_result, None)
            self._finished(trials, trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            err = None
            try:
                e = trial.get_error()
                err = str(e).strip().splitlines()[-1] if e is not None else None
            except Exception:  # noqa: BLE001 - the error file may be unreadable; the record still says failed
                pass
            self._record(trial, trial.last_result, err or "the trial's worker process died (out of memory?)")
            self._finished(trials, trial)

        def on_experiment_end(self, trials, **info):
            self._flush()

        def _finished(self, trials, trial) -> None:
            self.running.discard(trial.trial_id)
            self.due = True
            if not (self.more_to_start() or any(t.status == "PENDING" for t in trials)):
                self._flush()

        def _flush(self) -> None:
            if self.due:
                self.due = False
                self.recorder.running = len(self.running)
                self.recorder.progress(self.recorder.line())

        def _record(self, trial, result, error):
            if trial.trial_id in self.seen:
                return
            self.seen.add(trial.trial_id)
            self.recorder.add(_trial_record(trial, result, error))

    return TuneCallback


def _finish(cfg, fixed, run, out, recorder, problems, t0, interrupted, exhausted, predictor_info,
            baseline_records=(), rescored=None, weights=None) -> SearchSummary:
    from .baselines import compare_with_best
    from .pareto import best_under_budget, pareto_front, plot_pareto, top_k
    from .rescore import apply_rescores

    records = recorder.records
    run.write_csv(records)  # as recorded: a rescored trial's own score
    records = apply_rescores(records, rescored or {})
    front = pareto_front(records, budget_ms=cfg.budget_ms, metric="score")
    (out / "pareto.json").write_text(json.dumps(front, indent=1, default=str) + "\n", encoding="utf-8")
    top_paths: list[Path] = []
    top = top_k(records, cfg.top_k, cfg.budget_ms, metric="score")
    if top:
        from ..concrete import write_concrete

        (out / "top").mkdir(exist_ok=True)
        for stale in [*(out / "top").glob("*.arch"), *(out / "top").glob("*.pt")]:  # ranked again on resume
            stale.unlink()
        for rank, rec in enumerate(top, 1):
            header = [f"found by archdsl search (trial {rec['trial']}, rank {rank} under {cfg.budget_ms:g} ms)",
                      f"measured latency {rec['latency_ms']:.3f} ms (batch 1, deploy form, regime-normalized)",
                      f"score ({cfg.objective}) {rec['score']:.4f}, {rec['params']:,} params, {rec['macs']:,} MACs"]
            if rec.get("rescored"):
                header.append(f"the score is the mean over {len(rec['scores'])} training seeds "
                              f"({', '.join(f'{v:.4f}' for v in rec['scores'])}; --rescore)")
            if weights is not None:
                w = weights(rec["point"], out / "top" / f"{rank:02d}_{rec['hash']}.pt")
                header.append(f"inherited weights (the supernet's, BatchNorm recalibrated): {w.name}; load with "
                              f"archdsl.load(spec, weights=...)")
            top_paths.append(write_concrete(cfg.spec, {}, out / "top", f"{rank:02d}_{rec['hash']}",
                                            header="\n".join(header), model=cfg.model, input_shape=cfg.input_shape,
                                            values={**fixed, **rec["point"]}))
    ylabel = {"accuracy": "validation accuracy", "oneshot": "validation accuracy (inherited weights)"}.get(
        cfg.objective, f"{cfg.objective} score (zero-cost proxy)")
    plot_pareto(records, cfg.budget_ms, out / "pareto.png", title=f"{Path(cfg.spec).name}: {ylabel} vs latency",
                metric="score", ylabel=ylabel, baselines=list(baseline_records))
    best = best_under_budget(records, cfg.budget_ms, metric="score")
    errors = Counter((r.get("error") or "no error recorded").strip().splitlines()[0]
                     for r in records if r.get("status") == "failed")
    summary = SearchSummary(out=out, counts=recorder.counts(), best=best, front=front, top=top_paths,
                            seconds=time.perf_counter() - t0, interrupted=interrupted, exhausted=exhausted,
                            problems=problems, predictor=predictor_info, objective=cfg.objective,
                            measurements=measurement_counts(records), failures=errors.most_common(),
                            baselines=compare_with_best(best, list(baseline_records)), budget_ms=cfg.budget_ms)
    data = {k: v for k, v in asdict(summary).items() if k not in ("front",)}
    data["top"] = [str(p) for p in top_paths]
    data["out"] = str(out)
    (out / "summary.json").write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    return summary
