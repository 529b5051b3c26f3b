"""Stage 2: search choice points. `choice`, `int_range` and `float_range` in a spec evaluate to one concrete value
(an override or `fix`, a sampler's draw, the default, or the first option) and are recorded here so the search
can enumerate and sample them.

Takes: the overrides and fixed values, optionally a sampler. Returns: `ChoicePoint` (a named domain with its
source position) and `ChoiceTable` (every choice point met while elaborating, and the value each took).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .errors import Span
from .values import EvalError, Value, fmt, type_name


@dataclass
class ChoicePoint:
    """One open search dimension: where it is, its domain, and the value used in this evaluation."""

    name: str
    kind: str  # "choice" | "int_range" | "float_range"
    span: Span
    values: tuple[Value, ...] = ()
    lo: float | int | None = None
    hi: float | int | None = None
    step: int | None = None
    log: bool = False
    default: Value = None
    value: Value = None
    source: str = "first"  # "override" | "fixed" (a `fix` line) | "sampled" | "default" | "first"

    def contains(self, v: Value) -> bool:
        if self.kind == "choice":
            return any(type_name(v) == type_name(x) and v == x or
                       (isinstance(v, (int, float)) and not isinstance(v, bool) and
                        isinstance(x, (int, float)) and not isinstance(x, bool) and v == x) for x in self.values)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return False
        if self.kind == "int_range":
            return isinstance(v, int) and self.lo <= v <= self.hi and (v - self.lo) % self.step == 0
        return self.lo <= v <= self.hi

    def sample(self, rng) -> Value:
        """A uniformly random value of the domain (`rng`: a random.Random); log-uniform for log float ranges."""
        if self.kind == "choice":
            return rng.choice(self.values)
        if self.kind == "int_range":
            return rng.randrange(self.lo, self.hi + 1, self.step)
        if self.log:
            return math.exp(rng.uniform(math.log(self.lo), math.log(self.hi)))
        return rng.uniform(self.lo, self.hi)

    def domain(self) -> dict:
        if self.kind == "choice":
            return {"type": "choice", "values": list(self.values)}
        if self.kind == "int_range":
            return {"type": "int_range", "lo": self.lo, "hi": self.hi, "step": self.step}
        return {"type": "float_range", "lo": self.lo, "hi": self.hi, "log": self.log}

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice(" + ", ".join(fmt(v) for v in self.values) + ")"
        if self.kind == "int_range":
            return f"int_range({self.lo}, {self.hi}, step={self.step})"
        return f"float_range({fmt(float(self.lo))}, {fmt(float(self.hi))}{', log=true' if self.log else ''})"

    def to_json(self) -> dict:
        return {"name": self.name, "domain": self.domain(), "default": self.default, "value": self.value,
                "source": self.source, "where": str(self.span)}


@dataclass
class ChoiceTable:
    """Choice points met during one evaluation, and the overrides that fix them (`--set` values, and the spec's
    `fix` lines, listed in `fixed`, merged in with `--set` winning). `sampler(cp)`, when given, picks
    the value of every choice point no override fixes, as it is met (define-by-run: a choice point behind an
    untaken `if` is never asked for); it must return a value inside the domain."""

    overrides: dict[str, Value] = field(default_factory=dict)
    sampler: Callable[[ChoicePoint], Value] | None = None
    # names whose override comes from a `fix` line of the spec -> the span of its value (for errors; source "fixed")
    fixed: dict[str, Span] = field(default_factory=dict)
    points: dict[str, ChoicePoint] = field(default_factory=dict)
    used_overrides: set[str] = field(default_factory=set)
    errors: list[EvalError] = field(default_factory=list)

    def resolve(self, cp: ChoicePoint) -> Value:
        prev = self.points.get(cp.name)
        if prev is not None:
            if prev.span == cp.span or prev.domain() == cp.domain():
                return prev.value
            raise EvalError(cp.span, f"choice name {cp.name!r} is already used by a different choice at {prev.span}",
                            "give tied choices the same domain, or use distinct names")
        if cp.name in self.overrides:
            v = self.overrides[cp.name]
            self.used_overrides.add(cp.name)
            at = self.fixed.get(cp.name)
            if not cp.contains(v):
                if at is None:
                    self.errors.append(EvalError(cp.span, f"--set {cp.name}={fmt(v)} is outside {cp.describe()}"))
                else:  # the mistake is on the fix line: point there, and say where the choice is
                    self.errors.append(EvalError(at, f"fix {fmt(cp.name)} = {fmt(v)} is outside {cp.describe()}",
                                                 f"the choice point is at {cp.span}"))
                v = cp.default if cp.default is not None else _first(cp)
            cp.value, cp.source = v, "override" if at is None else "fixed"
        elif self.sampler is not None:
            v = self.sampler(cp)
            if not cp.contains(v):
                raise ValueError(f"the sampler gave {fmt(v)} for choice point {cp.name!r}, outside {cp.describe()}")
            cp.value, cp.source = v, "sampled"
        elif cp.default is not None:
            cp.value, cp.source = cp.default, "default"
        else:
            cp.value, cp.source = _first(cp), "first"
        self.points[cp.name] = cp
        return cp.value

    def unresolved(self) -> list[ChoicePoint]:
        return [c for c in self.points.values() if c.source == "first"]


def _first(cp: ChoicePoint) -> Value:
    return cp.values[0] if cp.kind == "choice" else cp.lo
