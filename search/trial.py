"""One search trial, as a Ray Tune function trainable, and the latency measurement task it calls.

Takes (config from `ArchSearcher`): {"point", "hash", "index", "predicted_ms"}; static settings
(`TrialSettings`) through `tune.with_parameters`. Reports (ray.tune.report) one result per epoch, each with:
status, score (the objective, higher is better), accuracy, latency_ms, latency (the engine's Measurement JSON),
params, macs, activations, epoch, node, latency_node, seconds {check, latency, train, proxy}, error.

Steps: resolve the point -> check -> measure the deploy form's latency with a `LatencyMeter` (a Ray actor on
a node carrying the target-hardware marker; the engine's measurement lock serializes it with any other
measurement on that machine, and every training step of every trial there holds the lock's shared side, so a
model is timed with the cores to itself) -> over the budget: report status "over_budget" and stop without
training; a measurement that other programs disturbed beyond repair reports "unmeasured" (the driver measures
the point again later) -> otherwise train and evaluate per epoch (Ray Tune's ASHA may stop the trial after any
epoch), or score with a zero-cost proxy. A Python exception in any step becomes a reported "failed" result with its
message; a worker killed outright (out of memory) is recorded by the driver from Ray's trial error.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["TrialSettings", "run_trial", "measure_latency_local", "LatencyMeter", "start_meters"]


@dataclass
class TrialSettings:
    """What every trial of one search shares. `files`: {relative path: text} of the spec and its imports (so a
    trial on another node needs no shared file system); `spec_name`: the spec's relative path among them."""

    files: dict[str, str]
    spec_name: str
    budget_ms: float
    fixed: dict[str, Any] = field(default_factory=dict)  # values (never .arch text), as SearchSpace.fixed
    model: str | None = None
    input_shape: tuple[int, int, int] | None = None
    objective: str = "accuracy"  # "accuracy" | "naswot" | "synflow" | "oneshot"
    dataset: str = "digits"
    dataset_limit: int | None = None  # images drawn from the dataset (stratified); None: all
    val_fraction: float = 0.2  # of those, held out for the validation score
    extra_seeds: int = 0  # baselines train with this many more seeds when the search rescores (rescore.py)
    supernet: str | None = None  # --objective oneshot: the trained supernet's checkpoint (oneshot.py)
    supernet_epochs: int = 10
    supernet_samples: int = 200
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    train_threads: int = 1
    latency_threads: int | None = None  # None: every usable core of the measuring node
    runtime: str = "torch"  # what latency is of: torch | fast | ort (bench/runtimes.py)
    dtype: str = "float32"  # float32 | bfloat16: the deploy form's number format (torch and fast runtimes)
    latency_max_seconds: float = 2.0
    latency_rel_ci: float = 0.03
    latency_quiet_wait: float = 30.0  # s of waiting for the machine to quiet down before a trial is unmeasured
    target_label: str = "archdsl-target"
    meters: list = field(default_factory=list)  # LatencyMeter actor handles (empty: measure in the trial)
    crash_marker: str | None = None  # tests: a choice name whose value "crash" makes the trial raise
    # tests: a choice name whose value "busy<N>" makes the first N measurements of that point run beside a real
    # competing load (one busy process per core, started and stopped around the measurement)
    load_marker: str | None = None
    # the network every latency is timed against (bench/regime.py): {"files", "spec_name", "model", "fixed",
    # "input_shape", "point", "hash"}, a point of the searched space (`reference_net`); None: the regime block
    reference: dict | None = None


_SPEC_DIRS: dict[str, Path] = {}
MEASURE_TRIES = 3  # an unstable measurement (wide CI, drifting reference) is repeated up to this many times
# A clean latency within NEAR_BUDGET of the budget is measured NEAR_TRIES times in all, NEAR_PAUSE s apart, and
# the median one decides: this machine's speed wanders by 10-20% over seconds (docs/latency.md), so one
# measurement near the line could land on either side of it.
NEAR_BUDGET, NEAR_TRIES, NEAR_PAUSE = 0.2, 3, 1.0


def materialize(files: dict[str, str]) -> Path:
    """Write the spec files once per process into a private temp dir; returns that dir (cached by content)."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    d = _SPEC_DIRS.get(key)
    if d is not None and d.exists():
        return d
    d = Path(tempfile.mkdtemp(prefix=f"archdsl-spec-{key}-"))
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    _SPEC_DIRS[key] = d
    return d


def check_point(s: TrialSettings, point: dict[str, Any]):
    from ..api import check_file

    spec = materialize(s.files) / s.spec_name
    return check_file(spec, None, s.input_shape, s.model, strict_overrides=False, values={**s.fixed, **point})


_REF_NETS: dict[tuple[str, int], Callable[[], Any]] = {}


def reference_net(space, *, seed: int = 0, tries: int = 200) -> dict | None:
    """The reference network of a search (TrialSettings.reference): the space's point with every choice at its
    first value, or, if the spec rejects that, the first valid point drawn at random (`seed`); None if none of
    `tries` draws is valid."""
    import random

    from .space import Candidate

    cand = space.check_point({})
    rng = random.Random(seed)
    for _ in range(tries):
        if isinstance(cand, Candidate):
            return {"files": space.files(), "spec_name": space.spec.name, "model": space.model,
                    "fixed": dict(space.fixed), "input_shape": space.input_shape, "point": cand.point,
                    "hash": cand.hash}
        cand = space.resolve(lambda cp: cp.sample(rng))
    return None


def _reference_fn(ref: dict, threads: int, runtime: str = "torch", dtype: str = "float32") -> Callable[[], Any]:
    """The reference network on the search's runtime and number format, built once per process, thread count,
    runtime and dtype; returns its forward."""
    from ..bench.model import forward_fn
    from ..bench.runtimes import form_of

    key = (ref["hash"], threads, runtime, dtype)
    if key not in _REF_NETS:
        s = TrialSettings(files=ref["files"], spec_name=ref["spec_name"], budget_ms=0.0, fixed=ref["fixed"],
                          model=ref["model"], input_shape=ref["input_shape"])
        _REF_NETS[key] = forward_fn(check_point(s, ref["point"]), form_of(runtime), 1, "cpu", seed=0, dtype=dtype)
    return _REF_NETS[key]


def _reference_kw(s: TrialSettings, threads: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """measure() arguments that time against the search's reference network, and a record of it; ({}, None)
    without one. A reference that cannot be built, or whose own latency could not be established cleanly, falls
    back to the block (the record says why)."""
    from ..bench.anchors import reference_net_latency

    if not s.reference:
        return {}, None
    try:
        fn = _reference_fn(s.reference, threads, s.runtime, s.dtype)
    except Exception as e:  # noqa: BLE001 - the trial's own network may still build: time it against the block
        return {}, {"hash": s.reference["hash"], "point": s.reference["point"], "latency_ms": None,
                    "fallback": f"the reference network did not build ({type(e).__name__}: {e}): timed against the "
                                "block"}
    name = (s.reference["hash"][:16] + ("" if s.runtime == "torch" else f"-{s.runtime}")
            + ("" if s.dtype == "float32" else f"-{s.dtype}"))
    lat, info = reference_net_latency(name, fn, threads, max_seconds=s.latency_max_seconds,
                                      rel_ci=s.latency_rel_ci, quiet_wait=s.latency_quiet_wait)
    rec = {"hash": s.reference["hash"], "point": s.reference["point"], **info,
           "latency_ms": None if lat is None else round(lat * 1e3, 6)}
    if lat is None:
        return {}, {**rec, "fallback": "no clean measurement of the reference network: timed against the block"}
    return {"reference": fn, "anchor": lat}, rec


def _node_id() -> str | None:
    """The Ray node this process runs on; None outside Ray (asking then would start a local Ray instance)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside Ray
        return None


def _under_load(s: TrialSettings, point: dict[str, Any], retry: int) -> bool:
    v = point.get(s.load_marker) if s.load_marker else None
    return isinstance(v, str) and v.startswith("busy") and v[4:].isdigit() and retry < int(v[4:])


def _start_load(seconds: float) -> list:
    """Three busy processes per usable core, pinned there, each ending by itself after `seconds` (a test hook)."""
    from ..bench.disturb import busy_processes

    procs = busy_processes(seconds, sorted(os.sched_getaffinity(0)), per_cpu=3)
    time.sleep(0.3)  # let them start spinning
    return procs


def measure_latency_local(s: TrialSettings, point: dict[str, Any], load: bool = False,
                          graph=None) -> dict[str, Any]:
    """Build the deploy form of `point` (`graph`: its checked graph, when the caller has it) and time one batch-1
    forward pass with the engine. Rounds in which a measuring thread waited for a CPU are discarded
    (bench/disturb.py); a measurement left without enough clean rounds is retried after the machine quiets down
    (`measure_until_clean`, at most `latency_quiet_wait` s), and is returned `disturbed` if it never gets clean: the
    caller must not decide on it. A clean result the engine still flags unstable (wide CI, drifting reference) is
    measured again (up to MEASURE_TRIES in all); the stable one with the lowest median is kept. A clean latency
    within NEAR_BUDGET of the budget is measured again (NEAR_TRIES in all) and the median decides ("near_budget_ms"
    lists them). A disturbed measurement whose lower bound (bench/measure.py) is over `over_bound_ms` ends the
    waiting: `run_trial` decides "over budget" on that bound (`bounded_over`). Returns the Measurement's JSON plus
    "node", "threads", "tries", "disturbed_tries", "waited_s",
    "attempts" (why each disturbed try was, joined) and "fingerprint". The latency to decide on is "latency_ms" (regime-
    normalized, bench/regime.py)."""
    from ..bench.measure import measure_until_clean
    from ..bench.model import measure_model
    from ..bench.runtimes import form_of

    g = graph if graph is not None else check_point(s, point)
    threads = s.latency_threads or len(os.sched_getaffinity(0))
    built: dict[str, float | None] = {}  # the runtime's own preparation: fast tuning, ort export

    def timing(fn):
        built["seconds"] = getattr(fn, "build_seconds", None)
        ref_kw, ref_rec = _reference_kw(s, threads)
        kw = dict(max_seconds=s.latency_max_seconds, rel_ci=s.latency_rel_ci, quiet_wait=s.latency_quiet_wait,
                  threads=threads, normalize=True, settle=lambda m: bounded_over(m.lower_bound, s), **ref_kw)
        # the test hook's load outlasts any wait: its measurement waits at most 1 s before it is left unmeasured
        procs = _start_load(s.latency_max_seconds + 1.0 + 5) if load else []
        try:
            meas, info = measure_until_clean(fn, **{**kw, "quiet_wait": 1.0} if load else kw)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        while not meas.disturbed and not meas.stable and info["tries"] < MEASURE_TRIES:
            again, more = measure_until_clean(fn, **kw)
            info = {k: info[k] + more[k] for k in info}
            if not again.disturbed and (again.stable, -again.latency) > (meas.stable, -meas.latency):
                meas = again
        if not meas.disturbed and abs(meas.latency * 1e3 - s.budget_ms) <= NEAR_BUDGET * s.budget_ms:
            near = [meas]
            for _ in range(NEAR_TRIES - 1):
                time.sleep(NEAR_PAUSE)
                again, more = measure_until_clean(fn, **kw)
                info = {k: info[k] + more[k] for k in info}
                if not again.disturbed:
                    near.append(again)
            meas = sorted(near, key=lambda n: n.latency)[(len(near) - 1) // 2]
            info["near_budget_ms"] = [round(n.latency * 1e3, 6) for n in near]
        return meas, info, ref_rec

    (meas, info, ref_rec), fp, _ = measure_model(g, timing, threads=threads, form=form_of(s.runtime), dtype=s.dtype)
    # why each disturbed try was, as one string: Tune's TensorBoard logger refuses a list of strings in a result
    info = {**info, "attempts": "; ".join(str(a) for a in info["attempts"])}
    return {**meas.to_json(), "node": _node_id(), "threads": threads, "runtime": s.runtime, "dtype": s.dtype,
            "batch": 1,
            "runtime_build_s": None if built.get("seconds") is None else round(built["seconds"], 3), **info,
            "fingerprint": fp, "reference_net": ref_rec}


class LatencyMeter:
    """A Ray actor that measures latency on one target node: started once per marked node by the driver, it
    holds that node's marker for its lifetime (so nothing else measures there), keeps torch imported and the
    allocator in its steady state between trials, and runs one measurement at a time (a Ray actor's calls run
    in order)."""

    def ready(self) -> str | None:
        import torch  # noqa: F401 - import once, before the first measurement

        from ..bench.measure import steady_state_allocator

        steady_state_allocator()
        return _node_id()

    def measure(self, s: TrialSettings, point: dict[str, Any], load: bool = False, graph=None) -> dict[str, Any]:
        return measure_latency_local(s, point, load, graph)


def start_meters(info, target_label: str) -> list:
    """One `LatencyMeter` actor pinned to each node of `info` (a cluster.ClusterInfo) that carries the marker;
    returns their handles once each is ready."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cls = ray.remote(LatencyMeter)
    meters = [cls.options(num_cpus=0, resources={target_label: 1}, max_concurrency=1,
                          scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
              for n in info.target_nodes]
    ray.get([m.ready.remote() for m in meters])
    return meters


def bounded_over(bound: float | None, s: TrialSettings, ms: bool = False) -> bool:
    """Whether a disturbed measurement's lower bound (s, or ms with `ms`) shows the network over the budget beyond
    the near-budget band (NEAR_BUDGET), where a clean figure is never needed to say it does not fit."""
    return bound is not None and bound * (1.0 if ms else 1e3) > s.budget_ms * (1 + NEAR_BUDGET)


def _measure(s: TrialSettings, point: dict[str, Any], index: int, load: bool = False,
             graph=None) -> dict[str, Any]:
    """Measure on the search's latency meter (or here, without meters). `graph`: the point's checked graph, sent
    along so that the meter does not check the spec a second time."""
    if not s.meters:
        return measure_latency_local(s, point, load, graph)
    import ray

    return ray.get(s.meters[index % len(s.meters)].measure.remote(s, point, load, graph))


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """The Ray Tune function trainable (wrap with `tune.with_parameters(run_trial, settings=...)`)."""
    from ray import tune

    from ..bench.lock import compute_lock

    s = settings
    point, index = config["point"], config["index"]
    base: dict[str, Any] = {"index": index, "hash": config.get("hash"), "predicted_ms": config.get("predicted_ms"),
                            "node": _node_id(), "latency_node": None, "status": "ok", "score": None,
                            "accuracy": None, "latency_ms": None, "latency": None, "error": None, "epoch": 0}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        if s.crash_marker and point.get(s.crash_marker) == "crash":
            raise RuntimeError(f"deliberate crash for {s.crash_marker}=crash (test hook)")
        with compute_lock():  # heavy work beside another trial's measurement waits (never held while measuring)
            g = check_point(s, point)
        tot = g.total()
        base.update(params=tot.params, macs=tot.macs, activations=tot.acts)
        seconds["check"] = time.perf_counter() - t0

        inherited = None
        if s.objective == "oneshot":  # scored first (a second at most): one below the bar is never measured
            from .oneshot import inherited_score

            t2 = time.perf_counter()
            bar = config.get("bar")
            inherited, scored_on = inherited_score(s, point, materialize(s.files) / s.spec_name, trial_data(s, g),
                                                   bar)
            seconds["inherited"] = time.perf_counter() - t2
            base["scored_on"] = scored_on  # validation images: part of the split for one screened early
            if bar is not None and inherited < bar:
                tune.report({**base, "status": "screened", "score": inherited, "accuracy": inherited,
                             "seconds": seconds, "bar": bar})
                return
        t1 = time.perf_counter()
        lat = _measure(s, point, index, _under_load(s, point, int(config.get("retry") or 0)), graph=g)
        seconds["latency"] = time.perf_counter() - t1
        if lat.get("runtime_build_s") is not None:  # of which the runtime's preparation (tuning, export)
            seconds["runtime_build"] = lat["runtime_build_s"]
        base.update(latency_ms=lat["latency_ms"], latency=lat, latency_node=lat.get("node"))
        if lat.get("disturbed") and bounded_over(lat.get("lower_bound_ms"), s, ms=True):
            # disturbed, but even its lower bound is far over the budget: over budget, decided on that bound
            tune.report({**base, "latency_ms": lat["lower_bound_ms"], "latency_bound": "lower",
                         "status": "over_budget", "score": 0.0, "seconds": seconds})
            return
        if lat.get("disturbed"):  # never decide on a disturbed figure: the driver measures this point again later
            reason = (lat.get("disturbance") or {}).get("reason")
            tune.report({**base, "latency_ms": None, "status": "unmeasured", "score": 0.0,
                         "error": f"no clean latency measurement: {reason}", "seconds": seconds})
            return
        if lat["latency_ms"] > s.budget_ms:
            tune.report({**base, "status": "over_budget", "score": 0.0, "seconds": seconds})
            return

        if s.objective == "oneshot":
            tune.report({**base, "score": inherited, "accuracy": inherited, "seconds": seconds})
            return
        if s.objective in ("naswot", "synflow"):
            t2 = time.perf_counter()
            score = _proxy_score(s, g)
            seconds["proxy"] = time.perf_counter() - t2
            tune.report({**base, "score": score, "seconds": seconds})
            return
        _train(s, g, base, seconds)
    except Exception as e:  # noqa: BLE001 - any failure of this trial is its result, the search goes on
        seconds["total"] = time.perf_counter() - t0
        msg = f"{type(e).__name__}: {e}".strip()
        tb = traceback.format_exc(limit=-3)
        tune.report({**base, "status": "failed", "score": 0.0, "error": msg, "traceback": tb, "seconds": seconds})


def trial_data(s: TrialSettings, g):
    """The data every trial of the search trains and validates on (the same split for all), fitted to the input
    of the checked graph `g`."""
    from .data import fit_to_input, load_dataset

    c, h, w = g.input_shape.to_json()
    return fit_to_input(load_dataset(s.dataset, seed=s.seed, val_fraction=s.val_fraction, limit=s.dataset_limit),
                        c, h, w)


def _proxy_score(s: TrialSettings, g) -> float:
    import torch

    from ..bench.lock import compute_lock
    from ..bench.machine import torch_threads
    from ..codegen.module import build_module
    from .proxy import PROXIES

    torch.manual_seed(s.seed)
    # synflow with every thread on busy cores: 15-42 s instead of 0.3 s
    with torch_threads(s.train_threads), compute_lock():
        m = build_module(g)
        if s.objective == "synflow":
            return float(PROXIES["synflow"](m, (1, *g.input_shape.to_json())))
        ds = trial_data(s, g)
        return float(PROXIES["naswot"](m, ds.x_train[:64]))


def _train(s: TrialSettings, g, base: dict[str, Any], seconds: dict[str, float]) -> None:
    import torch
    from ray import tune

    from ..bench.lock import compute_lock
    from ..codegen.module import build_module
    from .data import check_classes
    from .train import train_and_eval

    t2 = time.perf_counter()
    torch.manual_seed(s.seed)
    with compute_lock():  # one slice; train_and_eval takes its own per step (slices never nest)
        m = build_module(g)
        ds = trial_data(s, g)
    out_shape = g.output_shape
    if out_shape is not None:
        check_classes(out_shape.c, ds)

    def on_epoch(epoch: int, acc: float, loss: float) -> bool:
        seconds["train"] = time.perf_counter() - t2
        tune.report({**base, "score": acc, "accuracy": acc, "train_loss": loss, "epoch": epoch,
                     "seconds": dict(seconds)})
        return True

    train_and_eval(m, ds, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=s.seed,
                   threads=s.train_threads, on_epoch=on_epoch)
