"""Concrete architectures: one point of a spec's search space written out as .arch files with every choice fixed.

Takes: a spec path and a point ({choice point or model parameter name: value}, values as for `overrides`: a str
is .arch text) and/or `values` (the same, taken as they are: a search point's strings are strings).
Returns: {relative path: text} (`concrete_spec`) or the written top file (`write_concrete`). The top file is a
`# ` comment header, one `fix "NAME" = VALUE` line per choice point that checking the point meets (sorted by
name, values printed with `interp.fmt`, defaults and model parameters from the point included), then the spec's
own text verbatim (its own `fix` lines blanked out: the new ones replace them). Every imported .arch file is
returned beside it under the same relative path, so the set of files is self-contained. `archdsl check` on
the top file gives the same graph as `check_file(spec, overrides=point)` (node names, ops, parameters, shapes,
costs) and `require_resolved` passes on it; `concrete_spec` verifies both before returning.

Limitation: a `fix` pins choice points and model parameters, not `--input`. With `input_shape`, the header says
"checked at input CxHxW" and the file reproduces the graph only when checked with the same `--input` (unless
the spec's `input(...)` reads a model parameter or a choice, which the fixes then pin).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import check as _check
from .api import check_text, elaborate, parse_override, require_resolved
from .elaborate import fix_value
from .interp import as_value, fmt
from .ir import ArchGraph
from .printer import format_ir
from .program import Program, load_program

__all__ = ["concrete_spec", "write_concrete"]


def concrete_spec(spec_path: str | os.PathLike, point: dict[str, Any], *, model: str | None = None,
                  header: str = "", input_shape: tuple[int, int, int] | None = None, name: str | None = None,
                  search_paths: tuple[str, ...] = (), allow_outside: bool = False,
                  strict_overrides: bool = True, values: dict[str, Any] | None = None) -> dict[str, str]:
    """{relative path: text} of the concrete spec of `point`: the top file (named `name`, default the spec's file
    name) first, then every file it imports. `header`'s lines become `# ` comments at the top (e.g. a search's
    measured latency and accuracy). Raises ArchError when the point does not check (as `check_file` would),
    ValueError when an imported file lies outside the spec's directory (it cannot be copied alongside)."""
    spec = Path(spec_path)
    top = name or spec.name
    if Path(top).name != top or not top:
        raise ValueError(f"the concrete file's name must be a plain file name, got {top!r}")
    prog = load_program(spec, search_paths, allow_outside)
    graph = _check.check(elaborate(prog, point, input_shape, model, strict_overrides, values=values))
    files = {top: ""} | _imported_files(spec, prog, top)

    fixed = _fixed_values(prog, graph, point, values)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append(f"# concrete architecture: model {graph.model} of {spec.name}, every choice point fixed")
    if input_shape is not None:
        c, h, w = input_shape
        lines.append(f"# checked at input {c}x{h}x{w}: check it with --input {c}x{h}x{w} (a fix cannot pin the input)")
    # Lines are added above the spec's own text, so a choice named after its position (`choice@LINE:COL`, a choice
    # in a model-level `require`) is renamed by as many lines.
    shift = len(lines) + len(fixed) + 1
    root_file = prog.root.file
    renamed = {_shifted(k, graph, root_file, shift): v for k, v in fixed.items()}
    lines += [f"fix {fmt(k)} = {fmt(v)}" for k, v in sorted(renamed.items())]
    files[top] = "\n".join(lines) + "\n\n" + _without_fixes(spec.read_text(encoding="utf-8"), prog)

    _verify(spec.resolve().parent / top, files[top], graph, input_shape, model)
    return files


def write_concrete(spec_path: str | os.PathLike, point: dict[str, Any], out_dir: str | os.PathLike, name: str,
                   **kw: Any) -> Path:
    """Write the files of `concrete_spec(spec_path, point, name=name, **kw)` under `out_dir` (created if needed)
    and return the top file's path. The top file is (re)written; an imported file already there must have the
    same text (several concrete files of one spec share their imports), else ValueError."""
    name = name if name.endswith(".arch") else name + ".arch"
    files = concrete_spec(spec_path, point, name=name, **kw)
    out = Path(out_dir)
    for rel, text in files.items():
        path = out / rel
        if rel != name and path.exists() and path.read_text(encoding="utf-8") != text:
            raise ValueError(f"{path} exists with other contents: write the concrete spec to another directory")
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return out / name


def _fixed_values(prog: Program, graph: ArchGraph, point: dict[str, Any],
                  values: dict[str, Any] | None) -> dict[str, Any]:
    """name -> value for every choice point met (whatever gave its value: the point, a fix, a default, the
    first value), and for every model parameter the point or the spec's own fix lines set."""
    out = {cp.name: cp.value for cp in graph.choices}
    model = next(d for d in prog.root.defs if d.kind == "model" and d.name == graph.model)
    params = {p.name for p in model.params}
    given = {k: parse_override(k, v) for k, v in point.items()} | {k: as_value(v) for k, v in (values or {}).items()}
    for k, v in given.items():
        if k in params:
            out.setdefault(k, v)
    for f in prog.root.fixes:
        if f.name in params and f.name not in given:
            out.setdefault(f.name, fix_value(f))
    return out


def _shifted(name: str, graph: ArchGraph, root_file: str, shift: int) -> str:
    cp = next((c for c in graph.choices if c.name == name), None)
    if cp is not None and cp.span.file == root_file and name == f"choice@{cp.span.line}:{cp.span.col}":
        return f"choice@{cp.span.line + shift}:{cp.span.col}"
    return name


def _without_fixes(text: str, prog: Program) -> str:
    """`text` with the root file's own `fix` lines blanked out, keeping every other line where it was."""
    lines = text.split("\n")
    for f in prog.root.fixes:
        s = f.span
        for ln in range(s.line, s.end_line + 1):
            row = lines[ln - 1]
            lo = s.col - 1 if ln == s.line else 0
            hi = s.end_col - 1 if ln == s.end_line else len(row)
            lines[ln - 1] = (row[:lo] + " " * (hi - lo) + row[hi:]).rstrip()
    return "\n".join(lines)


def _imported_files(spec: Path, prog: Program, top: str) -> dict[str, str]:
    """{path relative to the spec's directory: text} of every imported file, each reachable from its importer by
    its import path alone (no --import-path needed once copied)."""
    root_dir = spec.resolve().parent
    out: dict[str, str] = {}
    for (importer, imp_path), target in sorted(prog.links.items()):
        path = Path(target).resolve()
        if not path.is_relative_to(root_dir):
            raise ValueError(f"{importer} imports {imp_path!r}, which lies outside the spec's directory ({root_dir}): "
                             "a concrete spec copies its imports beside it, so they must lie under that directory")
        if (Path(importer).resolve().parent / imp_path).resolve() != path:
            raise ValueError(f"{importer} imports {imp_path!r} through an import path: a concrete spec copies its "
                             "imports beside it, so each must be found relative to the file that imports it")
        rel = path.relative_to(root_dir).as_posix()
        if rel == top:
            raise ValueError(f"the concrete file's name {top!r} is the name of an imported file")
        out[rel] = path.read_text(encoding="utf-8")
    return dict(sorted(out.items()))


def _comparable(graph: ArchGraph) -> str:
    """The IR without source positions and without the header line naming the file."""
    return "\n".join(line for line in format_ir(graph, spans=False).splitlines() if not line.startswith("# model "))


def _verify(path: Path, text: str, expected: ArchGraph, input_shape, model: str | None) -> None:
    """The concrete text checks (imports resolved from the spec's directory, where the copied files came from) to
    the same graph, with no choice left open. A difference is a bug in archdsl, not in the spec."""
    # a name no file has: the text is registered under it for diagnostics, and must not replace the spec's own
    graph = check_text(text, file=str(path.with_name(f"concrete:{path.name}")), input_shape=input_shape, model=model)
    require_resolved(graph)
    if _comparable(graph) != _comparable(expected):
        raise RuntimeError(f"internal error: the concrete spec of {path.name} checks to another graph")
