"""CPU inference: archdsl deploy form vs eager PyTorch, torch.compile and ONNX Runtime, same weights, same input.

    python benchmarks/inference.py [--json out.json] [--rounds 20] [--batches 1,8] [--models a,b]
                                   [--columns eager,deploy,compile,ort] [--gap-ms 2] [--max-autotune]
                                   [--bf16 auto|on|off]

Models: examples/*.arch at 224x224 (convnext_tiny_k31 = convnext_tiny.arch with kernel=31), random weights, random BN
statistics / layer scales / GRN parameters, eval mode, torch.inference_mode, fp32, torch threads = os.cpu_count().
Columns (each an inference callable on the same input):
  eager    the training form in eval mode (plain PyTorch modules);
  deploy   archdsl.deploy(module, kernels="auto", batch=B) where accepted, else archdsl.deploy(module); its
           build time and first (self-tuning) call are recorded apart from the timed calls;
  deploy_torch  (optional) archdsl.deploy(module): the deploy form in plain PyTorch modules;
  compile  torch.compile(eager) (default mode; --max-autotune adds compile_ma, mode max-autotune-no-cudagraphs);
           the first call (compilation; cold: a fresh inductor cache dir unless TORCHINDUCTOR_CACHE_DIR is set)
           is timed apart;
  ort      ONNX Runtime, CPUExecutionProvider, on an ONNX export of the training form (legacy exporter, opset 17,
           dynamo exporter as fallback), intra-op threads = cores, ORT_ENABLE_ALL, thread spinning off.
Timing: 3 warm-up calls per column, then --rounds rounds; each round calls every column once in a rotating
order with a --gap-ms sleep between calls, so the machine's speed shifts hit all columns alike.
Reported per column: min / median ms, median / deploy median, % of the machine's fp32 peak (2 x archdsl MACs x
batch / time; peak = best large fp32 torch.mm, measured at the start and at the end of the run, max of both), and
max abs / max relative (to max |eager|) output difference vs eager. A bf16 table (eager and deploy under
torch.autocast bf16) is run only where /proc/cpuinfo shows avx512_bf16 or amx_bf16 (or with --bf16 on).
A column that fails for one model is recorded and skipped; the benchmark goes on.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import archdsl  # noqa: E402
from archdsl.api import check_file  # noqa: E402
from archdsl.codegen.module import build_module  # noqa: E402

MODELS = {"convnext_tiny": ("convnext_tiny", {}), "convnext_tiny_k31": ("convnext_tiny", {"kernel": 31}),
          "inceptionnext_tiny": ("inceptionnext_tiny", {}), "unireplknet_a": ("unireplknet_a", {}),
          "unireplknet_t": ("unireplknet_t", {})}
COLUMNS = ["eager", "deploy", "compile", "ort"]
WARMUP = 3


def cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown", set()
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = val.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(val.split())
    return model, flags


def peak_gflops(n: int = 2048, reps: int = 8) -> float:
    """Best fp32 torch.mm throughput (GFLOP/s) of an n x n x n product, current torch threads."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = min(_timed(lambda: torch.mm(a, b, out=c)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def randomize(m):
    """Random BN statistics and affine, and trained-like layer scales and GRN parameters (their inits, 1e-6 and
    0, would make the residual branches vanish and hide any numerical difference between the columns)."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                if mod.affine:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0, 0.1)
            elif type(mod).__name__ == "LayerScale":
                mod.gamma.uniform_(0.1, 0.5)
            elif type(mod).__name__ == "GRN":
                mod.gamma.normal_(0, 0.2)
                if mod.beta is not None:
                    mod.beta.normal_(0, 0.1)
    return m.eval()


def short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def make_deploy(train, batch: int, setup: dict):
    """archdsl.deploy with the new kernels=/batch= arguments where accepted; records which call was used."""
    params = inspect.signature(archdsl.deploy).parameters
    if "kernels" in params and "batch" in params:
        try:
            t = time.perf_counter()
            dep = archdsl.deploy(train, kernels="auto", batch=batch)
            setup["deploy_build_s"] = time.perf_counter() - t
            setup["deploy_call"] = "deploy(module, kernels='auto', batch=B)"
            return dep
        except Exception as e:  # noqa: BLE001 - TypeError: not accepted; else broken: fall back, record, say so
            setup["deploy_new_call_error"] = short(e)
            if not isinstance(e, TypeError):
                print(f"  deploy(module, kernels='auto', batch={batch}) failed, falling back to deploy(module): "
                      f"{short(e)}", flush=True)
    t = time.perf_counter()
    dep = archdsl.deploy(train)
    setup["deploy_build_s"] = time.perf_counter() - t
    setup["deploy_call"] = "deploy(module)"
    return dep


def export_onnx(train, x, path: str, setup: dict) -> None:
    errs = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                torch.onnx.export(train, (x,), path, dynamo=dynamo, opset_version=17, verbose=False)
                setup["onnx_export_s"] = time.perf_counter() - t
            setup["onnx_exporter"] = "dynamo" if dynamo else "legacy"
            if errs:
                setup["onnx_legacy_error"] = errs[0]
            return
        except Exception as e:  # noqa: BLE001 - any exporter failure: try the other, then give up
            errs.append(short(e))
    raise RuntimeError("ONNX export failed: " + " | ".join(errs))


def make_ort(train, x, tmp: str, cores: int, setup: dict):
    import onnxruntime as ort

    path = os.path.join(tmp, "model.onnx")
    export_onnx(train, x, path, setup)
    so = ort.SessionOptions()
    so.intra_op_num_threads = cores
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    t = time.perf_counter()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    setup["ort_session_s"] = time.perf_counter() - t
    name = sess.get_inputs()[0].name
    xn = x.numpy()
    return lambda _x: torch.from_numpy(sess.run(None, {name: xn})[0])


def make_compiled(train, x, mode: str | None, key: str, setup: dict):
    torch._dynamo.reset()
    cm = torch.compile(train) if mode is None else torch.compile(train, mode=mode)
    t = time.perf_counter()
    with torch.inference_mode():
        cm(x)
    setup[f"{key}_first_call_s"] = time.perf_counter() - t
    return cm


def build_columns(name: str, train, x, batch: int, cols: list[str], cores: int, tmp: str, res: dict) -> dict:
    """The inference callables of one (model, batch); failures go to res['failed'] and the column is dropped."""
    setup, fns = res["setup"], {}
    for col in cols:
        try:
            if col == "eager":
                fns[col] = train
            elif col == "deploy":
                dep = make_deploy(train, batch, setup)
                t = time.perf_counter()
                with torch.inference_mode():
                    dep(x)
                setup["deploy_first_call_s"] = time.perf_counter() - t
                setup["deploy_build_and_tune_s"] = setup["deploy_build_s"] + setup["deploy_first_call_s"]
                fns[col] = dep
            elif col == "deploy_torch":
                fns[col] = archdsl.deploy(train)
            elif col == "compile":
                fns[col] = make_compiled(train, x, None, col, setup)
            elif col == "compile_ma":
                fns[col] = make_compiled(train, x, "max-autotune-no-cudagraphs", col, setup)
            elif col == "ort":
                fns[col] = make_ort(train, x, tmp, cores, setup)
            else:
                raise ValueError(f"unknown column {col!r}")
        except Exception as e:  # noqa: BLE001 - one column failing must not end the benchmark
            res["failed"][col] = short(e)
            res["tracebacks"][col] = traceback.format_exc(limit=6)
            print(f"  {name} b{batch}: column {col} failed: {short(e)}", flush=True)
    return fns


def time_columns(fns: dict, x, rounds: int, gap_s: float, res: dict) -> tuple[dict, dict]:
    """Warm-up, then round-robin rounds in rotating order; returns per-column times (s) and outputs."""
    outs, times = {}, {k: [] for k in fns}
    with torch.inference_mode():
        for k in list(fns):
            try:
                for _ in range(WARMUP):
                    outs[k] = fns[k](x)
            except Exception as e:  # noqa: BLE001
                res["failed"][k] = "warm-up: " + short(e)
                del fns[k], times[k]
        keys = list(fns)
        for r in range(rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)] if keys else []
            for k in order:
                if k not in fns:
                    continue
                time.sleep(gap_s)
                try:
                    times[k].append(_timed(lambda f=fns[k]: f(x)))
                except Exception as e:  # noqa: BLE001
                    res["failed"][k] = f"round {r}: " + short(e)
                    del fns[k], times[k]
    return times, outs


def summarize(times: dict, outs: dict, flops: float, peak: float, ref_key: str, res: dict) -> None:
    ref = outs.get(ref_key)
    cols = res["columns"]
    for k, v in times.items():
        med, mn = statistics.median(v), min(v)
        row = {"min_ms": 1e3 * mn, "median_ms": 1e3 * med, "pct_peak_median": 100 * flops / med / (peak * 1e9),
               "pct_peak_min": 100 * flops / mn / (peak * 1e9), "times_ms": [1e3 * t for t in v]}
        if ref is not None and k != ref_key and k in outs:
            d = (outs[k].float() - ref.float()).abs().max().item()
            row["max_abs_err"] = d
            row["max_rel_err"] = d / ref.float().abs().max().item()
        cols[k] = row
    dep = cols.get("deploy") or cols.get("deploy_bf16")
    for row in cols.values():
        row["ratio_to_deploy"] = row["median_ms"] / dep["median_ms"] if dep else None


def autocast_bf16(m):
    def f(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(x)
    return f


def run_model(key: str, batch: int, cols: list[str], args, cores: int, peak: float, bf16: bool) -> list[dict]:
    spec, over = MODELS[key]
    g = check_file(ROOT / "examples" / f"{spec}.arch", over)
    torch.manual_seed(0)
    train = randomize(build_module(g))
    x = torch.randn(batch, *g.input_shape.to_json())
    macs = g.total().macs * batch
    base = {"model": key, "spec": f"examples/{spec}.arch", "overrides": over, "batch": batch,
            "macs": macs, "params": g.total().params, "setup": {}, "failed": {}, "tracebacks": {}, "columns": {}}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        res = json.loads(json.dumps(base))
        fns = build_columns(key, train, x, batch, cols, cores, tmp, res)
        times, outs = time_columns(fns, x, args.rounds, args.gap_ms / 1e3, res)
        summarize(times, outs, 2 * macs, peak, "eager", res)
        out.append(res)
        del fns, outs
        torch._dynamo.reset()
        gc.collect()
    if bf16:
        res = json.loads(json.dumps(base))
        res["dtype"] = "bf16 (torch.autocast cpu)"
        fns = {}
        try:
            fns["eager_bf16"] = autocast_bf16(train)
            dep = make_deploy(train, batch, res["setup"])
            fns["deploy_bf16"] = autocast_bf16(dep)
        except Exception as e:  # noqa: BLE001
            res["failed"]["deploy_bf16"] = short(e)
        with torch.inference_mode():
            ref = train(x)
        times, outs = time_columns(fns, x, args.rounds, args.gap_ms / 1e3, res)
        outs["eager_fp32"] = ref
        summarize(times, outs, 2 * macs, peak, "eager_fp32", res)
        out.append(res)
    return out


def cell(row: dict | None, err: bool) -> str:
    if row is None:
        return "failed / not run"
    ratio = f"x{row['ratio_to_deploy']:4.2f}" if row["ratio_to_deploy"] else "  -  "
    s = f"{row['min_ms']:7.1f}/{row['median_ms']:7.1f} {ratio} {row['pct_peak_median']:4.1f}%"
    if err:
        s += f" {row['max_rel_err']:.0e}" if "max_rel_err" in row else "   ref "
    return s


def print_table(title: str, rows: list[dict], cols: list[str]) -> None:
    w = 38
    print(f"\n{title}\n  cells: min/median ms, median / deploy median, % of fp32 peak (at median), "
          f"max rel err vs eager fp32")
    print((f"{'model':<20}" + "".join(f" | {c:<{w}}" for c in cols)).rstrip())
    print("-" * (20 + (w + 3) * len(cols)))
    for r in rows:
        print((f"{r['model']:<20}" + "".join(f" | {cell(r['columns'].get(c), True):<{w}}" for c in cols)).rstrip())
    for r in rows:
        for c, e in r["failed"].items():
            print(f"  {r['model']} {c}: FAILED {e}")
        s = r["setup"]
        notes = [f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()]
        print(f"  {r['model']} setup: " + ", ".join(notes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--columns", default=",".join(COLUMNS))
    ap.add_argument("--gap-ms", type=float, default=2.0)
    ap.add_argument("--max-autotune", action="store_true",
                    help="add column compile_ma: torch.compile(mode='max-autotune-no-cudagraphs')")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="bf16 table: auto = only where the CPU has avx512_bf16 / amx_bf16")
    ap.add_argument("--json")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    cols = [c for c in args.columns.split(",") if c] + (["compile_ma"] if args.max_autotune else [])
    batches = [int(b) for b in args.batches.split(",") if b]

    cores = os.cpu_count() or 1
    inductor_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if inductor_cache is None:  # compile times are cold ones, not hits in the caches of earlier runs
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inference_bench_inductor_")
    torch.set_num_threads(cores)
    cpu, flags = cpuinfo()
    bf16_flags = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and bool(flags & {"avx512_bf16", "amx_bf16"}))
    malloc_env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    ort_version = getattr(onnxruntime, "__version__", None)
    machine = {"cpu_model": cpu, "cores": cores, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "onnxruntime": ort_version, "python": sys.version.split()[0], "bf16_cpu_flags": bf16_flags,
               "mkldnn_available": torch.backends.mkldnn.is_available(), "malloc_env": malloc_env,
               "ld_preload": os.environ.get("LD_PRELOAD"),
               "inductor_cache": inductor_cache or "fresh temporary directory (cold compiles)"}
    print(f"cpu {cpu}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {ort_version}")
    print(f"MALLOC_* env: {malloc_env or 'none set'}; LD_PRELOAD: {machine['ld_preload'] or 'none'}")
    p0 = peak_gflops()
    print(f"fp32 peak (2048^3 torch.mm, best of 8) at start: {p0:.1f} GFLOP/s", flush=True)
    if not bf16:
        print("bf16 table skipped: /proc/cpuinfo shows no avx512_bf16 / amx_bf16 (no native bf16 on this CPU; "
              f"torch.backends.mkldnn available={machine['mkldnn_available']})")
    bf16_note = {"run": bf16, "reason": "forced (--bf16 on)" if args.bf16 == "on" else
                 ("cpu flags " + ",".join(bf16_flags) if bf16 else
                  "skipped: no avx512_bf16 / amx_bf16 in /proc/cpuinfo" if args.bf16 == "auto" else "--bf16 off")}

    t_start = time.time()
    results, bf16_results = [], []
    for b in batches:
        for m in models:
            print(f"running {m} batch {b} ...", flush=True)
            try:
                rs = run_model(m, b, cols, args, cores, p0, bf16)
            except Exception as e:  # noqa: BLE001 - e.g. the spec itself fails to build
                rs = [{"model": m, "batch": b, "failed": {"all": short(e)}, "setup": {}, "columns": {},
                       "tracebacks": {"all": traceback.format_exc(limit=6)}}]
                print(f"  {m} b{b} failed: {short(e)}", flush=True)
            results.append(rs[0])
            bf16_results.extend(rs[1:])
    if inductor_cache is None:
        shutil.rmtree(os.environ.pop("TORCHINDUCTOR_CACHE_DIR"), ignore_errors=True)
    p1 = peak_gflops()
    peak = max(p0, p1)
    print(f"\nfp32 peak at end: {p1:.1f} GFLOP/s; using max {peak:.1f} GFLOP/s")
    for r in results + bf16_results:  # re-express % of peak against the max of start and end
        for row in r["columns"].values():
            row["pct_peak_median"] *= p0 / peak
            row["pct_peak_min"] *= p0 / peak
    deploy_calls = sorted({r["setup"].get("deploy_call") for r in results} - {None})
    for b in batches:
        print_table(f"batch {b}, fp32 (peak {peak:.1f} GFLOP/s)", [r for r in results if r["batch"] == b], cols)
        if bf16:
            print_table(f"batch {b}, bf16 autocast", [r for r in bf16_results if r["batch"] == b],
                        ["eager_bf16", "deploy_bf16"])
    print(f"\ndeploy call used: {', '.join(deploy_calls) or 'n/a'}; total {time.time() - t_start:.0f} s")
    if args.json:
        out = {"machine": machine, "peak_gflops": {"start": p0, "end": p1, "used": peak, "matmul": "2048^3 fp32 mm"},
               "settings": {"rounds": args.rounds, "warmup": WARMUP, "gap_ms": args.gap_ms, "batches": batches,
                            "models": models, "columns": cols, "input": [3, 224, 224], "dtype": "fp32"},
               "deploy_call": deploy_calls, "bf16": bf16_note, "results": results, "bf16_results": bf16_results,
               "total_s": time.time() - t_start}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
