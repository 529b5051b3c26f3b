"""Deploy form vs training form (eval mode), measured side by side, interleaved round-robin.

    python benchmarks/deploy_speed.py [--rounds 20] [--batch 1] [--json out.json] [--models a,b]

For each example: median / min latency of the training form and the deploy form (plain PyTorch ops, fp32,
torch threads = cores), the speedup, and the max relative output difference. Also the two reference
micro-benchmarks of the issue: a 6-branch UniRepLKNet dilated block (k=13) vs its merged 13x13 depthwise
conv (NCHW and channels_last), and conv+BN vs the BN-folded conv.
Variants are timed in alternation (A B A B ...) so that drifts of machine speed hit both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import archdsl  # noqa: E402
from archdsl.api import check_file, check_text  # noqa: E402
from archdsl.codegen.module import build_module  # noqa: E402

EXAMPLES = ["convnext_tiny", "convnext_atto", "inceptionnext_tiny", "inceptionnext_atto", "unireplknet_a",
            "unireplknet_t", "replknet_31b"]


def interleaved(fns: dict, x, rounds: int, warmup: int = 3) -> dict:
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for f in fns.values():
                f(x)
        for _ in range(rounds):
            for k, f in fns.items():
                t = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t)
    return {k: {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v)} for k, v in times.items()}


def randomize_bn(m):
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def bench_model(name: str, rounds: int, batch: int) -> dict:
    g = check_file(Path("examples") / f"{name}.arch")
    train = randomize_bn(build_module(g))
    dep = archdsl.deploy(train)
    x = torch.randn(batch, *g.input_shape.to_json())
    with torch.inference_mode():
        a, b = train(x), dep(x)
    err = ((a - b).abs().max() / a.abs().max()).item()
    r = interleaved({"train": train, "deploy": dep}, x, rounds)
    return {"model": name, **r, "speedup": r["train"]["median_ms"] / r["deploy"]["median_ms"],
            "params_train": sum(p.numel() for p in train.parameters()),
            "params_deploy": sum(p.numel() for p in dep.parameters()), "max_rel_err": err}


def bench_micro(rounds: int) -> list[dict]:
    out = []
    for c, hw in ((96, 56), (384, 14)):
        spec = f"model m() {{ input({c}, {hw}, {hw}) dilated_reparam(13) }}"
        train = randomize_bn(build_module(check_text(spec, "micro.arch")))
        dep = archdsl.deploy(train)
        for layout in ("nchw", "channels_last"):
            x = torch.randn(1, c, hw, hw)
            tr, de = train, dep
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
                tr = train.to(memory_format=torch.channels_last)
                de = dep.to(memory_format=torch.channels_last)
            r = interleaved({"train": tr, "deploy": de}, x, rounds)
            out.append({"case": f"dilated_reparam k=13 (6 branches) C={c} {hw}x{hw} {layout}", **r,
                        "speedup": r["train"]["median_ms"] / r["deploy"]["median_ms"]})
    spec = "model m() { input(64, 56, 56) conv(64, k=3, bias=false) bn() conv(64, k=3, bias=false) bn() }"
    train = randomize_bn(build_module(check_text(spec, "bn.arch")))
    dep = archdsl.deploy(train)
    r = interleaved({"train": train, "deploy": dep}, torch.randn(1, 64, 56, 56), rounds)
    out.append({"case": "2 x (conv3x3 + BN) C=64 56x56 -> BN folded", **r,
                "speedup": r["train"]["median_ms"] / r["deploy"]["median_ms"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--models", default=",".join(EXAMPLES))
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    res = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
           "micro": bench_micro(args.rounds), "models": []}
    for row in res["micro"]:
        print(f"{row['case']:<58} train {row['train']['median_ms']:8.2f} ms  "
              f"deploy {row['deploy']['median_ms']:8.2f} ms  x{row['speedup']:.2f}", flush=True)
    for name in args.models.split(","):
        row = bench_model(name, args.rounds, args.batch)
        res["models"].append(row)
        print(f"{name:<20} train {row['train']['median_ms']:8.1f} ms (min {row['train']['min_ms']:.1f})  deploy "
              f"{row['deploy']['median_ms']:8.1f} ms (min {row['deploy']['min_ms']:.1f})  x{row['speedup']:.2f}  "
              f"params {row['params_train']:,} -> {row['params_deploy']:,}  rel err {row['max_rel_err']:.1e}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
