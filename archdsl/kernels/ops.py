"""Fused CPU inference kernels: fast ctypes wrappers, each beside its plain PyTorch reference.

Every tensor is fp32, contiguous, on the CPU; "NHWC" means a contiguous tensor of logical shape [N, H, W, C].
The wrappers call the native library (archdsl.kernels.native) directly and fall back to the reference when
it is unavailable, so they always return the same result. Inference only: nothing here supports autograd.
The same kernels are registered as torch custom ops (``torch.ops.archdsl.*``, see archdsl.kernels.library)
for torch.compile / export graphs; the runtime calls these wrappers, which skip the dispatcher.

Weights are packed once at deploy time: ``pack_dw`` (depthwise conv) and ``pack_mixer`` (multi-geometry
depthwise token mixer). GELU is the exact erf form; the native one returns 0 (not NaN) for -inf.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native

ACTS = {"none": 0, "relu": 1, "gelu": 2}


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if v.__class__ is int else (int(v[0]), int(v[1]))


def _check(t: Tensor, name: str, dim: int | None = None) -> None:
    """t must be a contiguous float32 CPU tensor (with dim dims). Cheap: it runs on every call."""
    if t.dtype is not torch.float32 or not t.is_cpu or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous float32 CPU tensor, got {t.dtype} {t.device} "
                         f"contiguous={t.is_contiguous()}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dims, got shape {tuple(t.shape)}")


def _vec(t: Tensor | None, n: int, name: str) -> None:
    """t must be None or a contiguous float32 CPU vector of n elements."""
    if t is not None and (t.dtype is not torch.float32 or t.shape != (n,) or not t.is_cpu or not t.is_contiguous()):
        raise ValueError(f"{name} must be a contiguous float32 CPU tensor of shape [{n}], got {t.dtype} "
                         f"{tuple(t.shape)}")


def _act_code(act: str) -> int:
    code = ACTS.get(act)
    if code is None:
        raise ValueError(f"act must be one of {sorted(ACTS)}, got {act!r}")
    return code


def _distinct(*ptrs: int) -> None:
    """The kernels read x while writing the outputs: no two of them (data pointers, 0: none) may share memory."""
    live = [p for p in ptrs if p]
    if len(set(live)) != len(live):
        raise ValueError("the output tensors must not alias the input or each other")


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _args(*values: int) -> array:
    """The int64 argument block a kernel takes (keep it referenced until the call returns)."""
    return array("q", values)


def gelu_ref(y: Tensor) -> Tensor:
    """Exact (erf) GELU with PyTorch, the same at the edges on every CPU and as the native kernel: x itself above
    10 (Phi rounds to 1 in float32 and float64 there; torch's vectorized CPU kernels compute 0.5 * (2x) and
    overflow to inf above ~1.7e38, its scalar path does not) and the limit 0 at -inf (torch: NaN)."""
    return torch.where(y > 10.0, y, F.gelu(y)).masked_fill_(y == float("-inf"), 0.0)


def _act(y: Tensor, act: str) -> Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "gelu":
        return gelu_ref(y)
    if act == "none":
        return y
    raise ValueError(f"act must be one of {sorted(ACTS)}, got {act!r}")


def _out(out: Tensor | None, shape: tuple[int, ...], name: str = "out") -> Tensor:
    if out is None:
        return torch.empty(shape, dtype=torch.float32)
    _check(out, name)
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(out.shape)}")
    return out


# ---------------------------------------------------------------------------------------------- depthwise conv

@dataclass(frozen=True, slots=True)
class PackedDW:
    """A depthwise conv weight packed for the kernel: weight [ceil(C/16), kh, kw, 16] (channels zero-padded),
    bias [ceil(C/16) * 16] or None."""

    weight: Tensor
    bias: Tensor | None
    kh: int
    kw: int
    channels: int

    def torch_weight(self) -> tuple[Tensor, Tensor | None]:
        """Back to PyTorch's layout: (weight [C, 1, kh, kw], bias [C] or None)."""
        c = self.channels
        w = self.weight.permute(0, 3, 1, 2).reshape(-1, 1, self.kh, self.kw)[:c].contiguous()
        return w, (None if self.bias is None else self.bias[:c].contiguous())


def pack_dw(w: Tensor, b: Tensor | None = None) -> PackedDW:
    """Pack a PyTorch depthwise weight [C, 1, kh, kw] (or [C, kh, kw]) and bias [C] (or None), once."""
    w = w.detach().float()
    if w.dim() == 4:
        if w.shape[1] != 1:
            raise ValueError(f"depthwise weight must be [C, 1, kh, kw], got {tuple(w.shape)}")
        w = w[:, 0]
    if w.dim() != 3:
        raise ValueError(f"depthwise weight must be [C, 1, kh, kw] or [C, kh, kw], got {tuple(w.shape)}")
    c, kh, kw = w.shape
    nb = -(-c // 16)
    wp = torch.zeros(nb * 16, kh, kw)
    wp[:c] = w
    wp = wp.view(nb, 16, kh, kw).permute(0, 2, 3, 1).contiguous()
    bp = None
    if b is not None:
        if tuple(b.shape) != (c,):
            raise ValueError(f"bias must be [{c}], got {tuple(b.shape)}")
        bp = torch.zeros(nb * 16)
        bp[:c] = b.detach().float()
    return PackedDW(wp, bp, kh, kw, c)


def _dw_geometry(x: Tensor, p: PackedDW, stride, pad, dilation) -> tuple:
    _check(x, "x", 4)
    n, h, w, c = x.shape
    (sh, sw), (dh, dw), kh, kw = _pair(stride), _pair(dilation), p.kh, p.kw
    ph, pw = ((dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2) if pad is None else _pair(pad)
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if c != p.channels or sh < 1 or sw < 1 or dh < 1 or dw < 1 or ph < 0 or pw < 0 or ho < 1 or wo < 1:
        raise ValueError(f"bad depthwise conv: x {tuple(x.shape)}, weight of {p.channels} channels, kernel "
                         f"{kh}x{kw}, stride {stride}, pad {(ph, pw)}, dilation {dilation}")
    return n, h, w, c, ho, wo, sh, sw, ph, pw, dh, dw


def dwconv_nhwc(x: Tensor, w: Tensor | PackedDW, b: Tensor | None = None, stride=(1, 1), pad=None,
                dilation=(1, 1), act: str = "none", out: Tensor | None = None) -> Tensor:
    """Depthwise conv (groups = C, zero padding) with fused bias and activation, NHWC -> NHWC.

    x [N, H, W, C]; w: [C, 1, kh, kw] / [C, kh, kw] with bias b [C] or None, or a PackedDW (then b must be
    None); stride / pad / dilation: int or (h, w), pad=None is dilation * (k - 1) // 2 ("same" for odd k at
    stride 1); act: "none" | "relu" | "gelu". Returns y [N, Ho, Wo, C] (written into out if given; out must
    not alias x)."""
    p = w if isinstance(w, PackedDW) else pack_dw(w, b)
    if isinstance(w, PackedDW) and b is not None:
        raise ValueError("give the bias to pack_dw, not with a PackedDW")
    n, h, wd, c, ho, wo, sh, sw, ph, pw, dh, dw = _dw_geometry(x, p, stride, pad, dilation)
    y = _out(out, (n, ho, wo, c))
    xp, yp = x.data_ptr(), y.data_ptr()
    if xp == yp:
        _distinct(xp, yp)
    lib = native.lib()
    if lib is None:
        wt, bt = p.torch_weight()
        return y.copy_(dwconv_nhwc_ref(x, wt, bt, (sh, sw), (ph, pw), (dh, dw), act))
    a = _args(xp, p.weight.data_ptr(), _ptr(p.bias), yp, n, h, wd, c, p.kh, p.kw, sh, sw, ph, pw, dh, dw,
              _act_code(act), torch.get_num_threads())
    lib.ak_dwconv_nhwc(a.buffer_info()[0])
    return y


def dwconv_nhwc_ref(x: Tensor, w: Tensor, b: Tensor | None = None, stride=(1, 1), pad=None, dilation=(1, 1),
                    act: str = "none") -> Tensor:
    """Reference: F.conv2d on the NCHW view of x (w [C, 1, kh, kw] or [C, kh, kw])."""
    if w.dim() == 3:
        w = w[:, None]
    dil = _pair(dilation)
    if pad is None:
        pad = ((dil[0] * (w.shape[2] - 1)) // 2, (dil[1] * (w.shape[3] - 1)) // 2)
    y = F.conv2d(x.permute(0, 3, 1, 2), w, b, _pair(stride), _pair(pad), dil, groups=x.shape[-1])
    return _act(y, act).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------------------- depthwise conv + LayerNorm

def dwconv_ln_nhwc(pdw: PackedDW, x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float = 1e-6,
                   resid_bias: Tensor | None = None, resid_out: Tensor | None = None,
                   out: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Stride-1 "same" depthwise conv + bias (odd kernel), then LayerNorm over C at every pixel, in one pass.

    x [N, H, W, C]; gamma, beta [C] (or None); eps as F.layer_norm (biased variance). Returns y [N, H, W, C].
    With resid_bias [C] it also computes resid = x + resid_bias (the ConvNeXt shortcut with fc2's bias
    folded in) and returns (y, resid); resid is written into resid_out when given, else allocated."""
    _check(x, "x", 4)
    n, h, w, c = shape = tuple(x.shape)
    if c != pdw.channels or pdw.kh % 2 == 0 or pdw.kw % 2 == 0:
        raise ValueError(f"dwconv_ln_nhwc needs an odd kernel with the channels of x, got a {pdw.kh}x{pdw.kw} "
                         f"kernel of {pdw.channels} channels for x {shape}")
    y = _out(out, shape)
    r = None if resid_bias is None else _out(resid_out, shape, "resid_out")
    _vec(gamma, c, "gamma")
    _vec(beta, c, "beta")
    _vec(resid_bias, c, "resid_bias")
    xp, yp, rp = x.data_ptr(), y.data_ptr(), _ptr(r)
    _distinct(xp, yp, rp)
    lib = native.lib()
    if lib is None:
        wt, bt = pdw.torch_weight()
        ref = dwconv_ln_nhwc_ref(x, wt, bt, gamma, beta, eps, resid_bias)
        if r is None:
            return y.copy_(ref)
        return y.copy_(ref[0]), r.copy_(ref[1])
    a = _args(xp, pdw.weight.data_ptr(), _ptr(pdw.bias), pdw.kh, pdw.kw, _ptr(gamma), _ptr(beta),
              _ptr(resid_bias), rp, yp, n, h, w, c, torch.get_num_threads())
    lib.ak_dwconv_ln_nhwc(a.buffer_info()[0], eps)
    return y if r is None else (y, r)


def dwconv_ln_nhwc_ref(x: Tensor, w: Tensor, b: Tensor | None, gamma: Tensor | None, beta: Tensor | None,
                       eps: float = 1e-6, resid_bias: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Reference: dwconv_nhwc_ref then F.layer_norm over C; (y, x + resid_bias) when resid_bias is given."""
    y = F.layer_norm(dwconv_nhwc_ref(x, w, b), (x.shape[-1],), gamma, beta, eps)
    return y if resid_bias is None else (y, x + resid_bias)


# ----------------------------------------------------------------------------------------------- token mixer

@dataclass(frozen=True, slots=True)
class PackedMixer:
    """Packed multi-geometry depthwise conv: desc int32 [G, 6] rows (c0, cw, kh, kw, w_offset, b_offset|-1)
    into the flat wbuf / bbuf (each group's weight packed as PackedDW.weight); groups: as given to pack_mixer
    (for the reference), or None to rebuild them from the buffers when needed."""

    desc: Tensor
    wbuf: Tensor
    bbuf: Tensor
    channels: int
    groups: tuple | None = None

    def torch_groups(self) -> tuple:
        """The groups in pack_mixer's form (c0, c1, kh, kw, weight [cw, 1, kh, kw], bias or None)."""
        if self.groups is not None:
            return self.groups
        out = []
        for c0, cw, kh, kw, wo, bo in self.desc.tolist():
            nb = -(-cw // 16)
            w = self.wbuf[wo:wo + nb * kh * kw * 16].view(nb, kh, kw, 16)
            b = None if bo < 0 else self.bbuf[bo:bo + nb * 16]
            wt, bt = PackedDW(w, b, kh, kw, cw).torch_weight()
            out.append((c0, c0 + cw, kh, kw, wt, bt))
        return tuple(out)


def unpack_mixer(desc: Tensor, wbuf: Tensor, bbuf: Tensor) -> PackedMixer:
    """A PackedMixer from its buffers (as the custom op receives them)."""
    return PackedMixer(desc, wbuf, bbuf, int((desc[:, 0] + desc[:, 1]).max()))


def pack_mixer(groups: Sequence[tuple]) -> PackedMixer:
    """groups: (c0, c1, kh, kw, weight [c1-c0, 1, kh, kw], bias [c1-c0] or None) with odd kernels, covering
    channels [0, C) exactly once (an identity branch is a 1x1 group with weight 1)."""
    rows, ws, bs, off_w, off_b, covered = [], [], [], 0, 0, []
    for c0, c1, kh, kw, w, b in groups:
        if kh % 2 == 0 or kw % 2 == 0 or c1 <= c0:
            raise ValueError(f"mixer group ({c0}, {c1}, {kh}, {kw}): need c1 > c0 and odd kernels")
        if tuple(w.shape[-2:]) != (kh, kw) or w.numel() != (c1 - c0) * kh * kw:
            raise ValueError(f"mixer group ({c0}, {c1}): weight shape {tuple(w.shape)} is not [{c1 - c0}, 1, {kh}, "
                             f"{kw}]")
        p = pack_dw(w.reshape(c1 - c0, kh, kw), b)
        rows.append([c0, c1 - c0, kh, kw, off_w, -1 if b is None else off_b])
        ws.append(p.weight.reshape(-1))
        off_w += p.weight.numel()
        if p.bias is not None:
            bs.append(p.bias)
            off_b += p.bias.numel()
        covered.append((c0, c1))
    covered.sort()
    if not covered or covered[0][0] != 0 or any(a[1] != b[0] for a, b in zip(covered, covered[1:])):
        raise ValueError(f"mixer groups must cover [0, C) exactly once, got ranges {covered}")
    bbuf = torch.cat(bs) if bs else torch.zeros(16)
    return PackedMixer(torch.tensor(rows, dtype=torch.int32), torch.cat(ws), bbuf, covered[-1][1],
                       tuple((c0, c1, kh, kw, w.detach().float().reshape(c1 - c0, 1, kh, kw),
                              None if b is None else b.detach().float()) for c0, c1, kh, kw, w, b in groups))


def mixer_nhwc(x: Tensor, groups: PackedMixer | Sequence[tuple], act: str = "none",
               out: Tensor | None = None) -> Tensor:
    """One depthwise conv whose channel ranges have their own "same" kernels (e.g. InceptionNeXt's identity /
    3x3 / 1x11 / 11x1 split), written in one pass without split / concat. x [N, H, W, C] -> [N, H, W, C]."""
    p = groups if isinstance(groups, PackedMixer) else pack_mixer(groups)
    _check(x, "x", 4)
    n, h, w, c = x.shape
    if c != p.channels:
        raise ValueError(f"x has {c} channels, the mixer {p.channels}")
    y = _out(out, (n, h, w, c))
    xp, yp = x.data_ptr(), y.data_ptr()
    _distinct(xp, yp)
    lib = native.lib()
    if lib is None:
        return y.copy_(mixer_nhwc_ref(x, p.torch_groups(), act))
    a = _args(xp, yp, n, h, w, c, p.desc.shape[0], p.desc.data_ptr(), p.wbuf.data_ptr(), p.bbuf.data_ptr(),
              _act_code(act), torch.get_num_threads())
    lib.ak_mixer_nhwc(a.buffer_info()[0])
    return y


def mixer_nhwc_ref(x: Tensor, groups: Sequence[tuple], act: str = "none") -> Tensor:
    """Reference: one F.conv2d per group on its channel slice, concatenated in channel order."""
    parts = sorted(groups, key=lambda g: g[0])
    ys = [dwconv_nhwc_ref(x[..., c0:c1], w.reshape(c1 - c0, 1, kh, kw), b, 1, ((kh - 1) // 2, (kw - 1) // 2))
          for c0, c1, kh, kw, w, b in parts]
    return _act(torch.cat(ys, dim=-1), act)


# ----------------------------------------------------------------------------------- row-wise / elementwise

def layernorm_rows(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float = 1e-6,
                   out: Tensor | None = None) -> Tensor:
    """LayerNorm over the last dim of x ([M, C], NHWC, any contiguous shape). out may be x (in place)."""
    _check(x, "x")
    c = x.shape[-1]
    _vec(gamma, c, "gamma")
    _vec(beta, c, "beta")
    y = _out(out, tuple(x.shape))
    lib = native.lib()
    if lib is None:
        return y.copy_(layernorm_rows_ref(x, gamma, beta, eps))
    a = _args(x.data_ptr(), _ptr(gamma), _ptr(beta), y.data_ptr(), x.numel() // max(c, 1), c,
              torch.get_num_threads())
    lib.ak_layernorm_rows(a.buffer_info()[0], eps)
    return y


def layernorm_rows_ref(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float = 1e-6) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)


def bias_act_(h: Tensor, b: Tensor | None = None, act: str = "gelu",
              sumsq_images: int = 0) -> Tensor | tuple[Tensor, Tensor]:
    """In place h = act(h + b) over rows of h [M, N] (any contiguous shape with last dim N); b [N] or None;
    act "gelu" (exact, erf) | "relu" | "none". Returns h; with sumsq_images = n > 0 (h viewed as
    [n, M/n, N]) returns (h, sumsq [n, N]), the per-image column sums of squares of the activated values
    (GlobalResponseNorm: gx = sqrt(sumsq))."""
    _check(h, "h")
    ncol = h.shape[-1]
    m = h.numel() // max(ncol, 1)
    _vec(b, ncol, "b")
    code = _act_code(act)
    if sumsq_images < 0 or (sumsq_images and m % sumsq_images):
        raise ValueError(f"{m} rows do not split into {sumsq_images} images")
    lib = native.lib()
    if lib is None:
        s = bias_act_ref_(h, b, act, sumsq_images)
        return h if s is None else (h, s)
    s = torch.empty(sumsq_images, ncol) if sumsq_images else None
    a = _args(h.data_ptr(), _ptr(b), m, ncol, code, sumsq_images, _ptr(s), torch.get_num_threads())
    lib.ak_bias_act(a.buffer_info()[0])
    return h if s is None else (h, s)


def bias_act_ref_(h: Tensor, b: Tensor | None = None, act: str = "gelu", sumsq_images: int = 0) -> Tensor | None:
    """Reference (in place like bias_act_); returns the sumsq tensor or None."""
    y = h if b is None else h + b
    h.copy_(_act(y, act))
    if not sumsq_images:
        return None
    return h.reshape(sumsq_images, -1, h.shape[-1]).square().sum(1)


def scale_channels_(x: Tensor, s: Tensor) -> Tensor:
    """In place x[n, :, :, c] *= s[n, c] (squeeze-and-excitation). x [N, H, W, C] (or [N, P, C]), s [N, C]."""
    _check(x, "x")
    n, c = x.shape[0], x.shape[-1]
    if tuple(s.shape) != (n, c):
        raise ValueError(f"s must be [{n}, {c}], got {tuple(s.shape)}")
    s = s.contiguous().float()
    lib = native.lib()
    if lib is None:
        return scale_channels_ref_(x, s)
    a = _args(x.data_ptr(), s.data_ptr(), n, x.numel() // max(n * c, 1), c, torch.get_num_threads())
    lib.ak_scale_channels(a.buffer_info()[0])
    return x


def scale_channels_ref_(x: Tensor, s: Tensor) -> Tensor:
    return x.mul_(s.reshape(s.shape[0], *([1] * (x.dim() - 2)), s.shape[1]))
