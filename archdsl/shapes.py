"""Tensor types and cost records shared by the checker, the registry and the reports.

`Shape` is a per-sample tensor type: channels plus optional spatial size and a memory layout
("nchw" channels-first, "nhwc" channels-last, "nc" for feature vectors). `Cost` is a node's exact
parameter count, multiply-accumulates and activation elements.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    c: int
    h: int | None = None
    w: int | None = None
    layout: str = "nchw"

    @staticmethod
    def vector(c: int) -> "Shape":
        return Shape(c, None, None, "nc")

    @property
    def spatial(self) -> bool:
        return self.h is not None

    def numel(self) -> int:
        return self.c * (self.h or 1) * (self.w or 1)

    def with_c(self, c: int) -> "Shape":
        return Shape(c, self.h, self.w, self.layout)

    def torch_shape(self, batch: int = 1) -> tuple[int, ...]:
        if not self.spatial:
            return (batch, self.c)
        if self.layout == "nhwc":
            return (batch, self.h, self.w, self.c)
        return (batch, self.c, self.h, self.w)

    def __str__(self) -> str:
        if not self.spatial:
            return f"{self.c}"
        s = f"{self.c}x{self.h}x{self.w}"
        return s + " nhwc" if self.layout == "nhwc" else s

    def to_json(self) -> list[int]:
        return [self.c] if not self.spatial else [self.c, self.h, self.w]


@dataclass(frozen=True)
class Cost:
    params: int = 0
    macs: int = 0
    acts: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs, self.acts + other.acts)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)
