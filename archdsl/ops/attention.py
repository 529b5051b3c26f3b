"""Attention family: se (squeeze-and-excitation), eca (efficient channel attention), and spatial self-attention
with learned relative-position biases as LeViT / EfficientViT / LSNet use it (pos_attention)."""

from __future__ import annotations

import math
from typing import Literal

from ..shapes import Cost
from ..shapes import Shape as _Shape
from .registry import Op, OpError, OpParams, register, require_spatial

S = _Shape  # short name for the test samples below


@register
class SE(Op):
    """Squeeze-and-excitation: se(hidden=none, ratio=0.25, bias=true, act="relu", gate="sigmoid").
    hidden defaults to int(C * ratio). avg pool -> 1x1 conv C->hidden -> act -> 1x1 conv hidden->C -> gate -> x*."""

    name = "se"
    samples = [({}, [S(16, 5, 5)]), ({"hidden": 3, "act": "silu", "gate": "hardsigmoid", "bias": False}, [S(8, 5, 5)])]
    family = "attention"
    layouts = ("nchw",)

    class Params(OpParams):
        hidden: int | None = None
        ratio: float = 0.25
        bias: bool = True
        act: Literal["relu", "silu", "gelu", "relu6"] = "relu"
        gate: Literal["sigmoid", "hardsigmoid"] = "sigmoid"

    def hidden(self, p, c: int) -> int:
        if p.hidden is None and not math.isfinite(c * p.ratio):
            raise OpError(f"se ratio {p.ratio} is too large", arg="ratio")
        h = p.hidden if p.hidden is not None else int(c * p.ratio)
        if h <= 0:
            raise OpError(f"se hidden size is {h} for {c} channels", "raise ratio or give hidden=",
                          arg="hidden" if p.hidden is not None else "ratio")
        return h

    def infer(self, p, ins):
        require_spatial("se", ins[0])
        self.hidden(p, ins[0].c)
        return ins[0]

    def cost(self, p, ins, out):
        c = ins[0].c
        h = self.hidden(p, c)
        return Cost(params=2 * c * h + ((h + c) if p.bias else 0), macs=2 * c * h)

    def build(self, p, ins):
        from torch import nn

        from . import attention_nn as L

        acts = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "relu6": nn.ReLU6}
        gates = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}
        c = ins[0].c
        return L.SE(c, self.hidden(p, c), p.bias, acts[p.act](), gates[p.gate]())


def eca_kernel(c: int, gamma: float, b: float) -> int:
    t = int(abs(math.log2(c) + b) / gamma)
    return t if t % 2 else t + 1


@register
class ECA(Op):
    """Efficient channel attention: eca(k=none, gamma=2, b=1). k defaults to the adaptive odd size
    t = int(|log2(C) + b| / gamma) (made odd); avg pool -> 1-D conv over channels -> sigmoid -> x*."""

    name = "eca"
    samples = [({}, [S(64, 5, 5)]), ({"k": 5}, [S(8, 5, 5)])]
    family = "attention"
    layouts = ("nchw",)

    class Params(OpParams):
        k: int | None = None
        gamma: float = 2.0
        b: float = 1.0

    def kernel(self, p, c: int) -> int:
        if p.k is None and not (p.gamma > 0 and math.isfinite(abs(math.log2(c) + p.b) / p.gamma)):
            raise OpError(f"eca gamma={p.gamma}, b={p.b} give no kernel size", "use gamma > 0, or give k=",
                          arg="gamma")
        k = p.k if p.k is not None else eca_kernel(c, p.gamma, p.b)
        if k <= 0 or k % 2 == 0:
            raise OpError(f"eca kernel must be odd and positive, got {k}", arg="k")
        return k

    def infer(self, p, ins):
        require_spatial("eca", ins[0])
        self.kernel(p, ins[0].c)
        return ins[0]

    def cost(self, p, ins, out):
        k = self.kernel(p, ins[0].c)
        return Cost(params=k, macs=ins[0].c * k)

    def build(self, p, ins):
        from . import attention_nn as L

        return L.ECA(self.kernel(p, ins[0].c))


@register
class PosAttention(Op):
    """Multi-head self-attention over the H x W positions with a learned bias per head and relative offset
    (LeViT's attention as LSNet writes it): pos_attention(key_dim=16, heads=8, attn_ratio=4.0, q_dw=true).
    qkv: 1x1 conv (no bias) + BN to heads x (2 key_dim + d), d = int(attn_ratio x key_dim); with q_dw the queries
    pass a 3x3 depthwise conv + BN; softmax(q^T k / sqrt(key_dim) + bias[head, |dh|, |dw|]) applied to v; then
    ReLU and a 1x1 conv (no bias) + BN back to C. The biases are fixed to the input's size (H x W offsets)."""

    name = "pos_attention"
    samples = [({"key_dim": 4, "heads": 2, "attn_ratio": 2.0}, [S(8, 4, 4)]),
               ({"key_dim": 4, "heads": 3, "attn_ratio": 1.5, "q_dw": False}, [S(6, 3, 5)])]
    family = "attention"
    layouts = ("nchw",)

    class Params(OpParams):
        key_dim: int = 16
        heads: int = 8
        attn_ratio: float = 4.0
        q_dw: bool = True

    def dims(self, p) -> tuple[int, int]:
        """(heads x key_dim, heads x d): the query/key and the value channels."""
        for f in ("key_dim", "heads"):
            if getattr(p, f) < 1:
                raise OpError(f"{f} must be at least 1, got {getattr(p, f)}", arg=f)
        d = int(p.attn_ratio * p.key_dim)
        if not p.attn_ratio > 0 or d < 1:
            raise OpError(f"attn_ratio {p.attn_ratio} gives values of {d} channels", arg="attn_ratio")
        return p.heads * p.key_dim, p.heads * d

    def infer(self, p, ins):
        require_spatial("pos_attention", ins[0])
        self.dims(p)
        return ins[0]

    def cost(self, p, ins, out):
        s = ins[0]
        nk, dh = self.dims(p)
        n = s.h * s.w
        qkv = 2 * nk + dh
        params = s.c * qkv + 2 * qkv + (9 * nk + 2 * nk if p.q_dw else 0) + dh * s.c + 2 * s.c + p.heads * n
        macs = n * (s.c * qkv + (9 * nk if p.q_dw else 0) + dh * s.c) + n * n * (nk + dh)
        return Cost(params=params, macs=macs)

    def build(self, p, ins):
        from . import attention_nn as L

        s = ins[0]
        return L.PosAttention(s.c, p.key_dim, p.heads, int(p.attn_ratio * p.key_dim), s.h, s.w, p.q_dw)
