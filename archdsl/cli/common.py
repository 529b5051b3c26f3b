"""Command-line helpers shared by every `archdsl` command (check, show, compile, viz, bench, search, train).

Takes: argparse parsers and parsed arguments. Returns: the spec-source arguments (`add_spec_source_args`,
`add_spec_args`), parsed values (`input_shape`, `overrides`), the checked graph they name (`spec_graph`), a pass
report printer, and `usage(msg)`, which prints a usage error and returns exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys

from ..limits import MAX_INT

__all__ = ["input_shape", "overrides", "usage", "add_spec_source_args", "add_spec_args", "spec_graph",
           "print_pass_reports"]


def input_shape(text: str | None):
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*[x,]\s*(\d+)\s*", text)
    if not m:
        raise SystemExit(usage(f"--input must look like 3x224x224, got {text[:60]!r}"))
    if any(len(v.lstrip("0")) > 18 for v in m.groups()):  # before int(): Python refuses 4,300-digit numbers
        raise SystemExit(usage(f"--input sizes must be under 10^18, got {text[:60]!r}"))
    c, h, w = (int(v) for v in m.groups())
    if min(c, h, w) <= 0:
        raise SystemExit(usage(f"--input sizes must be positive, got {text!r}"))
    if c * h * w > MAX_INT:
        raise SystemExit(usage(f"--input {text!r} has {c * h * w:.3g} elements: more than any model can take "
                               f"({MAX_INT:.3g})"))
    return (c, h, w)


def overrides(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        key, eq, value = p.partition("=")
        if not eq or not key.strip():
            raise SystemExit(usage(f"--set takes name=value, got {p!r}"))
        out[key.strip()] = value
    return out


def usage(msg: str) -> int:
    print(f"archdsl: error: {msg}", file=sys.stderr)
    return 2


def add_spec_source_args(p: argparse.ArgumentParser, file_help: str = "the .arch spec") -> None:
    """The arguments that say which network of which spec: FILE, --set, --input, --model, --import-path,
    --allow-outside-imports (check, show, compile, viz, train)."""
    p.add_argument("file", help=file_help)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a model parameter or fix a choice point (repeatable; wins over a `fix` line of "
                        "the spec); VALUE is an .arch expression, e.g. --set depths=[2,2,6,2] --set kernel=31")
    p.add_argument("--input", metavar="CxHxW", help="input shape, e.g. 3x224x224 (overrides the spec's input)")
    p.add_argument("--model", help="which model of the file (when it defines several)")
    p.add_argument("--import-path", action="append", default=[], metavar="DIR",
                   help="an extra directory imports may resolve to")
    p.add_argument("--allow-outside-imports", action="store_true",
                   help="allow absolute imports and imports that leave the spec's directory")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    add_spec_source_args(p)
    p.add_argument("--deploy", action="store_true",
                   help="the inference form: BN folded, parallel branches merged (re-parameterization)")
    p.add_argument("--debug-passes", "--debug", dest="debug_passes", action="store_true",
                   help="with --deploy: print what each pass changed and the IR after it")


def spec_graph(args):
    from ..api import check_file

    g = check_file(args.file, overrides(args.set), input_shape(args.input), args.model,
                   tuple(args.import_path), args.allow_outside_imports)
    if getattr(args, "deploy", False):
        from ..passes import deploy_graph

        g, args.reports = deploy_graph(g, debug=getattr(args, "debug_passes", False))
    return g


def print_pass_reports(args, stream) -> None:
    from ..printer import format_ir

    for r in getattr(args, "reports", []):
        print(f"# pass {r.name}: {len(r.changes)} change(s)", file=stream)
        for c in r.changes:
            print(f"#   {c}", file=stream)
        if r.graph is not None:
            print(format_ir(r.graph), file=stream, end="")
