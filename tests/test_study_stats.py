"""The studies' statistics against brute force: exact binomial tails,
Fisher's test by enumerating tables, superiority by comparing every pair."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
import _stats  # noqa: E402


def binom_tail(k, n, p, upper: bool) -> float:
    terms = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in terms)


@pytest.mark.parametrize("k, n", [(0, 32), (7, 32), (16, 32), (32, 32), (3, 10)])
def test_clopper_pearson_bounds_put_half_alpha_in_each_tail(k, n):
    low, high = _stats.rate_interval(k, n)
    if k > 0:
        assert binom_tail(k, n, low, upper=True) == pytest.approx(0.025, rel=1e-6)
    else:
        assert low == 0.0
    if k < n:
        assert binom_tail(k, n, high, upper=False) == pytest.approx(0.025, rel=1e-6)
    else:
        assert high == 1.0


def fisher_brute_force(a, n_a, b, n_b) -> float:
    """Two-sided: the probability of every table with the same margins that
    is no more likely than the observed one."""
    total, ones = n_a + n_b, a + b
    prob = lambda x: math.comb(n_a, x) * math.comb(n_b, ones - x) / math.comb(total, ones)  # noqa: E731
    observed = prob(a)
    lo, hi = max(0, ones - n_b), min(n_a, ones)
    return sum(prob(x) for x in range(lo, hi + 1) if prob(x) <= observed * (1 + 1e-7))


@pytest.mark.parametrize("a, b", [(20, 11), (16, 16), (30, 2), (0, 5)])
def test_rate_difference_uses_fishers_exact_test(a, b):
    result = _stats.rate_difference(
        [True] * a + [False] * (32 - a), [True] * b + [False] * (32 - b)
    )
    assert result.effect == pytest.approx((a - b) / 32)
    assert result.p_value == pytest.approx(fisher_brute_force(a, 32, b, 32), rel=1e-6)
    assert result.low <= result.effect <= result.high


def test_wilson_bounds_solve_the_score_equation():
    z = 1.959963984540054
    for k, n in [(0, 32), (5, 32), (32, 32), (7, 9)]:
        for bound in _stats.wilson_interval(k, n):
            score = abs(k / n - bound) - z * math.sqrt(bound * (1 - bound) / n)
            assert abs(score) < 1e-9


def test_rate_difference_interval_is_newcombes():
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    result = _stats.rate_difference([1] * 56 + [0] * 14, [1] * 48 + [0] * 32)
    assert (result.low, result.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    # at the boundary (32/32 vs 28/32) the interval still reaches below 0, as Fisher's p > 0.05
    edge = _stats.rate_difference([1] * 32, [1] * 28 + [0] * 4)
    assert edge.low < 0 < edge.high and edge.p_value > 0.05 and not edge.decisive


def test_superiority_and_median_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, 40), rng.normal(1.0, 1.0, 40)
    pairs = np.mean([[x < y or (x == y) * 0.5 for y in b] for x in a])
    assert _stats.superiority(a, b) == pytest.approx(pairs)
    diff = _stats.median_difference(a, b)
    assert diff.effect == pytest.approx(np.median(a) - np.median(b))
    assert diff.low < diff.effect < diff.high < 0  # a shift of 1 sd at n=40 is clear
    assert diff.excludes_zero and diff.p_value < 0.01
    same = _stats.median_difference(a, rng.normal(0.0, 1.0, 40))
    assert same.low < 0 < same.high
    assert _stats.superiority([np.nan], [1.0]) == 0.0  # a diverged run is the worst


@pytest.mark.parametrize("n", [3, 6, 10, 15])
def test_median_interval_covers_by_enumerating_sign_patterns(n):
    # The median lies in [x_(k), x_(n-k+1)] unless fewer than k values fall
    # below it or fewer than k above: enumerate all 2^n below/above patterns.
    below_counts = np.array([bin(mask).count("1") for mask in range(2**n)])

    def coverage(k):
        return np.mean((below_counts >= k) & (n - below_counts >= k))

    k = _stats.median_rank(n)
    if coverage(1) < 0.95:  # too few values for a 95 % interval: the full range
        assert k == 1
    else:
        assert coverage(k) >= 0.95 > coverage(k + 1)


def test_median_versus_a_reference():
    values = [0.90, 0.91, 0.92, 0.93, 0.95, 0.96, 0.97, 0.99, 0.90, 0.94]
    c = _stats.median_versus(values, 0.905)
    x = sorted(values)
    k = _stats.median_rank(len(x))
    assert c.effect == pytest.approx(np.median(x) - 0.905)
    assert (c.low, c.high) == pytest.approx((x[k - 1] - 0.905, x[len(x) - k] - 0.905))
    # sign test by enumeration: 8 above, 2 below; P(|S - 5| >= 3) under Bin(10, 1/2)
    tails = sum(math.comb(10, j) for j in range(11) if abs(j - 5) >= 3) / 2**10
    assert c.p_value == pytest.approx(tails)
