"""Linear family: linear (a fully connected layer over channels; in channels-first it is a 1x1 conv) and
classifier (global average pool, dropout, linear). The layer classes are in linear_nn.py.

Cost: params = in*out (+ out for bias); MACs = in*out*H*W.
"""

from __future__ import annotations

from ..shapes import Cost, Shape
from .registry import Op, OpError, OpParams, positive, register

S = Shape  # short name for the test samples below


@register
class Linear(Op):
    """Fully connected layer over the channel dimension: linear(out, bias=true). Any layout; weights are
    stored as nn.Linear's (out, in)."""

    name = "linear"
    samples = [({"out": 10}, [S(8, 5, 5)]), ({"out": 10, "bias": False}, [S(8, 5, 5, "nhwc")]),
               ({"out": 10}, [S.vector(8)])]
    family = "linear"
    conv_view = True  # a 1x1 convolution over channels

    class Params(OpParams):
        out: int
        bias: bool = True

    def infer(self, p, ins):
        positive(p, "out")
        s = ins[0]
        return Shape(p.out, s.h, s.w, s.layout)

    def cost(self, p, ins, out):
        s = ins[0]
        hw = (s.h or 1) * (s.w or 1)
        return Cost(params=s.c * p.out + (p.out if p.bias else 0), macs=s.c * p.out * hw)

    def build(self, p, ins):
        from . import linear_nn as L

        return L.Linear(ins[0].c, p.out, p.bias, ins[0].layout)


@register
class Classifier(Op):
    """Classifier head: classifier(classes=1000, drop=0.0). Global average pool (if the input is spatial),
    dropout, linear."""

    name = "classifier"
    samples = [({"classes": 10}, [S(8, 3, 3)]), ({"classes": 5, "drop": 0.2}, [S.vector(8)])]
    family = "linear"
    layouts = ("nchw", "nc")

    class Params(OpParams):
        classes: int = 1000
        drop: float = 0.0

    def infer(self, p, ins):
        positive(p, "classes")
        if not 0.0 <= p.drop < 1.0:
            raise OpError(f"drop must be in [0, 1), got {p.drop}", arg="drop")
        return Shape.vector(p.classes)

    def cost(self, p, ins, out):
        c = ins[0].c
        return Cost(params=c * p.classes + p.classes, macs=c * p.classes)

    def build(self, p, ins):
        from . import linear_nn as L

        return L.Classifier(ins[0].c, p.classes, p.drop, not ins[0].spatial)
