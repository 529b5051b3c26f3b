"""Stage 4: graph -> graph passes. The deploy pipeline turns a training-form graph (and, optionally, its
trained weights) into the inference form.

    deploy_graph(graph) -> (graph, report)          structure only (what `check --deploy` counts)
    deploy(module) -> ArchModule                    a trained training-form ArchModule -> its deploy form,
                                                    weights and BN statistics converted exactly
Each pass is named, pure (graph -> graph, never mutating its input) and leaves a checked graph behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import ArchGraph
from .deploy import DEPLOY_PASSES


@dataclass
class PassReport:
    name: str
    changes: list[str] = field(default_factory=list)
    graph: ArchGraph | None = None  # the IR after the pass (kept when debugging)


def deploy_graph(g: ArchGraph, debug: bool = False) -> tuple[ArchGraph, list[PassReport]]:
    reports = []
    for p in DEPLOY_PASSES:
        g, changes = p(g)
        reports.append(PassReport(p.__name__, changes, g if debug else None))
    g.deploy = True
    return g, reports


def attach_weights(g: ArchGraph, module) -> ArchGraph:
    """A copy of `g` whose nodes carry the tensors of `module`'s submodule of the same name."""
    out = g.copy()
    for name in out.order():
        if name == out.input_node:
            continue
        sd = module.get_submodule(name).state_dict()
        if sd:
            out.attrs(name)["weights"] = {k: v.detach().clone() for k, v in sd.items()}
    return out


def deploy(module, debug: bool = False):
    """The deploy form of a training-form ArchModule (trained or not): same function in eval mode."""
    import torch

    from ..codegen.module import ArchModule

    g, reports = deploy_graph(attach_weights(module.graph, module), debug)
    out = ArchModule(g, getattr(module, "memory_limit", None))
    ref = next(module.parameters(), None)
    if ref is not None:  # match dtype/device before loading, so no weight is rounded on the way
        out.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for name in g.order():
            w = g.attrs(name).get("weights")
            if w is not None:
                out.get_submodule(name).load_state_dict(w)
    out.deploy_reports = reports
    return out.eval()


__all__ = ["PassReport", "attach_weights", "deploy", "deploy_graph"]
