"""Stage 5: checked ArchGraph -> a runnable, trainable torch.nn.Module (the training form).

Takes: a checked `ArchGraph`. Returns: `ArchModule`, whose submodules are named after the spec
(`stages.2.blocks.5.mixer.weight`), registered in data-flow order, and whose forward runs the graph's
nodes in topological order. A failure inside a node is re-raised naming the node and its source line.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import limits
from ..errors import ArchError, Diagnostic
from ..ir import ArchGraph, free_after
from ..ops import registry


class Container(nn.Module):
    """A namespace in the module tree (a stage, a block, a loop iteration); its parent ArchModule runs it.
    Indexable like the compiled source's containers: model.stages[2].blocks[0]."""

    def __getitem__(self, key):
        return self._modules[str(key)]

    def forward(self, *args):  # pragma: no cover - never called directly
        raise RuntimeError("archdsl containers are run by their ArchModule")


class NodeError(RuntimeError):
    """A runtime failure inside one node of a compiled model, naming the node and its spec position."""


class InputError(ValueError):
    """An input the compiled model cannot take (rank, channels, a spatial size some layer cannot reduce),
    found at the model's boundary before any layer runs."""


class ArchModule(nn.Module):
    def __init__(self, graph: ArchGraph, max_memory: int | str | None = None):
        """Raises ArchError (at the responsible layer) before allocating anything when the parameters plus one
        batch-1 inference pass would exceed the memory limit (archdsl.limits.memory_limit(max_memory))."""
        super().__init__()
        self.memory_limit = limits.memory_limit(max_memory)
        peak = limits.check_memory(graph, self.memory_limit)
        self.graph = graph  # the checked IR it was built from (archdsl.deploy reads it)
        self.arch_name = graph.model
        self.input_node = graph.input_node
        shape = graph.input_shape
        self.input_chw = (shape.c, shape.h, shape.w)
        self._plan: list[tuple[str, str, tuple[tuple[str, int], ...], str]] = []
        self._out = graph.output
        order = graph.order()
        for name in order:
            node = graph.node(name)
            if name == graph.input_node:
                continue
            op = registry.get(node.op)
            attrs = graph.attrs(name)
            module = op.build(node.params, list(attrs["in_shapes"]))
            _install(self, name, module)
            refs = tuple(graph.inputs(name))
            self._plan.append((name, node.op, refs, f"{node.span}"))
        guard_wide_padding(self)
        for name in order:  # tied tensors (Op.shared): one Parameter, registered under every module that uses it
            for attr, first in (graph.attrs(name).get("ties") or {}).items():
                setattr(self.get_submodule(name), attr, getattr(self.get_submodule(first), attr))
        # Free each value after its last use, so activation memory stays as in a hand-written model.
        self._free_after = free_after([refs for _, _, refs, _ in self._plan], self._out[0])
        self._modules_by_name = {name: self.get_submodule(name) for name, *_ in self._plan}
        self._param_bytes = graph.total().params * limits.BYTES_PER_VALUE
        # per input size: activation values of one image (eval peak, training total), for the batch check
        self._sizes_ok: dict[tuple[int, int], tuple[int, int]] = {
            (shape.h, shape.w): (peak, limits.activation_total(graph))}

    def validate_input(self, x: torch.Tensor) -> None:
        """Raise InputError unless x is (N, C, H, W) with the spec's C and an H x W every layer can take: a new
        size is checked once by the graph's own shape inference, so the message names the layer and its
        source line (e.g. a stride-2 conv that would leave no pixels) instead of a PyTorch stack."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.input_chw[0] or x.shape[0] < 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{self.arch_name} expects input of shape (N, {self.input_chw[0]}, H, W), got {got}")
        hw = (int(x.shape[2]), int(x.shape[3]))
        acts = self._sizes_ok.get(hw) or self._check_size(hw)
        if x.device.type != "cpu":  # the limit is about this machine's RAM; a GPU reports its own OOM
            return
        if torch.compiler.is_compiling():
            # torch.export / torch.compile tracing: nothing is allocated, and int() of a symbolic batch size would
            # fix the batch of the exported model (no dynamic batch in ONNX)
            return
        training = self.training and torch.is_grad_enabled()
        need = self._param_bytes + int(x.shape[0]) * acts[training] * limits.BYTES_PER_VALUE
        if need > self.memory_limit:
            raise InputError(
                f"{self.arch_name}: {'a training' if training else 'an inference'} pass on input {tuple(x.shape)} "
                f"needs about {limits.gb(need)} (parameters and activations as float32), more than the memory "
                f"limit of {limits.describe_limit(self.memory_limit)}: use a smaller batch or input, or raise the "
                f"limit (archdsl --max-memory, ARCHDSL_MAX_MEMORY or max_memory=)")

    def _check_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        from ..check import check
        from ..errors import ArchError
        from ..ir import Node

        g = self.graph.copy()
        old = g.node(g.input_node)
        params = {**old.raw_params(), "h": hw[0], "w": hw[1]}
        g.replace_node(Node(old.name, old.op, tuple(params.items()), old.span, old.arg_spans, old.notes))
        try:
            checked = check(g)
        except ArchError as e:
            raise InputError(f"{self.arch_name} cannot take a {hw[0]}x{hw[1]} input (built for "
                             f"{self.input_chw[1]}x{self.input_chw[2]}):\n{e}") from None
        self._sizes_ok[hw] = _act_values(checked)
        return self._sizes_ok[hw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.validate_input(x)
        return self.run(x)

    def run(self, x: torch.Tensor, step: Callable[[str, nn.Module, list], object] | None = None) -> torch.Tensor:
        """The graph's nodes in order on input `x` (not checked: forward does that), each value freed after its
        last use; `step(name, module, args)`, when given, makes each node's call (the bfloat16 form, lowp.py,
        runs some nodes in float32). A node that fails raises NodeError naming it and its source position."""
        vals: dict[str, object] = {self.input_node: x}
        for i, (name, op, refs, where) in enumerate(self._plan):
            args = gather(vals, refs)
            mod = self._modules_by_name[name]
            try:
                vals[name] = mod(*args) if step is None else step(name, mod, args)
            except Exception as e:  # re-raised with the node's name and source position
                shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
                raise NodeError(f"{where}: node '{name}' ({op}) failed on input {shapes}: {e}") from e
            for src in self._free_after[i]:
                del vals[src]
        out = vals[self._out[0]]
        return out[self._out[1]] if isinstance(out, tuple) else out


class _PadPastInput:
    """An nn.Conv2d's `_conv_forward` that pads explicitly (then convolves unpadded) when the zero padding reaches
    past the input (padding >= its height or width: kernel taps that never meet it) and the weight's gradient is
    computed; else F.conv2d as torch does (inference stays bit for bit what `archdsl compile`'s source computes).
    The same numbers; it steers around a torch 2.13 CPU bug: oneDNN's AVX-512 backward-weights kernel corrupts
    the heap (or hangs) on a 1-channel (31, 1) conv over a 14-high map, found by a search trial (an InceptionNeXt
    band of 31 on 14x14 with one channel per branch). Installed per instance, so the module stays an nn.Conv2d
    (the deploy passes and the fast runtime match on the type) and its state_dict is unchanged."""

    def __init__(self, conv: nn.Conv2d):
        self.conv = conv

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        c = self.conv
        ph, pw = c.padding
        if (ph >= x.shape[-2] or pw >= x.shape[-1]) and weight.requires_grad and torch.is_grad_enabled():
            return F.conv2d(F.pad(x, (pw, pw, ph, ph)), weight, bias, c.stride, 0, c.dilation, c.groups)
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)


def guard_wide_padding(model: nn.Module) -> int:
    """Install `_PadPastInput` on every zero-padded nn.Conv2d of `model` with a numeric padding of 2 or more (a
    3x3 conv's padding of 1 reaches past only a 1-pixel map, where every tap but the centre is padding anyway,
    and the bug needs a tall kernel); returns how many."""
    n = 0
    for m in model.modules():
        if (type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)
                and max(m.padding) >= 2 and "_conv_forward" not in m.__dict__):
            m._conv_forward = _PadPastInput(m)
            n += 1
    return n


def _act_values(graph: ArchGraph) -> tuple[int, int]:
    """(eval peak, training total) activation values of one image through a checked graph."""
    return limits.activation_peak(graph)[0], limits.activation_total(graph)


def gather(vals: dict, refs) -> list:
    """The input values of a step: `vals[node]`, or its `port`-th item where the node produced a tuple."""
    return [vals[src] if not isinstance(vals[src], tuple) else vals[src][port] for src, port in refs]


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    parts = path.split(".")
    parent = root
    for p in parts[:-1]:
        child = parent._modules.get(p)
        if child is None:
            child = Container()
            parent.add_module(p, child)
        parent = child
    parent.add_module(parts[-1], module)


def build_module(graph: ArchGraph, max_memory: int | str | None = None) -> ArchModule:
    """The training-form nn.Module of a checked graph, initialised as the spec's init(...) says. Raises ArchError
    before allocating when it would not fit the memory limit (see ArchModule)."""
    from .init import apply_init

    try:
        m = ArchModule(graph, max_memory)
        apply_init(m, graph.init)
    except (RuntimeError, MemoryError) as e:
        if not limits.is_oom(e):
            raise
        # the machine refused memory that the limit allowed (a ulimit, a cgroup, other programs): say so, at the
        # layer with the most parameters
        total = graph.total()
        top = max(graph.order(), key=lambda n: graph.cost(n).params)
        limit = limits.describe_limit(limits.memory_limit(max_memory))
        raise ArchError([Diagnostic(
            graph.node(top).span, f"out of memory building {graph.model}: its {total.params:,} parameters "
            f"({total.params * limits.BYTES_PER_VALUE / 1e9:.2f} GB as float32) could not be allocated",
            f"the memory limit ({limit}) allows them, but this process cannot have that much (ulimit -v, a "
            "container's cgroup, other programs): lower --max-memory to what it can have, or build a smaller "
            "model")]) from None
    return m
