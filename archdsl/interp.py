"""The expression interpreter: evaluates .arch expressions over plain values. Never calls Python eval/exec.

Takes: AST expressions (`archdsl.syntax`) and an environment of bound names. Returns: values —
int, float, bool, str, None, or tuples (the language's lists). Search choice points (`choice`,
`int_range`, `float_range`) evaluate to a concrete value (an override or `fix`, the default, or the first
option) and are recorded in a `ChoiceTable` so the search can enumerate them.
"""

from __future__ import annotations

import math
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any, Callable

from . import limits
from . import syntax as S
from .errors import Span, did_you_mean

Value = Any  # int | float | bool | str | None | tuple[Value, ...]


class EvalError(Exception):
    """A mistake in an expression; the builder turns it into a positioned diagnostic."""

    def __init__(self, span: Span, message: str, hint: str | None = None):
        super().__init__(message)
        self.span, self.message, self.hint = span, message, hint


def type_name(v: Value) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if v is None:
        return "none"
    if isinstance(v, tuple):
        return "list"
    return type(v).__name__


def as_value(v: Any) -> Any:
    """Python lists (at any depth) as the language's lists (tuples); other values as they are."""
    return tuple(as_value(x) for x in v) if isinstance(v, (list, tuple)) else v


def fmt(v: Value) -> str:
    """A value written back in .arch syntax (a Python list is written as the language's list)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "n" in r) else r + ".0"
    return str(v)


# ---------------------------------------------------------------- choice points


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


# ---------------------------------------------------------------- evaluator

Builtin = Callable[["Evaluator", list[Value], dict[str, Value], S.Call, str], Value]
_BUILTINS: dict[str, Builtin] = {}


def builtin(name: str):
    def deco(fn: Builtin) -> Builtin:
        _BUILTINS[name] = fn
        return fn
    return deco


def builtin_names() -> list[str]:
    return sorted(_BUILTINS)


def _num(v: Value, span: Span, what: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise EvalError(span, f"{what} needs a number, got {type_name(v)} {fmt(v)}")
    if isinstance(v, float) and not math.isfinite(v):  # int(inf), round(nan), ... would raise in Python
        raise EvalError(span, f"{what} needs a finite number, got {fmt(v)}")
    return v


def _int(v: Value, span: Span, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise EvalError(span, f"{what} needs an int, got {type_name(v)} {fmt(v)}")
    return v


def _list(v: Value, span: Span, what: str) -> tuple:
    if not isinstance(v, tuple):
        raise EvalError(span, f"{what} needs a list, got {type_name(v)} {fmt(v)}")
    return v


def _check_int(v: Value, span: Span) -> Value:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limits.MAX_INT:
        raise EvalError(span, "integer overflow (result is larger than 2^62)")
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        raise EvalError(span, f"arithmetic produced {v}")
    if isinstance(v, tuple) and len(v) > limits.MAX_LIST:
        raise EvalError(span, f"list of {len(v)} elements is longer than {limits.MAX_LIST}")
    if isinstance(v, tuple):
        elements, depth = _list_size(v)
        if elements > limits.MAX_LIST:
            raise EvalError(span, f"nested list of {elements} elements in all is longer than {limits.MAX_LIST}")
        if depth > limits.MAX_EXPR_DEPTH:
            raise EvalError(span, f"list nesting is deeper than {limits.MAX_EXPR_DEPTH} levels")
    if isinstance(v, str) and len(v) > limits.MAX_LIST:
        raise EvalError(span, f"string of {len(v)} characters is longer than {limits.MAX_LIST}")
    return v


def _list_size(v: tuple) -> tuple[int, int]:
    """(elements counted as printed, nesting depth) of a list value. Sub-lists shared through `let` count each
    time they appear (`[x, x]` nested 40 deep is 2^40 elements to print or compare), so this walks each distinct
    sub-list once, without recursion."""
    memo: dict[int, tuple[int, int]] = {}
    stack = [(v, False)]
    while stack:
        t, ready = stack.pop()
        if id(t) in memo:
            continue
        subs = [x for x in t if isinstance(x, tuple)]
        if not ready:
            stack.append((t, True))
            stack.extend((x, False) for x in subs if id(x) not in memo)
            continue
        sizes = [memo[id(x)] for x in subs]
        memo[id(t)] = (len(t) + sum(n for n, _ in sizes), 1 + max((d for _, d in sizes), default=0))
    return memo[id(v)]


class Evaluator:
    def __init__(self, choices: ChoiceTable):
        self.choices = choices
        self._hint_count: dict[str, int] = {}

    def eval(self, e: S.Expr, env: ChainMap, hint: str = "") -> Value:
        """Evaluate `e`; `hint` names any choice point met inside it (e.g. 'stages.2.blocks.5.k')."""
        m = getattr(self, "_" + type(e).__name__)
        return m(e, env, hint)

    def _Num(self, e, env, hint):
        return e.value

    def _Str(self, e, env, hint):
        return e.value

    def _Const(self, e, env, hint):
        return e.value

    def _Var(self, e, env, hint):
        if e.name in env:
            return env[e.name]
        python = {"True": "true", "False": "false", "None": "none"}.get(e.name)
        raise EvalError(e.span, f"undefined name '{e.name}'{did_you_mean(e.name, env.keys())}",
                        f"archdsl writes it `{python}` (lower case)" if python else None)

    def _ListExpr(self, e, env, hint):
        return _check_int(tuple(self.eval(x, env, hint) for x in e.items), e.span)

    def _ListComp(self, e, env, hint):
        items = self.eval(e.iterable, env, hint)
        if not isinstance(items, tuple):
            raise EvalError(e.iterable.span, f"a list comprehension needs a list, got {type_name(items)} {fmt(items)}")
        out = []
        base = env if isinstance(env, ChainMap) else ChainMap(env)
        for item in items:
            inner = base.new_child()
            if len(e.names) == 1:
                inner[e.names[0]] = item
            elif not isinstance(item, tuple) or len(item) != len(e.names):
                raise EvalError(e.iterable.span, f"cannot unpack {fmt(item)} into {len(e.names)} names")
            else:
                inner.update(zip(e.names, item))
            if e.test is not None and not _truthy(self.eval(e.test, inner, hint), e.test.span):
                continue
            out.append(self.eval(e.item, inner, hint))
            if len(out) > limits.MAX_LIST:
                raise EvalError(e.span, f"list of more than {limits.MAX_LIST} elements")
        return _check_int(tuple(out), e.span)

    def _Index(self, e, env, hint):
        obj = self.eval(e.obj, env, hint)
        idx = self.eval(e.index, env, hint)
        if not isinstance(obj, (tuple, str)):
            raise EvalError(e.obj.span, f"cannot index a {type_name(obj)} ({fmt(obj)})")
        i = _int(idx, e.index.span, "an index")
        if not -len(obj) <= i < len(obj):
            what = "string" if isinstance(obj, str) else "list"
            valid = f"0 to {len(obj) - 1} (or -{len(obj)} to -1)" if obj else "none: it is empty"
            raise EvalError(e.index.span, f"index {i} is out of range for a {what} of length {len(obj)}",
                            f"valid indices are {valid}")
        return obj[i]

    def _Slice(self, e, env, hint):
        obj = self.eval(e.obj, env, hint)
        if not isinstance(obj, (tuple, str)):
            raise EvalError(e.obj.span, f"cannot slice a {type_name(obj)} ({fmt(obj)})")
        lo = None if e.lo is None else _int(self.eval(e.lo, env, hint), e.lo.span, "a slice bound")
        hi = None if e.hi is None else _int(self.eval(e.hi, env, hint), e.hi.span, "a slice bound")
        return obj[lo:hi]

    def _Unary(self, e, env, hint):
        v = self.eval(e.operand, env, hint)
        if e.op == "not":
            return not _truthy(v, e.operand.span)
        n = _num(v, e.operand.span, f"unary '{e.op}'")
        return -n if e.op == "-" else n

    def _Cond(self, e, env, hint):
        if _truthy(self.eval(e.test, env, hint), e.test.span):
            return self.eval(e.then, env, hint)
        return self.eval(e.other, env, hint)

    def _BinOp(self, e, env, hint):
        if e.op in ("and", "or"):
            left = _truthy(self.eval(e.left, env, hint), e.left.span)
            if (e.op == "and") != left:
                return left
            return _truthy(self.eval(e.right, env, hint), e.right.span)
        a = self.eval(e.left, env, hint)
        b = self.eval(e.right, env, hint)
        return _check_int(_binop(e.op, a, b, e), e.span)

    def _Call(self, e, env, hint):
        fn = _BUILTINS.get(e.name)
        if fn is None:
            raise EvalError(e.name_span, f"unknown function '{e.name}'{did_you_mean(e.name, _BUILTINS)}",
                            "ops and blocks are layers: call them as statements, not inside expressions")
        args, kwargs = [], {}
        for a in e.args:
            v = self.eval(a.value, env, hint)
            if a.name is None:
                if kwargs:
                    raise EvalError(a.span, "positional argument after a keyword argument")
                args.append(v)
            else:
                if a.name in kwargs:
                    raise EvalError(a.span, f"argument '{a.name}' given twice")
                kwargs[a.name] = v
        return _check_int(fn(self, args, kwargs, e, hint), e.span)

    def choice_name(self, explicit: Value, hint: str, span: Span) -> str:
        if explicit is not None:
            if not isinstance(explicit, str) or not explicit:
                raise EvalError(span, "choice name= must be a non-empty string")
            return explicit
        base = hint or f"choice@{span.line}:{span.col}"
        prev = self.choices.points.get(base)
        if prev is None or prev.span == span:
            return base
        n = 2
        while f"{base}#{n}" in self.choices.points and self.choices.points[f"{base}#{n}"].span != span:
            n += 1
        return f"{base}#{n}"


def _truthy(v: Value, span: Span) -> bool:
    if isinstance(v, bool):
        return v
    raise EvalError(span, f"condition must be true or false, got {type_name(v)} {fmt(v)}")


def values_equal(a: Value, b: Value) -> bool:
    """Equality of .arch values: ints and floats compare by value, other types must match (true != 1)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    numeric = {type_name(a), type_name(b)} <= {"int", "float"}
    return a == b and (type_name(a) == type_name(b) or numeric)


def _binop(op: str, a: Value, b: Value, e: S.BinOp) -> Value:
    if op in ("==", "!="):
        eq = values_equal(a, b)
        return eq if op == "==" else not eq
    if op == "+" and isinstance(a, tuple) and isinstance(b, tuple):
        return a + b
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if op == "*" and isinstance(a, tuple) and isinstance(b, int) and not isinstance(b, bool):
        if len(a) * max(b, 0) > limits.MAX_LIST:
            raise EvalError(e.span, f"list of {len(a) * b} elements is longer than {limits.MAX_LIST}")
        return a * b
    x = _num(a, e.left.span, f"'{op}'")
    y = _num(b, e.right.span, f"'{op}'")
    if op in ("<", "<=", ">", ">="):
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    if op in ("/", "//", "%") and y == 0:
        raise EvalError(e.right.span, "division by zero")
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        return x / y
    if op == "//":
        return x // y
    if op == "%":
        return x % y
    if op == "**":
        if isinstance(x, int) and isinstance(y, int):
            if y < 0:
                x = float(x)  # a float result; 0 ** -1 raises ZeroDivisionError inside the try below
            if abs(x) > 1 and y * math.log2(abs(x)) > 62:
                raise EvalError(e.span, "integer overflow (result is larger than 2^62)")
        try:
            r = x**y
        except (OverflowError, ZeroDivisionError) as err:
            raise EvalError(e.span, f"arithmetic error: {err}") from None
        if isinstance(r, complex):
            raise EvalError(e.span, "fractional power of a negative number")
        return r
    raise EvalError(e.span, f"unknown operator {op}")


# ---------------------------------------------------------------- builtins


def _arity(args, kwargs, call: S.Call, lo: int, hi: int, kw: tuple[str, ...] = ()):
    if not lo <= len(args) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise EvalError(call.span, f"{call.name}() takes {want} positional arguments, got {len(args)}")
    for k in kwargs:
        if k not in kw:
            raise EvalError(call.span, f"{call.name}() has no argument '{k}'{did_you_mean(k, kw)}")


def _numbers(args, call, what):
    seq = args[0] if len(args) == 1 and isinstance(args[0], tuple) else args
    if not seq:
        raise EvalError(call.span, f"{what}() of an empty list")
    return [_num(v, call.span, f"{what}()") for v in seq]


@builtin("min")
def _min(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 10**6)
    return min(_numbers(args, call, "min"))


@builtin("max")
def _max(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 10**6)
    return max(_numbers(args, call, "max"))


@builtin("sum")
def _sum(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return sum(_num(v, call.span, "sum()") for v in _list(args[0], call.span, "sum()"))


@builtin("len")
def _len(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    if not isinstance(args[0], (tuple, str)):
        raise EvalError(call.span, f"len() needs a list, got {type_name(args[0])}")
    return len(args[0])


@builtin("abs")
def _abs(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return abs(_num(args[0], call.span, "abs()"))


@builtin("int")
def _toint(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return int(_num(args[0], call.span, "int()"))


@builtin("float")
def _tofloat(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return float(_num(args[0], call.span, "float()"))


@builtin("round")
def _round(ev, args, kwargs, call, hint):
    """round(x) to the nearest int (halves to even, as in Python)."""
    _arity(args, kwargs, call, 1, 1)
    return round(_num(args[0], call.span, "round()"))


@builtin("ceil")
def _ceil(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return math.ceil(_num(args[0], call.span, "ceil()"))


@builtin("floor")
def _floor(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return math.floor(_num(args[0], call.span, "floor()"))


@builtin("sqrt")
def _sqrt(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    x = _num(args[0], call.span, "sqrt()")
    if x < 0:
        raise EvalError(call.span, "sqrt() of a negative number")
    return math.sqrt(x)


@builtin("log2")
def _log2(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    x = _num(args[0], call.span, "log2()")
    if x <= 0:
        raise EvalError(call.span, "log2() of a non-positive number")
    return math.log2(x)


@builtin("round_to")
def _round_to(ev, args, kwargs, call, hint):
    """round_to(x, m): the multiple of m nearest to x (at least m)."""
    _arity(args, kwargs, call, 2, 2)
    x, m = _num(args[0], call.span, "round_to()"), _num(args[1], call.span, "round_to()")
    if m <= 0:
        raise EvalError(call.span, "round_to() needs a positive multiple")
    q = x / m
    if not math.isfinite(q):
        raise EvalError(call.span, f"round_to({fmt(x)}, {fmt(m)}) is too large")
    r = max(1, round(q)) * m
    return int(r) if isinstance(m, int) else r


@builtin("make_divisible")
def _make_divisible(ev, args, kwargs, call, hint):
    """make_divisible(v, divisor=8, min_value=divisor): MobileNet/timm channel rounding."""
    _arity(args, kwargs, call, 1, 3, ("divisor", "min_value"))
    v = _num(args[0], call.span, "make_divisible()")
    divisor = _int(kwargs.get("divisor", args[1] if len(args) > 1 else 8), call.span, "make_divisible() divisor")
    if divisor <= 0:
        raise EvalError(call.span, "make_divisible() needs a positive divisor")
    min_value = kwargs.get("min_value", args[2] if len(args) > 2 else None)
    min_value = divisor if min_value is None else _int(min_value, call.span, "make_divisible() min_value")
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@builtin("range")
def _range(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 3)
    ints = [_int(a, call.span, "range()") for a in args]
    if len(ints) == 3 and ints[2] == 0:  # (checked first: range() itself raises ValueError)
        raise EvalError(call.span, "range() step must not be zero")
    r = range(*ints) if len(ints) > 1 else range(ints[0])
    n = (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step  # len(r) fails past 2^63
    if n > limits.MAX_LIST:
        raise EvalError(call.span, f"range of {n} elements is longer than {limits.MAX_LIST}")
    return tuple(r)


@builtin("enumerate")
def _enumerate(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 1)
    return tuple((i, x) for i, x in enumerate(_list(args[0], call.span, "enumerate()")))


@builtin("zip")
def _zip(ev, args, kwargs, call, hint):
    _arity(args, kwargs, call, 1, 16)
    lists = [_list(a, call.span, "zip()") for a in args]
    return tuple(tuple(t) for t in zip(*lists))


@builtin("linspace")
def _linspace(ev, args, kwargs, call, hint):
    """linspace(a, b, n): n evenly spaced floats from a to b (drop-path schedules)."""
    _arity(args, kwargs, call, 3, 3)
    a, b = _num(args[0], call.span, "linspace()"), _num(args[1], call.span, "linspace()")
    n = _int(args[2], call.span, "linspace()")
    if not 0 <= n <= limits.MAX_LIST:
        raise EvalError(call.span, f"linspace() count must be in 0..{limits.MAX_LIST}")
    if n == 1:
        return (float(a),)
    out = tuple(float(a + (b - a) * i / (n - 1)) for i in range(n))
    if not all(math.isfinite(x) for x in out):
        raise EvalError(call.span, f"linspace({fmt(a)}, {fmt(b)}, {n}) overflows")
    return out


@builtin("choice")
def _choice(ev, args, kwargs, call, hint):
    """choice(v1, v2, ..., default=none, name=none): a search dimension over the listed values."""
    _arity(args, kwargs, call, 1, 10**4, ("default", "name"))
    if any(isinstance(a, tuple) and any(isinstance(x, tuple) for x in a) for a in args):
        raise EvalError(call.span, "choice() values may be numbers, strings, booleans or flat lists")
    name = ev.choice_name(kwargs.get("name"), hint, call.span)
    cp = ChoicePoint(name, "choice", call.span, values=tuple(args), default=kwargs.get("default"))
    if cp.default is not None and not cp.contains(cp.default):
        raise EvalError(call.span, f"default {fmt(cp.default)} is not one of the choices")
    if len(set(map(fmt, args))) != len(args):
        raise EvalError(call.span, "choice() lists a value twice")
    return ev.choices.resolve(cp)


@builtin("int_range")
def _int_range(ev, args, kwargs, call, hint):
    """int_range(lo, hi, step=1, default=none, name=none): integers lo, lo+step, ..., <= hi."""
    _arity(args, kwargs, call, 2, 3, ("step", "default", "name"))
    lo, hi = _int(args[0], call.span, "int_range()"), _int(args[1], call.span, "int_range()")
    step = _int(kwargs.get("step", args[2] if len(args) > 2 else 1), call.span, "int_range() step")
    if step <= 0 or hi < lo:
        raise EvalError(call.span, f"int_range({lo}, {hi}, step={step}) is empty", "need lo <= hi and step > 0")
    name = ev.choice_name(kwargs.get("name"), hint, call.span)
    cp = ChoicePoint(name, "int_range", call.span, lo=lo, hi=hi, step=step, default=kwargs.get("default"))
    if cp.default is not None and not cp.contains(cp.default):
        raise EvalError(call.span, f"default {fmt(cp.default)} is outside the range")
    return ev.choices.resolve(cp)


@builtin("float_range")
def _float_range(ev, args, kwargs, call, hint):
    """float_range(lo, hi, log=false, default=none, name=none): a continuous dimension."""
    _arity(args, kwargs, call, 2, 2, ("log", "default", "name"))
    lo, hi = _num(args[0], call.span, "float_range()"), _num(args[1], call.span, "float_range()")
    log = kwargs.get("log", False)
    if not isinstance(log, bool):
        raise EvalError(call.span, "float_range() log= must be true or false")
    if hi < lo or (log and lo <= 0):
        raise EvalError(call.span, f"float_range({lo}, {hi}) is empty" if hi < lo else "log range needs lo > 0")
    name = ev.choice_name(kwargs.get("name"), hint, call.span)
    d = kwargs.get("default")
    cp = ChoicePoint(name, "float_range", call.span, lo=float(lo), hi=float(hi), log=log,
                     default=None if d is None else float(_num(d, call.span, "default")))
    if cp.default is not None and not cp.contains(cp.default):
        raise EvalError(call.span, f"default {fmt(cp.default)} is outside the range")
    return ev.choices.resolve(cp)


CHOICE_FUNCTIONS = ("choice", "int_range", "float_range")
