"""Each op against an independent plain-PyTorch formulation (float64, random weights and BN statistics)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archdsl.ops import registry
from archdsl.shapes import Shape

torch.manual_seed(0)


def build(name: str, ins: list[Shape], **params):
    op = registry.get(name)
    p = op.Params(**params)
    m = op.build(p, ins).double().eval()
    _randomize(m)
    return m


def _randomize(m: torch.nn.Module) -> None:
    """Random weights and random BN running statistics, so folding/merging errors cannot hide."""
    with torch.no_grad():
        for t in m.parameters():
            t.copy_(torch.randn_like(t) * 0.5)
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.randn_like(mod.running_mean))
                mod.running_var.copy_(torch.rand_like(mod.running_var) + 0.5)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def x_(c, h, w, n=2):
    return torch.randn(n, c, h, w, dtype=torch.float64)


def test_inception_dw_equals_one_masked_11x11_depthwise_conv():
    c, ratio, sq, band = 32, 0.125, 3, 11
    m = build("inception_dw", [Shape(c, 13, 13)], ratio=ratio, square=sq, band=band)
    g = int(c * ratio)
    k = torch.zeros(c, 1, band, band, dtype=torch.float64)
    b = torch.zeros(c, dtype=torch.float64)
    mid = band // 2
    k[: c - 3 * g, 0, mid, mid] = 1.0  # identity channels: a centred delta
    s0, s1, s2 = c - 3 * g, c - 2 * g, c - g
    k[s0:s1, :, mid - sq // 2: mid + sq // 2 + 1, mid - sq // 2: mid + sq // 2 + 1] = m.dwconv_hw.weight
    k[s1:s2, :, mid: mid + 1, :] = m.dwconv_w.weight
    k[s2:, :, :, mid: mid + 1] = m.dwconv_h.weight
    b[s0:s1], b[s1:s2], b[s2:] = m.dwconv_hw.bias, m.dwconv_w.bias, m.dwconv_h.bias
    x = x_(c, 13, 13)
    close(m(x), F.conv2d(x, k, b, padding=mid, groups=c))


def test_dilated_reparam_equals_dense_expanded_kernels():
    c, k = 6, 13
    m = build("dilated_reparam", [Shape(c, 20, 20)], k=k)
    x = x_(c, 20, 20)

    def bn_fold(w, bn):
        std = (bn.running_var + bn.eps).sqrt()
        return w * (bn.weight / std).view(-1, 1, 1, 1), bn.bias - bn.running_mean * bn.weight / std

    kernel, bias = bn_fold(m.lk_origin.weight, m.origin_bn)
    for ks, r in zip(m.kernels, m.dilations):
        w, bb = bn_fold(getattr(m, f"dil_conv_k{ks}_{r}").weight, getattr(m, f"dil_bn_k{ks}_{r}"))
        dense = torch.zeros(c, 1, r * (ks - 1) + 1, r * (ks - 1) + 1, dtype=torch.float64)
        dense[:, :, ::r, ::r] = w  # E[r*i, r*j] = K[i, j]
        pad = (k - dense.shape[-1]) // 2
        kernel = kernel + F.pad(dense, (pad, pad, pad, pad))
        bias = bias + bb
    close(m(x), F.conv2d(x, kernel, bias, padding=k // 2, groups=c))


def test_dcls_with_integer_positions_equals_dilated_conv():
    c, ks, r = 4, 3, 3
    size = r * (ks - 1) + 1
    m = build("dcls", [Shape(c, 12, 12)], kernel_count=ks * ks, size=size)
    w = torch.randn(c, 1, ks, ks, dtype=torch.float64)
    offs = torch.arange(ks, dtype=torch.float64) * r - (size - 1) / 2
    with torch.no_grad():
        m.weight.copy_(w.view(c, 1, ks * ks))
        m.P[0].copy_(offs.view(ks, 1).expand(ks, ks).reshape(1, 1, -1).expand(c, 1, -1))
        m.P[1].copy_(offs.view(1, ks).expand(ks, ks).reshape(1, 1, -1).expand(c, 1, -1))
    x = x_(c, 12, 12)
    close(m(x), F.conv2d(x, w, m.bias, padding=r * (ks - 1) // 2, dilation=r, groups=c))


def test_dcls_fractional_position_splits_bilinearly():
    m = build("dcls", [Shape(1, 5, 5)], kernel_count=1, size=3)
    with torch.no_grad():
        m.weight.fill_(1.0)
        m.P.copy_(torch.tensor([0.25, -0.5], dtype=torch.float64).view(2, 1, 1, 1))
    expected = torch.zeros(3, 3, dtype=torch.float64)
    # row 1.25, col 0.5 in the 3x3 grid
    expected[1, 0], expected[1, 1], expected[2, 0], expected[2, 1] = 0.75 * 0.5, 0.75 * 0.5, 0.25 * 0.5, 0.25 * 0.5
    close(m.kernel()[0, 0], expected)


def test_fft_conv_equals_depthwise_conv():
    for k, (h, w) in ((7, (9, 9)), (31, (12, 17))):
        m = build("fft_conv", [Shape(3, h, w)], k=k)
        x = x_(3, h, w)
        close(m(x), F.conv2d(x, m.weight, m.bias, padding=k // 2, groups=3))


def test_global_filter_equals_explicit_dft():
    c, h, w = 2, 6, 5
    m = build("global_filter", [Shape(c, h, w)])
    x = x_(c, h, w)
    filt = torch.view_as_complex(m.complex_weight)
    full = torch.zeros(c, h, w, dtype=torch.complex128)  # the Hermitian-symmetric full spectrum filter
    full[:, :, : w // 2 + 1] = filt
    for v in range(w // 2 + 1, w):
        full[:, :, v] = filt[:, (-torch.arange(h)) % h, w - v].conj()
    ar_h, ar_w = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    rows = torch.exp(-2j * math.pi * torch.outer(ar_h, ar_h) / h) / math.sqrt(h)
    cols = torch.exp(-2j * math.pi * torch.outer(ar_w, ar_w) / w) / math.sqrt(w)
    spec = rows @ x.to(torch.complex128) @ cols.T
    y = (rows.conj() @ (spec * full) @ cols.conj().T).real
    close(m(x), y)


def test_fourier_unit_equals_explicit_dft():
    """FFC's Fourier unit from its definition: an orthonormal DFT over H and the first W//2+1 frequencies of W, the
    real and imaginary parts of each channel as two channels (re, im), a 1x1 conv, BN, ReLU, then the inverse:
    an inverse DFT over H and the real inverse over W (each frequency 0 < k < W/2 counted twice)."""
    c, out = 3, 2
    for h, w in ((6, 5), (4, 6)):
        m = build("fourier_unit", [Shape(c, h, w)], out=out)
        x = x_(c, h, w)
        kw = w // 2 + 1
        ar_h, ar_w = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
        kk = torch.arange(kw, dtype=torch.float64)
        rows = torch.exp(-2j * math.pi * torch.outer(ar_h, ar_h) / h) / math.sqrt(h)
        cols = torch.exp(-2j * math.pi * torch.outer(kk, ar_w) / w) / math.sqrt(w)  # kw x w
        spec = rows @ x.to(torch.complex128) @ cols.T                                   # n, c, h, kw
        z = torch.stack((spec.real, spec.imag), 2).reshape(2, 2 * c, h, kw)
        z = F.relu(F.batch_norm(F.conv2d(z, m.conv_layer.weight), m.bn.running_mean, m.bn.running_var,
                                m.bn.weight, m.bn.bias, False, 0.0, m.bn.eps)).reshape(2, out, 2, h, kw)
        y = rows.conj() @ torch.complex(z[:, :, 0], z[:, :, 1])                        # inverse over H
        twice = torch.full((kw,), 2.0, dtype=torch.float64)
        twice[0] = 1.0
        if w % 2 == 0:
            twice[-1] = 1.0
        ref = ((y * twice) @ torch.exp(2j * math.pi * torch.outer(kk, ar_w) / w)).real / math.sqrt(w)
        close(m(x), ref)


def test_local_fourier_unit_is_the_unit_on_stacked_quadrants_tiled_back():
    c, h, w = 8, 6, 4
    m = build("fourier_unit", [Shape(c, h, w)], out=c, local=True)
    plain = build("fourier_unit", [Shape(c, h // 2, w // 2)], out=c)
    plain.load_state_dict({k: v for k, v in m.state_dict().items()})
    x = x_(c, h, w)
    q = x[:, : c // 4]
    quads = torch.cat([q[:, :, : h // 2, : w // 2], q[:, :, h // 2:, : w // 2], q[:, :, : h // 2, w // 2:],
                       q[:, :, h // 2:, w // 2:]], dim=1)
    y = plain(quads)
    close(m(x), torch.cat([torch.cat([y, y], dim=3)] * 2, dim=2))


def test_partial_conv_equals_full_conv_with_identity_block():
    c, part = 8, 2
    m = build("pconv", [Shape(c, 7, 7)], div=4)
    k = torch.zeros(c, c, 3, 3, dtype=torch.float64)
    k[:part, :part] = m.partial_conv.weight
    for i in range(part, c):
        k[i, i, 1, 1] = 1.0
    x = x_(c, 7, 7)
    close(m(x), F.conv2d(x, k, padding=1))


def test_gnconv_matches_stepwise_reference():
    c, order, k = 16, 3, 7
    m = build("gnconv", [Shape(c, 7, 7)], order=order, k=k)
    x = x_(c, 7, 7)
    dims = [c // 4, c // 2, c]
    y = F.conv2d(x, m.proj_in.weight, m.proj_in.bias)
    pwa, abc = y[:, : dims[0]], y[:, dims[0]:]
    dw = F.conv2d(abc, m.dwconv.weight, m.dwconv.bias, padding=k // 2, groups=sum(dims)) / 3.0
    gates = [dw[:, :4], dw[:, 4:12], dw[:, 12:]]
    z = pwa * gates[0]
    z = F.conv2d(z, m.pws[0].weight, m.pws[0].bias) * gates[1]
    z = F.conv2d(z, m.pws[1].weight, m.pws[1].bias) * gates[2]
    close(m(x), F.conv2d(z, m.proj_out.weight, m.proj_out.bias))


def test_ska_matches_explicit_loop():
    from archdsl.ops.mixers_nn import ska

    b, c, g, ks, h, w = 2, 8, 2, 3, 5, 6
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    wt = torch.randn(b, g, ks * ks, h, w, dtype=torch.float64)
    xp = F.pad(x, (1, 1, 1, 1))
    ref = torch.zeros_like(x)
    for ch in range(c):
        for i in range(ks):
            for j in range(ks):
                ref[:, ch] += xp[:, ch, i:i + h, j:j + w] * wt[:, ch % g, i * ks + j]
    close(ska(x, wt), ref)


def test_layernorm_channels_first_matches_formula():
    m = build("layernorm", [Shape(6, 4, 4)], eps=1e-6)
    x = x_(6, 4, 4)
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    ref = (x - u) / torch.sqrt(s + 1e-6) * m.weight.view(-1, 1, 1) + m.bias.view(-1, 1, 1)
    close(m(x), ref)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_grn_matches_published_formula(layout):
    m = build("grn", [Shape(6, 4, 5, layout)])
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)  # N, H, W, C
    gx = x.pow(2).sum((1, 2), keepdim=True).sqrt()
    nx = gx / (gx.mean(-1, keepdim=True) + 1e-6)
    ref = (m.gamma * nx + 1) * x + m.beta
    got = m(x) if layout == "nhwc" else m(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    close(got, ref)


def test_linear_channels_first_equals_permuted_linear():
    m = build("linear", [Shape(6, 4, 4)], out=5)
    x = x_(6, 4, 4)
    close(m(x), F.linear(x.permute(0, 2, 3, 1), m.weight, m.bias).permute(0, 3, 1, 2))


def test_se_matches_formula():
    m = build("se", [Shape(8, 4, 4)], hidden=2)
    x = x_(8, 4, 4)
    s = x.mean((2, 3))
    s = torch.sigmoid(F.linear(torch.relu(F.linear(s, m.down.weight[:, :, 0, 0], m.down.bias)),
                               m.up.weight[:, :, 0, 0], m.up.bias))
    close(m(x), x * s[:, :, None, None])


def test_eca_matches_formula():
    c = 64
    m = build("eca", [Shape(c, 4, 4)])
    k = m.conv.weight.shape[-1]
    assert k == 3  # int(|log2(64) + 1| / 2) = 3, odd
    x = x_(c, 4, 4)
    s = F.pad(x.mean((2, 3)), (k // 2, k // 2))
    att = torch.stack([(s[:, i:i + k] * m.conv.weight[0, 0]).sum(1) for i in range(c)], 1)
    close(m(x), x * torch.sigmoid(att)[:, :, None, None])


def test_repconv_equals_sum_of_branches():
    m = build("repconv", [Shape(8, 7, 7)], out=8)
    x = x_(8, 7, 7)

    def cb(unit, pad):
        y = F.conv2d(x, unit.c.weight, padding=pad)
        return F.batch_norm(y, unit.bn.running_mean, unit.bn.running_var, unit.bn.weight, unit.bn.bias, eps=1e-5)

    idb = m.rbr_identity
    ref = cb(m.rbr_dense, 1) + cb(m.rbr_1x1, 0) + F.batch_norm(x, idb.running_mean, idb.running_var, idb.weight,
                                                                 idb.bias, eps=1e-5)
    close(m(x), ref)


def test_pixel_shuffle_and_space_to_depth_match_reshape_formulas():
    x = x_(8, 3, 4)
    ps = build("pixel_shuffle", [Shape(8, 3, 4)], r=2)
    ref = x.view(2, 2, 2, 2, 3, 4).permute(0, 1, 4, 2, 5, 3).reshape(2, 2, 6, 8)
    close(ps(x), ref)
    s2d = build("space_to_depth", [Shape(2, 6, 8)], r=2)
    close(s2d(ref), x)


def test_pools_match_unfold():
    x = x_(3, 9, 9)
    mp = build("maxpool", [Shape(3, 9, 9)], k=3, s=2, pad=1)
    cols = F.unfold(F.pad(x, (1, 1, 1, 1), value=-math.inf), 3, stride=2).view(2, 3, 9, 5, 5)
    close(mp(x), cols.amax(2))
    ap = build("avgpool", [Shape(3, 9, 9)], k=3, s=3)
    close(ap(x), F.unfold(x, 3, stride=3).view(2, 3, 9, 3, 3).mean(2))


@pytest.mark.parametrize("size,out", [((7, 7), (7, 7)), ((5, 7), (2, 3)), ((2, 2), (3, 3)), ((9, 4), (4, 3))])
def test_adaptive_avgpool_matches_its_bins(size, out):
    """Bin i of n over a side of L averages [floor(i L / n), ceil((i + 1) L / n)) (overlapping when L % n != 0)."""
    h, w = size
    x = x_(3, h, w)
    m = build("adaptive_avgpool", [Shape(3, h, w)], out=tuple(out))
    ref = torch.empty(2, 3, *out, dtype=torch.float64)
    for i in range(out[0]):
        for j in range(out[1]):
            r0, r1 = i * h // out[0], -(-(i + 1) * h // out[0])
            c0, c1 = j * w // out[1], -(-(j + 1) * w // out[1])
            ref[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean((2, 3))
    close(m(x), ref)


@pytest.mark.parametrize("s", [1, 2])
def test_involution_matches_its_definition(s):
    """Li et al. 2021, eq. 4: Y[k, i, j] = sum_(u, v) H[g(k), u, v, i, j] X[k, s*i + u - K//2, s*j + v - K//2], the
    kernel H = conv2(ReLU(BN(conv1(X pooled by s)))) generated at each output position; written with loops."""
    c, k, gc = 8, 3, 4
    m = build("involution", [Shape(c, 6, 6)], k=k, s=s, group_channels=gc)
    x = x_(c, 6, 6)
    src = x if s == 1 else F.avg_pool2d(x, s)
    h = F.conv2d(src, m.conv1.conv.weight)
    bn = m.conv1.bn
    h = F.relu((h - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
               * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    h = F.conv2d(h, m.conv2.conv.weight, m.conv2.conv.bias)          # n x (k*k*groups) x H' x W'
    n, _, ho, wo = h.shape
    h = h.view(n, c // gc, k, k, ho, wo)
    xp = F.pad(x, (k // 2,) * 4)
    ref = torch.zeros(n, c, ho, wo, dtype=torch.float64)
    for ch in range(c):
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, ch, s * i:s * i + k, s * j:s * j + k]
                ref[:, ch, i, j] = (h[:, ch // gc, :, :, i, j] * patch).sum((1, 2))
    close(m(x), ref)


def test_pos_attention_matches_its_definition():
    """LeViT / LSNet attention written position by position: a[h, i, j] = q_i . k_j / sqrt(key_dim) + B[h, |dy|, |dx|],
    softmax over j, out_i = sum_j a v_j; queries through the 3x3 depthwise conv + BN; ReLU, then conv + BN."""
    c, kd, heads, hh, ww = 6, 2, 2, 3, 4
    m = build("pos_attention", [Shape(c, hh, ww)], key_dim=kd, heads=heads, attn_ratio=1.5)
    with torch.no_grad():
        m.attention_biases.normal_()
    x = x_(c, hh, ww)
    qkv = m.qkv(x)
    nk, d = heads * kd, 3
    q, k, v = m.dw(qkv[:, :nk]), qkv[:, nk:2 * nk], qkv[:, 2 * nk:]
    pos = [(y, z) for y in range(hh) for z in range(ww)]
    out = torch.zeros(2, heads * d, hh, ww, dtype=torch.float64)
    for h in range(heads):
        for yi, xi in pos:
            logits = torch.stack([(q[:, h * kd:(h + 1) * kd, yi, xi] * k[:, h * kd:(h + 1) * kd, yj, xj]).sum(1)
                                  / math.sqrt(kd) + m.attention_biases[h, abs(yi - yj) * ww + abs(xi - xj)]
                                  for yj, xj in pos], dim=1)
            a = logits.softmax(dim=1)
            out[:, h * d:(h + 1) * d, yi, xi] = sum(a[:, j:j + 1] * v[:, h * d:(h + 1) * d, yj, xj]
                                                    for j, (yj, xj) in enumerate(pos))
    close(m(x), m.proj(out))
