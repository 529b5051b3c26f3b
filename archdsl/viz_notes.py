"""archdsl viz, the deploy form's notes: what the deploy passes merged into each deploy-form node, read from their
`passes.Change` records (kind and nodes), and the summary line per pass.

Takes: the training-form graph, the deploy-form graph and the pass reports. Returns: `DeployNotes` (`deploy_notes`),
or the deploy form with its notes (`deploy_form`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .ir import ArchGraph
from .viz_labels import _call_text

# ---------------------------------------------------------------- deploy notes


@dataclass
class DeployNotes:
    """What the deploy passes did, for drawing the deploy form: per deploy-form node, one line per training-form
    node merged into it (or per refused merge); `summary`, one line per pass that changed something."""

    nodes: dict[str, list[str]] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


# change kind -> the notes it puts on its receiving node `dst` (passes/changes.py); a change of another kind, or
# with no receiving node in the deploy form, is counted in the summary only
_NOTE_RULES = {
    "fold_bn": lambda c, t: [f"+ folded: {_what(t, c.src, c.dst)}"],
    "reparam": lambda c, t: [f"= {_call_text(t, c.dst) if c.dst in t else 'training op'}, re-parameterized"],
    "merge_branches": lambda c, t: _merged_branches(t, c.src, c.dst, c.n),
    "fold_layer_scale": lambda c, t: [f"+ folded: {_what(t, c.src, c.dst)}"],
    "move_bias": lambda c, t: [f"+ bias of {_what(t, c.src, c.dst)}"],
    "refused": lambda c, t: [f"refused: {c.why}"],
}


def deploy_notes(train: ArchGraph, deployed: ArchGraph, reports: Sequence) -> DeployNotes:
    """Notes for drawing `deployed`, from the training form and the pass reports of `passes.deploy_graph`."""
    notes = DeployNotes()
    for r in reports:
        if r.changes:
            notes.summary.append(f"{r.name}: {len(r.changes)} change{'s' if len(r.changes) > 1 else ''}")
        for change in r.changes:
            dst, lines = _note(change, train, deployed)
            if dst is not None:
                notes.nodes.setdefault(dst, []).extend(lines)
    notes.summary.append(f"{len(train)} training-form nodes -> {len(deployed)} deploy-form nodes")
    return notes


def _note(change, train: ArchGraph, deployed: ArchGraph) -> tuple[str | None, list[str]]:
    """(the deploy-form node a change lands on, its note lines), or (None, []) when it lands on none."""
    rule = _NOTE_RULES.get(getattr(change, "kind", None))
    if rule is None or change.dst not in deployed:
        return None, []
    return change.dst, rule(change, train)


def _merged_branches(train: ArchGraph, merge: str, dst: str, n: int) -> list[str]:
    """'= 3 branches of add merged:' then one line per training-form branch: 'dwconv(k=7) > bn', 'identity'."""
    lines = [f"= {n} branches of {_what(train, merge, dst)} merged:"]
    if merge not in train:
        return lines
    for u, _ in train.inputs(merge):
        chain = []
        while train.g.out_degree(u) == 1 and len(train.inputs(u)) == 1:  # back to where the branches fork
            chain.append(_call_text(train, u, 24))
            u = train.inputs(u)[0][0]
        lines.append("\u2022 " + (" > ".join(reversed(chain)) or "identity"))
    return lines


def _what(train: ArchGraph, name: str, to: str) -> str:
    """A training-form node, for a note on `to`: its op, and its short name where that says more."""
    short = _relative(name, to)
    op = train.node(name).op if name in train else ""
    return short if not op else op if short in (op, "") or short.isdigit() else f"{op} {short}"


def _relative(name: str, to: str) -> str:
    """`name` without the scope it shares with `to`: ('s.0.b.1.norm', 's.0.b.1.mixer') -> 'norm'."""
    a, b = name.split("."), to.split(".")
    i = 0
    while i < min(len(a), len(b)) - 1 and a[i] == b[i]:
        i += 1
    return ".".join(a[i:])


def deploy_form(graph: ArchGraph) -> tuple[ArchGraph, DeployNotes]:
    """The structure-only deploy form of a checked training-form graph, with its notes (for to_svg et al.)."""
    from .passes import deploy_graph

    deployed, reports = deploy_graph(graph)
    return deployed, deploy_notes(graph, deployed, reports)
