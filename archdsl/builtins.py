"""Stage 2: the builtin functions of .arch expressions (min, max, sum, len, range, linspace, make_divisible,
choice, int_range, float_range, ...), as a table name -> function.

Takes: the evaluator, evaluated positional and keyword arguments, the call's AST (for positions) and a hint.
Returns: a value. `BUILTINS` is the table, filled by the `@builtin(name)` decorator; `builtin_names()` lists it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from . import limits
from . import syntax as S
from .choices import ChoicePoint
from .errors import did_you_mean
from .values import EvalError, Value, _int, _list, _num, fmt, type_name

Builtin = Callable[[Any, list[Value], dict[str, Value], S.Call, str], Value]  # (evaluator, args, kwargs, call, hint)
BUILTINS: dict[str, Builtin] = {}


def builtin(name: str):
    def deco(fn: Builtin) -> Builtin:
        BUILTINS[name] = fn
        return fn
    return deco


def builtin_names() -> list[str]:
    return sorted(BUILTINS)


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


def _unary(name: str, fn: Callable[[int | float], int | float]) -> Builtin:
    """A builtin of one number: `name(x)` is fn(x)."""
    def run(ev, args, kwargs, call, hint):
        _arity(args, kwargs, call, 1, 1)
        return fn(_num(args[0], call.span, f"{name}()"))
    return run


# round halves to even, as in Python
for _name, _fn in {"abs": abs, "int": int, "float": float, "round": round, "ceil": math.ceil,
                   "floor": math.floor}.items():
    builtin(_name)(_unary(_name, _fn))


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
