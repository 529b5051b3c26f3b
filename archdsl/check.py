"""Stage 3: parameter validation, shape inference and exact cost accounting over an ArchGraph.

Takes: an elaborated `ArchGraph` (raw op parameters). Returns: a new ArchGraph whose nodes hold the ops'
validated pydantic parameters and whose node attributes hold `in_shapes`, `shape` and `cost`. Every error
of the graph is collected and raised together as one `ArchError`, positioned at the consuming node (and at
the offending argument where there is one).
"""

from __future__ import annotations

import types
import typing

from pydantic import ValidationError

from .errors import Collector
from .interp import fmt, type_name
from .ir import ArchGraph
from .ops import registry
from .ops.registry import OpError
from .shapes import Cost, Shape


def check(graph: ArchGraph) -> ArchGraph:
    """Validate and infer the whole graph; raises ArchError listing every problem."""
    g = graph.copy()
    col = Collector()
    tied: dict[str, tuple[str, tuple[int, ...]]] = {}  # a tie's key -> (its first node, the tensor's shape)
    for name in g.order():
        node = g.node(name)
        op = registry.get(node.op)
        refs = g.inputs(name)
        ins = [g.shape_of(r) for r in refs]
        if op is None or any(s is None for s in ins):
            g.attrs(name).update(shape=None, in_shapes=None, cost=Cost())
            continue  # an error upstream was already reported; do not cascade
        params = _validate(op, node, col)
        out = None
        if params is not None:
            out = _infer(op, params, ins, node, g, refs, col)
        if out is None:
            g.replace_node(node, shape=None, in_shapes=tuple(ins), cost=Cost())
            continue
        try:
            cost = op.cost(params, ins, out[0] if isinstance(out, tuple) else out)
        except OpError as e:
            col.add(node.arg_span(e.arg), _prefixed(node.op, e.message), e.hint, node.notes)
            cost = Cost()
        acts = 0 if op.is_view else sum(s.numel() for s in (out if isinstance(out, tuple) else (out,)))
        params_n, ties = cost.params, {}
        for attr, (key, shape, arg) in op.shared(params, ins).items():
            if key not in tied:
                tied[key] = (name, shape)
                continue
            first, first_shape = tied[key]
            if shape != first_shape:
                col.add(node.arg_span(arg), f"{key} are shared with '{first}' at {g.node(first).span}, "
                        f"whose tensor is {'x'.join(map(str, first_shape))}; this one's would be "
                        f"{'x'.join(map(str, shape))}", "layers sharing a tensor need the same channels and sizes",
                        node.notes)
                continue
            ties[attr] = first
            params_n -= _numel(shape)  # counted once, at the first node that has it
        cost = Cost(params_n, cost.macs, acts)
        g.replace_node(node.__class__(node.name, node.op, params, node.span, node.arg_spans, node.notes),
                       shape=out, in_shapes=tuple(ins), cost=cost, ties=ties)
    col.raise_if_any()
    return g


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _validate(op, node, col: Collector):
    raw = dict(node.params) if isinstance(node.params, tuple) else node.params.model_dump()
    try:
        return op.Params(**raw)
    except ValidationError as err:
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else None
            if e["type"] == "missing":
                sig = signature(op)
                col.add(node.span, f"{op.name} needs parameter '{field}'", f"{op.name}({sig})", node.notes)
            else:
                ann = op.Params.model_fields[field].annotation if field in op.Params.model_fields else None
                want, got = describe_type(ann), raw.get(field)
                hint = None
                if isinstance(got, float) and "int" in want.split(" or "):
                    hint = "convert with int(...), round(...) or round_to(..., 8); use // for integer division"
                elif isinstance(got, str) and any(t in want.split(" or ") for t in ("int", "float")):
                    hint = "write the number without quotes"
                col.add(node.arg_span(field), f"{op.name} parameter '{field}' expects {want}, "
                        f"got {type_name(got)} {fmt(got)}", hint, node.notes)
        return None


def _infer(op, params, ins: list[Shape], node, g: ArchGraph, refs, col: Collector):
    if op.arity is not None and len(ins) != op.arity:
        col.add(node.span, f"{op.name} takes {op.arity} input(s), got {len(ins)}", None, node.notes)
        return None
    if op.arity is None and len(ins) < 2:
        col.add(node.span, f"{op.name} needs at least two inputs, got {len(ins)}", None, node.notes)
        return None
    for s in ins:
        if s.layout not in op.layouts:
            want = {"nchw": "channels-first (C x H x W)", "nhwc": "channels-last", "nc": "a feature vector"}
            hint = "insert nchw() before it" if s.layout == "nhwc" and "nchw" in op.layouts else None
            if s.layout == "nc":
                hint = "it needs a spatial input: remove the global pooling / flatten before it"
            notes = list(node.notes)
            if len(refs) == 1:  # say where the wrong-layout tensor comes from (e.g. the gap() before it)
                notes.insert(0, f"input is {s}, from {_origin(g, refs[0][0])}")
            col.add(node.span, f"{op.name} needs {' or '.join(want[x] for x in op.layouts)} input, got {s}"
                    f"{' (a feature vector)' if s.layout == 'nc' else ' (channels-last)'}", hint, notes)
            return None
    try:
        registry.check_finite(params)  # before the shape rule, which may compute with them
        out = op.infer(params, ins)
        registry.check_domain(params)  # after it: an op's own, more specific message comes first
    except OpError as e:
        notes = list(node.notes)
        if len(refs) > 1:  # merges: say where each input comes from
            for i, (src, _) in enumerate(refs):
                notes.append(f"input {i} ({ins[i]}) comes from {_origin(g, src)}")
        elif refs:
            notes.insert(0, f"input is {ins[0]}, from {_origin(g, refs[0][0])}")
        col.add(node.arg_span(e.arg), _prefixed(node.op, e.message), e.hint, notes)
        return None
    outs = out if isinstance(out, tuple) else (out,)
    for s in outs:
        if s.c <= 0 or (s.spatial and (s.h <= 0 or s.w <= 0)):
            col.add(node.span, f"{node.op} produces an empty tensor ({s})", None, node.notes)
            return None
    return out


def _origin(g: ArchGraph, name: str) -> str:
    """Where a node is, for notes: "'stages.0.1' (layernorm) at file:line:col"."""
    node = g.node(name)
    return f"'{name}'{'' if node.op == name else f' ({node.op})'} at {node.span}"


def _prefixed(op: str, message: str) -> str:
    """'op: message', unless the op's message already starts with the op's name ('split sizes ...')."""
    rest = message[len(op):]
    if message.startswith(op) and not (rest[:1].isalnum() or rest[:1] == "_"):
        return message
    return f"{op}: {message}"


def signature(op) -> str:
    parts = []
    for name, f in op.Params.model_fields.items():
        parts.append(name if f.is_required() else f"{name}={fmt(f.default)}")
    return ", ".join(parts)


def describe_type(ann) -> str:
    if ann is None:
        return "a value"
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(ann))
    if origin is typing.Literal:
        return "one of " + ", ".join(fmt(a) for a in typing.get_args(ann))
    if origin is tuple:
        args = typing.get_args(ann)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe_type(args[0])}"
        return "[" + ", ".join(describe_type(a) for a in args) + "]"
    if ann is type(None):
        return "none"
    return getattr(ann, "__name__", str(ann))

