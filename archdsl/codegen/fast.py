"""Stage 5 (deploy runtime): a deploy-form ArchModule -> FastModule, the fastest way archdsl knows to run it here.

Takes: the deploy form (`archdsl.deploy(module)`, an ArchModule whose graph has been through the deploy passes).
Returns: `FastModule`, computing the same function in eval mode. Its nodes are lowered to *steps*:
- a fused block where a pattern matches (archdsl.codegen.fusion: the ConvNeXt / InceptionNeXt / UniRepLKNet
  block from its depthwise mixer to the residual add, as archdsl.kernels' fused kernels plus two GEMMs);
- otherwise one node, run by its own PyTorch module.
Every step has candidate implementations (the fused kernels, the plain modules in the memory format the input
arrives in, or after converting it to channels-last / contiguous). Which one runs is decided by timing the
candidates on the step's real input, the first time an input shape is seen (or at build time, `batch=`),
through archdsl.codegen.tune (interleaved timing, cached on disk). So the memory layout of every value is chosen
by measurement too, and a conversion is inserted only where the step after it runs faster for it.
A fused candidate whose output disagrees with the plain modules' on the tuning input is never chosen.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import torch
from torch import nn

from ..ir import free_after
from .fusion import CL, Step, match_blocks, node_candidates
from .module import ArchModule, NodeError, gather
from .tune import NARROW, NARROW_CHECKS, TuneCache, is_quiet, margin, pick, tune_key

log = logging.getLogger("archdsl.fast")

AGREE_RTOL = 1e-3  # a fused candidate farther than this (relative to the output's scale) from the plain one is refused


@functools.lru_cache(maxsize=None)
def _warn_off_cpu(device: torch.device) -> None:
    log.warning("archdsl's fast kernels run on the CPU: on %s the plain deploy form runs (torch's kernels)", device)


def _fmt(t: Any) -> Any:
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    cl = t.dim() == 4 and t.is_contiguous(memory_format=CL) and not t.is_contiguous()
    return (tuple(t.shape), "cl" if cl else "c" if t.is_contiguous() else "s", str(t.dtype))


class FastModule(nn.Module):
    """The deploy form lowered to measured steps. `forward(x)` tunes itself the first time it meets an input
    shape (cached on disk across processes), then runs the chosen implementation of every step.
    `plan()` lists the choices; `base` is the plain deploy-form ArchModule it was made from."""

    def __init__(self, base: ArchModule, *, cache: TuneCache | None = None, check: bool = True,
                 prefer: tuple[str, ...] | None = None, retune: bool | None = None, max_seconds: float = 1.0):
        """`cache`: where choices are kept (default ~/.cache/archdsl/kernels/tune.jsonl). `check`: refuse fused
        candidates that disagree with the plain modules on the tuning input. `prefer`: take the first of these
        candidate names a step has instead of measuring (e.g. ("fused", "kernel") to force the kernels).
        `retune`: measure again even where the cache has a choice (default: $ARCHDSL_RETUNE=1). `max_seconds`:
        the time cap for measuring one step's candidates."""
        super().__init__()
        from ..bench.measure import steady_state_allocator

        # A fresh process's malloc would page-fault every new activation buffer (2.5-3.5x slower small convs).
        self.allocator = steady_state_allocator()
        self.base = base.eval()
        self.graph = base.graph
        self.arch_name = base.arch_name
        self.input_chw = base.input_chw
        self.deploy_reports = getattr(base, "deploy_reports", [])
        self._cache = cache or TuneCache()
        self._check = check
        self._prefer = tuple(prefer or ())
        self._retune = os.environ.get("ARCHDSL_RETUNE") == "1" if retune is None else retune
        self._fresh: set[str] = set()
        self._max_seconds = max_seconds
        self.tune_seconds = 0.0
        self.steps = self._lower()
        self._free_after = free_after([s.refs for s in self.steps], base._out[0])

    # ------------------------------------------------------------------ lowering
    def _lower(self) -> list[Step]:
        g = self.graph
        mods = self.base._modules_by_name
        blocks = match_blocks(g, mods)
        covered = {n for b in blocks for n in b.nodes}
        by_out = {b.out: b for b in blocks}
        ordered: list[Step] = []
        for name, op, refs, where in self.base._plan:
            if name in covered:
                if name in by_out:
                    ordered.append(by_out[name])
                continue
            mod = mods[name]
            ordered.append(Step(name, (name,), refs, where, f"{op}:{mod!r}", node_candidates(mod)))
        return ordered

    # ------------------------------------------------------------------ running
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.base.validate_input(x)
        where = self._weights_device()
        if x.device.type != "cpu" and x.device == where:
            # archdsl's kernels are CPU code: on another device the plain deploy form (the same network, its own
            # weights, moved with this module) runs instead
            _warn_off_cpu(x.device)
            return self.base(x)
        if where.type != "cpu" or x.device.type != "cpu":
            raise ValueError(f"the fast form's weights are on {where} and its input on {x.device}: give it inputs "
                             f"on {where} (where the plain deploy form runs) or move it back with .cpu()")
        with torch.inference_mode():
            return self._run(x)

    def _weights_device(self) -> torch.device:
        for t in self.base.parameters():
            return t.device
        for t in self.base.buffers():
            return t.device
        return torch.device("cpu")

    def tune(self, x: torch.Tensor) -> FastModule:
        """Choose every step's implementation for inputs shaped like `x` (measuring where not cached)."""
        self.base.validate_input(x)
        with torch.inference_mode():
            self._run(x)  # every step meeting a new input signature is tuned as it runs
        return self

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[str, Any] = {self.base.input_node: x}
        for i, step in enumerate(self.steps):
            args = gather(vals, step.refs)
            sig = tuple(_fmt(a) for a in args)
            name = step.choice.get(sig)
            if name is None:
                name = self._choose(step, sig, args)
            try:
                vals[step.out] = step.candidates[name](*args)
            except Exception as e:  # re-raised with the node's name and source position
                shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
                raise NodeError(f"{step.where}: node '{step.out}' ({name}) failed on input {shapes}: {e}") from e
            for src in self._free_after[i]:
                del vals[src]
        out = vals[self.base._out[0]]
        return out[self.base._out[1]] if isinstance(out, tuple) else out

    def _choose(self, step: Step, sig: tuple, args: list) -> str:
        t0 = time.perf_counter()
        preferred = [p for p in self._prefer if p in step.candidates]
        if preferred:
            step.choice[sig] = preferred[0]
            step.ms[sig] = {}
            return preferred[0]
        key = tune_key({"step": step.signature, "inputs": sig, "candidates": sorted(step.candidates)})
        rec = self._cache.get(key) if not self._retune or key in self._fresh else None
        if rec is not None and rec.get("choice") in step.candidates and not self._recheck(key, rec):
            name, ms = rec["choice"], rec.get("ms", {})
            step.source[sig] = {"from": "cache", "measured_at": rec.get("t"), "margin": rec.get("margin")}
        else:
            cands = dict(step.candidates)
            if self._check and len(cands) > 1:
                cands = self._agreeing(step, cands, args)
            name, ms, clean = pick({k: functools.partial(f, *args) for k, f in cands.items()},
                                   max_seconds=self._max_seconds, fallback=step.reference)
            checks = 1 + (rec.get("checks", 1) if rec is not None and rec.get("choice") == name else 0)
            if clean:  # a choice timed while another program took the cores is used now, never cached
                self._cache.put(key, {"choice": name, "ms": ms, "step": step.signature[:200], "t": time.time(),
                                      "margin": margin(ms, name), "checks": checks})
            step.source[sig] = {"from": "measured" if clean else "measured, disturbed (not cached)",
                                "rechecked": rec is not None}
            self._fresh.add(key)  # a retune measures each signature once, not once per block using it
        step.choice[sig] = name
        step.ms[sig] = ms
        self.tune_seconds += time.perf_counter() - t0
        return name

    def _recheck(self, key: str, rec: dict) -> bool:
        """Whether a cached choice is measured again now: a narrow one (margin under NARROW) that fewer than
        NARROW_CHECKS clean comparisons stand behind, on a quiet machine, once per process."""
        m = rec.get("margin")
        if key in self._fresh or m is None or m >= NARROW or rec.get("checks", 1) >= NARROW_CHECKS:
            return False
        return is_quiet(torch.get_num_threads())

    def _agreeing(self, step: Step, cands: dict, args: list) -> dict:
        ref = cands[step.reference](*args)
        keep = {}
        for k, f in cands.items():
            out = f(*args)
            if k == step.reference or _close(out, ref):
                keep[k] = f
            else:
                log.warning("%s: candidate %s of '%s' disagrees with the plain modules; not used", step.where, k,
                            step.out)
        return keep

    def plan(self) -> list[dict[str, Any]]:
        """One entry per step: its nodes, the implementation chosen per input signature, and the timings."""
        out = []
        for s in self.steps:
            for sig, name in s.choice.items():
                out.append({"node": s.out, "nodes": list(s.nodes), "where": s.where, "inputs": [list(map(str, a))
                            if isinstance(a, tuple) else a for a in sig], "choice": name, "ms": s.ms.get(sig, {}),
                            "source": s.source.get(sig, {"from": "preferred"})})
        return out


def _close(a: Any, b: Any) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    scale = b.abs().max().item() or 1.0
    return bool(((a - b).abs().max() / scale).item() <= AGREE_RTOL)


def fast(base: ArchModule, batch: int | None = None, **kw: Any) -> FastModule:
    """The FastModule of a deploy-form ArchModule (keywords as FastModule's); with `batch`, tuned now for
    (batch, C, H, W) of its spec's input."""
    m = FastModule(base, **kw)
    if batch is not None:
        m.tune(torch.randn(batch, *m.input_chw))
    return m


__all__ = ["FastModule", "fast"]
