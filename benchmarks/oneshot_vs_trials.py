"""Is one-shot search worth it? Candidates per hour, rank correlation with training from scratch, final quality.

    python benchmarks/oneshot_vs_trials.py [--budget MS] [--minutes 60] [--supernet-epochs 10] [--limit 12000]
                                           [--val-fraction 0.5] [--sample 24] [--scratch-epochs 2]
                                           [--finetune-epochs 4] [--seeds 3] [--trials-run DIR] [--work DIR]
                                           [--dataset fashion] [--space SPEC] [--json FILE]

On Fashion-MNIST and examples/search/fashion_space.arch (issue 16's protocol), at one latency budget:
  1. `archdsl search --objective oneshot` (the supernet trained for --supernet-epochs, then --minutes of search),
     its wall time split into supernet training and search.
  2. Candidates evaluated per hour: the one-shot search's scored trials over its search time (and over its whole
     time, supernet included) against a trial-based search's (--trials-run: an `archdsl search` output directory,
     e.g. benchmarks/search_vs_hand.py's search-<budget>ms-tpe; without it one is run here for --minutes).
  3. Rank correlation: --sample networks of the space drawn at random (seed 0), each scored with its inherited
     weights (BatchNorm recalibrated) and trained from scratch with the trials' recipe (--scratch-epochs on the
     same split); Kendall's tau between the two scores.
  4. Final quality: the one-shot search's best, fine-tuned (`archdsl train --weights`, --finetune-epochs,
     --seeds seeds), against the trial-based search's best trained from scratch with the same recipe and epochs;
     test accuracy mean +- std on the official test split.
Targets (issue 18): at least 100x the candidates per hour; one-shot's best at least matches the trial-based
search's, at a fraction of the time. Latencies are the searches' own (regime-normalized); the machine's load is
recorded. Work is kept in --work (default benchmarks/runs/oneshot_vs_trials/, committed): a rerun skips what is
done. With --trials-run inside search_vs_hand's work directory the one-shot search measures against the same
latency cache (regime anchor), so its budget is the trials' budget, e.g.
    python benchmarks/oneshot_vs_trials.py --budget 3.19 \
        --trials-run benchmarks/runs/search_vs_hand/search-3.19ms-tpe
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPACE = ROOT / "examples" / "search" / "fashion_space.arch"


CACHE: Path | None = None  # the latency cache (regime anchor) the searches share; set in main()


def _env(work: Path) -> dict:
    return {**os.environ, "ARCHDSL_CACHE_DIR": str(CACHE or work / "cache"), "ARCHDSL_LOCK_DIR": str(work / "locks"),
            "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], work: Path) -> None:
    print("$ " + " ".join(cmd), flush=True)
    with (work / "log.txt").open("a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, env=_env(work), stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{cmd[3]} exited {rc}: see {work / 'log.txt'}")


def search(a, work: Path, objective: str) -> Path:
    out = work / f"search-{objective}"
    if (out / "summary.json").exists():
        return out
    cmd = [sys.executable, "-m", "archdsl", "search", str(a.space), "--latency-ms", str(a.budget), "--objective",
           objective, "--trials", "100000", "--max-minutes", str(a.minutes), "--dataset", a.dataset, "--epochs",
           str(a.scratch_epochs), "--dataset-limit", str(a.limit), "--val-fraction", str(a.val_fraction), "--out",
           str(out), "--top", "1"]
    if objective == "oneshot":
        cmd += ["--supernet-epochs", str(a.supernet_epochs)]
    if (out / "run.json").exists():
        cmd += ["--resume"]
    _run(cmd, work)
    return out


def per_hour(out: Path) -> dict:
    """Scored candidates and their rate: over the search's time, and (one-shot) over the whole time."""
    summary = json.loads((out / "summary.json").read_text())
    scored = summary["counts"].get("ok", 0)
    total = float(summary["seconds"])
    supernet = 0.0
    ckpt = out / "supernet" / "checkpoint.pt"
    if ckpt.exists():
        import torch

        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        supernet = sum(float(h["seconds"]) for h in state.get("history") or [])
    searching = max(1e-9, total - supernet)
    return {"scored": scored, "measured": sum(summary["counts"].get(s, 0) for s in ("ok", "over_budget")),
            "seconds": round(total, 1), "supernet_seconds": round(supernet, 1),
            "per_hour_search": round(scored / searching * 3600, 1),
            "per_hour_total": round(scored / max(1e-9, total) * 3600, 1)}


def kendall_tau(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau-b over pairs (ties in either list count neither way)."""
    conc = disc = tx = ty = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / denom if denom else 0.0


def rank_correlation(a, work: Path, oneshot: Path) -> dict:
    """Inherited-weight and from-scratch validation accuracy of --sample random networks of the space."""
    path = work / "rank.json"
    done = json.loads(path.read_text()) if path.exists() else []
    from archdsl.search.oneshot import load_supernet
    from archdsl.search.rescore import train_once
    from archdsl.search.space import Candidate, SearchSpace
    from archdsl.search.train import Recipe, evaluate_split
    from archdsl.search.trial import TrialSettings, trial_data

    space = SearchSpace(a.space)
    net, _ = load_supernet(space, oneshot / "supernet" / "checkpoint.pt")
    s = TrialSettings(files=space.files(), spec_name=a.space.name, budget_ms=a.budget, dataset=a.dataset,
                      dataset_limit=a.limit, val_fraction=a.val_fraction, epochs=a.scratch_epochs)
    rng = random.Random(0)
    points = []
    while len(points) < a.sample:
        c = space.resolve(lambda cp: cp.sample(rng))
        if isinstance(c, Candidate):
            points.append(c)
    for c in points[len(done):]:
        ds = trial_data(s, c.graph)
        module = net.extract(c.point, calibrate=ds.x_train[:Recipe(epochs=1).precise_bn])
        inherited = evaluate_split(module, ds.x_val, ds.y_val)[0]
        scratch = train_once(s, c.graph, s.seed).final_accuracy
        done.append({"point": c.point, "hash": c.hash, "macs": c.graph.total().macs, "inherited": inherited,
                     "scratch": scratch})
        path.write_text(json.dumps(done, indent=1) + "\n")
        print(f"  {len(done)}/{a.sample}: inherited {inherited:.4f}, from scratch {scratch:.4f}", flush=True)
    xs, ys = [r["inherited"] for r in done], [r["scratch"] for r in done]
    return {"n": len(done), "kendall_tau": round(kendall_tau(xs, ys), 4), "networks": done}


def final(a, work: Path, spec: Path, name: str, weights: Path | None) -> dict:
    accs = []
    for seed in range(a.seeds):
        out = work / "final" / f"{name}-seed{seed}"
        if not (out / "metrics.json").exists():
            cmd = [sys.executable, "-m", "archdsl", "train", str(spec), "--dataset", a.dataset, "--dataset-limit",
                   str(a.limit), "--epochs", str(a.finetune_epochs), "--seed", str(seed), "--out", str(out)]
            if weights is not None:
                cmd += ["--weights", str(weights)]
            _run(cmd, work)
        accs.append(json.loads((out / "metrics.json").read_text())["test_accuracy"])
    return {"spec": str(spec), "test_accuracies": accs, "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=5.0, help="latency budget, ms (default 5)")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--supernet-epochs", type=int, default=10)
    ap.add_argument("--limit", type=int, default=12000)
    ap.add_argument("--val-fraction", type=float, default=0.5)
    ap.add_argument("--sample", type=int, default=24)
    ap.add_argument("--scratch-epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dataset", default="fashion")
    ap.add_argument("--space", type=Path, default=SPACE)
    ap.add_argument("--trials-run", type=Path, help="a trial-based search's output directory at this budget")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "oneshot_vs_trials",
                    help="working directory, committed but for checkpoints and Ray's files (a rerun skips what is "
                         "done)")
    ap.add_argument("--cache-dir", type=Path,
                    help="the latency cache (its regime anchor sets the unit of every latency): default the "
                         "--trials-run's work directory's cache/ when there is one (search_vs_hand's), so both "
                         "searches measure in one unit, else WORK/cache")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_oneshot_vs_trials_cpu2.json"))
    a = ap.parse_args()
    a.space = a.space.resolve()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    global CACHE
    shared = a.trials_run.resolve().parent / "cache" if a.trials_run else None
    CACHE = a.cache_dir.resolve() if a.cache_dir else shared if shared and shared.is_dir() else work / "cache"
    print(f"latency cache (regime anchor): {CACHE}", flush=True)
    t0, load0 = time.time(), os.getloadavg()
    oneshot = search(a, work, "oneshot")
    trials = a.trials_run.resolve() if a.trials_run else search(a, work, "accuracy")
    rates = {"oneshot": per_hour(oneshot), "trials": per_hour(trials)}
    for k in ("search", "total"):
        rates[f"ratio_{k}"] = round(rates["oneshot"][f"per_hour_{k}"] / max(1e-9, rates["trials"][f"per_hour_{k}"]), 1)
    print(json.dumps(rates, indent=1), flush=True)
    rank = rank_correlation(a, work, oneshot)
    print(f"Kendall tau (inherited vs from scratch, n={rank['n']}): {rank['kendall_tau']}", flush=True)
    (os_spec,) = sorted((oneshot / "top").glob("01_*.arch"))
    (tr_spec,) = sorted((trials / "top").glob("01_*.arch"))
    quality = {"oneshot_finetuned": final(a, work, os_spec, "oneshot", os_spec.with_suffix(".pt")),
               "trials_scratch": final(a, work, tr_spec, "trials", None)}
    for k, v in quality.items():
        print(f"{k}: test accuracy {100 * v['mean']:.2f} +- {100 * v['std']:.2f}", flush=True)
    Path(a.json).write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "rates": rates,
                                        "rank": rank, "quality": quality, "loadavg_before": load0,
                                        "loadavg_after": os.getloadavg(),
                                        "hours": round((time.time() - t0) / 3600, 2)}, indent=1) + "\n")
    print(f"results: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
