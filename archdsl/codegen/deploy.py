"""Stage 5 (codegen): the deploy form of a built module, weights included.

Takes: a training-form ArchModule (trained or not). Returns: `deploy(module)`, an ArchModule of the deploy graph
(passes/deploy_graph: BN folded, branches re-parameterized) carrying the converted weights and BN statistics,
exact in eval mode; `attach_weights(graph, module)` gives the graph whose nodes carry the module's tensors,
which the passes convert.
"""

from __future__ import annotations

from ..ir import ArchGraph
from ..passes import deploy_graph
from .module import ArchModule

__all__ = ["deploy", "attach_weights"]


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
