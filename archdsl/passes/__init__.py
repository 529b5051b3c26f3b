"""Stage 4: graph -> graph passes. The deploy pipeline turns a training-form graph (and, optionally, its
trained weights) into the inference form.

    deploy_graph(graph) -> (graph, report)          structure only (what `check --deploy` counts)
The module-level counterpart, a trained ArchModule -> its deploy form, is codegen/deploy.py's `deploy(module)`.
Each pass is named, pure (graph -> graph, never mutating its input) and leaves a checked graph behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import ArchGraph
from .changes import Change
from .deploy import DEPLOY_PASSES


@dataclass
class PassReport:
    name: str
    changes: list[Change] = field(default_factory=list)  # each also its report line (a str)
    graph: ArchGraph | None = None  # the IR after the pass (kept when debugging)


def deploy_graph(g: ArchGraph, debug: bool = False) -> tuple[ArchGraph, list[PassReport]]:
    reports = []
    for p in DEPLOY_PASSES:
        g, changes = p(g)
        reports.append(PassReport(p.__name__, changes, g if debug else None))
    g.deploy = True
    return g, reports


__all__ = ["Change", "PassReport", "deploy_graph"]
