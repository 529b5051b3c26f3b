"""Stage 2 (elaboration): what every part of the Elaborator shares: the frame of a body being run, the
control-flow exceptions, the form / merge / type names, and small helpers over values and the AST (type
conformance, integer mapping, `fix` values).
"""

from __future__ import annotations

import math
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

from .. import limits
from .. import syntax as S
from ..errors import Span
from ..interp import ChoiceTable, Evaluator, type_name

FORMS = ("seq", "residual", "parallel", "split")
MERGES = ("add", "concat", "mul")
TYPES = ("int", "float", "bool", "str", "list", "any")
# PyTorch-style keyword names people write out of habit -> archdsl's names (for "did you mean").
_PARAM_ALIASES = {"kernel": "k", "kernel_size": "k", "stride": "s", "padding": "pad", "dilation": "d",
                  "out_channels": "out", "out_features": "out", "channels": "out", "group": "groups"}


class _Abort(Exception):
    """Stops elaboration of the current statement after its error was recorded."""


class _Stop(Exception):
    """Stops the whole elaboration after a resource limit was hit and recorded. Unlike _Abort it is not caught
    per statement: carrying on after the limit can take exponential time (a block that calls itself twice)."""


@dataclass(frozen=True)
class Frame:
    env: ChainMap
    file: str  # module whose definitions are visible
    notes: tuple[str, ...]  # call chain, innermost last
    depth: int
    model_top: bool = False


def _arg_span(call: S.Call, name: str) -> Span:
    """The span of keyword argument `name` of `call` (for carets on a form's arguments), else the call's name."""
    return next((a.span for a in call.args if a.name == name), call.name_span)


def _has_choice(e) -> bool:
    """Whether an expression calls choice / int_range / float_range anywhere."""
    import dataclasses

    from ..interp import CHOICE_FUNCTIONS

    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, S.Call) and x.name in CHOICE_FUNCTIONS:
            return True
        if dataclasses.is_dataclass(x):
            for f in dataclasses.fields(x):
                v = getattr(x, f.name)
                stack.extend(v if isinstance(v, tuple) else [v])
    return False


# Attribute names of torch.nn.Module: a layer so named could not become a submodule.
RESERVED_NAMES = frozenset(
    "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double "
    "dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half "
    "ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters parameters "
    "register_backward_hook register_buffer register_forward_hook register_forward_pre_hook "
    "register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook "
    "register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook "
    "register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to "
    "to_empty train type xpu zero_grad training".split())


class _ErrType:
    def __repr__(self) -> str:
        return "<error>"


_ERR = _ErrType()


def _notes(chain: tuple[str, ...]) -> tuple[str, ...]:
    """The call chain, innermost first, shortened for deep recursion."""
    notes = tuple(reversed(chain))
    if len(notes) > 6:
        notes = notes[:3] + (f"... {len(notes) - 5} more calls ...",) + notes[-2:]
    return notes


def _conforms_type(t: S.TypeRef, v: Any) -> tuple[bool, Any]:
    """Whether v has type t (list[...] checked element by element); ints widen to float where declared."""
    ok, v = _conforms(t.name, v)
    if ok and t.arg is not None:
        items = [_conforms_type(t.arg, x) for x in v]
        ok = all(i[0] for i in items)
        v = tuple(i[1] for i in items) if ok else v
    return ok, v


def _conforms(t: str, v: Any) -> tuple[bool, Any]:
    if t == "any":
        return True, v
    if t == "float" and isinstance(v, int) and not isinstance(v, bool):
        return True, float(v)
    if t == "float" and isinstance(v, float):
        return not (math.isnan(v) or math.isinf(v)), v
    return type_name(v) == t, v


def _uses_error(e: S.Expr, env) -> bool:
    """Whether expression `e` reads a name bound to the error marker (a `let` whose value failed)."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, S.Var):
            if env.get(x.name) is _ERR:
                return True
        elif isinstance(x, (S.ListExpr, S.Index, S.Slice, S.BinOp, S.Unary, S.Cond, S.Call, S.Arg)):
            for v in vars(x).values():
                if isinstance(v, tuple):
                    stack.extend(v)
                elif v is not None and not isinstance(v, (str, Span)):
                    stack.append(v)
    return False


def _bounded(x: int) -> int:
    """A scaled integer, or OverflowError past the interpreter's integer limit."""
    if abs(x) > limits.MAX_INT:
        raise OverflowError
    return x


def _map_ints(v: Any, fn):
    if isinstance(v, bool):
        raise TypeError
    if isinstance(v, int):
        return fn(v)
    if isinstance(v, tuple):
        return tuple(_map_ints(x, fn) for x in v)
    raise TypeError


def fix_value(f: S.Fix) -> Any:
    """The value of a `fix` line. Its grammar allows literals only, so no name can be read and no choice made;
    evaluating it can fail only on a resource limit (a list too long). Raises EvalError."""
    return Evaluator(ChoiceTable()).eval(f.value, ChainMap(), f.name)
