"""The `archdsl` command line: check | show | compile | bench | search | train | report | viz | fmt | ops | weights.

Takes: argv. Returns: an exit code — 0 on success, 1 for a mistake in the user's spec (printed as
positioned diagnostics on stderr, never a traceback), 2 for bad command-line usage, 70 for an internal
error (a bug in archdsl: a short message; the traceback only with --debug or ARCHDSL_DEBUG=1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from ..errors import ArchError
from .common import add_spec_args, input_shape, overrides, print_pass_reports, spec_graph, usage


def cmd_check(args) -> int:
    from .. import report

    g = spec_graph(args)
    if not args.count_only:  # the model `archdsl.load` would refuse is an error here too, at the same place
        from .. import limits

        limits.check_memory(g, limits.memory_limit())
    if args.json:
        data = report.to_json(g)
        if args.deploy:
            data["form"] = "deploy"
            data["passes"] = {r.name: r.changes for r in args.reports}
        print(json.dumps(data, indent=2))
    else:
        print(report.table(g), end="")
    return 0


def cmd_show(args) -> int:
    from ..printer import format_ir

    g = spec_graph(args)
    print_pass_reports(args, sys.stdout)
    print(format_ir(g, spans=not args.no_spans), end="")
    return 0


def cmd_compile(args) -> int:
    from ..api import require_resolved
    from ..codegen.source import Unsupported, emit_source

    if args.weights and not args.deploy:
        raise SystemExit(usage("--weights goes with --deploy (it converts a trained checkpoint)"))
    if args.deploy and args.weights and args.output in (None, "-"):
        raise SystemExit(usage("--weights needs -o FILE (the converted weights go to FILE with .pt)"))
    state = None
    if args.weights:
        state = _deploy_weights(args)
        g = state.graph
    else:
        g = spec_graph(args)
    require_resolved(g)
    try:
        text = emit_source(g)
    except Unsupported as e:  # a layer the source writer does not know (e.g. a user op's module kept elsewhere)
        print(f"archdsl: error: {e}", file=sys.stderr)
        return 1
    try:
        if state is not None:
            import torch

            pt = os.path.splitext(args.output)[0] + ".pt"
            torch.save(state.state_dict(), pt)
            print(f"wrote {pt} (deploy-form weights)", file=sys.stderr)
        if args.output in (None, "-"):
            print(text, end="")
        else:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"wrote {args.output} ({g.model}: {g.total().params:,} parameters)", file=sys.stderr)
    except OSError as e:  # a missing directory, a directory, no permission, a full disk (/dev/full), /proc
        print(f"archdsl: error: cannot write {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def _deploy_weights(args):
    """Load a training-form checkpoint into the spec's model and convert it to the deploy form."""
    from ..api import check_file, require_resolved
    from ..codegen.deploy import deploy
    from ..codegen.module import build_module
    from ..weights import WeightsError, load_weights

    g = check_file(args.file, overrides(args.set), input_shape(args.input), args.model,
                   tuple(args.import_path), args.allow_outside_imports)
    require_resolved(g)
    m = build_module(g)
    try:
        load_weights(m, args.weights, f"--weights {args.weights}")
    except WeightsError as e:
        raise SystemExit(usage(str(e) if str(e).startswith("--weights") else f"--weights: {e}")) from None
    return deploy(m)


def cmd_fmt(args) -> int:
    from ..fmt import format_file

    status = 0
    for f in args.files:
        text = format_file(f)
        with open(f, encoding="utf-8") as fh:
            old = fh.read()
        if args.check:
            if old != text:
                print(f"{f}: would reformat", file=sys.stderr)
                status = 1
        elif args.write:
            if old != text:
                with open(f, "w", encoding="utf-8") as fh:
                    fh.write(text)
        else:
            print(text, end="")
    return status


def cmd_ops(args) -> int:
    from ..check import signature
    from ..ops import registry

    ops = [op for op in registry.all_ops().values() if op.user]
    if args.json:
        print(json.dumps([{"name": op.name, "family": op.family, "signature": f"{op.name}({signature(op)})",
                           "doc": op.doc()} for op in ops], indent=2))
        return 0
    for op in sorted(ops, key=lambda o: (o.family, o.name)):
        first = op.doc().splitlines()[0] if op.doc() else ""
        print(f"{op.family:<11} {op.name}({signature(op)})\n{'':<11} {first}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="archdsl", description="Declarative ConvNet architectures: check, build, search.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    ap.add_argument("--max-memory", metavar="SIZE",
                    help="refuse models whose float32 parameters + activations would need more (e.g. 8G, 512MiB, "
                         "25%%; default: $ARCHDSL_MAX_MEMORY, else half of this machine's RAM)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="check a spec; print params / MACs / shapes per stage and block")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--count-only", action="store_true",
                   help="only count parameters and MACs: do not refuse a model too large to build on this machine "
                        "(--max-memory)")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("show", help="print the graph IR (deterministic; reads back with archdsl.printer.read_ir)")
    add_spec_args(p)
    p.add_argument("--no-spans", action="store_true", help="omit source positions")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("compile", help="write standalone PyTorch source for the model (depends on torch only)")
    add_spec_args(p)
    p.add_argument("-o", "--output", help="output .py file (default: stdout)")
    p.add_argument("--weights", help="with --deploy: a training-form state_dict to convert (written to OUTPUT.pt)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("fmt", help="print specs in canonical format")
    p.add_argument("files", nargs="+")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a file is not formatted")
    g.add_argument("-w", "--write", action="store_true", help="rewrite files in place")
    p.set_defaults(fn=cmd_fmt)

    p = sub.add_parser("ops", help="list the operators with their parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_ops)

    from ..bench.cli import add_bench_parser  # the measurement engine; imports torch only when it runs

    add_bench_parser(sub)
    from ..search.cli import add_search_parser  # Ray, Optuna and torch are imported only when it runs

    add_search_parser(sub)
    from ..search.train_cmd import add_train_parser  # torch is imported only when it runs

    add_train_parser(sub)
    from ..search.report import add_report_parser  # the standard library only, at import

    add_report_parser(sub)
    from ..viz import add_viz_parser  # graphviz is imported only when it runs

    add_viz_parser(sub)
    from .weights_cmd import add_weights_parser  # torch is imported only when it runs

    add_weights_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = make_parser()
    args = ap.parse_args(argv)
    if args.max_memory is None:
        return _run(args)
    from ..limits import parse_memory

    try:
        parse_memory(args.max_memory, "--max-memory")
    except ValueError as e:
        print(f"archdsl: {e}", file=sys.stderr)
        return 2
    old = os.environ.get("ARCHDSL_MAX_MEMORY")
    os.environ["ARCHDSL_MAX_MEMORY"] = args.max_memory  # read where models are built (search trials inherit it)
    try:
        return _run(args)
    finally:
        if old is None:
            os.environ.pop("ARCHDSL_MAX_MEMORY", None)
        else:
            os.environ["ARCHDSL_MAX_MEMORY"] = old


def _run(args) -> int:
    """Run the subcommand: a spec mistake prints its diagnostics (exit 1), never a traceback."""
    debug = args.debug or os.environ.get("ARCHDSL_DEBUG") == "1"
    try:
        return args.fn(args)
    except ArchError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        print("archdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in archdsl, not a mistake in the spec
        if debug:
            traceback.print_exc()
        print(f"archdsl: internal error: {type(e).__name__}: {e}\n"
              "this is a bug in archdsl; rerun with --debug for the traceback and please report it", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
