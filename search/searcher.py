"""The search algorithm: an Optuna study driven ask-and-tell behind Ray Tune's `Searcher` interface.

Takes: a `SearchSpace`, the algorithm ("random" | "tpe" | "nsga2"), the latency budget, an optional latency
`Predictor`, and the finished records of an earlier run (resume). Returns (to Ray Tune): one config per trial,
{"point", "hash", "index", "predicted_ms"}; `Searcher.FINISHED` when the trial budget is spent.

Before a config leaves `suggest`, the candidate has been elaborated define-by-run (each choice point met asks
the Optuna trial: `suggest_categorical` / `suggest_int` / `suggest_float`), checked, hashed and, with a
predictor, its latency estimated. Nothing that fails there becomes a Ray trial:
  - "rejected": the checker refused the point (a `require`, a shape mismatch): counted, never built;
  - "duplicate": the same canonical network was already evaluated: Optuna is told the earlier result;
  - "predicted_over_budget": the predictor puts it beyond `prefilter_margin` x the budget.
Each of those is passed to `on_event(record)` so the driver writes it down. Optuna learns from every outcome:
an over-budget latency is a violated constraint (`latency - budget > 0`, `Trial.set_constraint`), which TPE and
NSGA-II treat as infeasible.

A trial whose latency could not be measured cleanly (another program kept the cores busy) comes back
"unmeasured": Optuna is not told anything yet, the point keeps its slot of the trial budget, and it is issued
again as a new Ray trial (config "retry": 1, 2, ...) after RETRY_GAP other trials have finished (or at once when
nothing else is left to run), at most MAX_REMEASURE times in a run. A point still unmeasured then is told to
Optuna as failed, its slot goes to a new point, and it stays unmeasured in the records; `--resume` measures it
again first. At most `max_trials` unmeasured outcomes are allowed in a run, so a machine that never quiets down
still ends the search.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import Counter
from typing import Any, Callable

import optuna
from ray.tune.search import Searcher

from .errors import SearchError
from .space import Candidate, SearchSpace

__all__ = ["ArchSearcher", "ALGORITHMS", "make_sampler", "PicklableNSGAIISampler"]

ALGORITHMS = ("random", "tpe", "nsga2")
_CONSTRAINT = "latency"  # Optuna constraint: latency - budget (ms), feasible when <= 0
MAX_RESAMPLES = 200  # consecutive rejected / duplicate / prefiltered points before the space counts as exhausted
MAX_REMEASURE = 2  # times an unmeasured point is measured again in one run
START_TRIES = 20  # samples of a partial --start's open choices before it is given up
RETRY_GAP = 2  # finished trials between an unmeasured outcome and its retry (time for the load to pass)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable. Ray Tune pickles the search algorithm (and so the study and its sampler)
    into the experiment's tuner.pkl when a Tuner is made; Optuna 5's genetic samplers hold a threading.Lock, which
    cannot be pickled. The lock guards the sampler's generation cache within one process: a copy gets a new one."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_locks"] = [k for k, v in state.items() if isinstance(v, _LOCK_TYPES)]
        for k in state["_locks"]:
            del state[k]
        return state

    def __setstate__(self, state: dict) -> None:
        for k in state.pop("_locks"):
            state[k] = threading.Lock()
        self.__dict__.update(state)


def make_sampler(algo: str, seed: int, n_startup: int = 5) -> optuna.samplers.BaseSampler:
    if algo == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algo == "tpe":
        with warnings.catch_warnings():  # `group` is marked experimental; it handles conditional choices
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True, group=True)
    if algo == "nsga2":
        return PicklableNSGAIISampler(seed=seed, population_size=max(4, n_startup))
    raise SearchError(f"unknown search algorithm {algo!r}: choose one of {', '.join(ALGORITHMS)}")


def _distribution(domain: dict) -> optuna.distributions.BaseDistribution:
    t = domain["type"]
    if t == "choice":
        return optuna.distributions.CategoricalDistribution(_categorical(domain["values"]))
    if t == "int_range":
        return optuna.distributions.IntDistribution(domain["lo"], domain["hi"], step=domain["step"])
    return optuna.distributions.FloatDistribution(domain["lo"], domain["hi"], log=domain["log"])


def _categorical(values: list) -> tuple:
    """Optuna's categorical choices must be None/bool/int/float/str: lists become tuples' string forms."""
    return tuple(_to_optuna(v) for v in values)


def _to_optuna(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return repr(list(v))
    return v


def _from_optuna(v: Any, values: list) -> Any:
    for x in values:
        if _to_optuna(x) == v and type(_to_optuna(x)) is type(v):
            return x
    return v


class ArchSearcher(Searcher):
    """Ray Tune searcher over a .arch search space. `max_trials`: Ray trials to start (built and measured)
    in this run; `history`: records of an earlier run of the same search (replayed into Optuna, their
    hashes never evaluated again). `objective`: the name of the score in results ("score", higher is better).
    `deadline` (time.time()): no new point starts after it; running trials and pending re-measurements finish."""

    def __init__(self, space: SearchSpace, *, algo: str = "tpe", budget_ms: float, seed: int = 0,
                 max_trials: int, predictor=None, prefilter_margin: float = 1.5,
                 on_event: Callable[[dict], None] | None = None, history: list[dict] | None = None,
                 n_startup: int = 5, metric: str = "score", deadline: float | None = None,
                 bar_rank: int | None = None, starts: list | None = None):
        super().__init__(metric=metric, mode="max")
        if budget_ms <= 0 or not math.isfinite(budget_ms):
            raise SearchError(f"the latency budget must be a positive number of ms, got {budget_ms}")
        self.space, self.algo, self.budget_ms = space, algo, float(budget_ms)
        self.max_trials = max_trials
        self.deadline = deadline  # time.time() after which no new point starts (running ones finish)
        # one-shot: each trial is told the bar-rank-th best score under the budget so far ("bar"); a network
        # scoring below it cannot enter the top and is not measured (run_trial, status "screened")
        self.bar_rank = bar_rank
        self.timed_out = False
        self.predictor = predictor
        self.prefilter_margin = prefilter_margin
        self.on_event = on_event or (lambda rec: None)
        directions = ["maximize", "minimize"] if algo == "nsga2" else ["maximize"]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(directions=directions, sampler=make_sampler(algo, seed, n_startup))
        self.started = 0
        self.pending: dict[str, tuple[optuna.trial.Trial, Candidate]] = {}
        self.done: dict[str, dict] = {}  # hash -> the finished record (ok / over_budget / failed)
        self.rejections: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._index = 0
        self.exhausted = False
        self.finished = 0  # Ray trials that ended in this run
        self.measured = 0  # ... of which did not end unmeasured
        self.unmeasured_events = 0
        self.retry: list[dict] = []  # unmeasured points to measure again: {ot, cand, retries, due, trial}
        self._retry_pending: dict[str, dict] = {}  # trial_id -> the retry entry issued for it
        # --start points (starts.Start), evaluated first; those an earlier run recorded are not evaluated again
        started = {rec.get("start") for rec in history or [] if rec.get("hash")}
        self.starts = [{"start": st, "tries": 0} for st in starts or [] if st.name not in started]
        self.start_of: dict[str, str] = {}  # hash -> the start file it came from
        unmeasured: dict[str, dict] = {}
        for rec in history or []:
            self._replay(rec)
            if rec.get("status") == "unmeasured" and rec.get("hash"):
                unmeasured[rec["hash"]] = rec
        for h, rec in unmeasured.items():  # resume: points an earlier run could not measure, first in line
            if h not in self.done:
                cand = self._resolve_point(rec["point"])
                if cand is not None:
                    self.retry.append({"ot": None, "cand": cand, "retries": 0, "due": 0, "trial": rec.get("trial")})

    # -- bookkeeping

    def _values(self, score: float | None, latency_ms: float | None) -> list[float]:
        s = 0.0 if score is None or not math.isfinite(score) else float(score)
        if self.algo == "nsga2":
            lat = latency_ms if latency_ms is not None and math.isfinite(latency_ms) else 1e9
            return [s, float(lat)]
        return [s]

    def _outcome(self, rec: dict) -> tuple[list[float], float]:
        """(Optuna values, latency constraint) of a record: its measured latency, else its predicted one."""
        lat = rec.get("latency_ms") if rec.get("latency_ms") is not None else rec.get("predicted_ms")
        return self._values(rec.get("score"), lat), float(lat) - self.budget_ms if lat is not None else 0.0

    def _tell(self, ot: optuna.trial.Trial, rec: dict) -> None:
        if rec.get("status") in ("failed", "rejected"):
            self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
            return
        values, constraint = self._outcome(rec)
        ot.set_constraint(_CONSTRAINT, constraint)
        self.study.tell(ot, values)

    def _replay(self, rec: dict) -> None:
        """Add a finished record of an earlier run to the study (and to the seen hashes)."""
        if rec.get("trial") is not None:
            self._index = max(self._index, int(rec["trial"]) + 1)
        status = rec.get("status")
        self.counts[status] += 1
        if status in ("ok", "over_budget", "failed", "screened") and rec.get("hash"):
            self.done[rec["hash"]] = rec
        if status == "rejected":
            self.rejections[rec.get("reason", "?")] += 1
        if status in ("ok", "over_budget", "failed", "predicted_over_budget", "screened") and rec.get("point"):
            self._add_finished(rec["point"], rec)

    def _add_finished(self, point: dict[str, Any], rec: dict) -> None:
        """Add an outcome that no open Optuna trial stands for (an earlier run's record) to the study."""
        dists, params = {}, {}
        for name, value in point.items():
            dim = self.space.dims.get(name)
            if dim is None:
                continue
            dists[name] = _distribution(dim.domain)
            params[name] = _to_optuna(value)
        if rec.get("status") == "failed":
            state, values, attrs = optuna.trial.TrialState.FAIL, None, {}
        else:
            values, constraint = self._outcome(rec)
            state, attrs = optuna.trial.TrialState.COMPLETE, {f"constraints:{_CONSTRAINT}": constraint}
        try:
            self.study.add_trial(optuna.trial.create_trial(
                state=state, params=params, distributions=dists, values=values, system_attrs=attrs))
        except ValueError:  # a value outside a domain that changed: the record is kept, Optuna skips it
            pass

    def _resolve_point(self, point: dict[str, Any]) -> Candidate | None:
        """The candidate of a recorded point (every choice met takes its recorded value); None if it no longer
        resolves (the space changed)."""
        try:
            c = self.space.resolve(lambda cp: point[cp.name])
        except KeyError:
            return None
        return c if isinstance(c, Candidate) else None

    def _sample(self, ot: optuna.trial.Trial):
        def sample(cp):
            d = cp.domain()
            if d["type"] == "choice":
                return _from_optuna(ot.suggest_categorical(cp.name, _categorical(d["values"])), d["values"])
            if d["type"] == "int_range":
                return ot.suggest_int(cp.name, d["lo"], d["hi"], step=d["step"])
            return ot.suggest_float(cp.name, d["lo"], d["hi"], log=d["log"])
        return sample

    def _event(self, status: str, ot: optuna.trial.Trial | None, rec: dict) -> None:
        rec = {"trial": None, "status": status, **rec}
        self.counts[status] += 1
        if ot is not None:
            self._tell(ot, rec)
        self.on_event(rec)

    # -- the Searcher interface

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space comes from the spec; Tune's own param_space is not used

    def _issue(self, trial_id: str, ot, cand: Candidate, predicted, retry: int = 0) -> dict:
        self.pending[trial_id] = (ot, cand)
        self.started += 1
        index = self._index
        self._index += 1
        out = {"point": cand.point, "hash": cand.hash, "index": index, "predicted_ms": predicted, "retry": retry,
               "bar": self.bar()}
        if cand.hash in self.start_of:
            out["start"] = self.start_of[cand.hash]
        return out

    def bar(self) -> float | None:
        """The bar_rank-th best score of the networks measured within the budget (None: fewer than that, or no
        bar asked for)."""
        if not self.bar_rank:
            return None
        scores = sorted((r["score"] for r in self.done.values() if r.get("status") == "ok"
                         and r.get("score") is not None and r.get("latency_ms") is not None
                         and r["latency_ms"] <= self.budget_ms), reverse=True)
        return scores[self.bar_rank - 1] if len(scores) >= self.bar_rank else None

    def _new_allowed(self) -> bool:
        # every point holds a slot of the trial budget while it runs, waits for its retry, or once it is measured
        slots = len(self.pending) + len(self.retry) + self.measured
        if self.deadline is not None and time.time() >= self.deadline:
            self.timed_out = True
            return False
        return slots < self.max_trials and self.unmeasured_events <= self.max_trials and not self.exhausted

    def has_more(self) -> bool:
        """Whether `suggest` may still start a trial: a new point, or a retry of an unmeasured one."""
        return bool(self.retry) or self._new_allowed()

    def suggest(self, trial_id: str):
        new_allowed = self._new_allowed()
        due = [e for e in self.retry if e["due"] <= self.finished or not new_allowed]
        if due:
            e = due[0]
            self.retry.remove(e)
            self._retry_pending[trial_id] = e
            return self._issue(trial_id, e["ot"], e["cand"], None, retry=e["retries"] + 1)
        if not new_allowed:
            # a running trial may still come back unmeasured and need its retry: keep Tune asking until none is
            return None if (self.pending or self.retry) else Searcher.FINISHED
        for _ in range(MAX_RESAMPLES):
            start = self._next_start()
            ot = self.study.ask()
            cand = self.space.resolve(self._sample(ot))
            tag = {"start": start["start"].name} if start else {}
            if not isinstance(cand, Candidate):
                self.rejections[cand.first] += 1
                self._event("rejected", ot, {"point": cand.point, "error": cand.error, "reason": cand.first, **tag})
                continue
            if start:
                self.starts.remove(start)
            if cand.hash in self.done:
                prev = self.done[cand.hash]
                self._event("duplicate", ot, {"point": cand.point, "hash": cand.hash, "same_as": prev.get("trial"),
                                              "score": prev.get("score"), "latency_ms": prev.get("latency_ms"),
                                              **tag})
                continue
            if start:
                self.start_of[cand.hash] = start["start"].name
            if any(c.hash == cand.hash for _, c in self.pending.values()) or any(
                    e["cand"].hash == cand.hash for e in self.retry):
                self.study.tell(ot, state=optuna.trial.TrialState.FAIL)  # being evaluated right now
                self.counts["duplicate_pending"] += 1
                continue
            predicted = None
            if self.predictor is not None and not start:  # a start is measured: the user asked for it
                predicted = self.predictor.predict_candidate(cand)
                if predicted is not None and predicted > self.prefilter_margin * self.budget_ms:
                    self._event("predicted_over_budget", ot, {"point": cand.point, "hash": cand.hash,
                                                              "predicted_ms": predicted})
                    continue
            return self._issue(trial_id, ot, cand, predicted)
        self.exhausted = True  # the driver reports exhausted_message() after the run
        return None if (self.pending or self.retry) else Searcher.FINISHED

    def _next_start(self) -> dict | None:
        """The next --start point, queued in the study so that the next `ask` takes its values (its open choices
        are sampled). A partial start whose sampled rest the spec rejects is tried again, up to START_TRIES times;
        a complete one is evaluated once."""
        while self.starts:
            e = self.starts[0]
            if e["tries"] >= (1 if e["start"].complete else START_TRIES):
                self.starts.pop(0)
                continue
            e["tries"] += 1
            params = {k: _to_optuna(v) for k, v in e["start"].values.items()}
            self.study.enqueue_trial(params, user_attrs={"start": e["start"].name})
            return e
        return None

    def exhausted_message(self) -> str:
        lines = [f"no valid new architecture in {MAX_RESAMPLES} samples of {self.space.spec}: "
                 f"{self.counts['rejected']} rejected by the checker, {self.counts['duplicate']} duplicate"
                 f"{'' if self.counts['duplicate'] == 1 else 's'}, "
                 f"{self.counts['predicted_over_budget']} predicted over {self.prefilter_margin:g} x the "
                 f"{self.budget_ms:g} ms budget."]
        if self.rejections:
            lines.append("Most common reasons:")
            lines += [f"  {n} x {reason}" for reason, n in self.rejections.most_common(3)]
        return "\n".join(lines)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.pending:
            return
        ot, cand = self.pending.pop(trial_id)
        entry = self._retry_pending.pop(trial_id, None)
        self.finished += 1
        result = result or {}
        status = "failed" if error or result.get("status") == "failed" else result.get("status", "ok")
        if status == "unmeasured":
            self.unmeasured_events += 1
            retries = entry["retries"] + 1 if entry else 0  # retries of this point done so far
            if retries < MAX_REMEASURE:  # the point keeps its slot and waits for its retry
                self.retry.append({"ot": ot, "cand": cand, "retries": retries, "due": self.finished + RETRY_GAP,
                                   "trial": result.get("index")})
            elif ot is not None:  # given up for this run (its slot goes to a new point): --resume tries again
                self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
            return
        self.measured += 1
        rec = {"status": status, "score": result.get("score"), "latency_ms": result.get("latency_ms"),
               "trial": result.get("index"), "predicted_ms": result.get("predicted_ms")}
        self.done[cand.hash] = rec
        if ot is None:  # a point from an earlier run's records, measured now: Optuna learns it as a new trial
            self._add_finished(cand.point, rec)
        else:
            self._tell(ot, rec)
        if (self.predictor is not None and status in ("ok", "over_budget") and rec["latency_ms"]
                and not result.get("latency_bound")):  # a lower bound is no measurement to check a prediction by
            self.predictor.observe(cand.hash, rec["latency_ms"])

    def save(self, checkpoint_path: str) -> None:
        """Ray Tune's experiment checkpoint: only counts. Resume replays the run directory's records instead
        (driver.py), which hold everything the study learned."""
        import json

        with open(checkpoint_path, "w", encoding="utf-8") as fh:
            json.dump({"started": self.started, "counts": dict(self.counts)}, fh)

    def restore(self, checkpoint_path: str) -> None:
        pass  # see save()
