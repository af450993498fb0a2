"""Whether two configurations differ by more than their noise: a paired t interval on shared replicates.

Two configurations run with the same seeds (or validated on the same folds) are compared replicate by
replicate: the differences `a_i - b_i` cancel what the replicate itself adds (a lucky initialisation, an
easy fold), so the interval is narrower than one made from each configuration's spread alone. The interval is
the mean difference ± t * sd / sqrt(n), with Student's t for n - 1 degrees of freedom: with a handful of
replicates (3 seeds, 5 folds) the normal 1.96 would claim far more certainty than there is.

Folds share their training images (each trains on K - 2 of the same folds), so their differences are not
quite independent and the interval is somewhat too narrow; it remains the usual first check.

No SciPy: Student's t distribution has a closed form for whole degrees of freedom, and its quantile is
found by bisection.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """The mean of paired differences `a - b` and its `confidence` interval, over `n` pairs."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes 0: the two differ by more than their noise at this confidence."""
        return self.low > 0 or self.high < 0

    def interval(self) -> str:
        """`+0.0160 [+0.0049, +0.0271]`."""
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"

    def verdict(self, a: str = "the first", b: str = "the second") -> str:
        """What the interval says, plainly."""
        if not self.distinguishable:
            return "cannot be told apart (the interval contains 0)"
        return f"{a} is {'higher' if self.mean > 0 else 'lower'} than {b}"


def paired_difference(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> Difference:
    """The mean of `a[i] - b[i]` and its two-sided paired t interval; `a` and `b` in replicate order."""
    if len(a) != len(b):
        raise ValueError(f"paired values come in pairs: {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"an interval needs at least 2 pairs, not {len(a)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    n = len(differences)
    mean = statistics.fmean(differences)
    half = t_quantile(n - 1, confidence) * statistics.stdev(differences) / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, n, confidence)


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The `t` with P(|T| <= t) = `confidence` for Student's t with `df` degrees of freedom (two-sided):
    12.706 for 1, 2.776 for 4, 2.262 for 9 at 95%."""
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"df={df}, confidence={confidence}: need df >= 1 and 0 < confidence < 1")
    low, high = 0.0, 1.0
    while _central_probability(high, df) < confidence:
        high *= 2
    for _ in range(100):  # bisection: each step halves the bracket; 100 is far below a float's spacing
        middle = (low + high) / 2
        low, high = (middle, high) if _central_probability(middle, df) < confidence else (low, middle)
    return (low + high) / 2


def _central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with whole `df` (Abramowitz and Stegun 26.7.3 and 26.7.4).

    With theta = atan(t / sqrt(df)): for odd df, (2 / pi) (theta + sin theta cos theta (1 + 2/3 cos^2 +
    2*4/(3*5) cos^4 + ...)), the series up to cos^(df - 3); for even df, sin theta (1 + 1/2 cos^2 +
    1*3/(2*4) cos^4 + ...), up to cos^(df - 2).
    """
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):  # 2k/(2k+1) each step
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + sin * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):  # (2k-1)/(2k) each step
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return sin * total
