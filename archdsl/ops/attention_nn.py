"""The torch half of archdsl/ops/attention.py: SE, ECA and attention over positions (op family `attention`).

Takes: sizes and options decided by the family's ops. Returns: nn.Module classes whose forward takes batched
tensors in the layout the IR recorded. Torch only (and ._layer), so `archdsl compile` copies each class into
standalone source (codegen/source.py); imported only when a model is built, so checking stays torch-free.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layer import recorded
from .conv_nn import ConvBN


@recorded
class SE(nn.Module):
    """Squeeze-and-excitation: avg pool -> 1x1 conv (down) -> act -> 1x1 conv (up) -> gate -> scale."""

    def __init__(self, c: int, hidden: int, bias: bool, act: nn.Module, gate: nn.Module):
        super().__init__()
        self.down = nn.Conv2d(c, hidden, 1, bias=bias)
        self.act = act
        self.up = nn.Conv2d(hidden, c, 1, bias=bias)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.up(self.act(self.down(s))))


@recorded
class ECA(nn.Module):
    """Efficient channel attention: avg pool -> 1-D conv over channels (kernel k) -> sigmoid -> scale."""

    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))  # N, C
        s = self.conv(s.unsqueeze(1)).squeeze(1)
        return x * torch.sigmoid(s)[:, :, None, None]


@recorded
class PosAttention(nn.Module):
    """Self-attention over positions with a learned bias per head and offset (|dh|, |dw|), as LSNet's Attention:
    qkv conv+BN, a 3x3 depthwise conv+BN on the queries, softmax(q^T k * key_dim^-0.5 + bias) v, ReLU, conv+BN."""

    # one-shot search (search/supernet.py): the bias table is indexed by the input's offsets
    inelastic_dims = {"attention_biases": (1,)}

    def __init__(self, dim: int, key_dim: int, heads: int, d: int, h: int, w: int, q_dw: bool):
        super().__init__()
        self.heads, self.key_dim, self.d, self.scale = heads, key_dim, d, key_dim ** -0.5
        nk = heads * key_dim
        self.qkv = ConvBN(dim, 2 * nk + heads * d)
        self.dw = ConvBN(nk, nk, 3, groups=nk) if q_dw else None
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(heads * d, dim))
        self.attention_biases = nn.Parameter(torch.zeros(heads, h * w))
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        dy = (ys.reshape(-1, 1) - ys.reshape(1, -1)).abs()
        dx = (xs.reshape(-1, 1) - xs.reshape(1, -1)).abs()
        self.register_buffer("bias_idx", dy * w + dx, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n, nk = h * w, self.heads * self.key_dim
        q, k, v = self.qkv(x).split([nk, nk, self.heads * self.d], dim=1)
        if self.dw is not None:
            q = self.dw(q)
        q, k, v = (t.reshape(b, self.heads, -1, n) for t in (q, k, v))
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_biases[:, self.bias_idx]
        return self.proj((v @ attn.softmax(dim=-1).transpose(-2, -1)).reshape(b, -1, h, w))
