"""Order statistics for latency samples: percentiles and a distribution-free confidence interval of the median.

Takes: lists of per-run times in seconds. Returns: plain floats. Pure Python, no torch, no randomness, so the
stop rule of `archdsl.bench.measure` is deterministic given its samples.
"""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50.0)


def median_ci(samples: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """The order-statistic confidence interval of the median: [x_(j), x_(k)] (1-based ranks) with
    j = floor(n/2 - z*sqrt(n)/2), k = ceil(1 + n/2 + z*sqrt(n)/2) — the normal approximation of the binomial
    count of samples below the median. Valid for any distribution; needs n >= 6 to exclude the extremes."""
    n = len(samples)
    if n < 6:
        return (-math.inf, math.inf)
    xs = sorted(samples)
    half = z * math.sqrt(n) / 2.0
    j = max(1, math.floor(n / 2.0 - half))
    k = min(n, math.ceil(1 + n / 2.0 + half))
    return (xs[j - 1], xs[k - 1])


def rel_ci_halfwidth(samples: Sequence[float]) -> float:
    """Half the width of the median's 95% interval, relative to the median (0.02 = +-2%); inf when too few
    samples or a zero median."""
    lo, hi = median_ci(samples)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.inf
    m = median(samples)
    if m <= 0:
        return 0.0 if hi == lo else math.inf
    return (hi - lo) / 2.0 / m


def drifted(samples: Sequence[float], tol: float = 0.10, min_half: int = 4) -> tuple[bool, float]:
    """Whether the median of the second half of `samples` differs from the first half's by more than `tol`
    (relative). Returns (drift, relative change); too few samples -> (False, 0.0)."""
    n = len(samples)
    if n < 2 * min_half:
        return False, 0.0
    a, b = median(samples[: n // 2]), median(samples[n // 2:])
    if a <= 0:
        return False, 0.0
    change = (b - a) / a
    return abs(change) > tol, change
