"""Stage 2 data: the graph IR. An `ArchGraph` wraps a networkx.DiGraph of frozen `Node`s.

Nodes are keyed by their hierarchical name (e.g. 'stages.2.blocks.5.mixer'), which later becomes the
PyTorch module name. Edges carry `src_port` (which output of a multi-output node) and `dst_port`
(which input of a multi-input node). After checking (`archdsl.check`), node attributes also hold
`shape` (a Shape, or a tuple for split nodes), `in_shapes` and `cost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import networkx as nx

from .errors import Span
from .shapes import Cost, Shape

Ref = tuple[str, int]  # (node name, output port)
INIT_SCHEMES = ("trunc_normal", "kaiming", "default")  # weight initialisation schemes (archdsl.codegen.init)


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    params: Any  # before check: tuple of (field, value) pairs; after: the op's pydantic Params
    span: Span  # the op's name in the source
    arg_spans: tuple[tuple[str, Span], ...] = ()
    notes: tuple[str, ...] = ()  # block-call chain, for diagnostics

    def arg_span(self, arg: str | None) -> Span:
        for k, s in self.arg_spans:
            if k == arg:
                return s
        return self.span

    def raw_params(self) -> dict[str, Any]:
        if isinstance(self.params, tuple):
            return dict(self.params)
        return self.params.model_dump()


@dataclass(frozen=True)
class Scope:
    """A named region of the graph: a block call, a loop iteration, a form or a sequence."""

    path: str
    kind: str  # "block" | "model" | "for" | "form" | "seq" | "if"
    label: str  # block name, form name, ...
    span: Span
    args: tuple[tuple[str, Any], ...] = ()  # a block call's parameter values


@dataclass
class ArchGraph:
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    model: str = ""
    file: str = ""
    output: Ref | None = None
    input_node: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # resolved model parameters
    choices: list = field(default_factory=list)  # ChoicePoint, in order met
    scaling: dict | None = None
    init: dict | None = None  # weight initialisation scheme (archdsl.codegen.init)
    deploy: bool = False  # produced by the deploy passes
    scopes: dict[str, Scope] = field(default_factory=dict)
    _order: int = 0

    # ---- construction
    def add(self, node: Node, inputs: list[Ref]) -> None:
        self.g.add_node(node.name, node=node, order=self._order)
        self._order += 1
        for port, (src, sport) in enumerate(inputs):
            self.g.add_edge(src, node.name, src_port=sport, dst_port=port)

    def copy(self) -> "ArchGraph":
        out = replace(self, g=self.g.copy(), params=dict(self.params), choices=list(self.choices),
                      scopes=dict(self.scopes), init=None if self.init is None else dict(self.init))
        for n in out.g.nodes:  # attribute dicts must not be shared with the original
            out.g.nodes[n].update(dict(self.g.nodes[n]))
        return out

    # ---- queries
    def __contains__(self, name: str) -> bool:
        return name in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def node(self, name: str) -> Node:
        return self.g.nodes[name]["node"]

    def attrs(self, name: str) -> dict:
        return self.g.nodes[name]

    def replace_node(self, node: Node, **attrs) -> None:
        self.g.nodes[node.name]["node"] = node
        self.g.nodes[node.name].update(attrs)

    def order(self) -> list[str]:
        """Topological order, ties broken by creation order: deterministic, and data-flow order."""
        return list(nx.lexicographical_topological_sort(self.g, key=lambda n: self.g.nodes[n]["order"]))

    def nodes(self) -> Iterator[Node]:
        for n in self.order():
            yield self.node(n)

    def inputs(self, name: str) -> list[Ref]:
        edges = sorted(self.g.in_edges(name, data=True), key=lambda e: e[2]["dst_port"])
        return [(u, d["src_port"]) for u, _, d in edges]

    def shape_of(self, ref: Ref) -> Shape | None:
        s = self.g.nodes[ref[0]].get("shape")
        if isinstance(s, tuple):
            return s[ref[1]] if ref[1] < len(s) else None
        return s

    def cost(self, name: str) -> Cost:
        return self.g.nodes[name].get("cost") or Cost()

    def total(self) -> Cost:
        total = Cost()
        for n in self.g.nodes:
            total = total + self.cost(n)
        return total

    @property
    def output_shape(self) -> Shape | None:
        return None if self.output is None else self.shape_of(self.output)

    @property
    def input_shape(self) -> Shape | None:
        return None if self.input_node is None else self.g.nodes[self.input_node].get("shape")


def free_after(refs_per_step: list, keep: str) -> list[list[str]]:
    """For each step of a run (its input refs given in order), the values whose last use it is: freed right after
    it. `keep` (the model's output) is never freed."""
    last_use: dict[str, int] = {}
    for i, refs in enumerate(refs_per_step):
        for src, _ in refs:
            last_use[src] = i
    out: list[list[str]] = [[] for _ in refs_per_step]
    for src, i in last_use.items():
        if src != keep:
            out[i].append(src)
    return out


def join(*parts: str) -> str:
    return ".".join(p for p in parts if p)
