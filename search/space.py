"""The search space of a .arch spec: its choice points, resolved define-by-run, checked before any trial.

Takes: a spec path (plus model, input shape, fixed values). Returns: `Candidate`s (a point = {choice name:
value}, the checked training-form graph, its canonical hash) or `Rejection`s (the spec's own positioned error).

Dimensions are discovered as the spec is elaborated: a choice point is asked for when elaboration meets it, so a
choice behind an untaken `if` (a dilation only for some kernels) is never sampled, and `require` statements
reject invalid combinations with the spec's message before anything is built. The canonical hash is a digest of
the checked IR without source positions or file names: two points that make the same network (a dilation
choice that a non-dilated mixer ignores) get the same hash, so the search never trains a network twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import check as _checker
from .. import limits
from ..api import elaborate
from ..errors import ArchError
from ..interp import ChoicePoint
from ..printer import format_ir
from .errors import SearchError

__all__ = ["SearchSpace", "Candidate", "Rejection", "canonical_hash", "program_files", "Dimension"]


def program_files(spec: Path, program) -> dict[str, str]:
    """{path relative to the spec's directory: text} of the spec and every .arch file its parsed `program` imports
    (for shipping it to another Ray node, where a trial writes them out again)."""
    root = Path(spec).resolve().parent
    out = {}
    for f in program.modules:
        p = Path(f).resolve()
        try:
            rel = p.relative_to(root)
        except ValueError:
            rel = Path(p.name)
        out[str(rel)] = p.read_text(encoding="utf-8")
    return out


def canonical_hash(graph, *, structure_only: bool = False) -> str:
    """16 hex digits over the IR text without positions and without the file line (same network, same hash);
    `structure_only` leaves out the model's parameter values too (two values of a knob that build one network)."""
    lines = format_ir(graph, spans=False).splitlines()
    skip = ("# model ", "# params ") if structure_only else ("# model ",)
    body = "\n".join(line for line in lines if not line.startswith(skip))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Dimension:
    """One choice point as a search dimension: its name and domain (`ChoicePoint.domain()`)."""

    name: str
    domain: dict
    where: str

    @classmethod
    def of(cls, cp: ChoicePoint) -> "Dimension":
        return cls(cp.name, cp.domain(), str(cp.span))


@dataclass
class Candidate:
    point: dict[str, Any]
    graph: Any
    hash: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        s = self.graph.input_shape
        return (s.c, s.h, s.w)


@dataclass
class Rejection:
    point: dict[str, Any]  # the values sampled before elaboration stopped
    error: str  # the spec's diagnostics, positioned
    first: str  # the first diagnostic's one-line message with its place (for counting reasons)


@dataclass
class SearchSpace:
    """A spec with open choices. `fixed`: values applied to every point (model parameters, pinned choices).
    Points and fixed values are values, never .arch text: choice("gelu tanh", "relu-6") samples strings that are
    no expression, and they reach the elaboration as they are (`values=`), as the sampler's do."""

    spec: Path
    model: str | None = None
    input_shape: tuple[int, int, int] | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    import_paths: tuple[str, ...] = ()
    allow_outside_imports: bool = False
    dims: dict[str, Dimension] = field(default_factory=dict)
    program: Any = field(default=None, init=False, repr=False)  # parsed once; every candidate re-elaborates it

    def __post_init__(self) -> None:
        from ..program import load_program

        self.spec = Path(self.spec)
        # syntax and import errors: ArchError. Parsing is most of check_file's time (38 ms of 45 for
        # convnext_space), so the AST is kept and each candidate only elaborates and checks it.
        self.program = load_program(self.spec, self.import_paths, self.allow_outside_imports)
        try:
            base = self._check(self.fixed, None)
        except ArchError:
            return  # the first values may be an invalid combination; dimensions are then met while sampling
        for cp in base.choices:
            if cp.name not in self.fixed and cp.source != "fixed":
                self.dims.setdefault(cp.name, Dimension.of(cp))
        if not self.dims:
            raise SearchError(f"{self.spec}: the spec has no open choice point to search (it has no choice(...), "
                              "int_range(...) or float_range(...), or every one is fixed)")

    def _check(self, values: dict[str, Any], sampler):
        """The checked graph; ArchError also for an architecture over the memory limit (never built)."""
        g = _checker.check(elaborate(self.program, None, self.input_shape, self.model, strict_overrides=False,
                                     sampler=sampler, values=values))
        limits.check_memory(g, limits.memory_limit())
        return g

    def resolve(self, sample: Callable[[ChoicePoint], Any]) -> Candidate | Rejection:
        """Elaborate the spec, asking `sample(choice_point)` for the value of every open choice point met."""
        point: dict[str, Any] = {}

        def sampler(cp: ChoicePoint) -> Any:
            self.dims.setdefault(cp.name, Dimension.of(cp))
            v = sample(cp)
            point[cp.name] = v
            return v

        try:
            g = self._check(self.fixed, sampler)
        except ArchError as e:
            return Rejection(point, str(e), _first_line(e))
        return Candidate(point, g, canonical_hash(g))

    def check_point(self, point: dict[str, Any]) -> Candidate | Rejection:
        """The candidate of a known point (resume, replay, top-k). Choice points missing from `point` take their
        first value, as in `archdsl check`."""
        try:
            g = self._check({**self.fixed, **point}, None)
        except ArchError as e:
            return Rejection(dict(point), str(e), _first_line(e))
        return Candidate({k: v for k, v in point.items()}, g, canonical_hash(g))

    def files(self) -> dict[str, str]:
        """`program_files` of the spec, from the program parsed at start."""
        return program_files(self.spec, self.program)

    def describe(self) -> list[dict]:
        """The dimensions known so far, JSON-ready."""
        return [{"name": d.name, "domain": d.domain, "where": d.where} for d in self.dims.values()]


def _first_line(e: ArchError) -> str:
    diags = getattr(e, "diagnostics", None)
    if diags:
        d = diags[0]
        return f"{d.span}: {d.message}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__
