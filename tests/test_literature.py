"""Issue 22: whole literature models of examples/literature/ against plain-PyTorch forwards written in the test from
the papers' equations (float64, random weights and BN statistics). The exact parameter counts are in
test_examples.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import archdsl

LIT = Path(__file__).resolve().parent.parent / "examples" / "literature"


def _model(name: str, overrides: dict, shape: tuple[int, int, int]):
    m = archdsl.load(LIT / name, overrides=overrides, input_shape=shape).double().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, t in m.state_dict().items():
            if t.is_floating_point():
                v = torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5 if k.endswith("running_var") else \
                    torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.3
                t.copy_(v)
    return m, {k: v for k, v in m.state_dict().items()}


def _bn(x, w, p):
    return F.batch_norm(x, w[p + ".running_mean"], w[p + ".running_var"], w[p + ".weight"], w[p + ".bias"],
                        False, 0.0, 1e-5)


def _conv(x, w, p, **kw):
    return F.conv2d(x, w[p + ".weight"], w.get(p + ".bias"), **kw)


def test_espcn_is_two_tanh_convs_and_a_periodic_shuffle():
    m, w = _model("espcn.arch", {}, (1, 17, 17))
    x = torch.randn(2, 1, 17, 17, dtype=torch.float64)
    y = torch.tanh(_conv(x, w, "conv1", padding=2))
    y = torch.tanh(_conv(y, w, "conv2", padding=1))
    y = _conv(y, w, "conv3", padding=1)                       # 9 x 17 x 17
    # periodic shuffle (the paper's PS): out[c, r*h + i, r*w + j] = y[c*r*r + i*r + j, h, w]
    ref = y.view(2, 1, 3, 3, 17, 17).permute(0, 1, 4, 2, 5, 3).reshape(2, 1, 51, 51)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-10)


def test_van_b0_is_large_kernel_attention_blocks():
    """VAN (Guo et al. 2023, eq. 1-2): Attention = conv1x1(DW-D-Conv(DW-Conv(F))), Output = Attention (x) F."""
    dims = [8, 16, 16, 16]
    m, w = _model("van_b0.arch", {"depths": [1, 1, 1, 1], "dims": dims}, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = x
    for i, c in enumerate(dims):
        s = f"stages.{i}"
        k = 7 if i == 0 else 3
        y = _bn(_conv(y, w, f"{s}.patch_embed.proj", stride=4 if i == 0 else 2, padding=k // 2), w,
                f"{s}.patch_embed.norm")
        b = f"{s}.blocks.0"
        t = _bn(y, w, f"{b}.attn.norm")
        u = F.gelu(_conv(t, w, f"{b}.attn.spatial.proj_1"))
        a = _conv(u, w, f"{b}.attn.spatial.lka.gate.attn.conv0", padding=2, groups=c)
        a = _conv(a, w, f"{b}.attn.spatial.lka.gate.attn.conv_spatial", padding=9, dilation=3, groups=c)
        a = _conv(a, w, f"{b}.attn.spatial.lka.gate.attn.conv1")
        t = _conv(u * a, w, f"{b}.attn.spatial.proj_2") + t
        y = y + w[f"{b}.attn.layer_scale.gamma"].view(1, -1, 1, 1) * t
        t = _bn(y, w, f"{b}.mlp.norm")
        t = _conv(t, w, f"{b}.mlp.fc1")
        t = F.gelu(_conv(t, w, f"{b}.mlp.dwconv", padding=1, groups=t.shape[1]))
        y = y + w[f"{b}.mlp.layer_scale.gamma"].view(1, -1, 1, 1) * _conv(t, w, f"{b}.mlp.fc2")
        y = F.layer_norm(y.permute(0, 2, 3, 1), (c,), w[f"{s}.norm.weight"], w[f"{s}.norm.bias"], 1e-6)
        y = y.permute(0, 3, 1, 2)
    ref = F.linear(y.mean((2, 3)), w["head.fc.weight"], w["head.fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-9, atol=1e-9)


def test_espcn_count_and_output():
    from archdsl.api import check_file

    g = check_file(LIT / "espcn.arch")
    assert g.total().params == 22_729 and g.output_shape.to_json() == [1, 255, 255]


def test_gfnet_is_global_filters_over_tokens():
    """GFNet (Rao et al. 2021, eq. 3-5), written over N x C tokens as the authors' code does: X = x + pos;
    X <- X + MLP(LN(irfft2(K * rfft2(LN(X))))) with the orthonormal DFT; then LN, the mean over tokens, linear."""
    c, hw = 16, 4
    m, w = _model("gfnet.arch", {"embed_dim": c, "depth": 2, "patch": 8}, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = _conv(x, w, "patch_embed", stride=8).flatten(2).transpose(1, 2)           # 2 x 16 tokens x C
    t = t + w["pos_embed.pos"].flatten(1).t()                                     # (C, H, W) -> (N, C)
    for i in range(2):
        b = f"blocks.{i}"
        u = F.layer_norm(t, (c,), w[f"{b}.norm1.weight"], w[f"{b}.norm1.bias"], 1e-6).view(2, hw, hw, c)
        k = torch.view_as_complex(w[f"{b}.filter.complex_weight"].contiguous()).permute(1, 2, 0)  # H x W' x C
        u = torch.fft.irfft2(torch.fft.rfft2(u, dim=(1, 2), norm="ortho") * k, s=(hw, hw), dim=(1, 2), norm="ortho")
        u = F.layer_norm(u.reshape(2, hw * hw, c), (c,), w[f"{b}.norm2.weight"], w[f"{b}.norm2.bias"], 1e-6)
        u = F.linear(F.gelu(F.linear(u, w[f"{b}.mlp.fc1.weight"], w[f"{b}.mlp.fc1.bias"])), w[f"{b}.mlp.fc2.weight"],
                     w[f"{b}.mlp.fc2.bias"])
        t = t + u
    t = F.layer_norm(t, (c,), w["norm.weight"], w["norm.bias"], 1e-6).mean(1)
    ref = F.linear(t, w["head.fc.weight"], w["head.fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-9, atol=1e-9)


def _ln_cf(x, w, p):
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], w[p + ".weight"], w[p + ".bias"], 1e-6).permute(0, 3, 1, 2)


def test_hornet_is_recursive_gated_convolutions():
    """HorNet (Rao et al. 2022, eq. 3.3-3.4): p0, q0..q(n-1) = proj_in(x); p(k+1) = f_k(p_k) * g_k(q_k), with g the
    7x7 depthwise conv scaled by 1/3 and f_k 1x1 convs; output proj_out(p_n). Blocks: x + gamma1 * gnconv(LN(x)),
    then x + gamma2 * MLP(LN(x)); orders 2, 3, 4, 5 in the stages."""
    base = 16
    m, w = _model("hornet_tiny.arch", {"depths": [1, 1, 1, 1], "base_dim": base, "num_classes": 10}, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = _ln_cf(_conv(x, w, "stem.conv", stride=4), w, "stem.norm")
    for i, order in enumerate([2, 3, 4, 5]):
        c = base * 2 ** i
        if i:
            y = _conv(_ln_cf(y, w, f"stages.{i}.downsample.norm"), w, f"stages.{i}.downsample.conv", stride=2)
        b = f"stages.{i}.blocks.0"
        g = f"{b}.spatial.gnconv"
        dims = [c // 2 ** k for k in range(order)][::-1]
        t = _conv(_ln_cf(y, w, f"{b}.spatial.norm"), w, f"{g}.proj_in")
        p, q = t[:, :dims[0]], _conv(t[:, dims[0]:], w, f"{g}.dwconv", padding=3, groups=sum(dims)) / 3
        qs = torch.split(q, dims, dim=1)
        p = p * qs[0]
        for k in range(order - 1):
            p = _conv(p, w, f"{g}.pws.{k}") * qs[k + 1]
        y = y + w[f"{b}.spatial.layer_scale.gamma"].view(1, -1, 1, 1) * _conv(p, w, f"{g}.proj_out")
        t = F.layer_norm(y.permute(0, 2, 3, 1), (c,), w[f"{b}.mlp.norm.weight"], w[f"{b}.mlp.norm.bias"], 1e-6)
        t = F.linear(F.gelu(F.linear(t, w[f"{b}.mlp.pwconv1.weight"], w[f"{b}.mlp.pwconv1.bias"])),
                     w[f"{b}.mlp.pwconv2.weight"], w[f"{b}.mlp.pwconv2.bias"])
        y = y + w[f"{b}.mlp.layer_scale.gamma"].view(1, -1, 1, 1) * t.permute(0, 3, 1, 2)
    t = F.layer_norm(y.mean((2, 3)), (8 * base,), w["head.norm.weight"], w["head.norm.bias"], 1e-6)
    ref = F.linear(t, w["head.fc.weight"], w["head.fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-9, atol=1e-9)


def test_dcls_positions_are_one_tensor_per_stage():
    """ConvNeXt-dcls (K-H-Ismail/ConvNeXt-dcls) ties each stage's DCLS positions: `dcls(positions="NAME")` makes
    every dcls of that name use one Parameter, counted once by the checker as by torch, trained once."""
    from archdsl.api import check_file, check_text
    from archdsl.errors import ArchError

    sets = {"depths": [2, 2, 1, 1], "dims": [8, 16, 16, 16], "kernel_count": 5, "size": 7, "num_classes": 10}
    g = check_file(LIT / "convnext_dcls.arch", sets, input_shape=(3, 32, 32))
    m = archdsl.load(LIT / "convnext_dcls.arch", sets, input_shape=(3, 32, 32))
    assert g.total().params == sum(p.numel() for p in m.parameters())
    b = m.stages[1].blocks
    assert b[0].conv_dw.P is b[1].conv_dw.P and b[0].conv_dw.P is not m.stages[0].blocks[0].conv_dw.P
    loss = m(torch.randn(2, 3, 32, 32)).square().sum()
    loss.backward()
    assert b[0].conv_dw.P.grad is not None  # one tensor: both blocks' gradients land in it
    spec = ('model m() {\n    input(8, 12, 12)\n    a: dcls(kernel_count=5, size=7, positions="p")\n'
            '    b: dcls(kernel_count=3, size=7, positions="p")\n    gap()\n}\n')
    try:
        check_text(spec, "tie.arch")
        raise AssertionError("a tie of different shapes was accepted")
    except ArchError as e:
        d = e.diagnostics[0]
        assert (d.span.line, d.span.col) == (4, 37)
        assert "dcls positions 'p' are shared with 'a' at tie.arch:3:8" in d.message
        assert "2x8x1x5; this one's would be 2x8x1x3" in d.message


@pytest.mark.parametrize("lfu", [False, True])
def test_ffc_resnet_is_local_and_global_paths_with_fourier_units(lfu):
    """FFC (Chi et al. 2020, eq. 1-2 and fig. 1) written with the authors' (x_l, x_g) pair: Y_l = f_l2l(X_l) +
    f_g2l(X_g), Y_g = f_l2g(X_l) + f_g(X_g), f_g the spectral transform (1x1 conv, BN, ReLU, y + FU(y) [+ LFU(y)],
    1x1 conv; a 2x2 average pool first at stride 2), FU = rfft2 -> 1x1 conv over (real, imaginary) -> BN -> ReLU
    -> irfft2, LFU = FU of the first quarter of the channels split in halves along H, then along W, stacked on
    channels, repeated 2x2; BN (and ReLU) on each part. The spec carries the pair concatenated; here it is two
    tensors."""
    widths, stem, ratio = [16, 32, 32, 32], 16, 0.5
    m, w = _model("ffc_resnet50.arch", {"layers": [2, 1, 1, 2], "widths": widths, "stem_c": stem, "ratio": ratio,
                                        "lfu": lfu, "num_classes": 5}, (3, 64, 64))

    def fu(x, p):
        b, c, h, wd = x.shape
        f = torch.fft.rfft2(x, norm="ortho")
        f = torch.stack((f.real, f.imag), 2).reshape(b, 2 * c, h, wd // 2 + 1)  # re, im of each channel
        f = F.relu(_bn(_conv(f, w, p + ".conv_layer"), w, p + ".bn")).reshape(b, c, 2, h, wd // 2 + 1)
        return torch.fft.irfft2(torch.complex(f[:, :, 0], f[:, :, 1]), s=(h, wd), norm="ortho")

    def spectral(x, p, s):
        x = F.avg_pool2d(x, 2, 2) if s == 2 else x
        y = F.relu(_bn(_conv(x, w, p + ".conv1"), w, p + ".bn1"))
        out = y + fu(y, p + ".fu.fu")
        if lfu:
            h = y.shape[2] // 2
            xs = torch.cat(torch.split(y[:, : y.shape[1] // 4], h, dim=2), dim=1)
            xs = torch.cat(torch.split(xs, h, dim=3), dim=1)
            out = out + fu(xs, p + ".fu.lfu").repeat(1, 1, 2, 2)
        return _conv(out, w, p + ".conv2")

    def ffc_bn_act(xl, xg, p, cin, cout, k, gin, gout, s=1, act=False):
        in_cg, out_cg = int(cin * gin), int(cout * gout)
        p += ".ffc"

        def conv(x, name):
            return _conv(x, w, f"{p}.{name}", stride=s, padding=k // 2)

        if in_cg == 0 and out_cg == 0:
            yl, yg = _bn(conv(xl, "l2l"), w, p + ".bn_l"), None
        elif out_cg == 0:
            yl, yg = _bn(conv(xl, "local.l2l") + conv(xg, "local.g2l"), w, p + ".bn_l"), None
        elif in_cg == 0:
            yl = _bn(conv(xl, "paths.local.l2l"), w, p + ".paths.local.bn")
            yg = _bn(conv(xl, "paths.global.l2g"), w, p + ".paths.global.bn")
        else:
            yl = _bn(conv(xl, "paths.local.paths.l2l") + conv(xg, "paths.local.paths.g2l"), w, p + ".paths.local.bn")
            yg = _bn(conv(xl, "paths.global.paths.l2g") + spectral(xg, p + ".paths.global.paths.g2g", s), w,
                     p + ".paths.global.bn")
        if act:
            yl, yg = F.relu(yl), None if yg is None else F.relu(yg)
        return yl, yg

    def bottleneck(xl, xg, p, cin, width, s, gin, gout, down):
        cout = 4 * width
        a = ffc_bn_act(xl, xg, p + ".res.main.conv1", cin, width, 1, gin, gout, act=True)
        a = ffc_bn_act(*a, p + ".res.main.conv2", width, width, 3, gout, gout, s=s, act=True)
        al, ag = ffc_bn_act(*a, p + ".res.main.conv3", width, cout, 1, gout, gout)
        il, ig = ffc_bn_act(xl, xg, p + ".res.shortcut", cin, cout, 1, gin, gout, s=s) if down else (xl, xg)
        return F.relu(al + il), None if ag is None else F.relu(ag + ig)

    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    yl = F.max_pool2d(F.relu(_bn(_conv(x, w, "stem.conv", stride=2, padding=3), w, "stem.bn")), 3, 2, 1)
    yg = None
    gins, gouts = [0.0, ratio, ratio, ratio], [ratio, ratio, ratio, 0.0]
    for i, n in enumerate([2, 1, 1, 2]):
        for j in range(n):
            cin = (stem if i == 0 else 4 * widths[i - 1]) if j == 0 else 4 * widths[i]
            yl, yg = bottleneck(yl, yg, f"stages.{i}.blocks.{j}", cin, widths[i], 2 if i > 0 and j == 0 else 1,
                                gins[i] if j == 0 else gouts[i], gouts[i], j == 0)
    assert yg is None
    ref = F.linear(yl.mean((2, 3)), w["head.fc.weight"], w["head.fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-9, atol=1e-9)
