"""Micro benchmark: archdsl.kernels.gemm.linear vs torch.mm (MKL) vs ONNX Runtime MatMul (MLAS), per shape.

Shapes are the MLP GEMMs of ConvNeXt-T / InceptionNeXt-T (dims 96..768, 4x MLP, 56..7 resolution) and
UniRepLKNet-A (dims 40..320) at batch 1 and 8, (M, K, N) = (batch * H * W, in, out). Per shape two groups of
candidates are timed interleaved by archdsl.bench.measure.compare_micro (A B C A B C ..., each sample a batch of calls
lasting ~--sample-ms; rounds in which another program took a measuring thread's core are discarded) and their
medians compared, so load from other processes hits all alike:

  bare GEMM a @ W^T:  ours (act none, no bias) | torch.mm (MKL) | ORT MatMul (MLAS, B prepacked)
  fused MLP step:     fc1 (K < N) gelu(a @ W^T + b): ours | torch.addmm + F.gelu | torch.mm + archdsl bias_act_
                      (the deploy runtime's path before this kernel) | ORT MatMul + Add + Gelu
                      fc2 (K > N) res += a @ W^T + b: ours accumulate | res.addmm_ + add_ | ORT MatMul + Add + Add

ORT runs with intra_op_num_threads = --threads and spinning off (session.intra_op.allow_spinning = 0): a spinning
pool keeps its workers busy after each run and would slow whatever is timed next in the interleaved rounds.
Prints a table, GFLOP/s and ratios (the other's time / ours: > 1, ours faster); --json FILE writes it all.

    python benchmarks/gemm_micro.py [--threads 2] [--set convnext|unireplknet|all] [--batch 1 8] [--json f]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from archdsl.bench.disturb import wait_for_quiet
from archdsl.bench.measure import compare_micro, fingerprint
from archdsl.kernels import bias_act_, gemm, native

CONVNEXT_T = [(56, 96), (28, 192), (14, 384), (7, 768)]  # (H = W, dim); InceptionNeXt-T has the same MLPs
UNIREPLKNET_A = [(56, 40), (28, 80), (14, 160), (7, 320)]


def shapes(which: str, batches: list[int]) -> list[tuple[str, int, int, int]]:
    sets = {"convnext": [("convnext", CONVNEXT_T)], "unireplknet": [("unireplknet", UNIREPLKNET_A)]}
    sets["all"] = sets["convnext"] + sets["unireplknet"]
    out = []
    for tag, stages in sets[which]:
        for b in batches:
            for hw, d in stages:
                m = b * hw * hw
                out.append((f"{tag} b{b}", m, d, 4 * d))
                out.append((f"{tag} b{b}", m, 4 * d, d))
    return out


def timeit(cands: dict, reps: int, sample_ms: float, stats: dict | None = None,
           disturbance: list | None = None) -> dict[str, float]:
    """Median ms per call of each candidate (name -> zero-arg callable), measured interleaved by
    archdsl.bench.measure.compare_micro (disturbed rounds discarded). stats, if given, receives name -> {"median",
    "p25", "min"}; disturbance, if given, gets the run's disturbance record."""
    res = compare_micro(cands, reps, sample_s=sample_ms / 1e3, warmup=3)
    if stats is not None:
        for name, m in res.items():
            s = m.samples
            q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0]] * 3
            stats[name] = {"median": m.median * 1e3, "p25": q[0] * 1e3, "min": m.min * 1e3}
    if disturbance is not None:
        disturbance.append(next(iter(res.values())).disturbance)
    return {name: m.median * 1e3 for name, m in res.items()}


def ort_runner(a, w, threads: int, b=None, epilogue: str = "none", res=None, spin: bool = False):
    """A small ONNX model run by ONNX Runtime (w^T an initializer, so MLAS prepacks it): y = a @ w^T, then for
    epilogue "gelu" y = gelu(y + b) (ORT fuses Add + Gelu into BiasGelu), for "residual" y = res + (y + b).
    Returns a zero-arg runner with inputs and output bound once."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k = a.shape
    n = w.shape[0]
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.t().numpy()), "w")]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])]
    nodes = [helper.make_node("MatMul", ["a", "w"], ["mm" if epilogue != "none" else "y"])]
    if epilogue != "none":
        inits.append(numpy_helper.from_array(b.numpy(), "b"))
        nodes.append(helper.make_node("Add", ["mm", "b"], ["z"]))
        if epilogue == "gelu":
            nodes.append(helper.make_node("Gelu", ["z"], ["y"]))
        else:
            inputs.append(helper.make_tensor_value_info("res", TensorProto.FLOAT, [m, n]))
            nodes.append(helper.make_node("Add", ["res", "z"], ["y"]))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {"a": a.numpy()}
    if epilogue == "residual":
        feeds["res"] = res.numpy()
    io = sess.io_binding()
    for name, arr in feeds.items():
        io.bind_cpu_input(name, arr)
    y = np.empty((m, n), dtype=np.float32)  # pre-bound, so the runner measures the model, not an allocation
    io.bind_output("y", "cpu", 0, np.float32, [m, n], y.ctypes.data)
    sess.run_with_iobinding(io)
    return lambda feeds=feeds, y=y: sess.run_with_iobinding(io)  # feeds, y: keep the bound buffers alive


def bench_shape(m: int, k: int, n: int, threads: int, reps: int, sample_ms: float, with_ort: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) * 0.1
    wt = w.t()  # MKL gets the transposed view, as F.linear does
    p_nobias, p = gemm.pack_linear(w), gemm.pack_linear(w, b)
    y = torch.empty(m, n)
    bare = {
        "ours": lambda: gemm.linear(a, p_nobias, out=y),
        "mkl": lambda: torch.mm(a, wt, out=y),
    }
    res = torch.randn(m, n, generator=g)
    if k < n:  # fc1: bias + GELU
        epilogue, fused_kind = "gelu", "fc1 bias+gelu"
        fused = {
            "ours": lambda: gemm.linear(a, p, act="gelu", out=y),
            "mkl": lambda: F.gelu(torch.addmm(b, a, wt, out=y)),
        }
        if native.available():  # the deploy runtime's path before this kernel: MKL, then the fused epilogue
            fused["mkl+bias_act"] = lambda: bias_act_(torch.mm(a, wt, out=y), b, "gelu")
    else:  # fc2: accumulate into the residual
        epilogue, fused_kind = "residual", "fc2 +=residual"
        fused = {
            "ours": lambda: gemm.linear(a, p, out=res, accumulate=True),
            "mkl": lambda: res.addmm_(a, wt).add_(b),
        }
    if with_ort:
        bare["mlas"] = ort_runner(a, w, threads)
        fused["mlas"] = ort_runner(a, w, threads, b, epilogue, res)
    bare_stats, fused_stats, dist = {}, {}, []
    bm, fm = timeit(bare, reps, sample_ms, bare_stats, dist), timeit(fused, reps, sample_ms, fused_stats, dist)
    flop = 2.0 * m * k * n
    return {"m": m, "k": k, "n": n, "fused_kind": fused_kind, "bare_stats_ms": bare_stats,
            "fused_stats_ms": fused_stats, "disturbance": dist,
            "bare_ms": bm, "bare_gflops": {name: flop / (ms * 1e-3) / 1e9 for name, ms in bm.items()},
            "fused_ms": fm, "fused_gflops": {name: flop / (ms * 1e-3) / 1e9 for name, ms in fm.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", default="convnext", choices=["convnext", "unireplknet", "all"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=21, help="interleaved rounds per candidate (median taken)")
    ap.add_argument("--sample-ms", type=float, default=10.0)
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each shape, wait up to S seconds for other processes to leave --threads cores free")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not native.available():
        print(f"native library unavailable ({native.why_unavailable()}): 'ours' is the PyTorch fallback",
              file=sys.stderr)
    with_ort = not args.no_ort
    if with_ort:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnx / onnxruntime not installed: skipping MLAS", file=sys.stderr)
            with_ort = False
    rows = []
    hdr = (f"{'set':15s} {'M':>6s} {'K':>5s} {'N':>5s} | GEMM GFLOP/s {'ours':>5s} {'mkl':>5s} {'mlas':>5s} | "
           f"{'mkl/o':>5s} {'mlas/o':>6s} || {'fused':14s} ms {'ours':>6s} {'mkl':>6s} {'mkl+ba':>6s} {'mlas':>6s} | "
           f"{'mkl/o':>5s} {'m+ba/o':>6s} {'mlas/o':>6s}")
    print(hdr)
    print("-" * len(hdr))

    def col(d, key, fmt):
        return format(d[key], fmt) if key in d else format("-", ">" + fmt.split(".")[0])

    for tag, m, k, n in shapes(args.set, args.batch):
        quiet = wait_for_quiet(args.threads, time.monotonic() + args.wait_quiet)[0] if args.wait_quiet > 0 else None
        r = bench_shape(m, k, n, args.threads, args.reps, args.sample_ms, with_ort)
        r["set"] = tag
        r["loadavg_1min"] = os.getloadavg()[0]
        r["started_quiet"] = quiet
        bm, gf, fm = r["bare_ms"], r["bare_gflops"], r["fused_ms"]
        r["bare_ratio"] = {name: ms / bm["ours"] for name, ms in bm.items()}
        r["fused_ratio"] = {name: ms / fm["ours"] for name, ms in fm.items()}
        rows.append(r)
        br, fr = r["bare_ratio"], r["fused_ratio"]
        print(f"{tag:15s} {m:6d} {k:5d} {n:5d} | {'':12s} {gf['ours']:5.0f} {gf['mkl']:5.0f} "
              f"{col(gf, 'mlas', '5.0f')} | {br['mkl']:5.2f} {col(br, 'mlas', '6.2f')} || "
              f"{r['fused_kind']:14s}    {fm['ours']:6.3f} "
              f"{fm['mkl']:6.3f} {col(fm, 'mkl+bias_act', '6.3f')} {col(fm, 'mlas', '6.3f')} | {fr['mkl']:5.2f} "
              f"{col(fr, 'mkl+bias_act', '6.2f')} {col(fr, 'mlas', '6.2f')}", flush=True)
    print("x/o: x's time / ours (> 1: ours faster). fused fc1 gelu(a W^T + b): ours | mkl = torch.addmm + F.gelu | "
          "mkl+ba = torch.mm + archdsl bias_act_ | mlas = ORT MatMul + Add + Gelu; fused fc2 res += a W^T + b: ours "
          "accumulate | mkl = res.addmm_ + add_ | mlas = ORT MatMul + Add + Add")
    if args.json:
        meta = {"threads": args.threads, "torch": torch.__version__, "cpu": fingerprint()["cpu_model"],
                "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "native": native.available()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
