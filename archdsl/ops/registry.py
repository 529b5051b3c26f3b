"""The operator registry: every op is defined once, with everything about it.

An op is a subclass of `Op` decorated with `@register`. It declares its typed parameters (a pydantic
model `Params`, whose field order is the positional-argument order), its shape rule (`infer`), its
exact cost (`cost`), how it builds in PyTorch (`build`), and optionally how it re-parameterizes.
A duplicate name raises; an unknown name gets "did you mean".
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from ..shapes import Cost, Shape


class OpParams(BaseModel):
    """Base of every op's parameter model: strict types, no unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(OpParams):
    pass


class OpError(Exception):
    """Raised by an op's shape rule or validation; `arg` names the argument at fault (for the caret)."""

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None):
        super().__init__(message)
        self.message, self.hint, self.arg = message, hint, arg


class Op:
    """Base class. Subclasses set `name`, `family`, `Params` and implement `infer`, `cost`, `build`."""

    name: ClassVar[str]
    family: ClassVar[str] = "misc"
    Params: ClassVar[type[OpParams]] = NoParams
    arity: ClassVar[int | None] = 1  # number of inputs; None: two or more
    outputs: ClassVar[int] = 1  # >1 only for split-like ops, whose output count comes from params
    user: ClassVar[bool] = True  # callable by name from a spec (internal ops are made by forms)
    is_view: ClassVar[bool] = False  # output shares memory with the input (no activation cost)
    layouts: ClassVar[tuple[str, ...]] = ("nchw", "nhwc", "nc")  # input layouts accepted
    # Test cases (params, input shapes): the registry tests run every op on each of them.
    samples: ClassVar[list[tuple[dict, list[Shape]]]] = [({}, [Shape(8, 9, 9)])]
    # What the deploy passes need to know (passes/deploy.py):
    training_only: ClassVar[bool] = False  # identity at inference: the deploy form drops it (dropout, drop_path)
    conv_view: ClassVar[bool] = False  # its weights are a convolution's (ops/convview.py): a BN folds into it,
    #                                    parallel ones merge, a layer scale scales it
    # reparam(self, p, ins, weights) -> (op name, params, new weights or None): the op's own exact deploy form as
    # one plain op (docs/adding_an_op.md, section 6). None: it has none.
    reparam: ClassVar[Callable[..., tuple[str, dict, dict | None]] | None] = None

    def infer(self, p: Any, ins: list[Shape]) -> Shape | tuple[Shape, ...]:
        raise NotImplementedError

    def cost(self, p: Any, ins: list[Shape], out: Shape) -> Cost:
        """Parameters and MACs; activations default to the output's element count (0 for views)."""
        return Cost()

    def build(self, p: Any, ins: list[Shape]):
        """A torch.nn.Module computing this op on batched tensors of shapes `ins`."""
        raise NotImplementedError(f"op {self.name} has no PyTorch build")

    def n_outputs(self, p: Any) -> int:
        return self.outputs

    def shared(self, p: Any, ins: list[Shape]) -> dict[str, tuple[str, tuple[int, ...], str]]:
        """The op's tensors tied to other nodes' (one tensor, trained once): attribute name of the built module ->
        (the tie's key, the tensor's shape, the parameter that names the tie). Nodes with the same key share the
        first one's tensor; the checker counts its parameters once, at that first node, and refuses a key whose
        shapes differ, at that parameter. None by default."""
        return {}

    def source(self, p: Any, ins: list[Shape], args: list[str]) -> str | None:
        """The op as a Python expression of `args` (the names of its inputs) in the standalone source `archdsl
        compile` writes: a parameter-free op is written inline in forward(). None (the default): it is written
        as a call of the module `build` returns."""
        return None

    @classmethod
    def doc(cls) -> str:
        return (cls.__doc__ or "").strip()


_REGISTRY: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    if cls.name in _REGISTRY:
        first = _REGISTRY[cls.name].__class__.__name__
        raise ValueError(f"op {cls.name!r} is registered twice ({first}, {cls.__name__})")
    _REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Op | None:
    _load_all()
    return _REGISTRY.get(name)


def all_ops() -> dict[str, Op]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def user_op_names() -> list[str]:
    return [n for n, op in all_ops().items() if op.user]


_LOADED = False


NOT_FAMILIES = ("registry", "convview")  # modules of archdsl/ops/ that register no op (convview imports torch)
TORCH_HALF = "_nn"  # <family>_nn.py: a family's torch half (its layer classes), imported only when building


def family_modules() -> list[str]:
    """The op family modules: every module of the archdsl.ops package but NOT_FAMILIES, the families' torch
    halves (names ending in "_nn") and names starting with "_", in name order. Adding a family is adding its
    file (and its torch half, when its ops build layer classes of their own)."""
    import pkgutil
    import sys

    ops = sys.modules[__package__]  # archdsl.ops, imported before this module
    return sorted(m.name for m in pkgutil.iter_modules(ops.__path__)
                  if not m.ispkg and m.name not in NOT_FAMILIES and not m.name.startswith("_")
                  and not m.name.endswith(TORCH_HALF))


def _load_all() -> None:
    """Import every op family module once (each registers its ops on import)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for name in family_modules():
        importlib.import_module(f"{__package__}.{name}")


# ---- helpers used by op definitions

# parameter names whose domain is the same in every op: eps (a norm's epsilon) > 0, momentum in [0, 1],
# probabilities in [0, 1)
_POSITIVE, _UNIT, _PROBABILITY = ("eps",), ("momentum",), ("p", "drop")


def check_finite(p: Any) -> None:
    """Refuse (OpError naming the argument) a float parameter that is NaN or infinite."""
    for name in type(p).model_fields:
        v = getattr(p, name)
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, float) and not math.isfinite(x):
                raise OpError(f"{name} must be a finite number, got {x}", arg=name)


def check_domain(p: Any) -> None:
    """Refuse (OpError naming the argument) a value out of its domain for the parameters every op names alike
    (_POSITIVE, _UNIT, _PROBABILITY). Also refuses what check_finite does."""
    check_finite(p)
    for name in type(p).model_fields:
        v = getattr(p, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if name in _POSITIVE and not v > 0:
            raise OpError(f"{name} must be positive, got {v}", "a norm's eps is a small positive number, e.g. "
                          "1e-5 or 1e-6", arg=name)
        if name in _UNIT and not 0 <= v <= 1:
            raise OpError(f"{name} must be in [0, 1], got {v}", arg=name)
        if name in _PROBABILITY and not 0 <= v < 1:
            raise OpError(f"{name} is a probability in [0, 1), got {v}", arg=name)


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise OpError(f"expected one integer or two, got {len(v)}")
    return (v[0], v[1])


def require_spatial(op: str, s: Shape) -> None:
    if not s.spatial:
        raise OpError(f"{op} needs a spatial input (C x H x W) but got a feature vector of size {s.c}",
                      "remove the global pooling / flatten before it")
    if s.layout != "nchw":
        raise OpError(f"{op} needs a channels-first (nchw) input but got channels-last ({s})",
                      "insert nchw() before it")


def positive(p: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(p, f)
        vals = v if isinstance(v, tuple) else (v,)
        if any(x is not None and x <= 0 for x in vals):
            raise OpError(f"{f} must be positive, got {v}", arg=f)


def odd(p: Any, field: str) -> int:
    """The field's value, which must be odd and positive (a kernel size with a centre)."""
    v = getattr(p, field)
    if v <= 0 or v % 2 == 0:
        raise OpError(f"{field} must be odd and positive, got {v}", arg=field)
    return v


Int2 = int | tuple[int, int]


def conv_geometry(op: str, s: Shape, k: Int2, stride: Int2, pad: Int2 | None,
                  d: Int2) -> tuple[int, int, tuple[int, int]]:
    """Output (H, W) and the padding actually used; raises OpError for impossible configurations."""
    require_spatial(op, s)
    (kh, kw), (sh, sw), (dh, dw) = pair(k), pair(stride), pair(d)
    if pad is None:
        if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            raise OpError(f"kernel {kh}x{kw} has no 'same' padding (even size)",
                          "use an odd kernel, or give the padding explicitly (pad=0 for a patchify conv)", arg="k")
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    else:
        ph, pw = pair(pad)
        if ph < 0 or pw < 0:
            raise OpError(f"padding must be >= 0, got {pad}", arg="pad")
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if s.h + 2 * ph < eh or s.w + 2 * pw < ew:
        raise OpError(f"kernel {eh}x{ew} (after dilation) is larger than the padded input "
                      f"{s.h + 2 * ph}x{s.w + 2 * pw}", "use a smaller kernel or a larger input", arg="k")
    return (s.h + 2 * ph - eh) // sh + 1, (s.w + 2 * pw - ew) // sw + 1, (ph, pw)
