"""Stage 2 (the expression interpreter's base): the language's values as Python values, how they read, and the
error evaluation raises.

Takes: Python values (int, float, bool, str, None, tuples for the language's lists). Returns: their type names
and printed forms (`type_name`, `fmt`), conversions (`as_value`), checked accessors for builtins (`_num`, `_int`,
`_list`, `_check_int`, `_list_size`), and `EvalError`, positioned at the expression that failed.
"""

from __future__ import annotations

import math
from typing import Any

from . import limits
from .errors import Span

Value = Any  # int | float | bool | str | None | tuple[Value, ...]


class EvalError(Exception):
    """A mistake in an expression; the builder turns it into a positioned diagnostic."""

    def __init__(self, span: Span, message: str, hint: str | None = None):
        super().__init__(message)
        self.span, self.message, self.hint = span, message, hint


class WorkExceeded(EvalError):
    """The elaboration's budget of values built (limits.MAX_WORK) is spent: the whole elaboration stops."""


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
