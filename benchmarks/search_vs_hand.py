"""Does the search beat the hand-designed families at equal measured latency? Fashion-MNIST, two budgets.

    python benchmarks/search_vs_hand.py [--minutes 60] [--budgets auto|A,B] [--search-epochs 2] [--limit 12000]
                                        [--val-fraction 0.5] [--rescore 5] [--final-epochs 4] [--final-limit 12000]
                                        [--seeds 3] [--top 3] [--jobs 2] [--work DIR] [--json FILE]

For each of two latency budgets (batch 1, this machine; `auto`: the measured latency of the ConvNeXt baseline
at s=1 and at s=2, so the baselines scaled to them differ by about 2x in MACs, s being pycls' FLOPs factor):
  1. `archdsl search examples/search/fashion_space.arch` with TPE for --minutes, every bundled baseline
     (`examples/baselines/*.arch`) passed with --baseline (scaled to the budget by bisection on measured latency),
     then the same search with random sampling as the control (same harness, same minutes). Each trial trains for
     --search-epochs on --limit images of the 60k training set, and is scored on the --val-fraction of them held
     out (6,000 by default: a score's sampling error about 0.5 points); the search's best --rescore are trained
     again with a second seed and ranked by the mean (against the winner's curse, docs/search.md). The search
     never sees the test set.
  2. The top --top architectures of each search and every scaled baseline are trained again with one recipe
     (`archdsl train`, --final-epochs on 80% of --final-limit images, --seeds seeds each, --jobs at a time) and
     scored on the official 10k test images. A search's best is the one with the best mean validation accuracy
     in these runs: the test set chooses nothing.
  3. A table (test accuracy mean +- std over seeds, measured latency, params, MACs) and a plot of test accuracy
     against latency; results JSON in benchmarks/, the plot in docs/.
Target: at each budget the search's best beats every baseline by more than the seed spread, and TPE beats
random. The script states plainly whether it did. Nothing here is timed against a target: latencies are the
search's own measurements (regime-normalized), recorded with the machine's load.
Work is kept in --work (default benchmarks/runs/search_vs_hand/, committed but for weights, checkpoints and Ray's
own files, because a working session's machine does not outlive it): a rerun skips what is done, reuses the budgets
measured first (budgets.json), resumes a search cut short with the minutes it has left (searches are timed by this
script, `<search>.elapsed.json`) and a killed training run from its last checkpoint where one is still there (else
from the start). A budget's searches start and resume only on the machine that started them (latencies compare
within one machine; --allow-other-machine overrides, recorded); on another machine, `auto` measures the budgets
whose searches have not started there (budgets.json keeps each machine's), and the final training runs anywhere.
Each budget's results are written to --json as soon as they are complete, with the machine that ran its searches.
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
BASELINES = sorted((ROOT / "examples" / "baselines").glob("*.arch"))
REFERENCE = ROOT / "examples" / "baselines" / "convnext.arch"


def _env(work: Path) -> dict:
    return {**os.environ, "ARCHDSL_CACHE_DIR": str(work / "cache"), "ARCHDSL_LOCK_DIR": str(work / "locks"),
            "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], work: Path, log: Path, timeout: float, elapsed: Path | None = None) -> int:
    """Run cmd with its output appended to log. `elapsed`: a JSON file that keeps the seconds this command (and
    earlier runs of it, killed with this script) has run, updated every 10 s, so a search cut short by the end of
    a working session resumes with only the minutes it has left."""
    print("$ " + " ".join(cmd), flush=True)
    before = _elapsed(elapsed)
    t0 = time.monotonic()
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, env=_env(work), stdout=f, stderr=subprocess.STDOUT)
        try:
            while p.poll() is None:
                if time.monotonic() - t0 > timeout:
                    p.kill()
                    break
                time.sleep(10)
                if elapsed is not None:
                    elapsed.write_text(json.dumps({"seconds": before + time.monotonic() - t0}) + "\n")
        finally:
            if p.poll() is None:
                p.kill()
    return p.wait()


def _elapsed(path: Path | None) -> float:
    try:
        return float(json.loads(path.read_text())["seconds"]) if path else 0.0
    except (OSError, ValueError, KeyError):
        return 0.0


def auto_budgets(work: Path) -> tuple[float, float]:
    """The ConvNeXt baseline's measured (regime-normalized) latency at s=1 and s=2: two budgets ~2x apart in
    MACs."""
    out = []
    for s in (1.0, 2.0):
        p = subprocess.run([sys.executable, "-m", "archdsl", "bench", str(REFERENCE), "--set", f"s={s}", "--json",
                            "--max-seconds", "5"], env=_env(work), capture_output=True, text=True, timeout=600)
        r = json.loads(p.stdout)
        out.append(round(r["latency_ms"], 2))
    return out[0], out[1]


def budgets_for(a, work: Path) -> tuple[float, ...]:
    """--budgets, or with `auto` this machine's budgets: those budgets.json recorded for it, else the first
    machine's for every budget whose searches have started (a budget's searches stay on the machine that started
    them: same_machine), and for the others the ConvNeXt baseline measured here now (recorded per machine)."""
    if a.budgets != "auto":
        return tuple(float(x) for x in a.budgets.split(","))
    saved = work / "budgets.json"
    rec = json.loads(saved.read_text()) if saved.exists() else {}
    if "budgets_ms" in rec:  # the first machine's, written before budgets were kept per machine
        rec = {"machines": [{"budgets_ms": rec["budgets_ms"], "machine": rec["machine"]}]}
    here = machine()
    entries = rec.get("machines", [])
    for e in entries:
        if _same(e["machine"], here):
            return tuple(e["budgets_ms"])
    started = [bool(entries) and any(work.glob(f"search-{b:g}ms-*.machine.json")) for b in
               (entries[0]["budgets_ms"] if entries else (None, None))]
    measured = auto_budgets(work) if not all(started) else (None, None)
    budgets = tuple(entries[0]["budgets_ms"][i] if started[i] else measured[i] for i in range(2))
    if entries:
        print(f"budgets: this machine ({_describe(here)}) is not the one that measured {entries[0]['budgets_ms']} "
              f"ms; budgets whose searches had not started are measured here: {budgets}", flush=True)
    entries.append({"budgets_ms": list(budgets), "machine": here,
                    "kept_from_first": [i for i in range(2) if started[i]]})
    saved.write_text(json.dumps({"machines": entries}, indent=1) + "\n")
    return budgets


def machine() -> dict:
    """The CPU the searches ran on (latencies are comparable only within one machine)."""
    from archdsl.bench.machine import cpu_flags, fingerprint

    flags = cpu_flags()
    return {**fingerprint(), "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "avx2": "avx2" in flags, "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}


def _legacy_hash(m: dict) -> str:
    """The fingerprint hash as written before the fingerprint named the CPU's instruction sets (`isa`): records
    made then carry it, with the vector units beside it."""
    import hashlib

    keys = ("cpu_model", "machine", "physical_cores", "logical_cores", "usable_cores", "torch_threads",
            "torch_version", "cuda_device")
    return hashlib.sha256(json.dumps({k: m.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:12]


def _latency_key(m: dict) -> tuple:
    """What makes two machines' latencies comparable: the fingerprint (CPU model and instruction sets, cores,
    threads, torch). A record written before the fingerprint had `isa` compares by its old hash and the vector
    units recorded beside it."""
    return m.get("hash"), m.get("avx512f"), m.get("avx512_bf16"), m.get("avx2")


def _same(a: dict, b: dict) -> bool:
    """Two machine records describe one machine (either may predate `isa`)."""
    if ("isa" in a) == ("isa" in b):
        return _latency_key(a) == _latency_key(b)
    old, new = (a, b) if "isa" not in a else (b, a)
    return _latency_key(old) == (_legacy_hash(new), new.get("avx512f"), new.get("avx512_bf16"), new.get("avx2"))


def _describe(m: dict) -> str:
    units = "AVX-512" + (" + bf16" if m.get("avx512_bf16") else "") if m.get("avx512f") else \
        "AVX2" if m.get("avx2") else "no AVX2"
    return f"{m.get('cpu_model')} ({units}, fingerprint {m.get('hash')}, {m.get('date', 'now')})"


class OtherMachine(Exception):
    """A budget's searches cannot start or continue on this machine (another one started them)."""


def same_machine(budget: float, a, work: Path) -> None:
    """Latencies compare only within one machine: a search at `budget` starts or resumes only on the machine that
    ran that budget's other searches (else OtherMachine, unless --allow-other-machine); budgets_for gives each
    machine budgets measured on it."""
    here = machine()
    for p in sorted(work.glob(f"search-{budget:g}ms-*.machine.json")):
        m = json.loads(p.read_text())
        if not _same(m, here):
            if a.allow_other_machine:
                print(f"warning: {p.name} was measured on {_describe(m)}, this is {_describe(here)} "
                      "(--allow-other-machine)", flush=True)
                continue
            raise OtherMachine(
                f"{p} was measured on {_describe(m)}; this is {_describe(here)}. Latencies measured on two "
                f"machines are not comparable, so the searches at {budget:g} ms cannot start or continue here. "
                "Finished searches' final training needs no timing and continues anywhere. Start the searches "
                "over in a new --work on this machine, or pass --allow-other-machine (recorded in each search's "
                "machine file).")


def search(budget: float, algo: str, a, work: Path, baselines: bool) -> Path:
    """One search of --minutes; a search cut short earlier (no summary.json yet) is resumed with the minutes it has
    left (its trials are kept; with none left it only finishes: rescoring, baselines, summary), on the machine
    that started it (same_machine)."""
    out = work / f"search-{budget:g}ms-{algo}"
    if (out / "summary.json").exists():
        return out  # done in an earlier run of this script (--work kept)
    clock = work / f"search-{budget:g}ms-{algo}.elapsed.json"
    resume = (out / "run.json").exists()
    left = max(0.05, a.minutes - _elapsed(clock) / 60) if resume else a.minutes
    if not (resume and left <= 0.05 and not baselines):  # only rescoring left: training, no timing
        same_machine(budget, a, work)
    cmd = [sys.executable, "-m", "archdsl", "search", str(SPACE), "--latency-ms", str(budget), "--algo", algo,
           "--trials", "100000", "--max-minutes", f"{left:.2f}", "--dataset", a.dataset, "--epochs",
           str(a.search_epochs), "--out", str(out), "--seed", str(a.seed), "--top", str(a.top),
           "--val-fraction", str(a.val_fraction), "--rescore", str(a.rescore)]
    if a.limit:
        cmd += ["--dataset-limit", str(a.limit)]
    for st in a.start:  # the same starting points for TPE and random
        cmd += ["--start", str(Path(st).resolve())]
    if a.asha_grace != 1:
        cmd += ["--asha-grace", str(a.asha_grace)]
    mfile = work / f"search-{budget:g}ms-{algo}.machine.json"
    if resume:
        cmd += ["--resume"]
        if a.allow_other_machine and mfile.exists():  # a search continued elsewhere says so, and where
            rec = json.loads(mfile.read_text())
            if not _same(rec, machine()):
                rec.setdefault("continued_on", []).append(machine())
                mfile.write_text(json.dumps(rec, indent=1) + "\n")
    else:
        mfile.write_text(json.dumps(machine(), indent=1) + "\n")
    if baselines:
        for b in BASELINES:
            cmd += ["--baseline", str(b)]
    rc = _run(cmd, work, work / "log.txt", timeout=a.minutes * 60 * 3 + 3600, elapsed=clock)
    if rc != 0:
        raise SystemExit(f"the search at {budget} ms ({algo}) exited {rc}: see {work / 'log.txt'}")
    return out


def retrain(spec: Path, name: str, a, work: Path) -> list[list[str]]:
    """The `archdsl train` commands still to run for spec, one per seed (a run killed earlier resumes from its
    last checkpoint)."""
    cmds = []
    for seed in range(a.seeds):
        out = work / "final" / f"{name}-seed{seed}"
        if (out / "metrics.json").exists():
            continue
        cmd = [sys.executable, "-m", "archdsl", "train", str(spec), "--dataset", a.dataset, "--epochs",
               str(a.final_epochs), "--seed", str(seed), "--out", str(out), "--threads", str(a.train_threads)]
        if a.final_limit:
            cmd += ["--dataset-limit", str(a.final_limit)]
        if (out / "checkpoint.pt").exists():
            cmd += ["--resume"]
        cmds.append(cmd)
    return cmds


def run_all(cmds: list[list[str]], a, work: Path) -> None:
    """The training runs, --jobs at a time (their speed is not what is measured)."""
    running: list[tuple[list[str], subprocess.Popen, object]] = []
    cmds = list(cmds)
    while cmds or running:
        while cmds and len(running) < a.jobs:
            cmd = cmds.pop(0)
            print("$ " + " ".join(cmd), flush=True)
            log = (work / "final").joinpath(Path(cmd[cmd.index("--out") + 1]).name + ".log").open("a")
            running.append((cmd, subprocess.Popen(cmd, env=_env(work), stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for item in list(running):
            cmd, p, log = item
            if p.poll() is not None:
                running.remove(item)
                log.close()
                if p.returncode != 0:
                    for _, q, _ in running:
                        q.kill()
                    raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}: see its log in {work / 'final'}")


def scores(name: str, a, work: Path) -> dict:
    """The seeds' test accuracies (the official test split) and final validation accuracies."""
    tests, vals = [], []
    for seed in range(a.seeds):
        m = json.loads((work / "final" / f"{name}-seed{seed}" / "metrics.json").read_text())
        tests.append(m["test_accuracy"])
        vals.append(m["epochs"][-1]["val_accuracy"])
    return {"test_accuracies": tests, "mean": statistics.mean(tests),
            "std": statistics.stdev(tests) if len(tests) > 1 else 0.0, "val_mean": statistics.mean(vals)}


def _top(out: Path, k: int) -> list[tuple[Path, dict]]:
    recs = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("hash") and r.get("status") == "ok":  # not a later 'duplicate' record of the same network
                recs[r["hash"]] = r
    tops = sorted((out / "top").glob("*.arch"))[:k]
    return [(p, recs.get(p.stem.split("_", 1)[1], {})) for p in tops]


def evaluate_budget(budget: float, a, work: Path) -> dict:
    runs = {algo: search(budget, algo, a, work, baselines=(algo == "tpe")) for algo in ("tpe", "random")}
    (work / "final").mkdir(exist_ok=True)
    todo: list[tuple[str, Path, dict]] = []
    for algo, out in runs.items():
        for rank, (spec, rec) in enumerate(_top(out, a.top), 1):
            todo.append((f"{budget:g}ms-{algo}-{rank}", spec,
                         {"name": f"{algo} #{rank}", "kind": algo, "spec": str(spec),
                          "latency_ms": rec.get("latency_ms"), "params": rec.get("params"), "macs": rec.get("macs"),
                          "search_score": rec.get("score")}))
    rows = []
    for b in json.loads((runs["tpe"] / "baselines.json").read_text()):
        if b.get("status") != "ok":
            rows.append({"name": b["name"], "kind": "baseline", "status": b.get("status"), "error": b.get("error")})
            continue
        todo.append((f"{budget:g}ms-{b['name']}", Path(b["arch"]),
                     {"name": b["name"], "kind": "baseline", "spec": b["arch"], "s": b["s"],
                      "latency_ms": b["latency_ms"], "params": b["params"], "macs": b["macs"],
                      "search_score": b.get("score")}))
    run_all([cmd for name, spec, _ in todo for cmd in retrain(spec, name, a, work)], a, work)
    rows = [{**row, **scores(name, a, work)} for name, _, row in todo] + rows
    return {"budget_ms": budget, "rows": rows, "verdict": verdict(rows),
            "searches": {algo: json.loads((out / "summary.json").read_text()) for algo, out in runs.items()},
            "machines": {algo: _json_or_none(work / f"search-{budget:g}ms-{algo}.machine.json") for algo in runs}}


def _json_or_none(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def verdict(rows: list[dict]) -> dict:
    """The target: the search's best beats every baseline by more than the seed spread (its mean - std above the
    baseline's mean + std), and TPE's best beats random's best. A search's best is the one of its top
    architectures with the best mean *validation* accuracy after retraining: the test set chooses nothing."""
    def best(kind):
        c = [r for r in rows if r["kind"] == kind and "mean" in r]
        return max(c, key=lambda r: r["val_mean"]) if c else None

    tpe, rnd = best("tpe"), best("random")
    bases = [r for r in rows if r["kind"] == "baseline" and "mean" in r]
    beats = {b["name"]: (tpe is not None and tpe["mean"] - tpe["std"] > b["mean"] + b["std"]) for b in bases}
    return {"tpe_best": tpe and tpe["name"], "random_best": rnd and rnd["name"],
            "beats_every_baseline": bool(bases) and all(beats.values()), "beats": beats,
            "tpe_beats_random": tpe is not None and rnd is not None and tpe["mean"] > rnd["mean"]}


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    style = {"tpe": ("o", "tab:orange"), "random": ("s", "tab:blue"), "baseline": ("*", "tab:green")}
    seen = set()
    for res in results:
        ax.axvline(res["budget_ms"], linestyle="--", color="tab:red", linewidth=1)
        for r in res["rows"]:
            if "mean" not in r or r.get("latency_ms") is None:
                continue
            m, c = style[r["kind"]]
            ax.errorbar(r["latency_ms"], r["mean"], yerr=r["std"], fmt=m, color=c, markersize=9 if m == "*" else 6,
                        label=None if r["kind"] in seen else r["kind"])
            seen.add(r["kind"])
            if r["kind"] == "baseline":
                ax.annotate(r["name"], (r["latency_ms"], r["mean"]), textcoords="offset points", xytext=(5, -10),
                            fontsize=7, color="tab:green")
    ax.set_xlabel("measured latency (ms, batch 1, regime-normalized)")
    ax.set_ylabel("Fashion-MNIST test accuracy (mean +- std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def table(results: list[dict]) -> str:
    lines = []
    for res in results:
        v = res["verdict"]
        lines.append(f"budget {res['budget_ms']:g} ms: best {v['tpe_best']} beats every baseline: "
                     f"{v['beats_every_baseline']}; TPE beats random: {v['tpe_beats_random']}")
        lines.append("| | test accuracy | latency ms | params | MACs |")
        lines.append("|---|---|---|---|---|")
        for r in res["rows"]:
            if "mean" not in r:
                lines.append(f"| {r['name']} | {r.get('status')}: {r.get('error')} | | | |")
                continue
            lines.append(f"| {r['name']} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} | "
                         f"{r['latency_ms']:.2f} | {r['params']:,} | {r['macs']:,} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="search time per budget and algorithm")
    ap.add_argument("--budgets", default="auto", help="auto, or two budgets in ms: A,B")
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument("--final-epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--dataset", default="fashion")
    ap.add_argument("--limit", type=int, default=12000,
                    help="images of the 60k the searches train and validate on (default 12000)")
    ap.add_argument("--val-fraction", type=float, default=0.5,
                    help="the share of them the trials are scored on (default 0.5: 6,000 validation images)")
    ap.add_argument("--rescore", type=int, default=5, help="each search's best N trained again with a second seed")
    ap.add_argument("--final-limit", type=int, default=12000,
                    help="images of the 60k the final runs train on (80%%) and validate on (20%%); default 12000")
    ap.add_argument("--jobs", type=int, default=2, help="final training runs at once (default 2)")
    ap.add_argument("--train-threads", type=int, default=1, help="threads per final training run (default 1)")
    ap.add_argument("--start", action="append", default=[], metavar="FILE",
                    help="a starting point for both searches at each budget (archdsl search --start; repeatable)")
    ap.add_argument("--asha-grace", type=int, default=1, metavar="N",
                    help="epochs every trial trains before ASHA may stop it (archdsl search --asha-grace)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="working directory (kept; a rerun with the same one skips what is done)")
    ap.add_argument("--allow-other-machine", action="store_true",
                    help="start or resume a budget's searches on another machine than the one that measured its "
                         "budgets and other searches (latencies then compare across machines: recorded)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_search_vs_hand_cpu2.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "search_vs_hand.png"))
    a = ap.parse_args()
    work = Path(a.work or ROOT / "benchmarks" / "runs" / "search_vs_hand").resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    budgets = budgets_for(a, work)
    print(f"budgets: {budgets} ms", flush=True)
    load_before = os.getloadavg()
    results, elsewhere = [], []
    for b in budgets:  # each budget's results are written as soon as they are complete
        try:
            results.append(evaluate_budget(b, a, work))
        except OtherMachine as e:  # its searches belong to another machine: the other budgets can still go on
            print(f"budget {b:g} ms skipped: {e}", flush=True)
            elsewhere.append(b)
            continue
        text = table(results)
        print(text)
        plot(results, Path(a.plot))
        Path(a.json).write_text(json.dumps({"settings": vars(a), "budgets_ms": budgets, "results": results,
                                            "complete": len(results) == len(budgets),
                                            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                            "hours_this_run": round((time.time() - t0) / 3600, 2), "table": text},
                                           indent=1, default=str) + "\n")
        print(f"results: {a.json}; plot: {a.plot}")
    if elsewhere:
        print(f"not finished here: the searches at {', '.join(f'{b:g}' for b in elsewhere)} ms belong to the machine "
              "that started them", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
