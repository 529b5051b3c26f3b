"""The public Python API: parse + elaborate + check in one call, and model building.

Takes: a path or spec text, overrides (name -> value or .arch expression text), values (name -> value, never
read as text: a search point) and options.
Returns: a checked `ArchGraph` (`check_file`, `check_text`); `archdsl.load` / `archdsl.build` turn one into
an nn.Module.
"""

from __future__ import annotations

import os
from typing import Any

from . import check as _check
from . import syntax as S
from .elaborate import Elaborator
from .errors import ArchError, Diagnostic, Span
from .interp import ChoiceTable, EvalError, Evaluator, as_value, fmt
from .ir import ArchGraph
from .parse import parse_expr
from .program import Program, load_program


def parse_override(key: str, value: Any) -> Any:
    """`--set key=value`: strings are read as .arch expressions (a bare word is a string), Python values pass
    through (lists become the language's lists)."""
    if not isinstance(value, str):
        return as_value(value)
    expr = parse_expr(value, f"--set {key}")
    if isinstance(expr, S.Var):  # a bare word is a string: --set kind=inception
        return expr.name
    try:
        return Evaluator(ChoiceTable()).eval(expr, {}, key)  # type: ignore[arg-type]
    except EvalError as e:
        raise ArchError([Diagnostic(e.span, e.message, e.hint)]) from None


def _overrides(overrides: dict[str, Any] | None, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """overrides read by parse_override (a str is .arch text), then `values` taken as they are (a str is that
    string: choice("gelu tanh", "relu-6") has values that are no .arch expression); values win."""
    out = {k: parse_override(k, v) for k, v in (overrides or {}).items()}
    out.update({k: as_value(v) for k, v in (values or {}).items()})
    return out


def elaborate(program: Program, overrides=None, input_shape=None, model: str | None = None,
              strict_overrides: bool = True, sampler=None, values: dict[str, Any] | None = None) -> ArchGraph:
    return Elaborator(program, _overrides(overrides, values), input_shape, strict_overrides, sampler).run(model)


def check_file(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
               input_shape: tuple[int, int, int] | None = None, model: str | None = None,
               search_paths: tuple[str, ...] = (), allow_outside: bool = False,
               strict_overrides: bool = True, sampler=None, values: dict[str, Any] | None = None) -> ArchGraph:
    """Parse, elaborate and check a .arch file. Raises ArchError with every mistake found. `overrides`: name ->
    value or .arch text (as --set); `values`: name -> value, never read as text (a search point: its strings are
    strings). `sampler(choice_point)` picks the value of each choice point nothing fixes, as elaboration meets it
    (see interp.ChoiceTable)."""
    prog = load_program(path, search_paths, allow_outside)
    return _check.check(elaborate(prog, overrides, input_shape, model, strict_overrides, sampler, values))


def check_text(text: str, file: str = "<string>", overrides=None, input_shape=None, model=None,
               strict_overrides: bool = True, sampler=None, values: dict[str, Any] | None = None) -> ArchGraph:
    prog = load_program(file, text=text)
    return _check.check(elaborate(prog, overrides, input_shape, model, strict_overrides, sampler, values))


def require_resolved(graph: ArchGraph) -> None:
    """Raise ArchError listing every choice point that took its first value: fixed by no override, no `fix` line
    of the spec, no sampler and no default."""
    open_ = [c for c in graph.choices if c.source == "first"]
    if open_:
        raise ArchError([Diagnostic(c.span, f"open choice '{c.name}' = {c.describe()} has no value",
                                    f"fix it with --set {c.name}=VALUE (or overrides), a line "
                                    f"`fix {fmt(c.name)} = VALUE`, or give it default=")
                         for c in open_])


__all__ = ["check_file", "check_text", "elaborate", "require_resolved", "ArchError", "Span"]
