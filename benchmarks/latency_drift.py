"""Why do the same networks read up to 2x apart between processes? A ladder of one family's networks timed in
several fresh processes, with the memory hierarchy's speed measured beside them.

    python benchmarks/latency_drift.py [--spec examples/baselines/resnet.arch] [--s 1,2,2.378,4] [--procs 6]
                                       [--pause 30] [--json benchmarks/results_latency_drift_cpu2.json]

Each process (one after another, `--pause` s apart) builds the deploy form of the spec at each value of its knob
`s` and of the search's reference network (examples/search/fashion_space.arch at its first point, what
`search_vs_hand.py` times its trials against), then, under the measurement lock with disturbed rounds
discarded (bench/measure.py):
  * times each network alone against the built-in GEMM reference (the raw median, ms), measured until clean
    (disturbed rounds discarded, a disturbed measurement repeated for up to a minute; one still disturbed
    then is reported as such and left out of the spreads);
  * times each against the reference network (the median of the per-round ratios);
  * times streaming reads (a sum) of buffers sized for L2 (0.5 MiB), L3 (8 and 24 MiB) and memory (256 MiB),
    in GB/s: a neighbour on the host that takes the shared L3 or the memory bus slows the bigger networks (whose
    weights live in L3) and not the small reference, which no run-queue or steal probe can see.
The report gives, per network, each process's raw median and ratio and their spread (max / min), and the
correlation between the biggest network's raw time and each probe's bandwidth. Records the load it ran under.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "search" / "fashion_space.arch"
PROBES_MIB = (0.5, 8, 24, 256)
QUIET_WAIT = 60.0  # each figure is measured until clean (measure_until_clean), for at most this long


def _bandwidth(mib: float, reps: int = 15) -> float:
    """GB/s of torch.sum over a float32 buffer of `mib` MiB (median of `reps` timed reads, after one warm read)."""
    import torch

    x = torch.ones(int(mib * (1 << 20) / 4))
    x.sum()
    inner = max(1, int(64 / mib))  # small buffers: several reads per sample
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            x.sum()
        t.append((time.perf_counter() - t0) / inner)
    return mib * (1 << 20) / statistics.median(t) / 1e9


def child(spec: str, svals: list[float]) -> dict:
    import torch

    from archdsl.api import check_file
    from archdsl.bench.measure import measure_until_clean, steady_state_allocator
    from archdsl.bench.model import forward_fn

    steady_state_allocator()
    threads = torch.get_num_threads()
    ref = forward_fn(check_file(SPACE), "deploy", 1, "cpu", seed=0)  # every choice at its first value
    nets = {}
    for v in svals:
        g = check_file(spec, None, None, values={"s": v})
        nets[f"s={v:g}"] = (forward_fn(g, "deploy", 1, "cpu", seed=0), g.total().macs, g.total().params)
    out = {"pid": os.getpid(), "threads": threads, "time": time.strftime("%H:%M:%S"), "loadavg": os.getloadavg(),
           "bandwidth_gbs_before": {f"{m:g}MiB": round(_bandwidth(m), 2) for m in PROBES_MIB}, "nets": {}}
    for name, (fn, macs, params) in nets.items():
        raw, _ = measure_until_clean(fn, quiet_wait=QUIET_WAIT, threads=threads, max_seconds=8.0, rel_ci=0.02)
        rel, _ = measure_until_clean(fn, quiet_wait=QUIET_WAIT, threads=threads, reference=ref, normalize=True,
                                     anchor=1.0, max_seconds=8.0, rel_ci=0.02)
        out["nets"][name] = {"macs": macs, "params": params, "raw_ms": round(raw.median * 1e3, 4),
                             "raw_disturbed": raw.disturbed, "raw_reason": raw.disturbance.get("reason"),
                             "threads_apart_rounds": raw.disturbance.get("threads_apart"),
                             "gemm_ref_ms": round((raw.reference_median or 0) * 1e3, 4),
                             "ratio_to_ref_net": None if rel.regime_ratio is None else round(rel.regime_ratio, 4),
                             "ref_net_ms": round((rel.reference_median or 0) * 1e3, 4),
                             "ratio_disturbed": rel.disturbed}
    out["bandwidth_gbs_after"] = {f"{m:g}MiB": round(_bandwidth(m), 2) for m in PROBES_MIB}
    return out


def _corr(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3 or statistics.pstdev(a) == 0 or statistics.pstdev(b) == 0:
        return None
    return round(statistics.correlation(a, b), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "baselines" / "resnet.arch"))
    ap.add_argument("--s", default="1,2,2.378,4", help="values of the spec's knob s")
    ap.add_argument("--procs", type=int, default=6)
    ap.add_argument("--pause", type=float, default=30.0, help="seconds between processes")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_latency_drift_cpu2.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    svals = [float(v) for v in a.s.split(",")]
    if a.child:
        print(json.dumps(child(a.spec, svals)))
        return 0
    runs, load_before = [], os.getloadavg()
    for i in range(a.procs):
        if i:
            time.sleep(a.pause)
        p = subprocess.run([sys.executable, __file__, "--child", "--spec", a.spec, "--s", a.s], capture_output=True,
                           text=True, check=False)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(p.stdout.strip().splitlines()[-1])
        runs.append(r)
        print(r["time"], " ".join(f"{k}: {v['raw_ms']:.3f}{'*' if v['raw_disturbed'] else ''} ms "
                                  f"x{v['ratio_to_ref_net']}{'*' if v['ratio_disturbed'] else ''}"
                                  for k, v in r["nets"].items()),
              "| GB/s", r["bandwidth_gbs_before"], flush=True)
    names = list(runs[0]["nets"])
    summary = {}
    for n in names:
        raw = [r["nets"][n]["raw_ms"] for r in runs if not r["nets"][n]["raw_disturbed"]]
        rat = [r["nets"][n]["ratio_to_ref_net"] for r in runs
               if r["nets"][n]["ratio_to_ref_net"] and not r["nets"][n]["ratio_disturbed"]]
        summary[n] = {"macs": runs[0]["nets"][n]["macs"], "params": runs[0]["nets"][n]["params"],
                      "clean_raw": len(raw), "clean_ratio": len(rat),
                      "raw_spread": round(max(raw) / min(raw), 3) if raw else None,
                      "ratio_spread": round(max(rat) / min(rat), 3) if rat else None}
    big = [r["nets"][names[-1]]["raw_ms"] for r in runs]
    corr = {k: _corr(big, [r["bandwidth_gbs_before"][k] for r in runs]) for k in runs[0]["bandwidth_gbs_before"]}
    load_during = [r["loadavg"][0] for r in runs]
    doc = {"spec": a.spec, "s": svals, "runs": runs, "summary": summary,
           "corr_biggest_raw_vs_bandwidth": corr, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "loadavg_in_children": load_during}
    Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    for n, v in summary.items():
        print(f"{n:10s} {v['macs']:>12,} MACs  raw spread x{v['raw_spread']} ({v['clean_raw']} clean)  "
              f"ratio-to-ref-net spread x{v['ratio_spread']} ({v['clean_ratio']} clean)")
    print("correlation of the biggest network's raw time with bandwidth:", corr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
