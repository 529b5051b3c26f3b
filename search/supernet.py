"""One-shot search's shared weights: one store of tensors from which every network of a spec's space takes its own.

Takes: a `SearchSpace` (the spec's choice points). Returns: `Supernet`, an nn.Module whose tensors are, for every
entry of a network's state_dict that some network of the space has, one tensor as large as the largest of them;
`subnet(point)` runs the point's network (archdsl's own build of its checked graph: the model `archdsl.load`
builds from the point's concrete spec) on slices of those tensors, so training it trains the store;
`extract(point)` returns that network as a standalone module with its inherited weights, in its own
state_dict layout, BatchNorm statistics recalibrated on a few batches.

How a network takes its weights from the store (the elastic dimensions):
- width (channel counts, expansion and split ratios): the leading channels of each dimension;
- kernel size: the centre of the largest kernel, through a learned separable transform per smaller size (a k x k
  matrix on the rows and the columns, the identity at first: Once-for-All's idea; its full k^2 x k^2 matrix
  does not scale to 31x31 kernels); kernels of the other parity (a 2x2 patchify stem beside a 3x3 conv) keep
  weights of their own;
- depth (the repeat count of a `for`): a shallower network's blocks are the first blocks of a deeper one, by
  name (`stages.1.blocks.0` ...);
- categorical choices (a mixer kind, attention on or off): their layers have names or tensor shapes of their own,
  hence weights of their own.

The store's shapes come from a survey of the space (`survey`): `samples` random points plus each dimension at
its extremes, built on the meta device (no memory). A point that needs more than the survey saw, or an entry
whose tensors cannot share (a different rank), is refused with a SupernetError naming the layer and its place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ArchError
from .errors import SearchError
from .space import Candidate, SearchSpace

__all__ = ["SupernetError", "Entry", "survey", "Supernet"]

SURVEY_SAMPLES = 200


class SupernetError(SearchError):
    """A space the supernet cannot share weights across, or a point outside what it holds (the message says
    which layer and where)."""


@dataclass
class Entry:
    """One shared tensor: the state_dict key the networks use, the largest size of each dimension, which
    dimensions are a convolution's kernel (cropped at the centre; the others keep their leading part), whether it
    is a buffer (BatchNorm statistics), the kernel sizes met (a transform each, but the largest), and a point of
    the survey that has it at its largest (to initialize it from)."""

    key: str
    shape: tuple[int, ...]
    spatial: tuple[int, ...]
    buffer: bool
    where: str
    dtype: torch.dtype = torch.float32
    kernels: set[tuple[int, ...]] = field(default_factory=set)
    donor: dict | None = None
    donor_size: int = 0

    @property
    def name(self) -> str:
        parity = "".join("e" if self.shape[d] % 2 == 0 else "o" for d in self.spatial)
        return self.key.replace(".", "__") + (f"__k{parity}" if parity else "")


def _spatial(module: nn.Module, tensor: torch.Tensor) -> tuple[int, ...]:
    """The kernel dimensions of a tensor its module owns: a convolution's weight (out, in/groups, *kernel)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) or (type(module).__name__ == "FFTConv"):
        return tuple(range(2, tensor.dim())) if tensor.dim() > 2 else ()
    return ()


def _entries_of(module: nn.Module, inelastic: dict | None = None) -> list[tuple[str, torch.Tensor, tuple, bool]]:
    """(state_dict key, tensor, kernel dims, is a buffer) of every tensor of a built network. `inelastic`, when
    given, gets key -> the dimensions no network may take a part of (a layer class's `inelastic_dims`)."""
    out = []
    for mname, mod in module.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, p in mod.named_parameters(recurse=False):
            out.append((prefix + pname, p, _spatial(mod, p), False))
            if inelastic is not None and pname in getattr(mod, "inelastic_dims", {}):
                inelastic[prefix + pname] = (type(mod).__name__, mod.inelastic_dims[pname])
        for bname, b in mod.named_buffers(recurse=False):
            if b is not None:
                out.append((prefix + bname, b, (), True))
    return out


def _sig(key: str, shape: tuple[int, ...], spatial: tuple[int, ...]) -> tuple:
    return (key, len(shape), tuple(shape[d] % 2 for d in spatial))


def _where(cand: Candidate, key: str) -> str:
    """The spec position of the layer that owns a state_dict key (its longest node-name prefix)."""
    g = cand.graph
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:n])
        if name in g.g:
            span = g.node(name).span
            return f"{span} ({name})" if span is not None else name
    return key


def _extreme_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Each known dimension at its lowest and at its highest value, the others at their first."""
    out = []
    for d in space.dims.values():
        dom = d.domain
        if dom["type"] == "choice":
            vals = [v for v in dom["values"] if isinstance(v, (int, float)) and not isinstance(v, bool)]
            ends = [min(vals), max(vals)] if vals else list(dom["values"])
        else:
            ends = [dom["lo"], dom["hi"]]
        out += [{d.name: v} for v in ends]
    return out


def _corner(cp, rng: random.Random, pick=None):
    """A value of the choice point at an end of its range (numbers: the lowest or the highest, at random, or
    `pick` ("lo" / "hi") for all; other values: any)."""
    vals = [v for v in cp.values if isinstance(v, (int, float)) and not isinstance(v, bool)] if cp.kind == "choice" \
        else [cp.lo, cp.hi]
    if not vals or (cp.kind == "choice" and len(vals) != len(cp.values)):
        return cp.sample(rng)
    end = pick or rng.choice(("lo", "hi"))
    return min(vals) if end == "lo" else max(vals)


def survey(space: SearchSpace, samples: int = SURVEY_SAMPLES, seed: int = 0) -> tuple[dict[tuple, Entry], list]:
    """The store's entries, from `samples` valid points of the space (built on the meta device): half drawn at
    random, half at corners of the numeric dimensions (each at its lowest or highest; the categorical ones at
    random: sizes grow with some numbers and shrink with others), plus every dimension at its highest and at its
    lowest; also the valid candidates seen. Raises SupernetError for tensors that cannot share."""
    from ..codegen.module import build_module

    rng = random.Random(seed)
    entries: dict[tuple, Entry] = {}
    seen: list[Candidate] = []
    fixed_points = _extreme_points(space)
    drawn = tries = 0
    while fixed_points or (drawn < samples + 2 and tries < 20 * (samples + 2)):
        if fixed_points:
            cand = space.check_point(fixed_points.pop())
        else:
            tries += 1
            if tries <= 2:  # every number at its highest, then at its lowest
                cand = space.resolve(lambda cp, end=("hi", "lo")[tries - 1]: _corner(cp, rng, end))
            elif tries % 2:
                cand = space.resolve(lambda cp: _corner(cp, rng))
            else:
                cand = space.resolve(lambda cp: cp.sample(rng))
            drawn += isinstance(cand, Candidate)
        if not isinstance(cand, Candidate):
            continue
        seen.append(cand)
        tied = next((n for n in cand.graph.order() if cand.graph.attrs(n).get("ties")), None)
        if tied is not None:
            raise SupernetError(f"{cand.graph.node(tied).span} ({tied}): this layer shares a tensor with another "
                                f"({', '.join(sorted(cand.graph.attrs(tied)['ties']))}), which one-shot search cannot "
                                "slice per network yet; search this space with the trial-based search")
        try:
            with torch.device("meta"):
                module = build_module(cand.graph)
        except ArchError:
            continue
        inelastic: dict[str, tuple] = {}
        for key, t, spatial, buf in _entries_of(module, inelastic):
            shape = tuple(t.shape)
            sig = _sig(key, shape, spatial)
            e = entries.get(sig)
            if e is None:
                e = entries[sig] = Entry(key, shape, spatial, buf, _where(cand, key), t.dtype)
            elif e.spatial != spatial or e.buffer != buf:
                raise SupernetError(f"{_where(cand, key)}: {key} is a convolution kernel in one network of the "
                                    f"space and not in another ({e.where}): the two cannot share weights")
            if key in inelastic and any(shape[d] != e.shape[d] for d in inelastic[key][1]):
                cls, dims = inelastic[key]
                raise SupernetError(
                    f"{_where(cand, key)}: {key} ({cls}) is {list(shape)} in this network and {list(e.shape)} in "
                    f"another ({e.where}): its dimensions {list(dims)} follow the layer's input size, and a "
                    "network cannot take a part of them; one-shot search needs this layer's input size fixed "
                    "across the space (search it with the trial-based search instead)")
            e.shape = tuple(max(a, b) for a, b in zip(e.shape, shape))
            if spatial:
                e.kernels.add(tuple(shape[d] for d in spatial))
            if t.numel() > e.donor_size:
                e.donor, e.donor_size = cand.point, t.numel()
    if not seen:
        raise SupernetError(f"{space.spec}: no valid point found in {tries} tries: nothing to build a supernet of")
    return entries, seen


class Supernet(nn.Module):
    """The shared weights of a space (see the module docstring). `space`: the SearchSpace; `entries`: `survey`'s.
    Built on the CPU; its tensors initialized from real networks of the survey (each entry from the network that
    has it largest; the part no network of the survey had at once is drawn with the same spread), or from `state`
    (a state_dict of this supernet: a checkpoint)."""

    def __init__(self, space: SearchSpace, entries: dict[tuple, Entry], seed: int = 0, state: dict | None = None):
        super().__init__()
        self.space = space
        self.entries = entries
        self.weights = nn.ParameterDict()
        self.transforms = nn.ParameterDict()  # entry name + kernel size -> the k x k matrix (rows and columns)
        self._nets: dict[str, tuple[nn.Module, Candidate]] = {}
        self.growable = False  # while training: a network larger than the store grows it (see grow)
        self.replaced: list[tuple[nn.Parameter | None, nn.Parameter, tuple]] = []  # (old, new, old's place)
        gen = torch.Generator().manual_seed(seed)
        donors: dict[str, dict[str, torch.Tensor]] = {}
        if state is not None:  # a checkpoint: its tensors, in its order (the optimizer's state follows it)
            for name, v in state.items():
                if name.startswith("weights."):
                    self.weights[name[len("weights."):]] = nn.Parameter(torch.zeros_like(v))
                elif name.startswith("transforms."):
                    self.transforms[name[len("transforms."):]] = nn.Parameter(torch.zeros_like(v))
                else:
                    self.register_buffer(name, torch.zeros_like(v))
            self.load_state_dict(state)
            return
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # the donors' own initialization: the same store for the same seed
                inits = {sig: self._init_tensor(e, donors, gen) for sig, e in entries.items()}
        for sig, e in entries.items():
            full = inits[sig]
            if e.buffer:
                self.register_buffer(e.name, full)
            else:
                self.weights[e.name] = nn.Parameter(full)
            self._add_transforms(e)
        self.replaced.clear()

    def _add_transforms(self, e: Entry) -> None:
        """A k x k transform (the identity at first) for every square kernel size of the entry but the largest."""
        largest = tuple(e.shape[d] for d in e.spatial)
        for k in sorted(e.kernels):
            name = f"{e.name}__t{k[0]}" if k else ""
            if k != largest and len(k) == 2 and k[0] == k[1] and name not in self.transforms:
                self.transforms[name] = nn.Parameter(torch.eye(k[0]))
                self.replaced.append((None, self.transforms[name], ()))

    def grow(self, key: str, shape: tuple[int, ...], spatial: tuple[int, ...], dtype: torch.dtype, where: str,
             like: torch.Tensor | None = None, buffer: bool = False) -> Entry:
        """Make room for a network's tensor the store does not hold yet (a larger size, or a layer no surveyed
        network had): the store's tensor is replaced by a larger one holding the old at its place (the leading
        part, the centre of a kernel), the rest drawn with its spread (`like`: a freshly initialized tensor of
        the network, for a new layer). `replaced` lists (old, new, old's place) for the trainer's optimizer."""
        sig = _sig(key, shape, spatial)
        e = self.entries.get(sig)
        gen = torch.Generator().manual_seed(len(self.entries) + sum(shape))
        if e is None:
            e = self.entries[sig] = Entry(key, tuple(shape), tuple(spatial), buffer, where, dtype)
            new = like.detach().clone().to(dtype) if like is not None else torch.zeros(shape, dtype=dtype)
            if e.buffer:
                self.register_buffer(e.name, new)
            else:
                self.weights[e.name] = nn.Parameter(new)
                self.replaced.append((None, self.weights[e.name], ()))
            if spatial:
                e.kernels.add(tuple(shape[d] for d in spatial))
            return e
        old = getattr(self, e.name) if e.buffer else self.weights[e.name]
        big = tuple(max(a, b) for a, b in zip(e.shape, shape))
        place = _place(big, tuple(old.shape), e.spatial)
        if e.buffer or not old.is_floating_point() or old.numel() < 2:
            fill = torch.ones(big, dtype=old.dtype) if "var" in key else torch.zeros(big, dtype=old.dtype)
        else:
            fill = torch.randn(big, generator=gen) * float(old.detach().std()) + float(old.detach().mean())
        fill[place] = old.detach()
        e.shape = big
        if spatial:
            e.kernels.add(tuple(shape[d] for d in spatial))
        if e.buffer:
            self.register_buffer(e.name, fill)
        else:
            self.weights[e.name] = nn.Parameter(fill)
            self.replaced.append((old, self.weights[e.name], place))
        self._add_transforms(e)
        return e

    def _init_tensor(self, e: Entry, donors: dict, gen: torch.Generator) -> torch.Tensor:
        from ..codegen.module import build_module

        key = repr(sorted(e.donor.items(), key=str)) if e.donor is not None else None
        if key is not None and key not in donors:
            cand = self.space.check_point(e.donor)
            donors[key] = dict(build_module(cand.graph).state_dict()) if isinstance(cand, Candidate) else {}
        src = donors.get(key, {}).get(e.key)
        if src is None or src.dim() != len(e.shape):
            return torch.zeros(e.shape, dtype=e.dtype)
        src = src.detach()
        if tuple(src.shape) == e.shape:
            return src.clone()
        if e.buffer or src.numel() < 2 or not src.is_floating_point():
            # statistics: zero mean / unit variance outside the donor's part
            full = torch.ones(e.shape, dtype=src.dtype) if "var" in e.key else torch.zeros(e.shape, dtype=src.dtype)
        else:
            full = torch.randn(e.shape, generator=gen) * float(src.std()) + float(src.mean())
        full[self._index(e, tuple(src.shape))] = src
        return full

    @staticmethod
    def _index(e: Entry, shape: tuple[int, ...]) -> tuple[slice, ...]:
        """Where a tensor of `shape` sits in the entry: the leading part of each dimension, the centre of a
        kernel's."""
        return _place(e.shape, shape, e.spatial)

    def _entry(self, key: str, shape: tuple[int, ...], spatial: tuple[int, ...], where, like=None,
               buffer: bool = False) -> Entry:
        e = self.entries.get(_sig(key, shape, spatial))
        if e is None or any(n > full for n, full in zip(shape, e.shape)):
            if self.growable:
                return self.grow(key, shape, spatial, like.dtype if like is not None else torch.float32, where(),
                                 like, buffer)
            have = "no such layer" if e is None else f"at most {list(e.shape)}"
            raise SupernetError(f"{where()}: {key} {list(shape)} is outside what the supernet was trained with "
                                f"({have}): no network of its training had it; train the supernet longer, or "
                                "with more --supernet-samples")
        return e

    def tensor(self, key: str, shape: tuple[int, ...], spatial: tuple[int, ...], where=lambda: "?",
               like: torch.Tensor | None = None, buffer: bool = False) -> torch.Tensor:
        """The slice of the store a network's tensor `key` of `shape` takes (a view for the leading part; the
        transformed centre for a smaller kernel). `like`: the network's own freshly initialized tensor, for a
        store that grows."""
        e = self._entry(key, shape, spatial, where, like, buffer)
        full = getattr(self, e.name) if e.buffer else self.weights[e.name]
        t = full[self._index(e, shape)]
        k = tuple(shape[d] for d in e.spatial)
        name = f"{e.name}__t{k[0]}" if k else None
        if name is not None and name in self.transforms:
            a = self.transforms[name]
            t = a @ t @ a.transpose(0, 1)  # rows and columns of every (out, in) kernel
        return t

    def network(self, point: dict[str, Any]) -> tuple[nn.Module, Candidate]:
        """The point's network (built once, kept), with the candidate it was built from; SupernetError for a
        point the spec rejects."""
        cand = self.space.check_point(point)
        if not isinstance(cand, Candidate):
            raise SupernetError(f"the point is not a network of the space: {cand.first}")
        got = self._nets.get(cand.hash)
        if got is None:
            from ..codegen.module import build_module

            with torch.device("meta"):
                module = build_module(cand.graph)
            got = self._nets[cand.hash] = (module.to_empty(device="cpu"), cand)
        return got

    def tensors(self, point: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The point's state_dict, taken from the store (differentiable: gradients reach the store)."""
        module, cand = self.network(point)
        fresh = None
        if self.growable and any(self._misses(key, tuple(t.shape), spatial) for key, t, spatial, _ in
                                 _entries_of(module)):
            from ..codegen.module import build_module

            fresh = dict(build_module(cand.graph).state_dict())  # the new part's first values
        return {key: self.tensor(key, tuple(t.shape), spatial, lambda k=key: _where(cand, k),
                                 None if fresh is None else fresh.get(key), buf)
                for key, t, spatial, buf in _entries_of(module)}

    def _misses(self, key: str, shape: tuple[int, ...], spatial: tuple[int, ...]) -> bool:
        e = self.entries.get(_sig(key, shape, spatial))
        return e is None or any(n > full for n, full in zip(shape, e.shape))

    def forward_point(self, point: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        """Run the point's network on `x` with the shared weights (in this supernet's train / eval mode; in train
        mode its BatchNorm statistics update the store's)."""
        from torch.func import functional_call

        module, _ = self.network(point)
        module.train(self.training)
        return functional_call(module, self.tensors(point), (x,), strict=True)

    @torch.no_grad()
    def extract(self, point: dict[str, Any], calibrate: torch.Tensor | None = None) -> nn.Module:
        """The point's network as a standalone training-form module (`archdsl.load`'s build of its concrete
        spec) holding its inherited weights, in eval mode. `calibrate`: training images; when given, BatchNorm
        statistics are recomputed exactly over them (train.precise_bn): the store's statistics mix every
        network's."""
        from ..codegen.module import build_module
        from .train import precise_bn

        _, cand = self.network(point)
        module = build_module(cand.graph)
        module.load_state_dict({k: v.detach().clone() for k, v in self.tensors(point).items()})
        if calibrate is not None:
            precise_bn(module, calibrate)
        return module.eval()


def _place(big: tuple[int, ...], shape: tuple[int, ...], spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """Where a tensor of `shape` sits in one of `big`: the leading part of each dimension, the centre of a
    kernel dimension (`spatial`)."""
    idx = []
    for d, (full, n) in enumerate(zip(big, shape)):
        start = (full - n) // 2 if d in spatial else 0
        idx.append(slice(start, start + n))
    return tuple(idx)
