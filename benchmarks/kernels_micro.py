"""Micro benchmark: archdsl.kernels (native) vs the best PyTorch equivalent, per case, interleaved.

Candidates of a case are timed in turn (A B C A B C ...) by archdsl.bench.measure.compare_micro, each sample a
batch of calls lasting ~`--sample-ms`, rounds in which another program took a measuring thread's core discarded,
and the medians compared, so load from other processes hits all candidates alike (--wait-quiet S also waits for
a quiet machine before each case). Prints a table (or JSON with --json): case, ms per call of ours and
of each PyTorch variant, ratio = best PyTorch / ours (> 1: ours faster).

    python benchmarks/kernels_micro.py [--suite dw|ln|mixer|rows|all] [--threads 2] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from archdsl.bench.disturb import wait_for_quiet
from archdsl.bench.measure import compare_micro
from archdsl.kernels import (
    bias_act_,
    dwconv_ln_nhwc,
    dwconv_nhwc,
    layernorm_rows,
    mixer_nhwc,
    native,
    pack_dw,
    pack_mixer,
)

DW_SHAPES = [(96, 56), (192, 28), (384, 14), (768, 7)]  # (C, H=W): ConvNeXt-T stages at 224
DW_KERNELS = [3, 5, 7, 11, 13, 15, 17, 31]


def measure(cands: dict, reps: int, sample_ms: float, wait_s: float, threads: int) -> tuple[dict, dict]:
    """One case through archdsl.bench.measure.compare_micro (interleaved, disturbed rounds discarded; a PyTorch
    variant 3x slower than the best after three rounds is dropped: it cannot decide the ratio). wait_s > 0: first
    wait up to wait_s seconds for other processes to leave `threads` cores free. Returns (name -> Measurement of
    one call, the disturbance record: rounds discarded, others' CPU use, load average)."""
    if wait_s > 0:
        wait_for_quiet(threads, time.monotonic() + wait_s)
    res = compare_micro(cands, reps, sample_s=sample_ms / 1e3, warmup=1, drop_slower_than=3.0, keep="ours")
    return res, res["ours"].disturbance


def dw_cases(quick: bool):
    kernels = [3, 7, 13, 31] if quick else DW_KERNELS
    for n in (1, 8):
        for c, h in DW_SHAPES:
            for k in kernels:
                x = torch.randn(n, c, h, h)
                w, b = torch.randn(c, 1, k, k) * 0.1, torch.randn(c)
                xcl, wcl = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
                xh, p = x.permute(0, 2, 3, 1).contiguous(), pack_dw(w, b)
                yield f"dw k{k} C{c} {h}x{h} N{n}", {
                    "ours": lambda xh=xh, p=p: dwconv_nhwc(xh, p),
                    "torch_nchw": lambda x=x, w=w, b=b, k=k, c=c: F.conv2d(x, w, b, padding=k // 2, groups=c),
                    "torch_cl": lambda x=xcl, w=wcl, b=b, k=k, c=c: F.conv2d(x, w, b, padding=k // 2, groups=c),
                }


def ln_cases(quick: bool):
    for n in (1, 8):
        for c, h in DW_SHAPES:
            k = 7
            x = torch.randn(n, c, h, h)
            w = torch.randn(c, 1, k, k) * 0.1
            b, g, be, rb = (torch.randn(c) for _ in range(4))
            xcl, wcl = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
            xh, p = x.permute(0, 2, 3, 1).contiguous(), pack_dw(w, b)

            def torch_cl(x=xcl, w=wcl, b=b, g=g, be=be, rb=rb, c=c):
                y = F.conv2d(x, w, b, padding=3, groups=c).permute(0, 2, 3, 1)
                return F.layer_norm(y, (c,), g, be, 1e-6), x.permute(0, 2, 3, 1) + rb

            yield f"dw7+ln+resid C{c} {h}x{h} N{n}", {
                "ours": lambda xh=xh, p=p, g=g, be=be, rb=rb: dwconv_ln_nhwc(p, xh, g, be, 1e-6, rb),
                "torch_cl": torch_cl,
            }


def mixer_cases(quick: bool):
    for n in (1, 8):
        for c, h in DW_SHAPES:
            g = int(c * 0.125)
            cid = c - 3 * g
            ws = [torch.randn(g, 1, 3, 3), torch.randn(g, 1, 1, 11), torch.randn(g, 1, 11, 1)]
            bs = [torch.randn(g) for _ in range(3)]
            groups = [(0, cid, 1, 1, torch.ones(cid, 1, 1, 1), None), (cid, cid + g, 3, 3, ws[0], bs[0]),
                      (cid + g, cid + 2 * g, 1, 11, ws[1], bs[1]), (cid + 2 * g, c, 11, 1, ws[2], bs[2])]
            pm = pack_mixer(groups)
            x = torch.randn(n, c, h, h)
            xh = x.permute(0, 2, 3, 1).contiguous()

            def torch_split(x=x, cid=cid, g=g, ws=ws, bs=bs):  # InceptionNeXt's own forward (NCHW)
                a, s, bw, bh = torch.split(x, (cid, g, g, g), dim=1)
                return torch.cat((a, F.conv2d(s, ws[0], bs[0], padding=1, groups=g),
                                  F.conv2d(bw, ws[1], bs[1], padding=(0, 5), groups=g),
                                  F.conv2d(bh, ws[2], bs[2], padding=(5, 0), groups=g)), dim=1)

            xcl = x.to(memory_format=torch.channels_last)
            yield f"mixer C{c} {h}x{h} N{n}", {"ours": lambda xh=xh, pm=pm: mixer_nhwc(xh, pm),
                                                 "torch_nchw": torch_split,
                                                 "torch_cl": lambda xcl=xcl, f=torch_split: f(xcl)}


def rows_cases(quick: bool):
    for m, c in ((3136, 384), (784, 768), (196, 1536), (49, 3072), (8 * 3136, 384)):
        h, b = torch.randn(m, c), torch.randn(c)
        h2 = h.clone()

        def torch_gelu(h=h2, b=b):  # what the runtime would do without fusion: bias add + gelu, in place
            return F.gelu(h.add_(b))  # (values drift over calls; timing only)

        # ours runs in place on h repeatedly: gelu's fixed point keeps values finite
        yield f"bias+gelu {m}x{c}", {"ours": lambda h=h, b=b: bias_act_(h, b, "gelu"), "torch": torch_gelu,
                                     "torch_gelu_only": lambda h=h2: F.gelu(h)}
        x, g, be = torch.randn(m, c), torch.randn(c), torch.randn(c)
        yield f"layernorm {m}x{c}", {"ours": lambda x=x, g=g, be=be: layernorm_rows(x, g, be, 1e-6),
                                     "torch": lambda x=x, g=g, be=be, c=c: F.layer_norm(x, (c,), g, be, 1e-6)}


SUITES = {"dw": dw_cases, "ln": ln_cases, "mixer": mixer_cases, "rows": rows_cases}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--sample-ms", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="fewer kernel sizes")
    ap.add_argument("--filter", default="", help="only cases whose name contains this")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="shared machine: before each case wait up to S seconds for other processes to leave "
                         "--threads cores free (each row records the rounds discarded and their load)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not native.available():
        print(f"native kernels unavailable: {native.why_unavailable()}", file=sys.stderr)
        return 1
    rows = []
    with torch.inference_mode():
        for suite in SUITES if a.suite == "all" else [a.suite]:
            for name, cands in SUITES[suite](a.quick):
                if a.filter not in name:
                    continue
                res, dist = measure(cands, a.reps, a.sample_ms, a.wait_quiet, a.threads)
                ms = {k: m.median * 1e3 for k, m in res.items()}
                best = min((v, k) for k, v in ms.items() if k != "ours")
                load = dist.get("others_cpu") or 0.0
                row = {"case": name, "ms": ms, "min_ms": {k: m.min * 1e3 for k, m in res.items()},
                       "best_torch": best[1], "ratio": best[0] / ms["ours"], "others_load": round(load, 2),
                       "disturbance": dist}
                rows.append(row)
                if not a.json:
                    others = "  ".join(f"{k} {v:8.3f}" for k, v in ms.items() if k != "ours")
                    print(f"{name:32s} ours {ms['ours']:8.3f}  {others}  x{row['ratio']:5.2f}  (load {load:.2f}, "
                          f"{dist['discarded']}/{dist['rounds']} rounds discarded)",
                          flush=True)
    if a.json:
        print(json.dumps({"threads": a.threads, "torch": torch.__version__, "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
