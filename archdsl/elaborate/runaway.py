"""Elaboration: foresight of runaway specs, so that one is refused at once instead of after running to a limit.

Takes: the repetitions running (loops with their lengths, and block calls made identically several times in a row
by one body, such as a binary recursion's `t(n - 1); t(n - 1)`) and what the innermost one's first repetition
cost. Returns the refusal (span, message) when repeating it, inside every repetition around it, would pass
limits.MAX_STEPS or MAX_NODES more than limits.RUNAWAY times over; else None. The first repetition may cost more
than the others, so a spec that could stay within the limits always runs to the real limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .. import limits
from .. import syntax as S
from ..errors import Span

WHAT = (("loop iterations and block calls", 1), ("operator nodes", 0))  # (what, its own cost per repetition)


class Repeats:
    """The stack of repetitions running, outermost first: (S.For or S.LayerCall, how many times it repeats)."""

    def __init__(self) -> None:
        self.stack: list[tuple[S.For | S.LayerCall, int]] = []
        self._rows: dict[int, tuple[tuple, dict[int, int]]] = {}

    @contextmanager
    def running(self, node: S.For | S.LayerCall, count: int) -> Iterator[None]:
        self.stack.append((node, count))
        try:
            yield
        finally:
            self.stack.pop()

    def calls_in_a_row(self, body: S.Body, is_block: Callable[[str], bool]) -> dict[int, int]:
        """Statement index -> how many of the body's statements from that one on call the same block with the same
        arguments (only where more than one does): they make the same network, so cost the same. Cached per
        statement tuple."""
        hit = self._rows.get(id(body.stmts))
        if hit is not None and hit[0] is body.stmts:
            return hit[1]
        seen: dict[S.Call, int] = {}
        rows: dict[int, int] = {}
        for i in range(len(body.stmts) - 1, -1, -1):
            s = body.stmts[i]
            layer = s.layer if isinstance(s, S.Named) else s
            if isinstance(layer, S.LayerCall) and layer.body is None and is_block(layer.call.name):
                try:
                    n = seen[layer.call] = seen.get(layer.call, 0) + 1
                except TypeError:  # an unhashable value in the arguments: no foresight for it
                    continue
                if n > 1:
                    rows[i] = n
        self._rows[id(body.stmts)] = (body.stmts, rows)
        return rows

    def foresee(self, steps: int, nodes: int) -> tuple[Span, str] | None:
        """`steps` and `nodes`: what the innermost repetition's first round made."""
        for per, (what, own), cap in zip((steps, nodes), WHAT, (limits.MAX_STEPS, limits.MAX_NODES)):
            (at, count), body, total = self.stack[-1], per, 0
            top = (at, count, body)
            for outer, m in reversed(self.stack[:-1]):  # one round of the repetition around: this one, and its own
                body = count * body + own
                at, count = outer, m
                if count > 1:
                    top = (at, count, body)
            total = count * body
            if total > limits.RUNAWAY * cap:
                at, count, body = top
                if isinstance(at, S.For):
                    why = f"this loop repeats {count:,} times a body of {body:,}"
                else:
                    why = f"this call of '{at.call.name}' is made {count:,} times in a row, each making about {body:,}"
                return at.span, f"the model would have about {total:,} {what} ({why}), more than the limit of {cap:,}"
        return None
