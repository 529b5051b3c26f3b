"""A view of stages 3-4: the checked graph drawn with Graphviz (`archdsl viz`).

Takes: a checked ArchGraph (training form, or the deploy form with `DeployNotes` saying what the deploy passes
merged into each node). Returns: a `graphviz.Digraph` (`to_dot`), SVG text (`to_svg`), or a file (`render`):
.svg, .png, or a self-contained .html page holding one drawing per nesting depth, whose clusters collapse and
expand on click. Scopes (stages, loop iterations, block calls, named groups) become nested clusters; each node
shows its op, the parameters that differ from the op's defaults, and its output shape. Layout is Graphviz's
`dot` program (Debian package graphviz), driven through the PyPI package graphviz.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import networkx as nx

from .ir import ArchGraph
from .ops import registry
from .shapes import Cost, human
from .viz_labels import (
    CLUSTER_COLORS,
    FAMILY_COLORS,
    FONT,
    FORMATS,
    MERGE_OPS,
    MERGED_COLOR,
    _ancestors,
    _Cluster,
    _cluster_label,
    _cluster_name,
    _cluster_tooltip,
    _clusters,
    _esc,
    _innermost,
    _node_label,
    _node_tooltip,
    _shape_text,
    max_depth,
)
from .viz_notes import DeployNotes, deploy_form, deploy_notes  # noqa: F401 - re-exported

if TYPE_CHECKING:
    import graphviz

class VizUnavailable(RuntimeError):
    """Graphviz (the `dot` program or its Python binding) is missing; the message says how to install it."""


MAX_DRAWN = 3000  # boxes in one drawing: past this, Graphviz runs for minutes (100k nodes did not finish in 120 s)


class VizTooLarge(ValueError):
    """A drawing with more than MAX_DRAWN boxes at the depth asked for; `drawn`: how many, `fits`: the deepest
    depth whose drawing fits (None: none does)."""

    def __init__(self, drawn: int, depth: int | None, fits: int | None):
        self.drawn, self.depth, self.fits = drawn, depth, fits
        at = "fully expanded" if depth is None else f"at --depth {depth}"
        hint = (f"--depth {fits} draws what fits" if fits is not None else
                "even the top level is too large; view the IR with archdsl show")
        super().__init__(f"{drawn:,} boxes to draw {at}, more than {MAX_DRAWN:,} (Graphviz would run for minutes): "
                         f"{hint}")


def drawn_count(graph: ArchGraph, depth: int | None, clusters=None) -> int:
    """How many boxes the drawing at `depth` has (a node, or a collapsed cluster standing for its nodes)."""
    order = graph.order()
    clusters = clusters if clusters is not None else _clusters(graph, order)
    limit = 10**9 if depth is None else depth
    reps = set()
    for name in order:
        rep = name
        for p in _ancestors(name, clusters):
            if clusters[p].level > limit:
                rep = "[" + p + "]"
                break
        reps.add(rep)
    return len(reps)


def check_drawable(graph: ArchGraph, depth: int | None) -> None:
    """Raise VizTooLarge when the drawing at `depth` would have more than MAX_DRAWN boxes."""
    clusters = _clusters(graph, graph.order())
    drawn = drawn_count(graph, depth, clusters)
    if drawn <= MAX_DRAWN:
        return
    top = max((c.level for c in clusters.values()), default=0)
    fits = next((d for d in range(min(top, depth if depth is not None else top), -1, -1)
                 if drawn_count(graph, d, clusters) <= MAX_DRAWN), None)
    raise VizTooLarge(drawn, depth, fits)


# ---------------------------------------------------------------- the drawing


def to_dot(graph: ArchGraph, *, title: str | None = None, deploy_notes: DeployNotes | Mapping | None = None,
           depth: int | None = None, id_prefix: str = "") -> "graphviz.Digraph":
    """The Graphviz drawing of a checked graph. Clusters nested deeper than `depth` (None: no limit) are drawn
    as one box each, labelled with the scope, its block, its summed parameters and its output shape.
    `deploy_notes` (a DeployNotes, or a mapping node -> note lines) marks what the deploy passes merged.
    SVG element ids are `id_prefix` + 'n-NODE', 'cl-SCOPE' (an expanded cluster) or 'box-SCOPE'."""
    gv = _graphviz()
    if isinstance(deploy_notes, DeployNotes):
        node_notes, summary = deploy_notes.nodes, deploy_notes.summary
    else:
        node_notes, summary = dict(deploy_notes or {}), []
    order = graph.order()
    clusters = _clusters(graph, order)
    limit = 10**9 if depth is None else depth

    def rep(name: str) -> str:  # the drawn node standing for `name` at this depth
        for p in _ancestors(name, clusters):
            if clusters[p].level > limit:
                return "[" + p + "]"
        return name

    dot = gv.Digraph(graph.model or "archdsl", encoding="utf-8")
    dot.attr("graph", id=f"{id_prefix}graph", rankdir="TB", nodesep="0.25", ranksep="0.3", fontname=FONT,
             fontsize="11", label=_title(graph, title, summary, bool(node_notes)), labelloc="t", labeljust="l",
             newrank="true")  # rank constraints across clusters (branch heads side by side)
    dot.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname=FONT, fontsize="10",
             margin="0.08,0.03", height="0.3", penwidth="0.8")
    dot.attr("edge", arrowsize="0.6", penwidth="0.8", color="#555555")

    # drawing cluster (None: the top level) -> its nodes, boxes '[P]' and child clusters '{P', in graph order
    items: dict[str | None, list[str]] = {}
    for name in order:
        r = rep(name)
        visible = [p for p in _ancestors(name, clusters) if clusters[p].level <= limit]
        parent = None
        for p in visible:
            if "{" + p not in items.setdefault(parent, []):
                items[parent].append("{" + p)
            parent = p
        if r not in items.setdefault(parent, []):
            items[parent].append(r)

    def emit(target, key: str | None) -> None:
        for r in items.get(key, []):
            if r.startswith("{"):
                emit_cluster(target, clusters[r[1:]])
            elif r.startswith("["):
                _box(target, graph, clusters[r[1:-1]], r, id_prefix, node_notes)
            else:
                _node(target, r)

    def _node(target, r: str) -> None:
        notes = node_notes.get(r, ())
        attrs = {"id": f"{id_prefix}n-{r}", "tooltip": _node_tooltip(graph, r, notes),
                 "fillcolor": _fill(graph.node(r).op)}
        if graph.node(r).op in (*MERGE_OPS, "input"):
            attrs.update(shape="oval", style="filled", margin="0.03,0.02")
        if notes:
            attrs.update(color=MERGED_COLOR, penwidth="2")
        if graph.output is not None and r == graph.output[0]:
            attrs["peripheries"] = "2"
        target.node(r, _node_label(graph, r, notes), **attrs)

    def emit_cluster(parent, c: _Cluster) -> None:
        sc = graph.scopes.get(c.path)
        with parent.subgraph(name="cluster_" + c.path) as sub:
            sub.attr(id=f"{id_prefix}cl-{c.path}", label=_cluster_label(graph, c), labeljust="l",
                     labelloc="t", fontsize="10", fontcolor="#333333", style="rounded,filled",
                     fillcolor=CLUSTER_COLORS.get(sc.kind if sc is not None else "for", "#f7f7f7"),
                     color="#9aa5b1", penwidth="0.8", tooltip=_cluster_tooltip(graph, c), margin="6")
            emit(sub, c.path)

    emit(dot, None)
    for heads in _branch_heads(graph, order, rep):
        with dot.subgraph() as same:  # the first node of each branch on one rank: branches side by side
            same.attr(rank="same")
            for h in heads:
                same.node(h)

    seen = set()
    for v in order:
        for u, port in graph.inputs(v):
            ru, rv = rep(u), rep(v)
            if ru == rv or (ru, rv) in seen:
                continue
            seen.add((ru, rv))
            attrs = {"id": f"{id_prefix}e{len(seen)}"}
            inner = _innermost(v, clusters)
            if graph.node(v).op in MERGE_OPS and rv == v and (inner is None or inner not in _ancestors(u, clusters)):
                attrs["color"] = "#9a9a9a"  # a skip connection: into a merge from outside the merge's group
            if ru == u and isinstance(graph.attrs(u).get("shape"), tuple):
                attrs.update(taillabel=str(port), labelfontsize="8", labelfontcolor="#777777")
            dot.edge(ru, rv, **attrs)
    return dot


def _branch_heads(g: ArchGraph, order: list[str], rep) -> list[list[str]]:
    """For each fork (a node feeding several others), the drawn heads of its branches: its successors that
    are not merges and not downstream of one another."""
    out = []
    for u in order:
        if rep(u) != u:
            continue
        heads = []
        for v in sorted(g.g.successors(u), key=lambda n: g.attrs(n)["order"]):
            if rep(v) == v and g.node(v).op not in MERGE_OPS and v not in heads:
                heads.append(v)
        if len(heads) > 1 and not any(nx.has_path(g.g, a, b) for a in heads for b in heads if a != b):
            out.append(heads)
    return out


def _box(target, g: ArchGraph, c: _Cluster, name: str, id_prefix: str, notes: Mapping) -> None:
    sc = g.scopes.get(c.path)
    merged = sum(1 for n in c.nodes if notes.get(n))
    inside = set(c.nodes)
    exits = [n for n in c.nodes if any(s not in inside for s in g.g.successors(n))] or c.nodes
    cost = sum((g.cost(n) for n in c.nodes), Cost())
    rows = [f"<B>{_esc(_cluster_name(c))}</B>"]
    if sc is not None and sc.label:
        rows.append(_esc(sc.label))
    rows.append(f'<FONT POINT-SIZE="9" COLOR="#444444">{len(c.nodes)} nodes, {human(cost.params)} params</FONT>')
    rows.append(f'<FONT POINT-SIZE="9" COLOR="#444444">{_esc(_shape_text(g.attrs(exits[-1]).get("shape")))}</FONT>')
    extra = {}
    if merged:
        plural = "s" if merged > 1 else ""
        rows.append(f'<FONT POINT-SIZE="9" COLOR="{MERGED_COLOR}">{merged} merged node{plural}</FONT>')
        extra = {"color": MERGED_COLOR, "penwidth": "2"}
    target.node(name, "<" + "<BR/>".join(rows) + ">", id=f"{id_prefix}box-{c.path}", shape="box3d", style="filled",
                margin="0.12,0.08",
                fillcolor=CLUSTER_COLORS["block"] if sc is not None and sc.kind == "block" else "#eef2f8",
                tooltip=_cluster_tooltip(g, c) + "\\n(collapsed)", **extra)


def _fill(op: str) -> str:
    o = registry.get(op)
    return FAMILY_COLORS.get(o.family if o is not None else "", "white")


def _title(g: ArchGraph, title: str | None, summary: Sequence[str], deploy: bool) -> str:
    total = g.total()
    form = "deploy form" if g.deploy or deploy else "training form"
    head = title if title is not None else f"{g.model} ({g.file})"
    rows = [f'<B>{_esc(head)}</B>  <FONT COLOR="#555555">{form}</FONT>',
            _esc(f"input {g.input_shape} -> {g.output_shape}   {total.params:,} params   {human(total.macs)} MACs   "
                 f"{len(g)} nodes")]
    if deploy:
        rows.append(f'<FONT COLOR="{MERGED_COLOR}">orange border: a node the deploy passes merged others into'
                    "</FONT>")
    rows += [f'<FONT POINT-SIZE="9" COLOR="#555555">{_esc(s)}</FONT>' for s in summary]
    return "<" + '<BR ALIGN="LEFT"/>'.join(rows) + '<BR ALIGN="LEFT"/>>'


# ---------------------------------------------------------------- output


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise VizUnavailable("the Python package graphviz is not installed: pip install graphviz") from None
    return graphviz


def require_dot() -> None:
    """Raise VizUnavailable unless the Graphviz binding and its `dot` program are both installed."""
    _graphviz()
    if shutil.which("dot") is None:
        raise VizUnavailable("Graphviz's `dot` program is not installed: apt-get install graphviz "
                             "(or brew install graphviz)")


def _pipe(dot, fmt: str) -> bytes:
    require_dot()
    import graphviz

    try:
        return dot.pipe(format=fmt, engine="dot")
    except graphviz.ExecutableNotFound:
        raise VizUnavailable("Graphviz's `dot` program is not installed: apt-get install graphviz") from None


def to_svg(graph: ArchGraph, *, title: str | None = None, deploy_notes: DeployNotes | Mapping | None = None,
           depth: int | None = None, id_prefix: str = "") -> str:
    """SVG text of the drawing (no XML prolog: it embeds inline in HTML). See `to_dot` for the arguments."""
    dot = to_dot(graph, title=title, deploy_notes=deploy_notes, depth=depth, id_prefix=id_prefix)
    svg = _pipe(dot, "svg").decode("utf-8")
    return svg[svg.index("<svg"):]


def to_html(graph: ArchGraph, *, title: str | None = None, deploy_notes: DeployNotes | Mapping | None = None,
            depth: int | None = None) -> str:
    """A self-contained HTML page: one drawing per nesting depth (0 .. max_depth), `depth` shown first (default:
    all expanded). Clicking a cluster collapses it (the view one level shallower, centred on its box); clicking
    a box expands it. No network access: the SVGs, style and script are inline."""
    clusters = _clusters(graph, graph.order())
    top = max((c.level for c in clusters.values()), default=0)
    # the page holds every depth that can be drawn: the deepest ones of a huge model are left out
    while top > 0 and drawn_count(graph, top, clusters) > MAX_DRAWN:
        top -= 1
    check_drawable(graph, top)
    first = top if depth is None else max(0, min(depth, top))
    views = []
    for d in range(top + 1):
        svg = to_svg(graph, title=title, deploy_notes=deploy_notes, depth=d, id_prefix=f"v{d}-")
        views.append(f'<div class="view" data-depth="{d}"{"" if d == first else " hidden"}>{svg}</div>')
    buttons = "".join(f'<button data-depth="{d}">{d if d < top else "all"}</button>' for d in range(top + 1))
    levels = json.dumps({p: c.level for p, c in clusters.items()})
    name = html.escape(title or f"{graph.model} ({graph.file})")
    return _PAGE.format(title=name, buttons=buttons, views="\n".join(views), levels=levels, first=first)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px Helvetica, Arial, sans-serif; margin: 0; }}
header {{ position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ccc; padding: 6px 10px; z-index: 1; }}
header button {{ margin: 0 2px; padding: 1px 8px; }}
header button.on {{ background: #2f6db5; color: #fff; }}
header .hint {{ color: #666; margin-left: 12px; }}
main {{ padding: 8px; }}
.fit svg {{ max-width: 100%; height: auto; }}
g.cluster, g.node[id*="-box-"] {{ cursor: pointer; }}
.flash polygon, .flash path, .flash ellipse {{ stroke: #c8610a; stroke-width: 4px; }}
</style></head>
<body class="fit">
<header><b>{title}</b> &nbsp; depth: {buttons}
<label><input type="checkbox" id="fit" checked> fit width</label>
<span class="hint">click a cluster to collapse it, a box to expand it; hover for details</span></header>
<main>
{views}
</main>
<script>
(function () {{
  var levels = {levels};
  var views = document.querySelectorAll(".view");
  var buttons = document.querySelectorAll("button[data-depth]");
  function show(d, target) {{
    views.forEach(function (v) {{ v.hidden = Number(v.dataset.depth) !== d; }});
    buttons.forEach(function (b) {{ b.classList.toggle("on", Number(b.dataset.depth) === d); }});
    var el = target && document.getElementById("v" + d + "-" + target);
    if (el) {{
      el.scrollIntoView({{block: "center", inline: "center"}});
      el.classList.add("flash");
      setTimeout(function () {{ el.classList.remove("flash"); }}, 1500);
    }}
  }}
  buttons.forEach(function (b) {{ b.addEventListener("click", function () {{ show(Number(b.dataset.depth)); }}); }});
  document.getElementById("fit").addEventListener("change", function (e) {{
    document.body.classList.toggle("fit", e.target.checked);
  }});
  document.addEventListener("click", function (e) {{
    var g = e.target.closest && e.target.closest("g.node, g.cluster");
    var m = g && /^v\\d+-(box|cl)-(.*)$/.exec(g.id);
    if (!m || !(m[2] in levels)) return;
    if (m[1] === "box") show(levels[m[2]], "cl-" + m[2]);
    else show(levels[m[2]] - 1, "box-" + m[2]);
  }});
  show({first});
}})();
</script>
</body></html>
"""


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The format of an output path: `fmt`, else its suffix. Raises ValueError for any other."""
    f = (fmt or Path(path).suffix.lstrip(".")).lower()
    if f not in FORMATS:
        raise ValueError(f"cannot draw to {str(path)!r}: the output must end in .svg, .png or .html"
                         + (f" (got .{f})" if f else ""))
    return f


def render(graph: ArchGraph, path: str | Path, fmt: str | None = None, *, title: str | None = None,
           deploy_notes: DeployNotes | Mapping | None = None, depth: int | None = None) -> Path:
    """Write the drawing to `path` as svg, png or html (`fmt`, else the path's suffix). Returns the path."""
    f = output_format(path, fmt)
    path = Path(path)
    if f != "html":
        check_drawable(graph, depth)
    if f == "html":
        data = to_html(graph, title=title, deploy_notes=deploy_notes, depth=depth).encode("utf-8")
    else:
        data = _pipe(to_dot(graph, title=title, deploy_notes=deploy_notes, depth=depth), f)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- command line


def add_viz_parser(sub) -> None:
    """Add the `viz` subcommand to `archdsl`'s subparsers."""
    from .cli.common import add_spec_args

    p = sub.add_parser("viz", help="draw the graph (stages and blocks as clusters) to .svg, .png or a collapsible "
                                   ".html page (Graphviz)")
    add_spec_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.svg, FILE.png or FILE.html (one drawing per depth; click a cluster to collapse it)")
    p.add_argument("--depth", type=int, metavar="N",
                   help="draw clusters nested deeper than N as one box each (default: everything expanded; "
                        "in .html: the depth shown first)")
    p.add_argument("--title", help="the drawing's title (default: model name and file)")
    p.set_defaults(fn=cmd_viz)


def cmd_viz(args) -> int:
    from .cli.common import print_pass_reports, spec_graph, usage

    try:
        output_format(args.output)
    except ValueError as e:
        raise SystemExit(usage(str(e))) from None
    if args.depth is not None and args.depth < 0:
        raise SystemExit(usage(f"--depth must be 0 or more, got {args.depth}"))
    g = spec_graph(argparse.Namespace(**{**vars(args), "deploy": False}))  # an ArchError reaches main(): exit 1
    notes = None
    if args.deploy:
        from .passes import deploy_graph

        deployed, args.reports = deploy_graph(g, debug=args.debug_passes)
        if args.debug_passes:
            print_pass_reports(args, sys.stderr)
        notes = deploy_notes(g, deployed, args.reports)
        g = deployed
    try:
        path = render(g, args.output, title=args.title, deploy_notes=notes, depth=args.depth)
    except (VizUnavailable, VizTooLarge) as e:
        print(f"archdsl: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an output directory that does not exist, no permission, ...
        print(f"archdsl: error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    form = "deploy" if args.deploy else "training"
    if args.depth is None and len(g) > 300 and not str(path).endswith(".html"):
        print(f"hint: {len(g)} nodes in one picture; --depth N collapses the inner scopes, and -o FILE.html "
              "lets you collapse and expand them", file=sys.stderr)
    print(f"wrote {path} ({g.model}, {form} form: {len(g)} nodes)", file=sys.stderr)
    return 0


__all__ = ["DeployNotes", "VizTooLarge", "VizUnavailable", "add_viz_parser", "check_drawable", "cmd_viz", "deploy_form",
           "deploy_notes", "drawn_count", "max_depth", "render", "require_dot", "to_dot", "to_html", "to_svg"]
