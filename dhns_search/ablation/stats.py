"""Summaries over seeds and paired differences with confidence intervals.

Every arm runs the same seeds, so arm ``a`` and the reference ``r`` form pairs ``(a_s, r_s)`` that share
the seed (initial weights, base negatives and batch order).  The difference of the pair means is
estimated from the per-seed differences ``d_s = a_s - r_s`` with a paired t interval (``scipy.stats``):
``mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n)``.  With one seed there is no interval (NaN), and three seeds
give wide ones (``t_{0.975, 2} = 4.30``): the interval says so honestly.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Difference", "Interval", "Spread", "mean_interval", "paired_difference", "spread"]


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of ``n`` values (sd NaN for one value)."""

    mean: float
    sd: float
    n: int

    def text(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        sd = "" if math.isnan(self.sd) else f" ± {self.sd:.{digits}f}"
        return f"{self.mean:.{digits}f}{sd}"


@dataclass(frozen=True)
class Difference:
    """Paired difference ``arm - reference``: mean, 95% (or ``confidence``) interval, p-value, pairs."""

    mean: float
    low: float
    high: float
    p: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1 or math.isnan(self.low):
            return f"{self.mean:+.{digits}f} (1 seed)"
        mark = " *" if self.significant else ""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{mark}"


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and its 95% (or other) Student-t interval (NaN bounds for one value)."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f} ({self.n} seed)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def spread(values: Sequence[float]) -> Spread:
    values = [float(v) for v in values]
    if not values:
        return Spread(math.nan, math.nan, 0)
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return Spread(statistics.fmean(values), sd, len(values))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its Student-t interval (one value has none)."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        return Interval(values[0] if values else math.nan, math.nan, math.nan, n)
    from scipy import stats

    mean = statistics.fmean(values)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(arm: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> Difference:
    """Paired t interval of ``mean(arm - reference)``; ``arm[i]`` and ``reference[i]`` share a seed."""
    if len(arm) != len(reference):
        raise ValueError(f"paired samples need the same length, got {len(arm)} and {len(reference)}")
    n = len(arm)
    if n == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, 0)
    diffs = [float(a) - float(r) for a, r in zip(arm, reference)]
    mean = statistics.fmean(diffs)
    if n == 1:
        return Difference(mean, math.nan, math.nan, math.nan, 1)
    if all(d == diffs[0] for d in diffs):  # no spread: the interval is the point (scipy would give NaN)
        return Difference(mean, mean, mean, 0.0 if mean != 0 else 1.0, n)
    from scipy import stats

    result = stats.ttest_rel(list(map(float, arm)), list(map(float, reference)))
    interval = result.confidence_interval(confidence)
    return Difference(mean, float(interval.low), float(interval.high), float(result.pvalue), n)
