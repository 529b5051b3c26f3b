"""Reports of a checked graph: the per-stage/per-block table of `archdsl check`, and its JSON form.

Takes: a checked ArchGraph. Returns: rows (scope, block, output shape, params, MACs, activations),
rendered as a text table or a JSON-ready dict.
"""

from __future__ import annotations

from dataclasses import dataclass

from .interp import fmt
from .ir import ArchGraph
from .shapes import Cost, human


@dataclass
class Row:
    name: str
    label: str
    shape: str
    cost: Cost
    count: int = 1


def _row_key(g: ArchGraph, name: str) -> str:
    """The outermost block-call scope holding the node; else its top-level group (loop iterations kept)."""
    segs = name.split(".")
    for i in range(1, len(segs)):
        prefix = ".".join(segs[:i])
        sc = g.scopes.get(prefix)
        if sc is not None and sc.kind == "block":
            return prefix
    key, i = segs[0], 1
    while i < len(segs) and key in g.scopes and g.scopes[key].kind == "for":
        key += "." + segs[i]  # the iteration index
        i += 1
        if i < len(segs) - 1:
            key += "." + segs[i]
            i += 1
    return key


def rows(g: ArchGraph) -> list[Row]:
    out: list[Row] = []
    index: dict[str, Row] = {}
    for name in g.order():
        if name == g.input_node:
            continue
        key = _row_key(g, name)
        sc = g.scopes.get(key)
        row = index.get(key)
        if row is None:
            row = Row(key, sc.label if sc is not None and sc.kind == "block" else "", "", Cost())
            index[key] = row
            out.append(row)
        row.cost = row.cost + g.cost(name)
        shape = g.attrs(name).get("shape")
        row.shape = str(shape[0] if isinstance(shape, tuple) else shape)
    return _merge_repeats(out)


def _merge_repeats(rs: list[Row]) -> list[Row]:
    """Collapse consecutive identical rows that differ only in their last index: blocks.0-2 (x3)."""
    merged: list[Row] = []
    for r in rs:
        prev = merged[-1] if merged else None
        if prev is not None and _same_family(prev, r):
            prev.count += 1
            base, _, first = prev.name.rpartition(".")
            first = first.split("-")[0]
            prev.name = f"{base}.{first}-{r.name.rpartition('.')[2]}"
            prev.cost = prev.cost + r.cost
            continue
        merged.append(Row(r.name, r.label, r.shape, r.cost))
    return merged


def _same_family(prev: Row, r: Row) -> bool:
    pb, _, pi = prev.name.rpartition(".")
    rb, _, ri = r.name.rpartition(".")
    if not (pb and pb == rb and ri.isdigit() and pi.split("-")[-1].isdigit()):
        return False
    per = Cost(prev.cost.params // prev.count, prev.cost.macs // prev.count, prev.cost.acts // prev.count)
    return prev.label == r.label and prev.shape == r.shape and per == r.cost


def table(g: ArchGraph) -> str:
    rs = rows(g)
    total = g.total()
    head = f"{g.model} ({g.file})  input {g.input_shape}"
    if g.scaling:
        f = g.scaling["factors"]
        head += (f"  scaling s={g.scaling['s']:g}: depth x{f['depth']:.3f}, width x{f['width']:.3f}, "
                 f"resolution x{f['resolution']:.3f}")
    cols = ("layer", "block", "output", "params", "MACs", "acts")
    data = [(r.name + (f" (x{r.count})" if r.count > 1 else ""), r.label, r.shape, f"{r.cost.params:,}",
             human(r.cost.macs), human(r.cost.acts)) for r in rs]
    foot = ("total", "", str(g.output_shape), f"{total.params:,}", human(total.macs), human(total.acts))
    widths = [max(len(x[i]) for x in [cols, *data, foot]) for i in range(len(cols))]
    right = {3, 4, 5}

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    sep = "  ".join("-" * w for w in widths)
    body = [head, "", line(cols), sep, *(line(d) for d in data), sep, line(foot)]
    body.append(f"params {total.params:,} ({human(total.params)})   MACs {total.macs:,} ({human(total.macs)})   "
                f"FLOPs {human(total.flops)}   activations {total.acts:,}")
    open_ = [c for c in g.choices]
    if open_:
        body.append("")
        body.append(f"{len(open_)} choice point(s) (checked at the values shown):")
        shown = open_[:MAX_CHOICES_SHOWN]
        cells = [(_clip(c.name), _clip(fmt(c.value)), _clip(c.describe()), f"[{c.source}]", str(c.span))
                 for c in shown]
        w = [max(len(r[i]) for r in cells) for i in range(4)]
        for r in cells:
            body.append(f"  {r[0]:<{w[0]}} = {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}")
        if len(open_) > len(shown):
            body.append(f"  ... and {len(open_) - len(shown):,} more (archdsl check --json lists them all)")
    return "\n".join(line.rstrip() for line in body) + "\n"


MAX_CHOICES_SHOWN = 200  # rows of the choice-point listing of `archdsl check`
CLIP = 60  # characters of a value or domain shown in one of them


def _clip(text: str) -> str:
    return text if len(text) <= CLIP else text[:CLIP - 3] + "..."


def to_json(g: ArchGraph) -> dict:
    total = g.total()
    return {
        "model": g.model,
        "file": g.file,
        "input_shape": g.input_shape.to_json() if g.input_shape else None,
        "output_shape": g.output_shape.to_json() if g.output_shape else None,
        "params": total.params,
        "macs": total.macs,
        "flops": total.flops,
        "activations": total.acts,
        "nodes": len(g),
        "model_params": {k: list(v) if isinstance(v, tuple) else v for k, v in g.params.items()},
        "scaling": g.scaling,
        "choices": [c.to_json() for c in g.choices],
        "rows": [{"name": r.name, "block": r.label, "count": r.count, "output_shape": r.shape,
                  "params": r.cost.params, "macs": r.cost.macs, "activations": r.cost.acts} for r in rows(g)],
    }
