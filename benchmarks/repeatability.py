"""How repeatable is `archdsl bench`? The same model measured by N separate invocations (fresh processes).

    python benchmarks/repeatability.py [--spec examples/convnext_tiny.arch] [--n 10] [--threads 2] [--json out.json]

Runs `archdsl bench SPEC --json` N times one after another, each in a new process (so the allocator policy,
warm-up and stop rule are exercised from a cold start every time), and reports the medians, their spread
((max - min) / median of medians) and the coefficient of variation, with each run's CI, stability flag and the
reference workload's median (which tells whether the machine was in the same regime), and the same spread of
the model's median divided by the reference's (how much of the spread is the machine's regime).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _spread(values: list[float]) -> dict[str, float]:
    """{"spread": (max - min) / median, "cv": stdev / mean} of repeated figures."""
    cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
    return {"spread": (max(values) - min(values)) / statistics.median(values), "cv": cv}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "convnext_tiny.arch"))
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra", nargs="*", default=[], help="more `archdsl bench` arguments")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    runs = []
    for i in range(args.n):
        cmd = [sys.executable, "-m", "archdsl", "bench", args.spec, "--json", "--threads", str(args.threads),
               *args.extra]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return p.returncode
        r = json.loads(p.stdout)
        runs.append(r)
        print(f"run {i + 1}: median {r['median_ms']:.2f} ms  p10 {r['p10_ms']:.2f}  p90 {r['p90_ms']:.2f}  "
              f"runs {r['runs']}  ci +-{100 * (r['rel_ci'] or 0):.1f}%  stable {r['stable']}  "
              f"reference {r['reference_median_ms']:.4f} ms", file=sys.stderr, flush=True)
    med = [r["median_ms"] for r in runs]
    mm = statistics.median(med)
    res = {"spec": args.spec, "threads": args.threads, "n": len(runs), "medians_ms": med,
           "median_of_medians_ms": mm, **_spread(med),
           "stable_runs": sum(bool(r["stable"]) for r in runs), "fingerprint": runs[0]["fingerprint"],
           "runs": runs}
    # the model's median in units of the reference workload's median, timed in the same rounds: if the spread
    # shrinks, the runs differed by the machine's regime (clock, neighbours), not by the measurement
    ratio = [r["median_ms"] / r["reference_median_ms"] for r in runs]
    res["reference_ratio"] = {"values": ratio, **_spread(ratio)}
    print(f"{Path(args.spec).name}, {args.n} invocations, {args.threads} threads: medians {min(med):.2f}.."
          f"{max(med):.2f} ms (median {mm:.2f}), spread {100 * res['spread']:.1f}%, CV {100 * res['cv']:.1f}%, "
          f"{res['stable_runs']}/{len(runs)} stable; relative to the reference workload timed in the same rounds: "
          f"spread {100 * res['reference_ratio']['spread']:.1f}%, CV {100 * res['reference_ratio']['cv']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
