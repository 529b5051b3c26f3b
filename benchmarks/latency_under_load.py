"""Latency that survives a busy machine: the quick-start search and `archdsl bench` on a quiet machine, beside a
one-core busy loop, and beside a two-process load that comes and goes.

    python benchmarks/latency_under_load.py [--trials 8] [--budget 2] [--json benchmarks/results_...json]

Phases (each a fresh `archdsl search` process; all share one latency cache, as runs on one user's machine do, so
the regime anchor R* that the first measurement records (archdsl/bench/regime.py) serves every phase):
  quiet   nothing else runs (run twice by default, first and last: quiet2 measures the machine's own
          repeatability, the floor under any error against the quiet run);
  busy    one busy-loop process (unpinned) runs throughout;
  onoff   two busy-loop processes that run for 2-6 s, pause for 2-6 s, and so on (random, seeded).
Every load process is local, ends by itself at its deadline and is killed at the end of its phase.

Ground truth: afterwards, on the quiet machine, every architecture that any search decided on (ok or
over_budget) is measured again the way the search measures it (deploy form, batch 1, every core, 2 s cap,
+-3%). Latencies are the regime-normalized ones the search decides on (`latency_ms`); the raw medians are
compared too, for contrast. For each loaded phase the script reports:
  - agreement: the share of decided architectures whose within/over-budget decision equals the quiet truth's
    (target 100%); the rest of the trials are `unmeasured`;
  - the median relative error of the recorded latencies against the truth (target <= 10%);
  - the extra wall time against the quiet search.
The quiet search is held to the same comparison (its error is the measurement's own repeatability). `archdsl
bench` runs on 5 bundled examples per phase: its median against the quiet one, and whether it said UNSTABLE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archdsl.bench.disturb import SPIN, busy_processes  # noqa: E402

SPACE = ROOT / "examples" / "search" / "tiny_space.arch"
EXAMPLES = [("convnext_atto.arch", "3x224x224"), ("inceptionnext_atto.arch", "3x224x224"),
            ("unireplknet_a.arch", "3x224x224"), ("convnext_tiny.arch", "3x224x224"),
            ("replknet_31b.arch", "3x96x96")]


class Load:
    """Busy-loop processes: `kind` "quiet" (none), "busy" (one, throughout) or "onoff" (two, on and off)."""

    def __init__(self, kind: str, seed: int = 0, limit: float = 3600.0):
        self.kind, self.limit, self.rng = kind, limit, random.Random(seed)
        self.procs: list[subprocess.Popen] = []
        self.ctl = None

    def __enter__(self):
        if self.kind == "busy":
            # its own session, as an unrelated program would be (kernel autogroups rank sessions first)
            self.procs += busy_processes(self.limit, new_session=True)
        elif self.kind == "onoff":
            # a small controller process: two spinners for 2-6 s, a pause of 2-6 s, again (bounded by `limit`)
            code = ("import random, subprocess, sys, time\n"
                    f"rng = random.Random({self.rng.randrange(1 << 30)}); end = time.monotonic() + {self.limit}\n"
                    f"spin = {SPIN!r}\n"
                    "while time.monotonic() < end:\n"
                    "    on = rng.uniform(2, 6)\n"
                    "    ps = [subprocess.Popen([sys.executable, '-c', spin, str(on)]) for _ in range(2)]\n"
                    "    [p.wait() for p in ps]\n"
                    "    time.sleep(rng.uniform(2, 6))\n")
            self.ctl = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        import signal

        for p in self.procs:
            p.kill()
            p.wait()
        if self.ctl is not None:
            try:
                os.killpg(self.ctl.pid, signal.SIGKILL)  # the controller and its spinners
            except ProcessLookupError:
                pass
            self.ctl.wait()


def _env(work: Path) -> dict:
    shared = work.parent  # one machine, one cache: the regime anchor is recorded once
    return {**os.environ, "ARCHDSL_CACHE_DIR": str(shared / "cache"), "ARCHDSL_LOCK_DIR": str(shared / "locks"),
            "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1"}


def run_search(work: Path, trials: int, budget: float, seed: int) -> dict:
    out = work / "search-out"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "archdsl", "search", str(SPACE), "--latency-ms", str(budget),
                        "--trials", str(trials), "--out", str(out), "--seed", str(seed)],
                       env=_env(work), capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines() if x.strip()] \
        if (out / "trials.jsonl").exists() else []
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return {"rc": p.returncode, "wall_s": round(wall, 1), "records": recs, "summary": summary,
            "stdout_tail": p.stdout[-1500:], "stderr_tail": p.stderr[-1500:]}


def run_bench(work: Path) -> list[dict]:
    out = []
    for name, shape in EXAMPLES:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "archdsl", "bench", str(ROOT / "examples" / name), "--input", shape,
                            "--json", "--strict"], env=_env(work), capture_output=True, text=True, timeout=600)
        r = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
        out.append({"example": name, "input": shape, "rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                    "median_ms": r.get("latency_ms"), "raw_median_ms": r.get("median_ms"), "stable": r.get("stable"),
                    "disturbed": r.get("disturbed"),
                    "disturbance": r.get("disturbance"), "stderr": p.stderr[-300:]})
    return out


def truth(points: dict[str, dict], work: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Quiet re-measurement of each architecture (hash -> point), as the search's meter measures it: (hash ->
    normalized ms, hash -> raw median ms)."""
    from archdsl.search.space import SearchSpace
    from archdsl.search.trial import TrialSettings, measure_latency_local, reference_net

    os.environ.update({k: v for k, v in _env(work).items() if k.startswith("ARCHDSL")})
    files = {SPACE.name: SPACE.read_text(encoding="utf-8")}
    # the search's own reference network (its latency recorded in the shared cache by the first search)
    s = TrialSettings(files=files, spec_name=SPACE.name, budget_ms=0.0, latency_quiet_wait=60.0,
                      reference=reference_net(SearchSpace(SPACE)))
    out, raw = {}, {}
    for h, point in points.items():
        lat = measure_latency_local(s, point)
        if not lat.get("disturbed"):
            out[h], raw[h] = lat["latency_ms"], lat["median_ms"]
    return out, raw


def _raw(r: dict) -> float | None:
    return (r.get("latency") or {}).get("median_ms")


def compare(phase: dict, ref: dict[str, float], budget: float, ref_raw: dict[str, float]) -> dict:
    decided = [r for r in phase["records"] if r.get("status") in ("ok", "over_budget") and r.get("hash") in ref]
    agree = [(r["latency_ms"] <= budget) == (ref[r["hash"]] <= budget) for r in decided]
    errs = [abs(r["latency_ms"] - ref[r["hash"]]) / ref[r["hash"]] for r in decided]
    raw = [abs(_raw(r) - ref_raw[r["hash"]]) / ref_raw[r["hash"]] for r in decided if _raw(r) is not None]
    statuses: dict[str, int] = {}
    for r in phase["records"]:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    m = phase["summary"].get("measurements") or {}
    return {"decided": len(decided), "agree": sum(agree), "agreement": (sum(agree) / len(agree)) if agree else None,
            "median_rel_error": statistics.median(errs) if errs else None, "max_rel_error": max(errs) if errs else None,
            "raw_median_rel_error": statistics.median(raw) if raw else None,
            "disagreements": [{"hash": r["hash"], "recorded_ms": r["latency_ms"], "truth_ms": ref[r["hash"]]}
                              for r, a in zip(decided, agree) if not a],
            "statuses": statuses, "measurements": m, "wall_s": phase["wall_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phases", default="quiet,busy,onoff,quiet2",
                    help="phases in order; a name is a load kind (quiet, busy, onoff) plus an optional number")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_latency_under_load_cpu2.json"))
    a = ap.parse_args()

    from archdsl.bench.disturb import LoadWindow
    from archdsl.bench.measure import fingerprint

    w = LoadWindow()
    time.sleep(2.0)
    before = w.sample()
    result: dict = {"machine": fingerprint(), "cpu_flags": _flags(), "load_before": before.to_json(),
                    "loadavg_before": os.getloadavg(), "trials": a.trials, "budget_ms": a.budget, "phases": {}}
    print(f"machine load before: other processes {before.others_cpu:.2f} cores, load average {os.getloadavg()[0]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="archdsl-underload-"))
    for kind in a.phases.split(","):
        work = root / kind
        work.mkdir()
        with Load(kind.rstrip("0123456789"), seed=a.seed):
            lw = LoadWindow()
            ph = run_search(work, a.trials, a.budget, a.seed)
            ph["bench"] = [] if a.no_bench else run_bench(work)
            ph["load_during"] = lw.sample().to_json()
        result["phases"][kind] = ph
        print(f"{kind}: search rc {ph['rc']} in {ph['wall_s']} s, load {ph['load_during']}")
        print("  " + ph["stdout_tail"].strip().replace("\n", "\n  ")[-800:])
    # ground truth, quiet
    points = {}
    for ph in result["phases"].values():
        for r in ph["records"]:
            if r.get("status") in ("ok", "over_budget") and r.get("hash"):
                points.setdefault(r["hash"], r["point"])
    t0 = time.perf_counter()
    (root / "truth").mkdir()
    ref, ref_raw = truth(points, root / "truth")
    result["truth"] = {"n": len(ref), "seconds": round(time.perf_counter() - t0, 1), "ms": ref, "raw_ms": ref_raw}
    quiet_wall = result["phases"].get("quiet", {}).get("wall_s")
    table = {}
    for kind, ph in result["phases"].items():
        c = compare(ph, ref, a.budget, ref_raw)
        c["extra_wall"] = (ph["wall_s"] / quiet_wall - 1) if quiet_wall else None
        qb = {b["example"]: b for b in result["phases"].get("quiet", {}).get("bench", [])}
        rows = []
        for b in ph["bench"]:
            q = qb.get(b["example"], {}).get("median_ms")
            qr = qb.get(b["example"], {}).get("raw_median_ms")
            err = None if (b["median_ms"] is None or q is None or b["disturbed"]) else abs(b["median_ms"] - q) / q
            rerr = (None if (b.get("raw_median_ms") is None or qr is None or b["disturbed"])
                    else abs(b["raw_median_ms"] - qr) / qr)
            rows.append({"example": b["example"], "median_ms": b["median_ms"], "quiet_ms": q, "rel_error": err,
                         "raw_rel_error": rerr,
                         "unstable": not b["stable"], "disturbed": b["disturbed"], "wall_s": b["wall_s"]})
        c["bench"] = rows
        table[kind] = c
    result["comparison"] = table
    # the metric: each phase's recorded latencies against the quiet run's, architecture by architecture
    if "quiet" in result["phases"]:
        first = {r["hash"]: r for r in result["phases"]["quiet"]["records"]
                 if r.get("status") in ("ok", "over_budget")}
        for kind, ph in result["phases"].items():
            pairs = [(r, first[r["hash"]]) for r in ph["records"]
                     if r.get("status") in ("ok", "over_budget") and r.get("hash") in first]
            errs = [abs(r["latency_ms"] - f["latency_ms"]) / f["latency_ms"] for r, f in pairs]
            raw = [abs(_raw(r) - _raw(f)) / _raw(f) for r, f in pairs if _raw(r) and _raw(f)]
            table[kind]["vs_quiet"] = {"n": len(errs), "median_rel_error": statistics.median(errs) if errs else None,
                                       "max_rel_error": max(errs) if errs else None,
                                       "raw_median_rel_error": statistics.median(raw) if raw else None}
    # the machine's own repeatability: two quiet searches, compared architecture by architecture
    if "quiet" in result["phases"] and "quiet2" in result["phases"]:
        first = {r["hash"]: r for r in result["phases"]["quiet"]["records"]
                 if r.get("status") in ("ok", "over_budget")}
        pairs = [(r, first[r["hash"]]) for r in result["phases"]["quiet2"]["records"]
                 if r.get("status") in ("ok", "over_budget") and r.get("hash") in first]
        errs = [abs(r["latency_ms"] - f["latency_ms"]) / f["latency_ms"] for r, f in pairs]
        raw = [abs(_raw(r) - _raw(f)) / _raw(f) for r, f in pairs if _raw(r) and _raw(f)]
        result["quiet_vs_quiet"] = {"n": len(errs), "median_rel_error": statistics.median(errs) if errs else None,
                                    "max_rel_error": max(errs) if errs else None,
                                    "raw_median_rel_error": statistics.median(raw) if raw else None}
        qq = result["quiet_vs_quiet"]
        print(f"quiet vs quiet2 (the machine's own repeatability): {len(errs)} architectures, median error "
              f"{_pct(qq['median_rel_error'])}, max {_pct(qq['max_rel_error'])} (raw medians: "
              f"{_pct(qq['raw_median_rel_error'])})")
    for kind, c in table.items():
        print(f"{kind:6s} decided {c['decided']:2d}, agree {c['agree']}/{c['decided']}, median error "
              f"{_pct(c['median_rel_error'])}, max {_pct(c['max_rel_error'])} (raw medians: "
              f"{_pct(c['raw_median_rel_error'])}), statuses {c['statuses']}, "
              f"extra wall {_pct(c['extra_wall'])}")
        vq = c.get("vs_quiet") or {}
        if vq:
            print(f"        against the quiet run (a): {vq['n']} architectures, median error "
                  f"{_pct(vq['median_rel_error'])}, max {_pct(vq['max_rel_error'])} (raw medians: "
                  f"{_pct(vq['raw_median_rel_error'])})")
        for b in c["bench"]:
            print(f"        bench {b['example']:26s} {b['median_ms']} ms (quiet {b['quiet_ms']}) error "
                  f"{_pct(b['rel_error'])} (raw {_pct(b['raw_rel_error'])}) disturbed {b['disturbed']} "
                  f"wall {b['wall_s']} s")
    result["loadavg_after"] = os.getloadavg()
    Path(a.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"results: {a.json}")
    return 0


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "amx")))
    return []


if __name__ == "__main__":
    sys.exit(main())
