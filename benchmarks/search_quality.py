"""Does the default search algorithm beat random search? Hypervolume, best-under-budget, throughput, overhead.

    python benchmarks/search_quality.py [--trials 16] [--latency-ms 8] [--seeds 0 1 2] [--algos tpe random]
                                        [--res 32] [--epochs 2] [--json out.json]

Runs `archdsl search` (the real thing: embedded Ray, latency measured per trial, ASHA, short training on
scikit-learn's digits) on examples/search/convnext_space.arch once per (algorithm, seed), same trial and latency
budget for all, and reports per run and as the mean over seeds:
  hypervolume      area dominated by the accuracy-latency front within the box latency <= budget,
                   accuracy >= 0.1 (chance on 10 classes), so it rewards accuracy and speed under the budget;
  best             the best validation accuracy among trials measured within the budget;
  trials/hour      finished trials (trained, over budget or failed) per hour of wall time;
  overhead         the fraction of wall time in which no trial was training or measuring (the union of every
                   trial's training + measuring interval, from its record's end time and phase seconds, against
                   the whole run's wall time: Ray start-up, sampling, checking, building, writing the outputs);
                   also slot_idle, 1 - (sum of training + measuring seconds) / (wall x 2 slots).
Target (issue 6): the default algorithm beats random on mean hypervolume and mean best, overhead under 15%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archdsl.search.driver import SearchConfig, run_search  # noqa: E402
from archdsl.search.pareto import hypervolume, pareto_front  # noqa: E402

SPACE = Path(__file__).resolve().parent.parent / "examples" / "search" / "convnext_space.arch"
FINISHED = ("ok", "over_budget", "failed")


def one_run(algo: str, seed: int, args, workdir: Path) -> dict:
    out = workdir / f"{algo}-{seed}"
    t0 = time.perf_counter()
    s = run_search(SearchConfig(spec=str(SPACE), budget_ms=args.latency_ms, trials=args.trials, algo=algo,
                                seed=seed, epochs=args.epochs, out=str(out), fixed={"res": args.res},
                                latency_threads=args.latency_threads, top_k=3), progress=lambda m: None)
    wall = time.perf_counter() - t0
    recs = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]
    done = [r for r in recs if r["status"] in FINISHED]
    front = pareto_front(recs, budget_ms=args.latency_ms, metric="score")
    hv = hypervolume([(r["latency_ms"], r["score"]) for r in front], (args.latency_ms, 0.1))
    busy = sum(_active(r) for r in done)
    slots = 2  # embedded Ray on this machine: one trial per core
    # literal overhead: the share of the wall time in which no trial was training or measuring
    spans = sorted((_end(r) - _active(r), _end(r)) for r in done)
    covered, cur = 0.0, None
    for a, b in spans:
        if cur is None or a > cur[1]:
            covered += 0 if cur is None else cur[1] - cur[0]
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    covered += 0 if cur is None else cur[1] - cur[0]
    ok = [r for r in done if r["status"] == "ok" and r["latency_ms"] <= args.latency_ms]
    return {"algo": algo, "seed": seed, "hypervolume": hv, "best": max((r["score"] for r in ok), default=None),
            "finished": len(done), "over_budget": sum(r["status"] == "over_budget" for r in done),
            "failed": sum(r["status"] == "failed" for r in done), "rejected": s.counts.get("rejected", 0),
            "duplicates": s.counts.get("duplicate", 0), "wall_s": wall, "trials_per_hour": 3600 * len(done) / wall,
            "overhead": max(0.0, 1 - covered / wall), "slot_idle": max(0.0, 1 - busy / (wall * slots)),
            "front": [(r["latency_ms"], r["score"]) for r in front],
            "trials": [{k: r.get(k) for k in ("trial", "status", "latency_ms", "score", "epochs", "seconds", "time")}
                       for r in done]}


def _active(r: dict) -> float:
    """Seconds a trial spent training or measuring (its own latency measurement included)."""
    sec = r.get("seconds") or {}
    return sec.get("train", 0.0) + sec.get("latency", 0.0) + sec.get("proxy", 0.0)


def _end(r: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(r["time"]).timestamp()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--latency-ms", type=float, default=8.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--algos", nargs="+", default=["tpe", "random"])
    ap.add_argument("--res", type=int, default=32, help="the space's base resolution (its res parameter)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--latency-threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="archdsl-sq-") as tmp:
        for seed in args.seeds:
            for algo in args.algos:  # interleaved: a slow spell of the machine hits both algorithms
                r = one_run(algo, seed, args, Path(tmp))
                runs.append(r)
                print(f"{algo:<7} seed {seed}: hypervolume {r['hypervolume']:.4f}  best {r['best']}  "
                      f"{r['finished']} trials ({r['over_budget']} over budget, {r['failed']} failed, "
                      f"{r['rejected']} rejected, {r['duplicates']} duplicates)  {r['wall_s']:.0f} s  "
                      f"overhead {100 * r['overhead']:.0f}%", file=sys.stderr, flush=True)
    summary = {}
    for algo in args.algos:
        rs = [r for r in runs if r["algo"] == algo]
        summary[algo] = {
            "hypervolume_mean": statistics.mean(r["hypervolume"] for r in rs),
            "best_mean": statistics.mean(r["best"] or 0.0 for r in rs),
            "trials_per_hour_mean": statistics.mean(r["trials_per_hour"] for r in rs),
            "overhead_mean": statistics.mean(r["overhead"] for r in rs),
        }
    print(f"{'algo':<8}{'hypervolume':>12}{'best':>8}{'trials/h':>10}{'overhead':>10}")
    for algo, m in summary.items():
        print(f"{algo:<8}{m['hypervolume_mean']:>12.4f}{m['best_mean']:>8.3f}{m['trials_per_hour_mean']:>10.0f}"
              f"{100 * m['overhead_mean']:>9.0f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args),
                                               "runs": runs, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
