"""The statistics the studies' verdicts rest on: exact intervals and tests
for solved-run counts, and rank tests with bootstrap intervals for final
metrics. Every interval is 95 % unless told otherwise.

- ``rate_interval``: Clopper–Pearson (exact) interval of a proportion k/n.
- ``rate_difference``: p_a − p_b with Newcombe's hybrid score interval
  (from the two Wilson intervals; sound at 0/n and n/n, where a bootstrap
  interval collapses) and Fisher's exact test (two-sided) of the 2×2 table.
- ``median_difference``: median(a) − median(b) with a bootstrap interval,
  the Mann–Whitney U test (two-sided) and the probability of superiority
  P(a < b) (+ ties/2), a difference in lower-is-better metrics.
- ``median_versus``: median(a) − a fixed reference (a published number)
  with the distribution-free interval of the median (order statistics) and
  the sign test.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

LEVEL = 0.95
RESAMPLES = 10_000


class Comparison(NamedTuple):
    """An effect of arm a against arm b, its interval and a test."""

    effect: float
    low: float
    high: float
    p_value: float
    test: str

    def describe(self, digits: int = 3) -> str:
        effect, low, high = (f"{v:+.{digits}g}" for v in (self.effect, self.low, self.high))
        return f"{effect} (95 % CI {low} to {high}; {self.test} p = {self.p_value:.2g})"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def decisive(self) -> bool:
        """The interval excludes no difference and the test rejects it: a
        verdict rests on both."""
        return self.excludes_zero and self.p_value < 1 - LEVEL


def rate_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper–Pearson interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - level
    low = 0.0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k)
    return float(low), float(high)


def wilson_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of k/n: the p with |k/n − p| = z·sqrt(p(1−p)/n)."""
    z = stats.norm.ppf((1 + level) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def rate_difference(a: list[bool], b: list[bool]) -> Comparison:
    """Solved fraction of a minus that of b with Newcombe's (1998, method 10)
    hybrid score interval, tested by Fisher's exact test."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    (ka, na), (kb, nb) = (int(a.sum()), len(a)), (int(b.sum()), len(b))
    pa, pb = ka / na, kb / nb
    (la, ua), (lb, ub) = wilson_interval(ka, na), wilson_interval(kb, nb)
    low = pa - pb - np.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    high = pa - pb + np.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    table = [[ka, na - ka], [kb, nb - kb]]
    p = stats.fisher_exact(table, alternative="two-sided").pvalue
    return Comparison(pa - pb, float(low), float(high), float(p), "Fisher exact")


def median_difference(a, b, *, seed: int = 0) -> Comparison:
    """median(a) − median(b) (bootstrap interval), tested by Mann–Whitney U."""
    a, b = _finite(a), _finite(b)
    rng = np.random.default_rng(seed)
    draws = np.median(_resample(rng, a), 1) - np.median(_resample(rng, b), 1)
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    effect = float(np.median(a) - np.median(b))
    return Comparison(effect, float(low), float(high), float(p), "Mann–Whitney U")


def median_versus(values, reference: float, level: float = LEVEL) -> Comparison:
    """median(values) − ``reference``: the interval [x_(k), x_(n−k+1)] of the
    median (sorted values, 1-based, k the largest rank whose binomial tail
    P(Bin(n, ½) < k) is at most (1 − level)/2; coverage ≥ ``level``, or the
    full range when n is too small), and the two-sided sign test of
    median = reference (values equal to it dropped)."""
    x = np.sort(np.asarray(values, float))
    n = len(x)
    k = median_rank(n, level)
    above, below = int((x > reference).sum()), int((x < reference).sum())
    p = stats.binomtest(above, above + below, 0.5).pvalue if above + below else 1.0
    effect, low, high = np.median(x) - reference, x[k - 1] - reference, x[n - k] - reference
    return Comparison(float(effect), float(low), float(high), float(p), "sign test")


def median_rank(n: int, level: float = LEVEL) -> int:
    """The largest k >= 1 with P(Bin(n, ½) <= k − 1) <= (1 − level)/2 (1 if none)."""
    tail = stats.binom.cdf(np.arange(n), n, 0.5)  # tail[j] = P(B <= j)
    fits = np.nonzero(tail <= (1 - level) / 2)[0]
    return int(fits[-1]) + 1 if len(fits) else 1


def superiority(a, b) -> float:
    """P(a < b) + P(a = b)/2 over all pairs: how often a run of arm a ends
    lower (better, for a loss) than one of arm b; 0.5 is no difference."""
    a, b = _finite(a)[:, None], _finite(b)[None, :]
    return float(np.mean((a < b) + 0.5 * (a == b)))


def _resample(rng, values: np.ndarray) -> np.ndarray:
    return values[rng.integers(0, len(values), (RESAMPLES, len(values)))]


def _finite(values) -> np.ndarray:
    """A diverged run (NaN) counts as the worst outcome: +inf."""
    values = np.asarray(values, float)
    return np.where(np.isfinite(values), values, np.inf)
