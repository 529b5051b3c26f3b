"""Stage 4: the deploy-form passes. Each is a pure function `pass(graph) -> (graph, changes)`.

Takes: a checked ArchGraph whose nodes may carry `weights` (their module's state_dict tensors; absent for a
structure-only run, as `archdsl check --deploy` does). Returns: a new checked graph computing the same function
in eval mode, with the weights transformed exactly, and one `Change` per change (changes.py: its report line,
with the kind of change and the nodes as fields). A rewrite that would not be exact is refused and reported
("refused: ...", naming the node); one that merely does not apply is left alone.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable

import networkx as nx
import torch

from ..check import check
from ..ir import ArchGraph, Node
from ..ops import convview as cv
from ..ops import registry
from .changes import Change

LAYOUT_OPS = ("nhwc", "nchw")


def _refusal(node: Node, msg: str) -> Change:
    """A report line for a rewrite that would not be exact (the graph is left as it is)."""
    return Change(f"refused: '{node.name}' ({node.span}): {msg}", "refused", dst=node.name, op=node.op, why=msg)


# ---------------------------------------------------------------- graph editing helpers


def _consumers(g: ArchGraph, name: str) -> list[str]:
    return list(g.g.successors(name))


def _weights(g: ArchGraph, name: str) -> dict | None:
    return g.attrs(name).get("weights")


def _bypass(g: ArchGraph, name: str) -> bool:
    """Remove a one-input node, feeding its consumers from its input. False where that would merge edges."""
    (src, port), = g.inputs(name)
    outs = list(g.g.out_edges(name, data=True))
    if any(g.g.has_edge(src, dst) for _, dst, _ in outs):
        return False
    for _, dst, d in outs:
        g.g.add_edge(src, dst, src_port=port, dst_port=d["dst_port"])
    if g.output == (name, 0):
        g.output = (src, port)
    g.g.remove_node(name)
    return True


def _set(g: ArchGraph, name: str, op: str, params: dict, weights: dict | None) -> None:
    old = g.node(name)
    g.replace_node(Node(name, op, tuple(params.items()), old.span, old.arg_spans, old.notes), weights=weights)


def _view(g: ArchGraph, name: str) -> cv.ConvView | None:
    ins = g.attrs(name).get("in_shapes")
    if not ins:
        return None
    return cv.view(g.node(name), ins[0], _weights(g, name))


def _put_view(g: ArchGraph, name: str, v: cv.ConvView) -> None:
    op, params, w = cv.to_node(v, g.attrs(name)["in_shapes"][0])
    _set(g, name, op, params, w)


def _producer_conv(g: ArchGraph, name: str) -> str | None:
    """The conv / linear feeding `name` (directly or over single-consumer layout permutes) whose only consumer
    is that path, or None: the node a per-channel affine map after it can be folded into."""
    (src, _), = g.inputs(name)
    while g.node(src).op in LAYOUT_OPS and len(_consumers(g, src)) == 1:
        (src, _), = g.inputs(src)
    if not cv.is_conv(g.node(src).op) or len(_consumers(g, src)) != 1:
        return None
    return src


# ---------------------------------------------------------------- passes


Pass = Callable[[ArchGraph], tuple[ArchGraph, list[Change]]]


def graph_pass(body: Callable[[ArchGraph, list[Change]], None]) -> Pass:
    """A pass from its body: `body(g, changes)` edits a copy of the graph and appends what it changed; the pass
    itself is pure, graph -> (the checked new graph, the changes)."""
    @functools.wraps(body)
    def run(g: ArchGraph) -> tuple[ArchGraph, list[Change]]:
        g = g.copy()
        changes: list[Change] = []
        body(g, changes)
        return check(g), changes

    return run


@graph_pass
def drop_training_only(g: ArchGraph, report: list[Change]) -> None:
    """Remove the nodes of training-only ops (Op.training_only: drop_path, dropout, identity), identities at
    inference."""
    for name in g.order():
        op = g.node(name).op
        if registry.get(op).training_only and _bypass(g, name):
            report.append(Change(f"removed {op} '{name}'", "removed", src=name, op=op))


@graph_pass
def reparam_ops(g: ArchGraph, report: list[Change]) -> None:
    """Ops with their own deploy form (Op.reparam: dilated_reparam, repconv, dcls) become that one plain op."""
    for name in g.order():
        node = g.node(name)
        op = registry.get(node.op)
        if op.reparam is None:
            continue
        new_op, params, weights = op.reparam(node.params, list(g.attrs(name)["in_shapes"]), _weights(g, name))
        _set(g, name, new_op, params, weights)
        report.append(Change(f"re-parameterized {node.op} '{name}' into one {new_op}", "reparam", src=name, dst=name,
                             op=new_op))


@graph_pass
def fold_bn(g: ArchGraph, report: list[Change]) -> None:
    """Fold each BatchNorm into the conv / linear before it (through layout permutes), when the BN is that
    producer's only consumer: W' = W * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps)."""
    for name in g.order():
        if name not in g or g.node(name).op != "bn":
            continue
        prod = _producer_conv(g, name)
        if prod is None:
            continue
        v = _view(g, prod)
        scale, shift = cv.bn_affine(g.node(name).params, _weights(g, name), v.cout)
        _put_view(g, prod, cv.fold_after(v, scale, shift))
        _bypass(g, name)
        report.append(Change(f"folded bn '{name}' into {g.node(prod).op} '{prod}'", "fold_bn", src=name, dst=prod,
                             op=g.node(prod).op))


def _forward_to_conv(g: ArchGraph, name: str) -> str | None:
    """The conv / linear fed by `name` through single-consumer ops that commute with a per-channel affine
    map (layout permutes, global average pooling), or None."""
    cur = name
    while True:
        cons = _consumers(g, cur)
        if len(cons) != 1:
            return None
        nxt = g.node(cons[0])
        if cv.is_conv(nxt.op):
            return cons[0]
        if nxt.op not in (*LAYOUT_OPS, "gap"):
            return None
        cur = cons[0]


@graph_pass
def fold_bn_forward(g: ArchGraph, report: list[Change]) -> None:
    """Fold a BatchNorm into the conv / linear after it, where exact: the BN feeds only that conv (directly or
    through layout permutes / global average pooling) and the conv has no padding (zero padding would not
    commute with the BN's shift)."""
    for name in g.order():
        if name not in g or g.node(name).op != "bn":
            continue
        target = _forward_to_conv(g, name)
        if target is None:
            continue
        cons = [target]
        v = _view(g, cons[0])
        if v.pad != (0, 0):
            continue
        scale, shift = cv.bn_affine(g.node(name).params, _weights(g, name), v.cin)
        _put_view(g, cons[0], cv.fold_before(v, scale, shift))
        _bypass(g, name)
        report.append(Change(f"folded bn '{name}' into the following {g.node(cons[0]).op} '{cons[0]}'", "fold_bn",
                             src=name, dst=cons[0], op=g.node(cons[0]).op))


@graph_pass
def merge_branches(g: ArchGraph, report: list[Change]) -> None:
    """Merge an `add` of parallel linear branches reading the same input (convs of any odd size and
    dilation, 1x1, a lone BN, or the input itself) into one conv: dilated kernels expanded, centre-padded
    and summed."""
    for name in g.order():
        if name not in g or g.node(name).op != "add":
            continue
        branches = []  # (node name or None for the input itself, source ref)
        for ref in g.inputs(name):
            node = g.node(ref[0])
            if (cv.is_conv(node.op) or node.op == "bn") and len(_consumers(g, ref[0])) == 1:
                branches.append((ref[0], g.inputs(ref[0])[0]))
            else:
                branches.append((None, ref))
        sources = {src for _, src in branches}
        if len(sources) == 1 and any(b is not None and cv.is_conv(g.node(b).op) for b, _ in branches):
            _merge(g, name, [b for b, _ in branches], sources.pop(), report)
            continue
        conv_sources = {src for b, src in branches if b is not None and cv.is_conv(g.node(b).op)}
        others = [ref for b, ref in branches if b is None]
        if len(conv_sources) == 1 and others:
            # convs on one input merged with something else: name what blocks the merge
            src = conv_sources.pop()
            for ref in others:  # a branch off the convs' own input through a non-linear op (not a skip from before)
                if ref != src and src[0] in nx.ancestors(g.g, ref[0]):
                    report.append(_refusal(g.node(ref[0]), f"not merged into '{name}': {g.node(ref[0]).op} between "
                                           "the branch and the merge is not linear"))
                    break


def _merge(g: ArchGraph, add: str, branches: list[str | None], source, report: list[Change]) -> None:
    in_shape = g.shape_of(source)
    convs = [b for b in branches if b is not None and cv.is_conv(g.node(b).op)]
    # check every branch before changing anything: a refused merge leaves the graph as it was
    views = {b: _view(g, b) for b in convs}
    main = max(views.values(), key=lambda v: v.extent[0] * v.extent[1])
    with_w = main.weight is not None
    for b, v in views.items():
        if (v.stride, v.groups, v.cin, v.cout) != (main.stride, main.groups, main.cin, main.cout):
            report.append(_refusal(g.node(b), f"not merged into '{add}': stride/groups/channels "
                                   f"{v.stride}/{v.groups}/{v.cin}->{v.cout} differ from "
                                   f"{main.stride}/{main.groups}/{main.cin}->{main.cout}"))
            return
        if any(e % 2 == 0 for e in v.extent) or v.centre_offset != main.centre_offset:
            report.append(_refusal(g.node(b), f"not merged into '{add}': kernel {v.k} (extent {v.extent}) is "
                                   "even or not centred like the other branches"))
            return
    size = main.extent
    dtype = main.weight.dtype if with_w else torch.float32
    total_w = main.weight.new_zeros(main.cout, main.cin // main.groups, *size) if with_w else None
    total_b = main.weight.new_zeros(main.cout) if with_w else None
    parts = []
    for b in branches:
        if b in views:
            v = views[b]
        else:  # the input itself, or a lone BN on it: the identity kernel (times the BN affine)
            where = g.node(b) if b is not None else g.node(add)
            if (main.cin, main.cout) != (in_shape.c, in_shape.c) or main.stride != (1, 1) \
                    or main.centre_offset != (0.0, 0.0):
                report.append(_refusal(where, f"not merged into '{add}': an identity branch needs equal channels "
                                       "in and out, stride 1 and 'same' padding in the other branches"))
                return
            v = cv.identity_view(in_shape.c, main.groups, dtype, with_w, main.weight.device if with_w else None)
            if b is not None:
                scale, shift = cv.bn_affine(g.node(b).params, _weights(g, b), in_shape.c)
                v = cv.fold_after(v, scale, shift)
        parts.append(v)
    for v in parts:
        if with_w:
            total_w += cv.dense(v, size)
            total_b += v.b
    ph = int(main.centre_offset[0] + (size[0] - 1) / 2)
    pw = int(main.centre_offset[1] + (size[1] - 1) / 2)
    merged = cv.ConvView(main.op if main.op != "linear" else "conv", main.cin, main.cout, size, main.stride,
                         (ph, pw), (1, 1), main.groups, True, total_w, total_b)
    keep = next(b for b, v in views.items() if v.extent == size)
    for b in branches:
        if b is not None and b != keep:
            g.g.remove_node(b)
    for src, _ in list(g.g.in_edges(add)):
        if src != keep:
            g.g.remove_edge(src, add)
    g.g.edges[keep, add]["dst_port"] = 0
    _put_view(g, keep, merged)
    _bypass(g, add)
    report.append(Change(f"merged {len(branches)} branches of '{add}' into one {size[0]}x{size[1]} "
                         f"{g.node(keep).op} '{keep}'", "merge_branches", src=add, dst=keep, op=g.node(keep).op,
                         n=len(branches)))


@graph_pass
def fold_layer_scale(g: ArchGraph, report: list[Change]) -> None:
    """Fold a layer scale into the conv / linear before it (through layout permutes): W' = gamma * W."""
    for name in g.order():
        if name not in g or g.node(name).op != "layer_scale":
            continue
        prod = _producer_conv(g, name)
        if prod is None:
            continue
        w = _weights(g, name)
        _put_view(g, prod, cv.scale_out(_view(g, prod), None if w is None else w["gamma"]))
        _bypass(g, name)
        report.append(Change(f"folded layer scale '{name}' into {g.node(prod).op} '{prod}'", "fold_layer_scale",
                             src=name, dst=prod, op=g.node(prod).op))


@graph_pass
def fold_grn_bias(g: ArchGraph, report: list[Change]) -> None:
    """Move a GRN's bias beta into the unpadded conv / linear after it: b' = b + W beta (UniRepLKNet)."""
    for name in g.order():
        node = g.node(name) if name in g else None
        if node is None or node.op != "grn" or not node.params.bias:
            continue
        cons = _consumers(g, name)
        if len(cons) != 1 or not cv.is_conv(g.node(cons[0]).op):
            continue
        v = _view(g, cons[0])
        if v.pad != (0, 0) or v.k != (1, 1):
            continue
        w = _weights(g, name)
        if w is not None:
            v = cv.fold_before(v, torch.ones_like(w["beta"]), w["beta"])
            w = {"gamma": w["gamma"]}
        else:
            v = replace(v, bias=True)
        _put_view(g, cons[0], v)
        _set(g, name, "grn", {**node.raw_params(), "bias": False}, w)
        report.append(Change(f"moved the bias of grn '{name}' into {g.node(cons[0]).op} '{cons[0]}'", "move_bias",
                             src=name, dst=cons[0], op=g.node(cons[0]).op))


DEPLOY_PASSES = (drop_training_only, reparam_ops, fold_bn, merge_branches, fold_bn, fold_bn_forward,
                 fold_layer_scale, fold_grn_bias)
