"""Activation family: relu, relu6, gelu, silu, hardswish, hardsigmoid, sigmoid, tanh, leaky_relu.

Elementwise, any layout, shape unchanged, no parameters, no MACs counted.
"""

from __future__ import annotations

from typing import Literal

from ..shapes import Shape as _Shape
from .registry import NoParams, Op, OpParams, register

S = _Shape  # short name for the test samples below


class _Activation(Op):
    family = "activation"

    def infer(self, p, ins):
        return ins[0]

    def build(self, p, ins):
        from torch import nn

        return getattr(nn, self.torch_name)(**self.torch_kwargs(p))

    def torch_kwargs(self, p) -> dict:
        return {}

    def source(self, p, ins, args):
        return self.expr.format(args[0])


def _simple(op_name: str, torch_name: str, expr: str, doc: str) -> None:
    register(type(f"Act_{op_name}", (_Activation,), {"name": op_name, "torch_name": torch_name, "expr": expr,
                                                     "Params": NoParams, "__doc__": doc}))


_simple("relu", "ReLU", "torch.relu({0})", "max(x, 0).")
_simple("relu6", "ReLU6", "F.relu6({0})", "min(max(x, 0), 6) (MobileNetV2).")
_simple("silu", "SiLU", "F.silu({0})", "x * sigmoid(x), a.k.a. swish (EfficientNet).")
_simple("hardswish", "Hardswish", "F.hardswish({0})", "x * relu6(x + 3) / 6 (MobileNetV3).")
_simple("hardsigmoid", "Hardsigmoid", "F.hardsigmoid({0})", "relu6(x + 3) / 6 (MobileNetV3 SE gate).")
_simple("sigmoid", "Sigmoid", "torch.sigmoid({0})", "1 / (1 + exp(-x)).")
_simple("tanh", "Tanh", "torch.tanh({0})", "tanh(x).")


@register
class GELU(_Activation):
    """Gaussian error linear unit: gelu(approximate="none" | "tanh")."""

    name = "gelu"
    samples = [({}, [S(8, 5, 5)]), ({"approximate": "tanh"}, [S(8, 5, 5, "nhwc")])]
    torch_name = "GELU"

    class Params(OpParams):
        approximate: Literal["none", "tanh"] = "none"

    def torch_kwargs(self, p):
        return {"approximate": p.approximate}

    def source(self, p, ins, args):
        return f"F.gelu({args[0]})" if p.approximate == "none" else f"F.gelu({args[0]}, approximate={p.approximate!r})"


@register
class LeakyReLU(_Activation):
    """leaky_relu(slope=0.01)."""

    name = "leaky_relu"
    torch_name = "LeakyReLU"

    class Params(OpParams):
        slope: float = 0.01

    def torch_kwargs(self, p):
        return {"negative_slope": p.slope}

    def source(self, p, ins, args):
        return f"F.leaky_relu({args[0]}, {p.slope!r})"
