"""What every family's torch half (archdsl/ops/<family>_nn.py) shares: `recorded`, which remembers a layer's
constructor arguments so `archdsl compile` can write the call back, and the layout helpers the layers use.

Layouts: (N, C, H, W) "nchw", (N, H, W, C) "nhwc", (N, C) "nc". Torch only.
"""

from __future__ import annotations

import torch


def recorded(cls):
    """Class decorator: remember each instance's constructor arguments (the source emitter writes them back)."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self) is cls:
            self._archdsl_ctor = (args, kwargs)

    __init__.__wrapped__ = init
    cls.__init__ = __init__
    return cls


def channel_dim(layout: str) -> int:
    return -1 if layout in ("nhwc", "nc") else 1


def _bcast(v: torch.Tensor, layout: str) -> torch.Tensor:
    """Reshape a per-channel vector (C,) so it broadcasts over a tensor in `layout`."""
    return v.view(-1, 1, 1) if layout == "nchw" else v
