"""Test helper: a timer that only moves when a fake workload advances it (for the measurement engine's tests)."""

from __future__ import annotations


class FakeClock:
    """A timer that only moves when a fake workload advances it."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def work(self, durations):
        it = iter(durations)

        def fn():
            self.t += next(it)
        return fn
