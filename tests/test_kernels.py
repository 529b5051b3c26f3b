"""archdsl.kernels: every native kernel == its plain PyTorch reference; the fallback; the build cache; custom ops."""

from __future__ import annotations

import ast
import copy
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference64 import assert_gelu, gelu_inputs, ref64, torch_cpu_paths

from archdsl.kernels import (
    bias_act_,
    bias_act_ref_,
    dwconv_ln_nhwc,
    dwconv_ln_nhwc_ref,
    dwconv_nhwc,
    dwconv_nhwc_ref,
    layernorm_rows,
    layernorm_rows_ref,
    mixer_nhwc,
    mixer_nhwc_ref,
    native,
    pack_dw,
    pack_mixer,
    scale_channels_,
    scale_channels_ref_,
)

ROOT = Path(__file__).resolve().parent.parent


def close(y: torch.Tensor, r: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal up to rtol relative to the output's scale (sums of many products round differently). r is normally a
    float64 reference (ref64), never just torch's own float32 rounding, which depends on the CPU."""
    assert y.shape == r.shape
    r = r.double()
    torch.testing.assert_close(y.double(), r, rtol=rtol, atol=rtol * max(1.0, r.abs().max().item()))


def test_native_library_builds():
    if os.environ.get("ARCHDSL_NO_NATIVE", "") not in ("", "0"):
        pytest.skip("disabled by ARCHDSL_NO_NATIVE")
    try:
        native.compiler()
    except native.BuildError:
        pytest.skip("no C++ compiler")
    assert native.available(), native.why_unavailable()


# ------------------------------------------------------------------------------------------------ dwconv

# (N, H, W, C, kh, kw, stride, dilation, act, bias)
DW_CASES = [
    (1, 13, 9, 20, 1, 1, 1, 1, "none", True),
    (2, 13, 9, 3, 2, 2, 1, 1, "none", True),
    (1, 13, 9, 8, 3, 3, 1, 1, "relu", True),
    (2, 13, 9, 40, 5, 5, 1, 1, "gelu", False),
    (1, 14, 14, 96, 7, 7, 1, 1, "gelu", True),
    (2, 13, 9, 20, 11, 11, 1, 1, "none", True),
    (1, 9, 13, 40, 13, 13, 1, 1, "relu", True),
    (1, 16, 16, 24, 15, 15, 1, 1, "none", False),
    (2, 7, 7, 96, 31, 31, 1, 1, "gelu", True),
    (1, 13, 9, 20, 1, 11, 1, 1, "none", True),
    (2, 13, 9, 20, 11, 1, 1, 1, "relu", True),
    (1, 17, 15, 8, 3, 3, 1, 2, "none", True),
    (2, 17, 15, 40, 5, 5, 1, 3, "gelu", True),
    (1, 13, 9, 20, 3, 3, 2, 1, "none", True),
    (2, 14, 15, 96, 7, 7, 2, 1, "relu", False),
    (1, 13, 9, 3, 5, 5, 2, 2, "none", True),
    (1, 20, 20, 20, 51, 51, 1, 1, "none", True),
    (1, 5, 40, 16, 4, 6, 3, 1, "gelu", True),
]


@pytest.mark.parametrize("n,h,w,c,kh,kw,s,d,act,bias", DW_CASES)
def test_dwconv_matches_reference(n, h, w, c, kh, kw, s, d, act, bias):
    torch.manual_seed(kh * 100 + c)
    x, wt = torch.randn(n, h, w, c), torch.randn(c, 1, kh, kw)
    b = torch.randn(c) if bias else None
    pad = ((d * (kh - 1)) // 2, (d * (kw - 1)) // 2)
    close(dwconv_nhwc(x, wt, b, s, pad, d, act), ref64(dwconv_nhwc_ref, x, wt, b, s, pad, d, act))


def test_dwconv_packed_out_and_padding_variants():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 11, 10, 20), torch.randn(20, 1, 5, 3), torch.randn(20)
    p = pack_dw(w, b)
    assert p.torch_weight()[0].equal(w) and p.torch_weight()[1].equal(b)
    for pad in [(0, 0), (1, 3), (4, 2), 6]:
        ref = ref64(dwconv_nhwc_ref, x, w, b, 1, pad)
        out = torch.empty(ref.shape)
        assert dwconv_nhwc(x, p, pad=pad, out=out) is out
        close(out, ref)
    close(dwconv_nhwc(x, w[:, 0], b), ref64(dwconv_nhwc_ref, x, w, b))  # [C, kh, kw] weights, pad=None is "same"
    with pytest.raises(ValueError):
        dwconv_nhwc(x.permute(0, 2, 1, 3), p)  # not contiguous
    with pytest.raises(ValueError):
        dwconv_nhwc(x[..., :8].contiguous(), p)  # channel mismatch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 40),
       kh=st.integers(1, 9), kw=st.integers(1, 9), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 3), dw=st.integers(1, 3), ph=st.integers(0, 6), pw=st.integers(0, 6),
       act=st.sampled_from(["none", "relu", "gelu"]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_dwconv_random_geometry(n, h, w, c, kh, kw, sh, sw, dh, dw, ph, pw, act, bias, seed):
    assume(h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1)
    torch.manual_seed(seed)
    x, wt = torch.randn(n, h, w, c), torch.randn(c, 1, kh, kw)
    b = torch.randn(c) if bias else None
    args = ((sh, sw), (ph, pw), (dh, dw), act)
    close(dwconv_nhwc(x, wt, b, *args), ref64(dwconv_nhwc_ref, x, wt, b, *args))


def test_dwconv_threads_agree():
    torch.manual_seed(1)
    x, w, b = torch.randn(1, 23, 19, 40), torch.randn(40, 1, 7, 7), torch.randn(40)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = dwconv_nhwc(x, w, b)
        torch.set_num_threads(max(2, old))
        y2 = dwconv_nhwc(x, w, b)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)  # each output is summed in the same order whatever the split


def test_empty_and_invalid_inputs():
    w = torch.randn(8, 1, 3, 3)
    e = torch.randn(0, 5, 5, 8)
    assert dwconv_nhwc(e, w).shape == (0, 5, 5, 8)
    assert dwconv_ln_nhwc(pack_dw(w), e, None, None).shape == (0, 5, 5, 8)
    assert bias_act_(torch.randn(0, 8)).shape == (0, 8)
    x = torch.randn(1, 5, 5, 8)
    with pytest.raises(ValueError, match="alias"):
        dwconv_nhwc(x, w, out=x)
    with pytest.raises(ValueError, match="gamma"):
        layernorm_rows(x, torch.randn(8, dtype=torch.float64), None)
    with pytest.raises(ValueError):
        dwconv_nhwc(x.double(), w)
    with pytest.raises(ValueError):
        bias_act_(torch.randn(10, 8), None, "gelu", sumsq_images=3)


# -------------------------------------------------------------------------------------------- dwconv + LN

@pytest.mark.parametrize("n,h,w,c,k", [(1, 13, 9, 20, 7), (2, 7, 7, 96, 7), (1, 14, 14, 40, 3), (2, 9, 5, 3, 5)])
@pytest.mark.parametrize("resid", [False, True])
def test_dwconv_ln_matches_reference(n, h, w, c, k, resid):
    torch.manual_seed(c + k)
    x, wt, b = torch.randn(n, h, w, c), torch.randn(c, 1, k, k) * 0.2, torch.randn(c)
    g, be, rb = torch.randn(c), torch.randn(c), torch.randn(c)
    p = pack_dw(wt, b)
    if not resid:
        close(dwconv_ln_nhwc(p, x, g, be, 1e-6), ref64(dwconv_ln_nhwc_ref, x, wt, b, g, be, 1e-6))
        return
    ry, rr = ref64(dwconv_ln_nhwc_ref, x, wt, b, g, be, 1e-6, rb)
    y, r = dwconv_ln_nhwc(p, x, g, be, 1e-6, rb)  # resid allocated
    close(y, ry)
    close(r, rr)
    out, r_out = torch.empty_like(x), torch.empty_like(x)
    y2, r2 = dwconv_ln_nhwc(p, x, g, be, 1e-6, rb, resid_out=r_out, out=out)  # preallocated
    assert y2 is out and r2 is r_out
    close(out, ry)
    close(r_out, rr)


def test_dwconv_ln_without_affine():
    torch.manual_seed(3)
    x, wt = torch.randn(1, 6, 6, 24), torch.randn(24, 1, 3, 3)
    close(dwconv_ln_nhwc(pack_dw(wt), x, None, None, 1e-5), ref64(dwconv_ln_nhwc_ref, x, wt, None, None, None, 1e-5))


# ------------------------------------------------------------------------------------------------- mixer

def test_mixer_matches_inception_dw_module():
    """The InceptionNeXt token mixer as archdsl builds it (split id / k x k / 1 x band / band x 1, concat)."""
    from archdsl.ops.mixers_nn import InceptionDW

    torch.manual_seed(4)
    c, g = 96, int(96 * 0.125)
    m = InceptionDW(c, g, 3, 11).eval()
    cid = c - 3 * g
    groups = [(0, cid, 1, 1, torch.ones(cid, 1, 1, 1), None)]
    for i, conv in enumerate((m.dwconv_hw, m.dwconv_w, m.dwconv_h)):
        kh, kw = conv.kernel_size
        groups.append((cid + i * g, cid + (i + 1) * g, kh, kw, conv.weight, conv.bias))
    x = torch.randn(2, c, 14, 13)
    with torch.no_grad():
        ref = copy.deepcopy(m).double()(x.double()).permute(0, 2, 3, 1)
    xh = x.permute(0, 2, 3, 1).contiguous()
    close(mixer_nhwc(xh, pack_mixer(groups)), ref)
    close(ref64(mixer_nhwc_ref, xh, groups), ref)


@pytest.mark.parametrize("seed", range(4))
def test_mixer_random_groups(seed):
    g = torch.Generator().manual_seed(seed)
    c = int(torch.randint(5, 60, (1,), generator=g))
    cuts = sorted(set(torch.randint(1, c, (3,), generator=g).tolist()))
    bounds = [0, *cuts, c]
    groups = []
    for c0, c1 in zip(bounds, bounds[1:]):
        kh, kw = (int(v) * 2 + 1 for v in torch.randint(0, 6, (2,), generator=g))
        bias = torch.randn(c1 - c0, generator=g) if (c0 % 2) else None
        groups.append((c0, c1, kh, kw, torch.randn(c1 - c0, 1, kh, kw, generator=g), bias))
    groups.reverse()  # any order
    x = torch.randn(2, 9, 12, c, generator=g)
    for act in ("none", "gelu"):
        close(mixer_nhwc(x, groups, act), ref64(mixer_nhwc_ref, x, groups, act))


def test_mixer_rejects_bad_cover():
    w = torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError):
        pack_mixer([(0, 4, 3, 3, w, None), (5, 9, 3, 3, w, None)])
    with pytest.raises(ValueError):
        pack_mixer([(0, 4, 2, 2, torch.randn(4, 1, 2, 2), None)])


# ------------------------------------------------------------------------------------ row-wise kernels

@pytest.mark.parametrize("shape", [(7, 3), (5, 20), (33, 96), (4, 768), (2, 5, 3, 40)])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_rows(shape, affine):
    torch.manual_seed(shape[-1])
    x = torch.randn(shape) * 3 + 1
    g, b = (torch.randn(shape[-1]), torch.randn(shape[-1])) if affine else (None, None)
    ref = ref64(layernorm_rows_ref, x, g, b, 1e-6)
    close(layernorm_rows(x, g, b, 1e-6), ref)
    y = x.clone()
    layernorm_rows(y, g, b, 1e-6, out=y)  # in place
    close(y, ref)


@pytest.mark.parametrize("m,n", [(1, 1), (3, 7), (16, 16), (50, 100), (8, 384)])
@pytest.mark.parametrize("act", ["gelu", "relu", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_bias_act(m, n, act, bias):
    torch.manual_seed(m * n)
    h, b = torch.randn(m, n) * 3, (torch.randn(n) if bias else None)
    ref = h.double()
    ref64(bias_act_ref_, ref, b, act)
    assert bias_act_(h, b, act) is h
    close(h, ref)


@pytest.mark.parametrize("images", [1, 2, 4])
def test_bias_act_sumsq(images):
    torch.manual_seed(images)
    h, b = torch.randn(images * 49, 72), torch.randn(72)
    ref = h.double()
    rs = ref64(bias_act_ref_, ref, b, "gelu", images)
    out, s = bias_act_(h, b, "gelu", sumsq_images=images)
    assert out is h and s.shape == (images, 72)
    close(h, ref)
    close(s, rs)


NATIVE_ID = "native-avx2-fma"  # the one native path: AVX2/FMA intrinsics, built with -march=native
FALLBACK_ID = f"fallback-torch-{torch.backends.cpu.get_cpu_capability().lower()}"


@pytest.fixture(params=["native", "fallback"], ids=[NATIVE_ID, FALLBACK_ID])
def backend(request, monkeypatch):
    """Each path the kernels take on this machine: the native library, and its PyTorch fallback (whose float32
    results depend on the CPU path ATen dispatches to; the others are run by test_fallback_gelu_on_every_torch_path)."""
    if request.param == "native":
        if not native.available():
            pytest.skip(f"native kernels unavailable: {native.why_unavailable()}")
    else:
        monkeypatch.setattr(native, "lib", lambda: None)
    return request.param


# float64-referenced error bounds: the native GELU computes Phi to ~1 ulp (1.25e-7 |x|); the fallback is torch's
# float32 erf, a few ulps on every CPU path (measured <= 3.7e-7 |x| on DEFAULT, AVX2 and AVX-512)
GELU_BOUNDS = {"native": (1.5e-7, 3e-7), "fallback": (1e-6, 1e-6)}


def test_gelu_accuracy(backend):
    x = gelu_inputs()
    y = bias_act_(x.clone(), None, "gelu")
    assert_gelu(y, x, *GELU_BOUNDS[backend], what=f"bias_act_ ({backend}, torch CPU path "
                                                 f"{torch.backends.cpu.get_cpu_capability()})")


def test_gelu_edge_values(backend):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([inf, -inf, nan, 1e30, -1e30, 3.4e38, -3.4e38, 88.0, -88.0, 20.0, -20.0, 0.0, -0.0, 1e-30])
    y = bias_act_(x.clone(), None, "gelu")
    expected = torch.tensor([inf, 0.0, nan, 1e30, 0.0, 3.4e38, 0.0, 88.0, 0.0, 20.0, 0.0, 0.0, 0.0, 5e-31])
    assert torch.isnan(y[2]) and not torch.isnan(y[[0, 1, 3, 4, 5, 6]]).any()
    torch.testing.assert_close(y, expected, equal_nan=True, rtol=1e-6, atol=1e-35)
    r = bias_act_(torch.tensor([nan, -1.0, 2.0]), None, "relu")
    assert torch.isnan(r[0]) and r[1:].tolist() == [0.0, 2.0]


OTHER_TORCH_PATHS = [p for p in torch_cpu_paths() if p != torch.backends.cpu.get_cpu_capability()]


@pytest.mark.parametrize("path", OTHER_TORCH_PATHS, ids=[f"fallback-torch-{p.lower()}" for p in OTHER_TORCH_PATHS])
def test_fallback_gelu_on_every_torch_path(path):
    """The fallback GELU (bias_act_ and the GEMM epilogue) on each CPU path ATen has on this machine besides the one
    this process uses (test_gelu_accuracy covers that): ATen picks its path once, at start, so each runs in a fresh
    process with ATEN_CPU_CAPABILITY set."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from reference64 import assert_gelu, gelu_inputs\n"
        "from archdsl.kernels import bias_act_, gemm, native\n"
        f"assert torch.backends.cpu.get_cpu_capability() == {path!r}, torch.backends.cpu.get_cpu_capability()\n"
        "assert not native.available()\n"
        "x = gelu_inputs()\n"
        f"assert_gelu(bias_act_(x.clone(), None, 'gelu'), x, 1e-6, 1e-6, 'bias_act_ fallback on {path}')\n"
        "y = gemm.linear(x[:, None].contiguous(), gemm.pack_linear(torch.ones(1, 1)), 'gelu')[:, 0]\n"
        f"assert_gelu(y, x, 1e-6, 1e-6, 'gemm.linear fallback on {path}')\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": path.lower(), "ARCHDSL_NO_NATIVE": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_scale_channels():
    torch.manual_seed(5)
    x, s = torch.randn(3, 5, 4, 20), torch.rand(3, 20)
    ref = ref64(scale_channels_ref_, x, s)
    assert scale_channels_(x, s) is x
    close(x, ref)


# ------------------------------------------------------------------------------ fallback, cache, runtime

def _run_all_kernels() -> list[torch.Tensor]:
    torch.manual_seed(6)
    x, w, b = torch.randn(2, 9, 8, 20), torch.randn(20, 1, 5, 5), torch.randn(20)
    g, be, rb = torch.randn(20), torch.randn(20), torch.randn(20)
    groups = [(0, 12, 1, 1, torch.ones(12, 1, 1, 1), None), (12, 20, 3, 5, torch.randn(8, 1, 3, 5), torch.randn(8))]
    h = torch.randn(144, 20)
    return [dwconv_nhwc(x, w, b, 2, 1, 1, "gelu"), *dwconv_ln_nhwc(pack_dw(w, b), x, g, be, 1e-6, rb),
            mixer_nhwc(x, groups), layernorm_rows(x, g, be), *bias_act_(h, b, "gelu", 2),
            scale_channels_(x.clone(), torch.rand(2, 20))]


def test_fallback_same_results():
    fast = _run_all_kernels()
    os.environ["ARCHDSL_NO_NATIVE"] = "1"
    native.reset()
    try:
        assert not native.available()
        assert "ARCHDSL_NO_NATIVE" in native.why_unavailable()
        slow = _run_all_kernels()
    finally:
        del os.environ["ARCHDSL_NO_NATIVE"]
        native.reset()
    for a, b in zip(fast, slow):
        close(a, b)


def test_fallback_without_compiler(tmp_path):
    """A bogus CXX and an empty cache: no exception, a reason, and the reference results."""
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import torch\n"
        "from archdsl.kernels import native, dwconv_nhwc, dwconv_nhwc_ref, bias_act_\n"
        "assert not native.available()\n"
        "print(native.why_unavailable())\n"
        "x, w = torch.randn(1, 6, 6, 4), torch.randn(4, 1, 3, 3)\n"
        "assert torch.allclose(dwconv_nhwc(x, w), dwconv_nhwc_ref(x, w))\n"
        "h = torch.randn(4, 4); assert torch.allclose(bias_act_(h.clone()), torch.nn.functional.gelu(h))\n"
    )
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "ARCHDSL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("ARCHDSL_NO_NATIVE", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no-such-c++" in r.stdout and len(r.stdout.strip().splitlines()) == 1


def test_build_cache_reuses_and_rehashes(tmp_path):
    try:
        native.compiler()
    except native.BuildError:
        pytest.skip("no C++ compiler")
    src = {"probe.cpp": 'extern "C" int ak_probe() { return 7; }\n'}
    first = native.build(src, tmp_path, "probe")
    again = native.build(src, tmp_path, "probe")
    assert first.compiled and not again.compiled and again.path == first.path
    assert ctypes.CDLL(str(first.path)).ak_probe() == 7
    changed = native.build({"probe.cpp": src["probe.cpp"] + "// changed\n"}, tmp_path, "probe")
    assert changed.compiled and changed.path != first.path
    assert sorted(p.name for p in tmp_path.glob("*.so")) == sorted([first.path.name, changed.path.name])
    with pytest.raises(native.BuildError, match="compile failed"):
        native.build({"bad.cpp": "this is not C++"}, tmp_path, "bad")


def test_main_library_is_cached():
    if not native.available():
        pytest.skip(native.why_unavailable())
    assert native.build().compiled is False
    assert native.build().path == native.build_info().path


def test_one_openmp_runtime():
    """The kernels bind to the libgomp torch ships, so one OpenMP pool serves both. Checked in a fresh process:
    this one may hold other copies (scikit-learn ships its own libgomp)."""
    if not native.available() or not Path("/proc/self/maps").exists():
        pytest.skip("native library or /proc unavailable")
    code = ("import torch; from pathlib import Path; from archdsl.kernels import dwconv_nhwc; "
            "dwconv_nhwc(torch.randn(1, 8, 8, 16), torch.randn(16, 1, 3, 3)); "
            "print(sorted({ln.split()[-1] for ln in Path('/proc/self/maps').read_text().splitlines() "
            "if 'libgomp' in ln}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    gomp = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert len(gomp) == 1 and "torch" in gomp[0], gomp


# ------------------------------------------------------------------------------------------ custom ops

def test_custom_ops_match_wrappers():
    torch.manual_seed(7)
    x, w, b = torch.randn(1, 9, 7, 20), torch.randn(20, 1, 3, 5), torch.randn(20)
    p = pack_dw(w, b)
    close(torch.ops.archdsl.dwconv_nhwc(x, p.weight, p.bias, [2, 1], [1, 2], [1, 1], "relu"),
          ref64(dwconv_nhwc_ref, x, w, b, (2, 1), (1, 2), 1, "relu"))
    g, be, rb = torch.randn(20), torch.randn(20), torch.randn(20)
    p3 = pack_dw(torch.randn(20, 1, 3, 3), b)
    close(torch.ops.archdsl.dwconv_ln_nhwc(x, p3.weight, p3.bias, g, be, 1e-6), dwconv_ln_nhwc(p3, x, g, be, 1e-6))
    y, r = torch.ops.archdsl.dwconv_ln_resid_nhwc(x, p3.weight, p3.bias, g, be, 1e-6, rb)
    close(y, dwconv_ln_nhwc(p3, x, g, be, 1e-6))
    close(r, x + rb)
    groups = [(0, 12, 1, 1, torch.ones(12, 1, 1, 1), None), (12, 20, 3, 5, torch.randn(8, 1, 3, 5), torch.randn(8))]
    pm = pack_mixer(groups)
    close(torch.ops.archdsl.mixer_nhwc(x, pm.desc, pm.wbuf, pm.bbuf, "none"), ref64(mixer_nhwc_ref, x, groups))
    close(torch.ops.archdsl.layernorm_rows(x, g, be, 1e-6), ref64(layernorm_rows_ref, x, g, be, 1e-6))
    h = torch.randn(18, 20)
    ref = h.double()
    s_ref = ref64(bias_act_ref_, ref, b, "gelu", 3)
    s = torch.ops.archdsl.bias_act_(h, b, "gelu", 3)
    close(h, ref)
    close(s, s_ref)
    xs, sc = x.clone(), torch.rand(1, 20)
    torch.ops.archdsl.scale_channels_(xs, sc)
    close(xs, x * sc[:, None, None])


def test_custom_ops_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    p = pack_dw(torch.randn(20, 1, 5, 3))
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(2, 13, 9, 20))
        wp = mode.from_tensor(p.weight)
        y = torch.ops.archdsl.dwconv_nhwc(x, wp, None, [2, 1], [2, 1], [1, 1], "gelu")
        assert y.shape == (2, 7, 9, 20)
        h = mode.from_tensor(torch.randn(12, 20))
        assert torch.ops.archdsl.bias_act_(h, None, "gelu", 3).shape == (3, 20)


def test_custom_op_in_exported_graph():
    p = pack_dw(torch.randn(16, 1, 3, 3), torch.randn(16))

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.ops.archdsl.dwconv_nhwc(x, p.weight, p.bias, [1, 1], [1, 1], [1, 1], "gelu")

    x = torch.randn(1, 6, 6, 16)
    ep = torch.export.export(M(), (x,))
    assert "archdsl.dwconv_nhwc" in str(ep.graph)
    close(ep.module()(x), M()(x))
