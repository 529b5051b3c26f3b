"""Starting points of a search (`archdsl search --start FILE`): points evaluated first, before the algorithm
samples, as Optuna's `enqueue_trial` and Ray Tune's `points_to_evaluate` do.

Takes: .arch files of `fix "NAME" = literal` lines naming choice points of the searched space (a top-k file of an
earlier search, or a hand-written partial point; other statements in the file are ignored, its imports are not
followed) and the `SearchSpace`. Returns: one `Start` per file, its values checked against the space: every name
is a choice point that the point meets and every value lies in that choice's domain, else an ArchError with
the fix line's position. Choices a start leaves open are sampled by the search's algorithm (TPE or random), so a
partial start is a region to begin in, not one network.

Each start is evaluated once per search: its records carry `"start": <file>`, and `--resume` skips the starts
already recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArchError, Diagnostic, Span, did_you_mean
from .errors import SearchError

__all__ = ["Start", "load_starts"]


@dataclass
class Start:
    """One starting point: `name` (the file as given), `values` {choice name: value}, `complete` (it fixes every
    choice point its network meets: one network, not a region)."""

    name: str
    values: dict[str, Any]
    complete: bool = False


def _read(path: Path):
    """The parsed module of a start file (syntax errors: ArchError, positioned)."""
    from .. import limits
    from ..parse import parse_text
    from ..program import not_a_spec_file

    why = not_a_spec_file(path)
    if why is not None:
        raise SearchError(f"--start {path}: {why}")
    try:
        text = limits.read_bounded(path, limits.MAX_FILE_BYTES).decode("utf-8")
    except limits.FileRefused as e:
        raise SearchError(f"--start {e}") from None
    except UnicodeDecodeError:
        raise ArchError([Diagnostic(Span(str(path), 1, 1, 1, 2), "file is not valid UTF-8 text")]) from None
    except OSError as e:
        raise SearchError(f"--start {path}: cannot read the file: {e.strerror or e}") from None
    return parse_text(text, str(path))


def load_starts(paths: list[str], space) -> list[Start]:
    """Read and check each --start file against `space` (search.space.SearchSpace); raises ArchError (a name
    that is no choice point met at that point, a value outside its domain, a complete start the spec rejects) or
    SearchError (an unreadable file, a file with no fix line)."""
    starts = []
    for p in paths:
        mod = _read(Path(p))
        if not mod.fixes:
            raise SearchError(f"--start {p}: the file has no `fix \"NAME\" = value` line: a starting point names "
                              "the choice points it sets (e.g. a top-k file of an earlier search)")
        starts.append(_check(str(p), mod.fixes, space))
    return starts


def _check(name: str, fixes: list, space) -> Start:
    """One start from its fix lines, checked against the space at the point it sets (the rest at first values)."""
    from ..elaborate.base import fix_value
    from ..interp import EvalError, fmt
    from .space import Candidate

    diags: list[Diagnostic] = []
    values: dict[str, Any] = {}
    lines = {}
    for f in fixes:
        if f.name in values:
            diags.append(Diagnostic(f.name_span, f"{fmt(f.name)} is set twice in this start (first at "
                                    f"{lines[f.name].span})", "delete one of the two fix lines"))
            continue
        try:
            values[f.name] = fix_value(f)
        except EvalError as e:
            diags.append(Diagnostic(e.span, e.message, e.hint))
            continue
        lines[f.name] = f
    for key in [n for n in values if n in space.fixed]:
        if values.pop(key) != space.fixed[key]:
            diags.append(Diagnostic(lines[key].value.span, f"{fmt(key)} is fixed for the whole search at "
                                    f"{fmt(space.fixed[key])} (--set); this start sets it otherwise",
                                    "drop the line, or the --set"))
    met: set[str] = set()

    def sample(cp):
        met.add(cp.name)
        if cp.name in values:
            v = values[cp.name]
            if not cp.contains(v):
                diags.append(Diagnostic(lines[cp.name].value.span, f"{fmt(v)} is not a value of {fmt(cp.name)}: "
                                        f"{cp.describe()} at {cp.span}", "pick one of the domain's values"))
                raise _Stop
            return v
        return cp.default if cp.default is not None else cp.values[0] if cp.kind == "choice" else cp.lo

    try:
        res = space.resolve(sample)
    except _Stop:
        raise ArchError(diags) from None
    if any(key not in met and key not in space.dims for key in values):
        _discover(space, set(values) - met)
    for key in values:
        if key in met:
            continue
        if key in space.dims:  # a choice point of the space, behind an `if` this point does not take
            diags.append(Diagnostic(lines[key].name_span, f"this start does not meet choice point {fmt(key)} "
                                    f"({space.dims[key].where})", "it is behind an `if` that the start's other "
                                    "values, or the first values of the choices it leaves open, do not take: fix "
                                    "the choices that lead to it too"))
        else:
            diags.append(Diagnostic(lines[key].name_span, f"{fmt(key)} is no choice point of {space.spec.name} met "
                                    f"at this start{did_you_mean(key, sorted(met))}",
                                    "choice points met: " + ", ".join(sorted(met))))
    complete = met <= set(values)
    if complete and not isinstance(res, Candidate) and not diags:
        f = fixes[0]
        diags.append(Diagnostic(Span(f.span.file, f.span.line, 1, f.span.line, 2),
                                f"the space rejects this start point: {res.first}",
                                "a starting point must be a valid network of the space"))
    if diags:
        raise ArchError(diags)
    return Start(name, values, complete)


def _discover(space, names: set[str], tries: int = 200) -> None:
    """Meet more of the space's choice points (random points add them to space.dims) until `names` are all
    known or `tries` points were drawn: a name met nowhere is then a misspelling, not a choice behind an `if`."""
    import random

    rng = random.Random(0)
    for _ in range(tries):
        if names <= set(space.dims):
            return
        space.resolve(lambda cp: cp.sample(rng))


class _Stop(Exception):
    """A start value outside its domain: elaboration stops there (the diagnostic is already recorded)."""
