"""archdsl.kernels.gemm: the packed fused linear == F.linear + its epilogue, native and fallback alike."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reference64 import assert_gelu, gelu64, gelu_inputs

from archdsl.kernels import gemm, native

needs_native = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")


def _ref(a, w, b, act="none", out=None, accumulate=False, a_scale=None, sumsq_images=0):
    """Plain PyTorch in float64, written independently of gemm.linear_ref: (y, sumsq or None), rounded to float32."""
    k = w.shape[1]
    a2 = a.reshape(-1, k).double()
    if a_scale is not None:
        n = a_scale.shape[0]
        a2 = (a2.view(n, -1, k) * a_scale.double()[:, None]).view(-1, k)
    y = F.linear(a2, w.double(), None if b is None else b.double())
    if accumulate:
        y = out.reshape(-1, w.shape[0]).double() + y
    elif act == "gelu":
        y = gelu64(y)
    elif act == "relu":
        y = F.relu(y)
    s = y.reshape(sumsq_images, -1, w.shape[0]).square().sum(1) if sumsq_images else None
    return y.float().reshape(*a.shape[:-1], w.shape[0]), (None if s is None else s.float())


def _close(got, want, rtol=1e-5):
    """|got - want| <= rtol * the output's scale (max |want|, at least 1)."""
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert err <= rtol * scale, f"max |diff| {err:.3g} > {rtol:g} * {scale:.3g}"


def _data(m, k, n, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) / max(k, 1) ** 0.5
    b = torch.randn(n, generator=g) if bias else None
    return a, w, b


TORCH_PATH = torch.backends.cpu.get_cpu_capability()


@pytest.fixture(params=["native", "fallback"], ids=["native-avx2-fma", f"fallback-torch-{TORCH_PATH.lower()}"])
def backend(request, monkeypatch):
    """The native GEMM (AVX2/FMA intrinsics, -march=native), and its PyTorch fallback on the CPU path ATen uses
    here (test_kernels.py::test_fallback_gelu_on_every_torch_path runs the other paths this machine has)."""
    if request.param == "native":
        if not native.available():
            pytest.skip("native kernels unavailable")
    else:
        monkeypatch.setattr(native, "lib", lambda: None)
    return request.param


SHAPES = [(m, k, n) for m, k, n in itertools.product((1, 7, 49, 50), (1, 3, 96, 97, 768), (1, 15, 16, 17, 96, 385))]
SHAPES += [(3136, 96, 384), (3136, 384, 96), (3136, 97, 17), (50, 3072, 33), (8 * 49, 40, 160)]


@pytest.mark.parametrize("m,k,n", SHAPES, ids=lambda v: str(v))
def test_linear_matches_torch(backend, m, k, n):
    a, w, b = _data(m, k, n, seed=m * 1000 + k * 10 + n)
    p = gemm.pack_linear(w, b)
    for act in ("none", "relu", "gelu"):
        want, _ = _ref(a, w, b, act)
        _close(gemm.linear(a, p, act), want)


@pytest.mark.parametrize("m,k,n", [(49, 768, 385), (3136, 96, 17), (7, 3, 1), (50, 1536, 96)])
def test_accumulate_into_residual(backend, m, k, n):
    a, w, b = _data(m, k, n, seed=3)
    res = torch.randn(m, n)
    want, _ = _ref(a, w, b, out=res, accumulate=True)
    out = res.clone()
    got = gemm.linear(a, gemm.pack_linear(w, b), out=out, accumulate=True)
    assert got is out
    _close(out, want)


def test_out_and_leading_dims(backend):
    a, w, b = _data(2 * 5 * 7, 96, 40, seed=4)
    a4 = a.view(2, 5, 7, 96)
    p = gemm.pack_linear(w, b)
    out = torch.empty(2, 5, 7, 40)
    got = gemm.linear(a4, p, "gelu", out=out)
    assert got is out
    _close(out, _ref(a4, w, b, "gelu")[0])


@pytest.mark.parametrize("m,k,n", [(2 * 49, 768, 192), (2 * 7, 97, 385), (2 * 3136, 40, 17), (2 * 25, 3072, 16)])
def test_a_scale_per_image(backend, m, k, n):
    a, w, b = _data(m, k, n, seed=5)
    s = torch.rand(2, k) * 2
    p = gemm.pack_linear(w, b)
    _close(gemm.linear(a, p, a_scale=s), _ref(a, w, b, a_scale=s)[0])
    res = torch.randn(m, n)
    out = res.clone()
    gemm.linear(a, p, out=out, accumulate=True, a_scale=s, rows_per_image=m // 2)
    _close(out, _ref(a, w, b, out=res, accumulate=True, a_scale=s)[0])


@pytest.mark.parametrize("act", ["none", "relu", "gelu"])
@pytest.mark.parametrize("m,k,n,images", [(2 * 49, 96, 385, 2), (3 * 7, 17, 16, 3), (3136, 96, 384, 1),
                                          (8 * 49, 768, 40, 8), (12, 33, 20, 12), (15, 8, 9, 5)])
def test_sumsq_images(backend, act, m, k, n, images):
    a, w, b = _data(m, k, n, seed=6)
    y, s = gemm.linear(a, gemm.pack_linear(w, b), act, sumsq_images=images)
    want, want_s = _ref(a, w, b, act, sumsq_images=images)
    _close(y, want)
    assert s.shape == (images, n)
    _close(s, want_s, rtol=3e-5)


def test_sumsq_with_a_scale(backend):
    a, w, b = _data(2 * 49, 192, 96, seed=7)
    sc = torch.rand(2, 192)
    y, s = gemm.linear(a, gemm.pack_linear(w, b), "gelu", a_scale=sc, sumsq_images=2)
    want, want_s = _ref(a, w, b, "gelu", a_scale=sc, sumsq_images=2)
    _close(y, want)
    _close(s, want_s, rtol=3e-5)


def test_no_bias_and_conv_weight(backend):
    a, w, _ = _data(50, 97, 33, seed=8, bias=False)
    _close(gemm.linear(a, gemm.pack_linear(w)), _ref(a, w, None)[0])
    _close(gemm.linear(a, gemm.pack_linear(w[:, :, None, None])), _ref(a, w, None)[0])


def test_pack_round_trip(backend):
    _, w, b = _data(1, 97, 33, seed=9)
    p = gemm.pack_linear(w, b)
    assert p.panels.shape == (3, 97, 16) and p.bias.shape == (48,)
    w2, b2 = p.torch_weight()
    assert torch.equal(w2, w) and torch.equal(b2, b)


def test_empty_k_is_bias(backend):
    p = gemm.pack_linear(torch.empty(5, 0), torch.arange(5.0) - 2)
    y = gemm.linear(torch.empty(3, 0), p, "relu")
    assert torch.equal(y, F.relu(torch.arange(5.0) - 2).expand(3, 5))


@needs_native
def test_native_equals_fallback(monkeypatch):
    a, w, b = _data(3136, 96, 385, seed=10)
    p = gemm.pack_linear(w, b)
    got = gemm.linear(a, p, "gelu", sumsq_images=1)
    monkeypatch.setattr(native, "lib", lambda: None)
    want = gemm.linear(a, p, "gelu", sumsq_images=1)
    _close(got[0], want[0])
    _close(got[1], want[1], rtol=3e-5)


@needs_native
def test_thread_count_does_not_change_bits():
    a, w, b = _data(3136, 768, 97, seed=11)
    p = gemm.pack_linear(w, b)
    n0 = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, s1 = gemm.linear(a, p, "gelu", sumsq_images=4)
        torch.set_num_threads(max(2, n0))
        y2, s2 = gemm.linear(a, p, "gelu", sumsq_images=4)
    finally:
        torch.set_num_threads(n0)
    assert torch.equal(y1, y2)
    _close(s1, s2, rtol=1e-6)


def test_gelu_accuracy(backend):
    """The GELU epilogue against the exact GELU in float64 (never torch's float32 F.gelu, whose rounding and
    overflow depend on the CPU path: inf at 3e38 when vectorized, up to 1.2e-6 off the truth at |x| ~ 10)."""
    x = gelu_inputs()
    y = gemm.linear(x[:, None].contiguous(), gemm.pack_linear(torch.ones(1, 1)), "gelu")[:, 0]
    # native: a rational erfc fit, absolute error <= 9.6e-7 (<= 1.8e-7 |x|, at |x| ~ 5.3 where the tail is dropped);
    # fallback: torch's float32 erf, a few ulps on every CPU path
    rel_x, rel_small = (2e-7, 3e-7) if backend == "native" else (1e-6, 1e-6)
    assert_gelu(y, x, rel_x, rel_small, what=f"gemm.linear gelu ({backend}, torch CPU path {TORCH_PATH})")


def test_errors():
    a, w, b = _data(4, 8, 3)
    p = gemm.pack_linear(w, b)
    with pytest.raises(ValueError, match="act must be"):
        gemm.linear(a, p, "swish")
    with pytest.raises(ValueError, match="accumulate=True needs act"):
        gemm.linear(a, p, "gelu", out=torch.empty(4, 3), accumulate=True)
    with pytest.raises(ValueError, match="accumulate=True needs out"):
        gemm.linear(a, p, accumulate=True)
    with pytest.raises(ValueError, match=r"a must be \[\.\.\., 8\]"):
        gemm.linear(torch.randn(4, 7), p)
    with pytest.raises(ValueError, match="out must have shape"):
        gemm.linear(a, p, out=torch.empty(4, 4))
    sq = gemm.pack_linear(torch.randn(8, 8))
    with pytest.raises(ValueError, match="must not share memory"):
        gemm.linear(a, sq, out=a)
    with pytest.raises(ValueError, match="contiguous float32"):
        gemm.linear(a.double(), p)
    with pytest.raises(ValueError, match="do not split"):
        gemm.linear(a, p, sumsq_images=3)
    with pytest.raises(ValueError, match="a_scale must be"):
        gemm.linear(a, p, a_scale=torch.ones(2, 7))
    with pytest.raises(ValueError, match="bias must be"):
        gemm.pack_linear(w, torch.zeros(4))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 400), n=st.integers(1, 70), act=st.sampled_from(["none", "relu", "gelu"]),
       accumulate=st.booleans(), images=st.sampled_from([0, 1, 2]), scale=st.booleans(), seed=st.integers(0, 2**16))
def test_property_random_shapes(m, k, n, act, accumulate, images, scale, seed):
    if accumulate:
        act = "none"
    m = m if not images else m * images
    a, w, b = _data(m, k, n, seed=seed)
    s = torch.rand(max(images, 1), k, generator=torch.Generator().manual_seed(seed)) if scale else None
    res = torch.randn(m, n)
    out = res.clone() if accumulate else None
    got = gemm.linear(a, gemm.pack_linear(w, b), act, out=out, accumulate=accumulate, a_scale=s,
                      sumsq_images=images)
    want, want_s = _ref(a, w, b, act, out=res, accumulate=accumulate, a_scale=s, sumsq_images=images)
    if images:
        got, got_s = got
        _close(got_s, want_s, rtol=3e-5)
    _close(got, want)
