"""`archdsl bench FILE.arch`: the measurement engine on the command line.

Takes: the parsed arguments of the `bench` subcommand (registered by `add_bench_parser`). Returns: an exit
code — 0 measured, 1 a spec mistake / an input the model cannot take / a failed forward pass / out of memory
(a clear message, never a traceback), 2 bad usage (unknown --form, non-positive --batch or --threads), 3 with
--strict: measured, but not clean (the machine was busy, the reference drifted or the CI target was missed).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_bench_parser(sub) -> None:
    """Add the `bench` subcommand to `archdsl`'s subparsers."""
    p = sub.add_parser("bench", help="measure the latency of one forward pass (median / p10 / p90, fingerprint)")
    p.add_argument("file", nargs="?", help="the .arch spec (omit with --build-table)")
    p.add_argument("--build-table", metavar="SPACE.arch",
                   help="build/refresh the per-operator latency table of a search space (archdsl.bench.table)")
    p.add_argument("--samples", type=int, default=20,
                   help="with --build-table: random architectures of the space to draw configurations from")
    p.add_argument("--form", default="deploy", help="deploy (default: BN folded, branches merged), fast (the deploy "
                   "form on archdsl's fused kernels, each step's implementation measured on this machine), ort (the "
                   "deploy form in ONNX Runtime; the [export] extra) or train")
    p.add_argument("--runtime", choices=("torch", "fast", "ort"),
                   help="the runtime the latency is of, as the search names them: torch (= --form deploy), fast, "
                        "ort")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the deploy form in bfloat16 (oneDNN's bf16 kernels, float32 accumulation; a CPU with "
                        "avx512_bf16 or AMX, else refused)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--input", metavar="CxHxW", help="input shape, e.g. 3x224x224 (overrides the spec's input)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--max-seconds", type=float, default=10.0, help="time cap of the measurement (default 10)")
    p.add_argument("--rel-ci", type=float, default=0.02,
                   help="stop when the median's 95%% CI half-width is within this fraction (default 0.02)")
    p.add_argument("--raw", action="store_true",
                   help="report the raw median only (default on the CPU: also the latency normalized to this "
                        "machine's reference speed, which is what the search decides on; docs/latency.md)")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the reference block now and make it this machine's anchor for --threads "
                        "(normalized latencies recorded before are in units of the old anchor)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--strict", action="store_true",
                   help="exit 3 when the measurement is not stable (disturbed by other processes, drifting, or "
                        "short of its CI target within --max-seconds)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a model parameter or fix a choice point (repeatable)")
    p.add_argument("--model", help="which model of the file (when it defines several)")
    p.add_argument("--import-path", action="append", default=[], metavar="DIR",
                   help="an extra directory imports may resolve to")
    p.add_argument("--allow-outside-imports", action="store_true",
                   help="allow absolute imports and imports that leave the spec's directory")
    p.set_defaults(fn=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..cli.common import input_shape, overrides, usage
    from .model import ModelRunError, OutOfMemory, bench_model

    if args.build_table is not None:
        return cmd_build_table(args)
    if args.calibrate:
        return _calibrate(args)
    if args.file is None:
        raise SystemExit(usage("bench needs a .arch file (or --build-table SPACE.arch)"))
    if args.runtime is not None:
        from .runtimes import form_of

        args.form = form_of(args.runtime)
    if args.form not in ("deploy", "fast", "ort", "train"):
        raise SystemExit(usage(f"--form must be 'deploy', 'fast', 'ort' or 'train', got {args.form!r}"))
    if args.batch < 1:
        raise SystemExit(usage(f"--batch must be a positive integer, got {args.batch}"))
    if args.threads is not None and args.threads < 1:
        raise SystemExit(usage(f"--threads must be a positive integer, got {args.threads}"))
    if not args.max_seconds > 0 or not args.rel_ci > 0:
        raise SystemExit(usage("--max-seconds and --rel-ci must be positive"))
    try:
        r = bench_model(args.file, args.form, args.batch, input_shape(args.input), args.threads,
                        overrides(args.set), model=args.model, device=args.device,
                        import_paths=tuple(args.import_path), allow_outside_imports=args.allow_outside_imports,
                        normalize=False if args.raw else None, max_seconds=args.max_seconds, rel_ci=args.rel_ci,
                        dtype={"fp32": "float32", "bf16": "bfloat16"}[args.dtype])
    except ValueError as e:  # e.g. --device cuda without a CUDA device
        raise SystemExit(usage(str(e))) from None
    except (OutOfMemory, ModelRunError) as e:
        print(f"archdsl: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:  # raised outside the model's run (e.g. while checking a huge spec)
        print("archdsl: error: out of memory; try a smaller --batch or --input", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(_text(r), end="")
    if args.strict and not r["stable"]:
        print(f"archdsl: error: the measurement is not stable ({_why(r)}); measure again when the machine is "
              "quiet, or with fewer --threads", file=sys.stderr)
        return 3
    return 0


def _calibrate(args: argparse.Namespace) -> int:

    from ..cli.common import usage
    from .anchors import calibrate

    if args.threads is not None and args.threads < 1:
        raise SystemExit(usage(f"--threads must be a positive integer, got {args.threads}"))
    import torch

    threads = args.threads or torch.get_num_threads()
    c = calibrate(threads, max_seconds=args.max_seconds)
    if args.json:
        print(json.dumps(c, indent=2))
    if c["reference_ms"] is None:
        print(f"archdsl: error: the reference block could not be measured cleanly ({c['reason']}); the anchor "
              "is unchanged; calibrate again when the machine is quiet", file=sys.stderr)
        return 3
    if not args.json:
        was = "none" if c["previous_ms"] is None else f"{c['previous_ms']:.4f} ms"
        print(f"anchor {c['key']}: reference block {c['reference_ms']:.4f} ms with {threads} thread(s) "
              f"({c['runs']} clean rounds; was {was}), saved in {c['path']}")
    return 0


def _why(r: dict) -> str:
    """Why a result is (or is not) stable, in a few words."""
    d = r.get("disturbance") or {}
    if r.get("disturbed"):
        return f"machine busy: {d.get('reason')}"
    if r.get("busy"):
        return (f"machine busy: the reference GEMM ran {r['reference_median_ms'] / r['reference_best_ms']:.1f}x "
                "slower than its best here")
    if r.get("drift"):
        return "the machine changed speed during the run"
    return {"converged": "CI target reached", "max_runs": "run cap hit", "max_seconds": "time cap hit"}[r["stop"]]


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} ms"


def _ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _text(r: dict) -> str:
    fp = r["fingerprint"]
    c, h, w = r["input_shape"]
    rel = "n/a" if r["rel_ci"] is None else f"+-{100 * r['rel_ci']:.1f}%"
    verdict = "stable" if r["stable"] else "UNSTABLE"
    d = r.get("disturbance") or {}
    lines = [
        f"{r['model']} ({r['file']})  {r['form']} form{' (' + r['runtime'] + ' runtime)' if r.get('runtime') else ''}"
        f"{'  bfloat16' if r.get('dtype') == 'bfloat16' else ''}  input {r['batch']}x{c}x{h}x{w}  on {r['device']}, "
        f"{r['threads']} thread(s)",
        f"median {_ms(r['median_ms'])}   p10 {_ms(r['p10_ms'])}   p90 {_ms(r['p90_ms'])}   min {_ms(r['min_ms'])}",
        *([] if r.get("reference") != "block" else [
            f"normalized {_ms(r['normalized_ms'])}   (the model took {_ratio(r['regime_ratio'])} x the reference "
            f"block per round; this machine's anchor {_ms(r['regime_anchor_ms'])})"]),
        f"runs {r['runs']}   median 95% CI {rel}   {verdict} ({_why(r)})",
    ]
    if d.get("rounds"):
        load = "" if d.get("others_cpu") is None else (f"; other processes used {d['others_cpu']:.2f} cores, "
                                                       f"steal {d['steal']:.2f}")
        lines.append(f"disturbance: {d['discarded']} of {d['rounds']} rounds discarded (a measuring thread waited "
                     f"{d['wait_ms']:.1f} ms for a CPU){load}; load average {d.get('load1')}")
        if r.get("disturbed") and d.get("discarded_median_ms") is not None:
            lines.append(f"  the discarded rounds read {d['discarded_median_ms']:.3f} ms: not this model's latency")
    if r["reference_median_ms"] is not None:
        note = "  DRIFT: the machine changed speed during the run" if r["drift"] else ""
        again = " (re-measured once)" if r["remeasured"] else ""
        what = "reference block" if r.get("reference") == "block" else "reference GEMM"
        lines.append(f"{what} median {r['reference_median_ms']:.4f} ms, moved "
                     f"{100 * r['reference_change']:+.1f}%{again}{note}")
        if r.get("busy"):
            lines.append(f"  BUSY: the reference GEMM ran {r['reference_median_ms'] / r['reference_best_ms']:.1f}x "
                         f"slower than its best on this machine ({r['reference_best_ms']:.4f} ms): another process "
                         "is using the CPU, so this latency reads too high; measure again when the machine is quiet")
    lines.append(f"machine {fp['cpu_model']}  {fp['physical_cores']} cores / {fp['logical_cores']} logical  "
                 f"torch {fp['torch_version']}" + (f"  cuda {fp['cuda_device']}" if fp["cuda_device"] else "")
                 + f"  fingerprint {fp['hash']}")
    lines.append(f"allocator {r['allocator']['detail']}")
    t = r.get("tune")
    if t:
        cached = (f"{t['from_cache']} from the tune cache (oldest {t['oldest_cache_hours']} h, narrowest margin "
                  f"{100 * t['narrowest_margin']:.0f}%)" if t["narrowest_margin"] is not None else
                  f"{t['from_cache']} from the tune cache") if t["from_cache"] else "none from the tune cache"
        lines.append(f"fast form: {t['steps']} step choices, {cached}, {t['measured']} measured now "
                     "(ARCHDSL_RETUNE=1 measures all again)")
    return "\n".join(lines) + "\n"


def cmd_build_table(args) -> int:
    """`archdsl bench --build-table SPACE.arch [--samples N] [--input CxHxW] [--threads N] [--batch N]`."""
    from ..cli.common import input_shape, usage
    from ..errors import ArchError
    from .table import build_table

    if args.samples < 1 or args.batch < 1 or (args.threads is not None and args.threads < 1):
        raise SystemExit(usage("--samples, --batch and --threads must be positive integers"))
    if not args.max_seconds > 0:
        raise SystemExit(usage("--max-seconds must be positive"))
    # per-op cap: 1 s unless --max-seconds is given (most ops converge to +-2% in well under it; a table of the
    # ConvNeXt space, 374 configurations, builds in about 2 minutes). Shorter caps gave a noisier table: 0.25 s
    # at +-5% predicted 68% of held-out models within +-10%, 1 s at +-2% 90% (docs/latency.md).
    cap = min(args.max_seconds, 1.0) if args.max_seconds == 10.0 else args.max_seconds
    try:
        _, rep = build_table(args.build_table, args.samples, input_shape(args.input), batch=args.batch,
                             threads=args.threads or 1, max_seconds=cap, rel_ci=args.rel_ci,
                             progress=lambda m: print(m, file=sys.stderr))
    except ArchError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"archdsl: error: {e}", file=sys.stderr)
        return 1
    print(rep.text(), end="")
    return 3 if rep.unmeasured and getattr(args, "strict", False) else 0
