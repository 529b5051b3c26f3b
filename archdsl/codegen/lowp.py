"""Stage 5 (deploy runtime): the deploy form in bfloat16, on CPUs that compute it natively.

Takes: a deploy-form ArchModule (`archdsl.deploy(module)`), on the CPU. Returns: `Bf16Module`, the same network with
its weights stored in bfloat16 and run by torch's bfloat16 kernels (oneDNN: bf16 products, float32 accumulation),
channels-last, taking and returning float32. A node whose op has no bfloat16 kernel here (the FFTs of
global_filter and fourier_unit) is found by a probe pass when the module is made and runs in float32 between casts
(`float32_nodes`). `bf16_unsupported()` says why this CPU cannot (no avx512_bf16 and no AMX: bfloat16 would be
emulated, slower than float32); making a Bf16Module there raises ValueError with that line.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .module import ArchModule

log = logging.getLogger("archdsl.lowp")

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> frozenset[str]:
    from ..bench.machine import cpu_flags

    return cpu_flags()


def bf16_unsupported() -> str | None:
    """None where this CPU computes bfloat16 natively (avx512_bf16 or AMX), else the reason, one line."""
    if any(f in _cpu_flags() for f in NATIVE_BF16):
        return None
    return ("this CPU has neither avx512_bf16 nor AMX (amx_bf16): bfloat16 would be emulated, slower than "
            "float32; use the float32 deploy form")


class Bf16Module(nn.Module):
    """The deploy form in bfloat16: `forward(x)` takes and returns float32; `float32_nodes` lists the nodes run in
    float32 (no bfloat16 kernel for their op); `base` is the bfloat16 ArchModule."""

    def __init__(self, base: ArchModule):
        super().__init__()
        why = bf16_unsupported()
        if why is not None:
            raise ValueError(why)
        if any(t.device.type != "cpu" for t in base.parameters()):
            raise ValueError("the bfloat16 deploy form is for the CPU (on a GPU, use model.to(torch.bfloat16))")
        self.base = base.eval().to(torch.bfloat16)
        self.arch_name, self.input_chw, self.graph = base.arch_name, base.input_chw, base.graph
        self.deploy_reports = getattr(base, "deploy_reports", [])
        self.float32_nodes: list[str] = []
        self._probe()

    def _probe(self) -> None:
        """Run every node once in bfloat16 on a zero input; a node that fails there runs in float32 from now on."""
        x = torch.zeros(1, *self.input_chw)
        with torch.inference_mode():
            self._run(x, probe=True)
        if self.float32_nodes:
            log.info("bfloat16 deploy form: %d node(s) in float32 (no bfloat16 kernel): %s", len(self.float32_nodes),
                     ", ".join(self.float32_nodes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.base.validate_input(x)
        with torch.inference_mode():
            return self._run(x).float()

    def _run(self, x: torch.Tensor, probe: bool = False) -> torch.Tensor:
        fp32 = set(self.float32_nodes)

        def step(name: str, mod: nn.Module, args: list):
            if name in fp32:
                return _cast(mod(*_cast(args, torch.float32)), torch.bfloat16)
            if not probe:
                return mod(*args)
            try:
                return mod(*args)
            except Exception:  # noqa: BLE001 - no bfloat16 kernel for this op here: float32 between casts
                mod.float()
                self.float32_nodes.append(name)
                fp32.add(name)
                return _cast(mod(*_cast(args, torch.float32)), torch.bfloat16)

        return self.base.run(x.to(torch.bfloat16, memory_format=torch.channels_last), step)


def _cast(v, dtype):
    if isinstance(v, torch.Tensor):
        return v.to(dtype) if v.is_floating_point() else v
    if isinstance(v, (list, tuple)):
        return type(v)(_cast(t, dtype) for t in v)
    return v


__all__ = ["Bf16Module", "bf16_unsupported"]
