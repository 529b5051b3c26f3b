"""Stage 5 (deploy runtime): block patterns of the deploy graph -> fused steps.

Takes: a deploy-form graph and its modules (ArchModule._modules_by_name). Returns: `Step`s, one per matched block,
each with a fused implementation ("fused", archdsl.kernels + two GEMMs) and the plain modules ("torch",
"torch_cl") as candidates; archdsl.codegen.fast measures them and keeps the fastest.

The pattern, along a chain of single-consumer nodes (brackets: optional):

    [depthwise conv | inception mixer] -> [squeeze-excite] -> [nhwc] -> [layernorm] -> linear|1x1 conv -> gelu
        -> [grn] -> linear|1x1 conv -> [nchw] -> add(., residual)

It covers the deploy forms of ConvNeXt (dw 7x7 -> LN -> MLP), InceptionNeXt (mixer -> MLP, its BN folded into
fc1) and UniRepLKNet (merged large dw -> SE -> MLP with GRN). Layer scales are already folded into fc2 and GRN
biases into fc2's bias by the deploy passes. The fused form runs channels-last throughout: dw conv (+ LN, + the
residual plus fc2's bias written on the way) in one kernel pass; fc1 as one GEMM; bias + exact GELU (+ GRN's
sums of squares) in one pass; fc2 accumulated into the residual by a second GEMM (beta = 1): no permute copies,
no separate add.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import native
from ..ops.attention_nn import SE
from ..ops.linear_nn import Linear
from ..ops.merge_nn import Add, Permute
from ..ops.mixers_nn import InceptionDW
from ..ops.norm_nn import GRN, LayerNorm

CL = torch.channels_last


@dataclass
class Step:
    """A node, or a fused group of nodes, with its candidate implementations."""

    out: str                                  # the IR node whose value the step produces
    nodes: tuple[str, ...]                    # the IR nodes it covers, in order
    refs: tuple[tuple[str, int], ...]         # its inputs (node, port) from outside the step
    where: str                                # the source position of its first node
    signature: str                            # what its candidates' timing depends on (besides the inputs)
    candidates: dict[str, Callable[..., Any]]
    reference: str = "torch"                  # the plain-module candidate the others are checked against
    kind: str = "node"
    choice: dict[tuple, str] = field(default_factory=dict)   # input signature -> chosen candidate
    ms: dict[tuple, dict[str, float]] = field(default_factory=dict)
    source: dict[tuple, dict] = field(default_factory=dict)  # input signature -> cache / measured, and when


def to_format(fmt: torch.memory_format, x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=fmt)
    return x


def plain_candidates(module: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """The module as its input arrives, after converting 4-D inputs to channels-last, or to contiguous."""
    return {
        "torch": module,
        "torch_cl": lambda *a: module(*(to_format(CL, x) for x in a)),
        "torch_cf": lambda *a: module(*(to_format(torch.contiguous_format, x) for x in a)),
    }


def _is_patchify(m: nn.Module) -> bool:
    """A conv whose kernel tiles the input without overlap or padding (ConvNeXt's stem and downsampling)."""
    return (type(m) is nn.Conv2d and m.groups == 1 and m.kernel_size == m.stride and m.padding == (0, 0)
            and m.dilation == (1, 1) and m.padding_mode == "zeros")


def _patchify(m: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """A non-overlapping conv as one packed GEMM over the channels-last patches: [N*Ho*Wo, kh*kw*Cin] x
    [kh*kw*Cin, Cout] (one gather copy of the input, no im2col blow-up)."""
    from ..kernels import gemm as G

    kh, kw = m.kernel_size
    w = m.weight.detach().permute(0, 2, 3, 1).reshape(m.out_channels, -1)  # (kh, kw, cin) order, as the patches
    packed = G.pack_linear(w, None if m.bias is None else m.bias.detach())

    def run(x: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        ho, wo = h // kh, wd // kw
        xh = x.contiguous(memory_format=CL).permute(0, 2, 3, 1)[:, :ho * kh, :wo * kw]
        patches = xh.reshape(n, ho, kh, wo, kw, c).permute(0, 1, 3, 2, 4, 5).reshape(n * ho * wo, kh * kw * c)
        patches = patches.contiguous()  # reshape may hand back a strided view (a cropped edge, size-1 dims)
        return G.linear(patches, packed).view(n, ho, wo, -1).permute(0, 3, 1, 2)

    return run


def pack_inception(m: InceptionDW):
    """The InceptionNeXt mixer's four branches as one multi-geometry depthwise conv (archdsl.kernels)."""
    from ..kernels import ops as K

    cid, g, _, _ = m.split_indexes
    groups = []
    if cid:
        groups.append((0, cid, 1, 1, torch.ones(cid, 1, 1, 1), None))
    for i, conv in enumerate((m.dwconv_hw, m.dwconv_w, m.dwconv_h)):
        kh, kw = conv.kernel_size
        c0 = cid + i * g
        groups.append((c0, c0 + g, kh, kw, conv.weight.detach(), None if conv.bias is None else conv.bias.detach()))
    return K.pack_mixer(groups)


def node_candidates(module: nn.Module) -> dict[str, Callable[..., Any]]:
    """The plain candidates of a single node, plus a fused kernel where archdsl.kernels has one for it: a
    depthwise conv (any size, stride, dilation), the InceptionNeXt mixer (one pass, no split / concat), a
    channels-first LayerNorm (on the channels-last view, no permute copies)."""
    cands = plain_candidates(module)
    if not native.available():
        return cands
    from ..kernels import ops as K

    def nhwc(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=CL).permute(0, 2, 3, 1)

    if _is_dw(module):
        pdw = K.pack_dw(module.weight.detach(), None if module.bias is None else module.bias.detach())
        s, pad, d = module.stride, module.padding, module.dilation
        cands["kernel"] = lambda x: K.dwconv_nhwc(nhwc(x), pdw, stride=s, pad=pad, dilation=d).permute(0, 3, 1, 2)
    elif _is_patchify(module):
        cands["kernel"] = _patchify(module)
    elif isinstance(module, InceptionDW):
        pm = pack_inception(module)
        cands["kernel"] = lambda x: K.mixer_nhwc(nhwc(x), pm).permute(0, 3, 1, 2)
    elif isinstance(module, LayerNorm) and module.layout == "nchw" and module.weight is not None:
        c = module.normalized_shape[0]
        gamma = module.weight.detach()
        beta = module.bias.detach() if module.bias is not None else torch.zeros(c)
        eps = float(module.eps)
        cands["kernel"] = lambda x: K.layernorm_rows(nhwc(x), gamma, beta, eps).permute(0, 3, 1, 2)
    return cands


# ---------------------------------------------------------------- matching


def _is_dw(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple))


def _pointwise(m: nn.Module, layout: str) -> bool:
    if isinstance(m, Linear):
        return m.layout == layout
    return (layout == "nchw" and type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.groups == 1 and m.padding == (0, 0) and m.dilation == (1, 1))


def _next(g, name: str) -> str | None:
    """The only consumer of `name`, or None (several consumers, or `name` is the model's output)."""
    cons = list(g.g.successors(name))
    if len(cons) != 1 or g.output[0] == name:
        return None
    return cons[0]


@dataclass
class Block:
    dw: str | None = None
    se: str | None = None
    perm_in: str | None = None
    ln: str | None = None
    fc1: str | None = None
    act: str | None = None
    grn: str | None = None
    fc2: str | None = None
    perm_out: str | None = None
    add: str | None = None

    def nodes(self) -> tuple[str, ...]:
        return tuple(n for n in (self.dw, self.se, self.perm_in, self.ln, self.fc1, self.act, self.grn, self.fc2,
                                 self.perm_out, self.add) if n is not None)


def _match(g, mods: dict[str, nn.Module], start: str) -> Block | None:
    b = Block()
    cur: str | None = start
    m = mods.get(cur)
    if m is None or len(g.inputs(start)) != 1:
        return None

    def take(attr: str, ok: bool) -> bool:
        nonlocal cur
        if cur is None or not ok:
            return False
        setattr(b, attr, cur)
        cur = _next(g, cur)
        return True

    take("dw", _is_dw(m) or isinstance(m, InceptionDW))
    if b.dw is not None:
        take("se", cur is not None and isinstance(mods[cur], SE))
    take("perm_in", cur is not None and isinstance(mods[cur], Permute) and mods[cur].to == "nhwc")
    layout = "nhwc" if b.perm_in else "nchw"
    take("ln", cur is not None and isinstance(mods[cur], LayerNorm) and mods[cur].layout == layout)
    if not take("fc1", cur is not None and _pointwise(mods[cur], layout)):
        return None
    if not take("act", cur is not None and isinstance(mods[cur], nn.GELU) and mods[cur].approximate == "none"):
        return None
    take("grn", cur is not None and isinstance(mods[cur], GRN) and mods[cur].layout == layout)
    if cur is None or not _pointwise(mods[cur], layout):
        return None
    b.fc2 = cur
    cur = _next(g, b.fc2)
    if b.perm_in:  # channels-last inside the block: it must end with the permute back
        if cur is None or not (isinstance(mods[cur], Permute) and mods[cur].to == "nchw"):
            return None
        b.perm_out = cur
        cur = _next(g, cur)
    if cur is None or not isinstance(mods[cur], Add) or len(g.inputs(cur)) != 2:
        return None
    b.add = cur
    return b


def match_blocks(g, mods: dict[str, nn.Module]) -> list[Step]:
    """Every non-overlapping match of the block pattern, as a Step with fused and plain candidates."""
    steps: list[Step] = []
    taken: set[str] = set()
    for name in g.order():
        if name in taken or name == g.input_node:
            continue
        b = _match(g, mods, name)
        if b is None:
            continue
        nodes = b.nodes()
        if taken.intersection(nodes):
            continue
        (p,) = g.inputs(nodes[0])
        last = b.perm_out or b.fc2
        (r,) = [ref for ref in g.inputs(b.add) if ref[0] != last]
        if len(g.shape_of(p).to_json()) != 3:
            continue
        refs = (p,) if r == p else (p, r)
        chain = [(mods[n], None) for n in nodes[:-1]] + [(mods[b.add], 0 if r == p else 1)]

        def plain(*args, chain=chain):
            cur = args[0]
            for mod, extra in chain:
                cur = mod(cur) if extra is None else mod(cur, args[extra])
            return cur

        cands = {k: v for k, v in plain_candidates(plain).items() if k != "torch_cf"}
        if native.available():  # without the library the references would only be slower than the plain modules
            cands["fused"] = FusedBlock(b, mods)
            cands["fused_gemm"] = FusedBlock(b, mods, gemm="archdsl")
        sig = "block:" + ";".join(f"{type(mods[n]).__name__}{_geometry(mods[n])}" for n in nodes)
        span = g.node(nodes[0]).span
        steps.append(Step(b.add, nodes, refs, f"{span}", sig, cands, kind="block"))
        taken.update(nodes)
    return steps


def _geometry(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return f"({m.in_channels},{m.out_channels},{m.kernel_size},{m.stride},{m.padding},{m.dilation},{m.groups})"
    if isinstance(m, nn.Linear):
        return f"({m.in_features},{m.out_features})"
    return ""


# ---------------------------------------------------------------- the fused implementation


def _pw_weight(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = m.weight.detach()
    return (w.flatten(1) if w.dim() == 4 else w), (None if m.bias is None else m.bias.detach())


class FusedBlock:
    """The block pattern as fused kernels + GEMMs on channels-last tensors. Call with (P) or (P, R): P the
    block input, R the residual (P itself when absent). gemm="torch": the two GEMMs are torch.mm / addmm_ (MKL)
    with bias + GELU as one kernel pass; gemm="archdsl": archdsl.kernels.gemm with weights prepacked and bias,
    GELU, GRN's sums of squares and scaling, and the residual accumulation in its epilogue / A-packing."""

    def __init__(self, b: Block, mods: dict[str, nn.Module], gemm: str = "torch"):
        from ..kernels import gemm as G
        from ..kernels import ops as K

        self.K, self.G, self.gemm = K, G, gemm
        self.dw = self.mixer = None
        if b.dw is not None:
            m = mods[b.dw]
            if isinstance(m, InceptionDW):
                self.mixer = pack_inception(m)
            else:
                self.dw = K.pack_dw(m.weight.detach(), None if m.bias is None else m.bias.detach())
                self.dw_geom = (m.stride, m.padding, m.dilation, m.kernel_size)
        self.se = mods[b.se] if b.se else None
        ln = mods[b.ln] if b.ln else None
        self.ln = None
        if ln is not None:
            c = ln.normalized_shape[0]
            gamma = ln.weight.detach() if ln.weight is not None else torch.ones(c)
            beta = ln.bias.detach() if ln.bias is not None else torch.zeros(c)
            self.ln = (gamma.contiguous(), beta.contiguous(), float(ln.eps))
        w1, self.b1 = _pw_weight(mods[b.fc1])
        w2, b2 = _pw_weight(mods[b.fc2])
        self.w1t, self.w2 = w1.t(), w2.contiguous()  # mm(x, W1^T) reads W1 as a transposed operand: no copy
        self.w2t = self.w2.t()
        grn = mods[b.grn] if b.grn else None
        self.grn = None
        if grn is not None:
            if grn.beta is not None:  # fc2(s * h + beta) = (W2 s) h + W2 beta
                extra = w2 @ grn.beta.detach()
                b2 = extra if b2 is None else b2 + extra
            self.grn = (grn.gamma.detach().contiguous(), float(grn.eps))
        self.b2 = torch.zeros(w2.shape[0]) if b2 is None else b2.contiguous()
        if gemm == "archdsl":  # fc2's bias rides on the residual (written with it), so its pack has none
            self.p1, self.p2 = G.pack_linear(w1, self.b1), G.pack_linear(w2, None)
        # dw + LN + residual in one kernel pass needs a stride-1 "same" dw conv without SE between them
        self.one_pass = (self.dw is not None and self.ln is not None and self.se is None
                         and self.dw_geom[0] == (1, 1) and self.dw_geom[2] == (1, 1)
                         and tuple(2 * p + 1 for p in self.dw_geom[1]) == tuple(self.dw_geom[3]))

    def _se_scale(self, t: torch.Tensor) -> torch.Tensor:
        se = self.se
        v = t.mean((1, 2))
        v = se.act(F.linear(v, se.down.weight.flatten(1), se.down.bias))
        return se.gate(F.linear(v, se.up.weight.flatten(1), se.up.bias))

    def __call__(self, p: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        K = self.K
        n, c, h, w = p.shape
        x = p.permute(0, 2, 3, 1)
        if not x.is_contiguous():
            x = x.contiguous()
        if r is None:
            res_src = x
        else:
            res_src = r.permute(0, 2, 3, 1)
        if self.one_pass and r is None:
            t, out = K.dwconv_ln_nhwc(self.dw, x, *self.ln, resid_bias=self.b2)
        elif self.one_pass:
            t = K.dwconv_ln_nhwc(self.dw, x, *self.ln)
            out = torch.add(res_src, self.b2).contiguous()
        else:
            t = x
            if self.dw is not None:
                s, pad, d, _ = self.dw_geom
                t = K.dwconv_nhwc(x, self.dw, stride=s, pad=pad, dilation=d)
            elif self.mixer is not None:
                t = K.mixer_nhwc(x, self.mixer)
            if self.se is not None:
                t = K.scale_channels_(t, self._se_scale(t))
            if self.ln is not None:
                t = K.layernorm_rows(t, *self.ln)
            out = torch.add(res_src, self.b2).contiguous()
        ho, wo = t.shape[1], t.shape[2]
        if self.gemm == "archdsl":
            return self._gemms_archdsl(t, out, n, ho * wo).permute(0, 3, 1, 2)
        hid = torch.mm(t.reshape(-1, t.shape[-1]), self.w1t)
        if self.grn is None:
            K.bias_act_(hid, self.b1, "gelu")
            out.view(-1, out.shape[-1]).addmm_(hid, self.w2t)
        else:
            gamma, eps = self.grn
            _, sumsq = K.bias_act_(hid, self.b1, "gelu", sumsq_images=n)
            gx = sumsq.sqrt()
            scale = gamma * (gx / (gx.mean(-1, keepdim=True) + eps)) + 1  # [n, 4C]
            hid = hid.view(n, ho * wo, -1)
            o = out.view(n, ho * wo, -1)
            for i in range(n):
                o[i].addmm_(hid[i], (self.w2 * scale[i]).t())
        return out.permute(0, 3, 1, 2)

    def _gemms_archdsl(self, t: torch.Tensor, out: torch.Tensor, n: int, rows: int) -> torch.Tensor:
        G = self.G
        t2, o2 = t.reshape(-1, t.shape[-1]), out.view(-1, out.shape[-1])
        if self.grn is None:
            hid = G.linear(t2, self.p1, act="gelu")
            G.linear(hid, self.p2, out=o2, accumulate=True)
            return out
        gamma, eps = self.grn
        hid, sumsq = G.linear(t2, self.p1, act="gelu", sumsq_images=n, rows_per_image=rows)
        gx = sumsq.sqrt()
        scale = (gamma * (gx / (gx.mean(-1, keepdim=True) + eps)) + 1).contiguous()
        G.linear(hid, self.p2, out=o2, accumulate=True, a_scale=scale, rows_per_image=rows)
        return out


__all__ = ["Step", "FusedBlock", "match_blocks", "node_candidates", "plain_candidates", "to_format"]
