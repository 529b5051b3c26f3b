"""archdsl viz, its vocabulary: the colours and the parameters labels show, the nested clusters of a graph's
scopes, and the text of node and cluster labels and tooltips (viz.py draws with them).

Takes: a checked ArchGraph and node / cluster names. Returns: label and tooltip text (HTML-escaped for Graphviz),
the cluster tree (`_clusters`) and the deepest nesting (`max_depth`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .interp import as_value, fmt
from .ir import ArchGraph
from .ops import registry
from .printer import params_text
from .shapes import Cost, human

FORMATS = ("svg", "png", "html")
FONT = "Helvetica,Arial,sans-serif"
# fill colour of a node, by its op's registry family
FAMILY_COLORS = {"conv": "#d6e6f5", "linear": "#d9ecd0", "norm": "#fcefc4", "activation": "#f7dada",
                 "pool": "#e4daf1", "attention": "#fde0c6", "mixer": "#c9e8e6", "resample": "#ececec"}
# cluster fill, by scope kind: loops/iterations bluish, block calls amber, plain groups grey
CLUSTER_COLORS = {"block": "#fdf7e7", "for": "#f1f5fb", "form": "#f7f7f7", "seq": "#f7f7f7", "if": "#f7f7f7"}
MERGE_OPS = ("add", "concat", "mul")
MERGED_COLOR = "#c8610a"  # nodes the deploy passes merged other nodes into
ALWAYS_SHOWN = ("k",)  # parameters drawn even at their default: a kernel size is never obvious
NUMERICS_ONLY = ("eps", "momentum")  # numerical settings, not structure: omitted from labels unless required


# ---------------------------------------------------------------- clusters


@dataclass
class _Cluster:
    path: str
    parent: str | None
    level: int  # 1 for a top-level cluster
    nodes: list[str] = field(default_factory=list)  # every node inside, at any depth, in graph order


def _clusters(g: ArchGraph, order: list[str]) -> dict[str, _Cluster]:
    """Name prefixes that group nodes: every block call, and every other prefix holding two or more nodes."""
    count: dict[str, int] = {}
    for name in order:
        segs = name.split(".")
        for i in range(1, len(segs)):
            p = ".".join(segs[:i])
            count[p] = count.get(p, 0) + 1
    keep = sorted((p for p, n in count.items()
                   if n >= 2 or (p in g.scopes and g.scopes[p].kind == "block")), key=lambda p: p.count("."))
    out: dict[str, _Cluster] = {}
    for p in keep:  # parents before children (fewer dots first)
        parent = _innermost(p, out)
        out[p] = _Cluster(p, parent, 1 if parent is None else out[parent].level + 1)
    for name in order:
        for p in _ancestors(name, out):
            out[p].nodes.append(name)
    return out


def _ancestors(name: str, clusters: Mapping[str, _Cluster]) -> list[str]:
    """The clusters holding `name`, outermost first."""
    segs = name.split(".")
    return [p for p in (".".join(segs[:i]) for i in range(1, len(segs))) if p in clusters]


def _innermost(name: str, clusters: Mapping[str, _Cluster]) -> str | None:
    anc = _ancestors(name, clusters)
    return anc[-1] if anc else None


def max_depth(graph: ArchGraph) -> int:
    """The deepest cluster nesting of `graph`: `depth=max_depth(g)` draws everything expanded."""
    return max((c.level for c in _clusters(graph, graph.order()).values()), default=0)


# ---------------------------------------------------------------- labels


def _call_text(g: ArchGraph, name: str, limit: int = 44) -> str:
    """'conv(40, k=4, s=4, pad=0)': required parameters positional, the others only where not the default."""
    node = g.node(name)
    op = registry.get(node.op)
    raw = node.raw_params()
    parts = []
    fields = op.Params.model_fields if op is not None else {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is not None and not f.is_required():
            if key in NUMERICS_ONLY or (key not in ALWAYS_SHOWN and _same(value, f.default)):
                continue
            parts.append(f"{key}={fmt(value)}")
        else:
            parts.append(fmt(value))
    text = ", ".join(parts)
    if len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return f"{node.op}({text})" if text else node.op


def _same(a, b) -> bool:
    return as_value(a) == as_value(b)


def _shape_text(shape) -> str:
    """'40x56x56', or for a split '[30, 10, 10]x56x56' (one size per output)."""
    if shape is None:
        return "?"
    if not isinstance(shape, tuple):
        return str(shape)
    if shape and len({(s.h, s.w, s.layout) for s in shape}) == 1 and shape[0].spatial:
        tail = str(shape[0]).partition("x")[2]
        return "[" + ", ".join(str(s.c) for s in shape) + "]x" + tail
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _cost_text(c: Cost) -> str:
    return f"{human(c.params)} params, {human(c.macs)} MACs" if c.params or c.macs else ""


def _node_label(g: ArchGraph, name: str, notes: Sequence[str]) -> str:
    node = g.node(name)
    seg = name.rpartition(".")[2]
    rows = []
    if seg != node.op and not seg.isdigit():
        rows.append(f'<FONT POINT-SIZE="9" COLOR="#666666">{_esc(seg)}</FONT>')
    call = _call_text(g, name)
    op, _, rest = call.partition("(")
    rows.append(f"<B>{_esc(op)}</B>" + (_esc("(" + rest) if rest else ""))
    rows.append(f'<FONT POINT-SIZE="9" COLOR="#444444">{_esc(_shape_text(g.attrs(name).get("shape")))}</FONT>')
    rows += [f'<FONT POINT-SIZE="9" COLOR="{MERGED_COLOR}">{_esc(n)}</FONT>' for n in notes]
    return "<" + "<BR/>".join(rows) + ">"


def _node_tooltip(g: ArchGraph, name: str, notes: Sequence[str]) -> str:
    node = g.node(name)
    params = params_text(node)
    a = g.attrs(name)
    ins = a.get("in_shapes") or ()
    lines = [name, f"{node.op}({params})", f"{', '.join(str(s) for s in ins) or '-'} -> {_shape_text(a.get('shape'))}"]
    if _cost_text(g.cost(name)):
        lines.append(_cost_text(g.cost(name)))
    lines.append(str(node.span))
    return _tip(lines + list(notes))


def _cluster_name(c: _Cluster) -> str:
    """The path relative to the parent cluster; 'blocks.1' rather than '1' when that part is only an index."""
    rel = c.path if c.parent is None else c.path[len(c.parent) + 1:]
    if rel.isdigit() and c.parent is not None:
        rel = c.parent.rpartition(".")[2] + "." + rel
    return rel


def _cluster_label(g: ArchGraph, c: _Cluster) -> str:
    sc = g.scopes.get(c.path)
    return _cluster_name(c) + (f"  \u00b7  {sc.label}" if sc is not None and sc.label else "")


def _cluster_tooltip(g: ArchGraph, c: _Cluster) -> str:
    sc = g.scopes.get(c.path)
    cost = sum((g.cost(n) for n in c.nodes), Cost())
    lines = [c.path]
    if sc is not None and sc.kind == "block":
        lines.append(f"{sc.label}(" + ", ".join(f"{k}={fmt(v)}" for k, v in sc.args) + ")")
    lines.append(f"{len(c.nodes)} nodes, {_cost_text(cost) or 'no parameters'}")
    return _tip(lines)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _tip(lines: Sequence[str]) -> str:
    # escString: a backslash would start an escape; "\n" is Graphviz's newline
    return "\\n".join(s.replace("\\", "/") for s in lines)
