"""float64 references for the kernel tests, and the CPU paths the kernels run on here.

Kernels are compared with values computed in float64, never with the rounding of torch's own float32 CPU kernels:
those change with the CPU (ATen picks a DEFAULT, AVX2 or AVX-512 path at start) and with the vector/scalar split
of a tensor. torch's vectorized float32 GELU returns inf above ~1.7e38 (its scalar path does not) and is up to
1.2e-6 off the true GELU at |x| ~ 10, so a kernel within 1e-6 of the truth may differ from it by more than 1e-6
(as the native GELU did from torch's on an AVX-512 machine).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

X86_PATHS = ("DEFAULT", "AVX2", "AVX512")


def torch_cpu_paths() -> list[str]:
    """ATen's CPU kernel paths this machine can run, lowest first; the last is the one this process uses.
    (ATEN_CPU_CAPABILITY=avx2 etc. picks one, at process start only.)"""
    top = torch.backends.cpu.get_cpu_capability()
    return list(X86_PATHS[: X86_PATHS.index(top) + 1]) if top in X86_PATHS else ["DEFAULT", top]


def gelu64(x: Tensor) -> Tensor:
    """Exact GELU x Phi(x) in float64, Phi from erfc (0.5 (1 + erf) cancels on the negative tail); -inf -> 0."""
    xd = x.double()
    return (xd * 0.5 * torch.special.erfc(-xd / math.sqrt(2))).masked_fill(xd == -math.inf, 0.0)


def gelu_inputs() -> Tensor:
    """A dense grid over [-12, 12], random values, and the edges (zeros, tiny, huge, +-inf, NaN)."""
    g = torch.Generator().manual_seed(0)
    edges = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5, 10.0, 20.0, -20.0, 88.0, -88.0, 1e30, -1e30, 1.7e38,
                          3e38, -3e38, 3.4e38, -3.4e38, math.inf, -math.inf, math.nan])
    return torch.cat([torch.linspace(-12, 12, 480_001), torch.randn(100_000, generator=g) * 3, edges])


def assert_gelu(y: Tensor, x: Tensor, rel_x: float, rel_small: float, what: str) -> None:
    """y = GELU(x) in float32: |y - exact| <= rel_x |x| (an erf good to ~1 ulp of Phi gives ~1.25e-7 |x|),
    relative error <= rel_small for 0 < |x| < 0.5, the edges exact (x >= 10 -> x, x <= -20 -> 0, -inf -> 0, NaN)."""
    exact = gelu64(x)
    nan = torch.isnan(x)
    assert torch.equal(torch.isnan(y), nan), f"{what}: NaN where the input is not NaN (or the reverse)"
    finite = torch.isfinite(x)
    err = (y.double() - exact).abs()
    worst = (err / x.double().abs().clamp_min(1e-30))[finite]
    i = int(worst.argmax())
    assert worst[i].item() <= rel_x, f"{what}: |gelu error| {worst[i].item():.3g} |x| at x = {x[finite][i].item()!r}"
    small = (x.abs() < 0.5) & (x != 0)
    rel = (err / exact.abs())[small].max().item()
    assert rel <= rel_small, f"{what}: relative gelu error {rel:.3g} near 0"
    edge = ~finite | (x >= 10) | (x <= -20)
    want = exact.float()
    assert torch.equal(y[edge & ~nan], want[edge & ~nan]), (
        f"{what}: edge values {y[edge & ~nan].tolist()} != {want[edge & ~nan].tolist()} at {x[edge & ~nan].tolist()}")


def ref64(fn, *args, **kwargs):
    """fn (a plain PyTorch reference) run on float64 copies of its tensor arguments (also inside lists and tuples,
    e.g. a mixer's groups): the value a float32 kernel is compared with."""

    def f64(v):
        if isinstance(v, Tensor):
            return v.double()
        if isinstance(v, (list, tuple)):
            return type(v)(f64(e) for e in v)
        return v

    return fn(*(f64(a) for a in args), **{k: f64(v) for k, v in kwargs.items()})
