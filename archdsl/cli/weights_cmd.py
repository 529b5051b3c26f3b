"""`archdsl weights import SPEC CHECKPOINT -o weights.pt`: another implementation's state_dict matched onto the
model of a spec (archdsl/weights_import.py), written as a training-form state_dict that `archdsl.load(spec,
weights=...)`, `archdsl train --weights` and `archdsl compile --deploy --weights` read.

Takes: the spec arguments (--set, --input, --model), the checkpoint (read with weights_only=True: never code), the
name map (--map PATTERN=REPLACEMENT, repeatable, or --map-file with one rule per line), --allow-missing, --report
FILE.json. Prints one line per tensor matched by the map or reshaped, and the summary; exit 1 for a checkpoint
that does not fit (the tensors named), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .common import add_spec_source_args, usage


def add_weights_parser(sub) -> None:
    p = sub.add_parser("weights", help="pretrained weights: import another implementation's checkpoint")
    wsub = p.add_subparsers(dest="weights_cmd", required=True, metavar="ACTION")
    q = wsub.add_parser("import", help="match a checkpoint of another implementation (timm, the authors', "
                                       "torchvision) onto the spec's model; write its training-form state_dict")
    add_spec_source_args(q)
    q.add_argument("checkpoint", help="the other implementation's state_dict file (torch.save)")
    q.add_argument("-o", "--output", required=True, help="the converted weights (.pt)")
    q.add_argument("--map", action="append", default=[], metavar="PATTERN=REPLACEMENT",
                   help="match the checkpoint's names matching PATTERN (a regular expression, whole name) to the "
                        "model's REPLACEMENT (\\1 for groups); before the order matching")
    q.add_argument("--map-file", metavar="FILE", help="rules as --map, one per line (# comments)")
    q.add_argument("--allow-missing", action="store_true",
                   help="keep the model's own values for tensors the checkpoint lacks, ignore the checkpoint's extra")
    q.add_argument("--report", metavar="FILE", help="also write every match as JSON")
    q.set_defaults(fn=cmd_weights_import)


def _rules(args) -> list[str]:
    """The name map's rules in the order they are tried (the first that matches a name wins): --map-file's lines,
    then each --map."""
    rules: list[str] = []
    if args.map_file:
        from ..limits import read_bounded

        try:
            text = read_bounded(args.map_file, 1 << 20).decode("utf-8", "replace")
        except (OSError, ValueError) as e:
            raise SystemExit(usage(f"--map-file {args.map_file}: {e}")) from None
        rules += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return rules + list(args.map)


def cmd_weights_import(args: argparse.Namespace) -> int:
    import torch

    from ..api import check_file
    from ..codegen.module import build_module
    from ..weights import WeightsError, read_state_dict
    from ..weights_import import import_state_dict
    from .common import input_shape, overrides

    if not args.output.endswith(".pt"):
        raise SystemExit(usage(f"-o {args.output}: the converted weights go to a .pt file"))
    rules = _rules(args)
    g = check_file(args.file, overrides(args.set), input_shape(args.input), args.model,
                   tuple(args.import_path), args.allow_outside_imports)
    module = build_module(g)
    try:
        theirs = read_state_dict(args.checkpoint)
        sd, report = import_state_dict(module, theirs, rules, args.allow_missing,
                                       ordered=not str(args.checkpoint).endswith(".safetensors"))
    except WeightsError as e:
        print(f"archdsl: {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    module.load_state_dict(sd, strict=True)  # what archdsl.load(spec, weights=...) will do
    try:
        torch.save(sd, args.output)
        if args.report:
            with open(args.report, "w", encoding="utf-8") as fh:
                json.dump({"spec": os.fspath(args.file), "checkpoint": os.fspath(args.checkpoint),
                           "rules": rules, **report.to_json()}, fh, indent=1)
    except OSError as e:
        print(f"archdsl: cannot write {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    for ours, (theirs_name, how) in report.matched.items():
        if how != "order":
            print(f"  {theirs_name} -> {ours} ({how})")
    for k in report.missing:
        print(f"  missing: {k} (keeps the model's own value)")
    for k in report.unused:
        print(f"  unused: {k}")
    print(f"{report.summary()}; wrote {args.output}")
    return 0
