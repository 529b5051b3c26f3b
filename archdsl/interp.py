"""The expression interpreter: evaluates .arch expressions over plain values. Never calls Python eval/exec.

Takes: AST expressions (`archdsl.syntax`) and an environment of bound names. Returns: values —
int, float, bool, str, None, or tuples (the language's lists). Search choice points (`choice`,
`int_range`, `float_range`) evaluate to a concrete value (an override or `fix`, the default, or the first
option) and are recorded in a `ChoiceTable` so the search can enumerate them.
"""

from __future__ import annotations

import math
from collections import ChainMap

from . import limits
from . import syntax as S
from .builtins import BUILTINS, CHOICE_FUNCTIONS, builtin, builtin_names  # noqa: F401 - re-exported
from .choices import ChoicePoint, ChoiceTable  # noqa: F401 - re-exported
from .errors import Span, did_you_mean
from .values import EvalError, Value, WorkExceeded, _check_int, _int, _list, _list_size, _num, as_value, fmt, type_name  # noqa: F401 - re-exported


class Evaluator:
    def __init__(self, choices: ChoiceTable):
        self.choices = choices
        self._hint_count: dict[str, int] = {}
        self.work = 0  # charged against limits.MAX_WORK (see charge)

    def eval(self, e: S.Expr, env: ChainMap, hint: str = "") -> Value:
        """Evaluate `e`; `hint` names any choice point met inside it (e.g. 'stages.2.blocks.5.k')."""
        m = getattr(self, "_" + type(e).__name__)
        v = m(e, env, hint)
        if type(e) in _BUILDS and isinstance(v, (tuple, str)):
            self.charge(len(v), e.span)
        return v

    def charge(self, n: int, span: Span) -> None:
        """Count `n` values built or compared against the elaboration's one budget (limits.MAX_WORK)."""
        self.work += n
        if self.work > limits.MAX_WORK:
            raise WorkExceeded(span, f"the spec's expressions build or compare more than {limits.MAX_WORK:,} values in "
                                  "all (list and string elements, comprehension steps)",
                            "no architecture needs that much computation in its spec: look for a comprehension "
                            "or a loop over long lists")

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
            self.charge(1, e.span)
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
        if e.op in ("==", "!=") and isinstance(a, tuple) and isinstance(b, tuple):
            self.charge(min(len(a), len(b)), e.span)
        return _check_int(_binop(e.op, a, b, e), e.span)

    def _Call(self, e, env, hint):
        fn = BUILTINS.get(e.name)
        if fn is None:
            raise EvalError(e.name_span, f"unknown function '{e.name}'{did_you_mean(e.name, BUILTINS)}",
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


_BUILDS = (S.ListExpr, S.ListComp, S.BinOp, S.Call, S.Slice)  # expressions whose list / string result is new


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
