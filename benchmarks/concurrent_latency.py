"""Does a latency measured while 4 search trials train on the same machine match the latency measured alone?

    python benchmarks/concurrent_latency.py [--workers 4] [--rounds 3] [--json out.json]

The reference model is the deploy form of examples/search/convnext_space.arch at its first values (64x64 input
scaled to 68x68, batch 1, every core). Phases, repeated `--rounds` times and interleaved so a slow spell of the
machine hits them alike:
  alone      nothing else runs;
  protected  `--workers` processes train a small ConvNet (1 thread each, AdamW, random data) as fast as they can,
             each step inside `compute_lock()`, as search trials do; the measurement takes `measurement_lock()`;
  naive      the same load without the lock (what a search without the engine would measure).
Reports the median of each phase's medians and the ratios protected/alone and naive/alone. Target (issue 5):
protected within 5% of alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPACE = Path(__file__).resolve().parent.parent / "examples" / "search" / "convnext_space.arch"


def _trainer(use_lock: bool, stop, lock_dir: str, started) -> None:
    import os

    os.environ["ARCHDSL_LOCK_DIR"] = lock_dir
    import torch

    from archdsl.bench.lock import compute_lock

    torch.set_num_threads(1)
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    started.set()
    while not stop.is_set():
        if use_lock:
            with compute_lock():
                _step(net, opt, x, y)
        else:
            _step(net, opt, x, y)


def _step(net, opt, x, y) -> None:
    import torch

    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


def _reference():
    import torch

    from archdsl.api import check_file
    from archdsl.codegen.deploy import deploy
    from archdsl.codegen.module import build_module

    g = check_file(SPACE)
    m = deploy(build_module(g)).eval()
    c, h, w = g.input_shape.to_json()
    x = torch.randn(1, c, h, w)
    with torch.inference_mode():
        m(x)
    return lambda: m(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import os
    import tempfile

    import torch

    from archdsl.bench.measure import fingerprint, measure

    lock_dir = tempfile.mkdtemp(prefix="archdsl-lock-")
    os.environ["ARCHDSL_LOCK_DIR"] = lock_dir
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    fn = _reference()
    ctx = mp.get_context("spawn")
    phases: dict[str, list[float]] = {"alone": [], "protected": [], "naive": []}
    stable: dict[str, list[bool]] = {k: [] for k in phases}
    for r in range(args.rounds):
        for phase in ("alone", "protected", "naive"):
            stop, procs = ctx.Event(), []
            if phase != "alone":
                for _ in range(args.workers):
                    started = ctx.Event()
                    p = ctx.Process(target=_trainer, args=(phase == "protected", stop, lock_dir, started), daemon=True)
                    p.start()
                    procs.append((p, started))
                for _, started in procs:
                    started.wait(60)
                time.sleep(1.0)  # the load is running
            # "naive" must not let the measurement hold a lock the load ignores anyway; it takes it like any run
            m = measure(fn, max_seconds=args.max_seconds, rel_ci=0.02)
            stop.set()
            for p, _ in procs:
                p.join(30)
            phases[phase].append(m.median * 1e3)
            stable[phase].append(m.stable)
            print(f"round {r + 1} {phase:<9} median {m.median * 1e3:8.2f} ms  runs {m.runs:4d}  "
                  f"ci +-{100 * m.rel_ci:.1f}%  stable {m.stable}", file=sys.stderr)
            time.sleep(0.5)
    med = {k: statistics.median(v) for k, v in phases.items()}
    res = {"workers": args.workers, "rounds": args.rounds, "median_ms": med, "per_round_ms": phases,
           "stable": stable, "protected_vs_alone": med["protected"] / med["alone"] - 1,
           "naive_vs_alone": med["naive"] / med["alone"] - 1, "fingerprint": fingerprint()}
    print(f"reference model alone: {med['alone']:.2f} ms; with {args.workers} training trials using the lock: "
          f"{med['protected']:.2f} ms ({100 * res['protected_vs_alone']:+.1f}%); without it: {med['naive']:.2f} ms "
          f"({100 * res['naive_vs_alone']:+.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
