"""Linear family: linear (a fully connected layer over channels; in channels-first it is a 1x1 conv).

Cost: params = in*out (+ out for bias); MACs = in*out*H*W.
"""

from __future__ import annotations

from ..shapes import Cost, Shape
from .registry import Op, OpParams, positive, register

S = Shape  # short name for the test samples below


@register
class Linear(Op):
    """Fully connected layer over the channel dimension: linear(out, bias=true). Any layout; weights are
    stored as nn.Linear's (out, in)."""

    name = "linear"
    samples = [({"out": 10}, [S(8, 5, 5)]), ({"out": 10, "bias": False}, [S(8, 5, 5, "nhwc")]),
               ({"out": 10}, [S.vector(8)])]
    family = "linear"

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
        from ..codegen import layers as L

        return L.Linear(ins[0].c, p.out, p.bias, ins[0].layout)
