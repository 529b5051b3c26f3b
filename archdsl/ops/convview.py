"""A uniform view of conv-like nodes (conv, dwconv, linear as a 1x1 conv): the weight algebra that the ops'
re-parameterizations and the deploy passes (stage 4) share. It imports torch: the checker never imports it.

Takes: a checked graph node and, optionally, its weights (the node module's state_dict tensors).
Returns: `ConvView` — geometry plus weight (O, I/groups, kh, kw) and bias — and turns a view back into a
node (op, params, weights). All weight algebra of BN folding and branch merging lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from . import registry
from .registry import conv_geometry, pair


def is_conv(op: str) -> bool:
    """The op's weights are a convolution's (`Op.conv_view`: conv, dwconv, linear): `view` reads them."""
    found = registry.get(op)
    return found is not None and found.conv_view


@dataclass(frozen=True)
class ConvView:
    op: str  # the op it came from (kept when turned back into a node)
    cin: int
    cout: int
    k: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dil: tuple[int, int]
    groups: int
    bias: bool
    weight: torch.Tensor | None = None  # (cout, cin // groups, kh, kw)
    b: torch.Tensor | None = None  # (cout,), zeros when bias is False

    @property
    def extent(self) -> tuple[int, int]:
        """Size of the kernel after dilation."""
        return (self.dil[0] * (self.k[0] - 1) + 1, self.dil[1] * (self.k[1] - 1) + 1)

    @property
    def centre_offset(self) -> tuple[float, float]:
        """Padding minus half the extent: branches merge only when this is equal (outputs align)."""
        e = self.extent
        return (self.pad[0] - (e[0] - 1) / 2, self.pad[1] - (e[1] - 1) / 2)


def view(node, in_shape, weights: dict | None) -> ConvView | None:
    """The ConvView of a conv / dwconv / linear node, or None for other ops."""
    p = node.params
    if node.op == "linear":
        w = b = None
        if weights is not None:
            w = weights["weight"][:, :, None, None]
            b = weights.get("bias")
        return ConvView("linear", in_shape.c, p.out, (1, 1), (1, 1), (0, 0), (1, 1), 1, p.bias, w,
                        _bias(b, p.out, w))
    if node.op not in ("conv", "dwconv"):
        return None
    if node.op == "conv":
        cout, groups = p.out, p.groups
    else:
        cout, groups = in_shape.c * p.mult, in_shape.c
    _, _, padding = conv_geometry(node.op, in_shape, p.k, p.s, p.pad, p.d)
    w = b = None
    if weights is not None:
        w, b = weights["weight"], weights.get("bias")
    return ConvView(node.op, in_shape.c, cout, pair(p.k), pair(p.s), padding, pair(p.d), groups, p.bias, w,
                    _bias(b, cout, w))


def _bias(b, cout, w):
    if w is None:
        return None
    return b if b is not None else w.new_zeros(cout)


def to_node(v: ConvView, in_shape) -> tuple[str, dict, dict | None]:
    """(op, raw params, weights) for a ConvView; a linear stays a linear when it is still 1x1."""
    weights = None
    if v.op == "linear" and v.k == (1, 1) and v.stride == (1, 1) and v.groups == 1 and v.pad == (0, 0):
        if v.weight is not None:
            weights = {"weight": v.weight[:, :, 0, 0].contiguous()}
            if v.bias:
                weights["bias"] = v.b
        return "linear", {"out": v.cout, "bias": v.bias}, weights
    if v.weight is not None:
        weights = {"weight": v.weight.contiguous()}
        if v.bias:
            weights["bias"] = v.b
    k = v.k[0] if v.k[0] == v.k[1] else v.k
    s = v.stride[0] if v.stride[0] == v.stride[1] else v.stride
    d = v.dil[0] if v.dil[0] == v.dil[1] else v.dil
    pad = v.pad[0] if v.pad[0] == v.pad[1] else v.pad
    if v.groups == v.cin and v.cout % v.cin == 0 and v.cin > 1:
        return "dwconv", {"k": k, "s": s, "pad": pad, "d": d, "bias": v.bias, "mult": v.cout // v.cin}, weights
    return "conv", {"out": v.cout, "k": k, "s": s, "pad": pad, "d": d, "groups": v.groups, "bias": v.bias}, weights


# ---------------------------------------------------------------- weight algebra


@dataclass(frozen=True)
class BNParams:
    """A BatchNorm's settings as `bn_affine` reads them (affine, with eps), for a branch's BN known only by its
    weights (re-parameterization hooks)."""

    eps: float
    affine: bool = True


def bn_affine(bn_params, w: dict | None, c: int):
    """(scale, shift) with bn(x) = scale * x + shift per channel, from eval-mode statistics."""
    if w is None:
        return None, None
    var, mean = w["running_var"], w["running_mean"]
    g = w["weight"] if bn_params.affine else var.new_ones(c)
    beta = w["bias"] if bn_params.affine else var.new_zeros(c)
    scale = g / torch.sqrt(var + bn_params.eps)
    return scale, beta - mean * scale


def fold_after(v: ConvView, scale, shift) -> ConvView:
    """bn(conv(x)): W'_o = W_o * s_o; b'_o = s_o * b_o + t_o."""
    if v.weight is None:
        return replace(v, bias=True)
    return replace(v, bias=True, weight=v.weight * scale.view(-1, 1, 1, 1), b=v.b * scale + shift)


def fold_before(v: ConvView, scale, shift) -> ConvView:
    """conv(bn(x)) for an unpadded conv: scale the input channels, push the shift through the kernel."""
    if v.weight is None:
        return replace(v, bias=True)
    per = v.cin // v.groups
    s = scale.view(v.groups, per)  # input channel of group g, index i
    t = shift.view(v.groups, per)
    gi = torch.arange(v.cout, device=v.weight.device) // (v.cout // v.groups)  # group of each output channel
    w = v.weight * s[gi].view(v.cout, per, 1, 1)
    b = v.b + (v.weight.sum((2, 3)) * t[gi]).sum(1)
    return replace(v, bias=True, weight=w, b=b)


def scale_out(v: ConvView, gamma) -> ConvView:
    """gamma * conv(x), per output channel (layer scale)."""
    if v.weight is None:
        return v
    return replace(v, weight=v.weight * gamma.view(-1, 1, 1, 1), b=v.b * gamma)


def dense(v: ConvView, size: tuple[int, int]) -> torch.Tensor:
    """The kernel as an undilated, centred kernel of `size` (odd, >= extent): E[r*i, r*j] = K[i, j]."""
    eh, ew = v.extent
    out = v.weight.new_zeros(v.cout, v.cin // v.groups, *size)
    oh, ow = (size[0] - eh) // 2, (size[1] - ew) // 2
    out[:, :, oh:oh + eh:v.dil[0], ow:ow + ew:v.dil[1]] = v.weight
    return out


def identity_view(c: int, groups: int, dtype=torch.float32, with_weights: bool = False,
                  device: torch.device | None = None) -> ConvView:
    """The identity as a 1x1 conv: 1 at [i, i mod (C/groups)], on `device` (the other branches' weights')."""
    w = None
    if with_weights:
        per = c // groups
        w = torch.zeros(c, per, 1, 1, dtype=dtype, device=device)
        i = torch.arange(c, device=device)
        w[i, i % per, 0, 0] = 1.0
    return ConvView("conv", c, c, (1, 1), (1, 1), (0, 0), (1, 1), groups, False, w,
                    None if w is None else torch.zeros(c, dtype=dtype, device=device))

