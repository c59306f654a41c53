"""The exact unconditional margin test for paired binary readings
(builtin_plugins.pipeline.paired_margin) and its use in the validator's relevance test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multinomial

from builtin_plugins.pipeline.evidence import RelevanceTest
from builtin_plugins.pipeline.paired_margin import _outcomes, paired_binary_margin_p


def _pairs(b: int, c: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """b pairs (1, 0), c pairs (0, 1), the rest (0, 0)."""
    x = np.r_[np.ones(b), np.zeros(n - b)]
    y = np.r_[np.zeros(b), np.ones(c), np.zeros(n - b - c)]
    return x, y


def _brute_force_p(b_obs: int, c_obs: int, n: int, delta: float, grid: int = 20001) -> float:
    """The same p-value computed independently: Tango's score statistic with its restricted
    MLE found numerically, every outcome enumerated with scipy's multinomial, supremum on a
    fine grid of the nuisance parameter."""
    from scipy.optimize import minimize_scalar

    def z(b: int, c: int) -> float:
        m = n - b - c

        def nll(t: float) -> float:
            return -(b * math.log(max(t, 1e-300)) + c * math.log(t + delta)
                     + m * math.log(max(1 - delta - 2 * t, 1e-300)))

        t = minimize_scalar(nll, bounds=(0.0, (1 - delta) / 2), method="bounded",
                            options={"xatol": 1e-12}).x
        return ((c - b) / n - delta) / math.sqrt((2 * t + delta - delta ** 2) / n)

    outcomes = [(b, c) for b in range(n + 1) for c in range(n + 1 - b)]
    observed = z(b_obs, c_obs)
    region = [(b, c) for b, c in outcomes if z(b, c) >= observed - 1e-9]
    t = np.linspace(0.0, (1 - delta) / 2, grid)
    probs = np.stack([t, t + delta, np.clip(1 - delta - 2 * t, 0.0, None)], axis=1)
    tail = sum(multinomial.pmf([b, c, n - b - c], n, probs) for b, c in region)
    return float(np.max(tail))


@pytest.mark.parametrize("b,c,n", [(0, 8, 8), (0, 6, 8), (0, 10, 12), (1, 10, 12), (0, 3, 20)])
def test_p_value_matches_an_independent_computation(b, c, n):
    x, y = _pairs(b, c, n)
    p = paired_binary_margin_p(x, y, 0.05)
    assert p == pytest.approx(_brute_force_p(b, c, n, 0.05), rel=2e-3)
    # "less" is the mirror image
    assert paired_binary_margin_p(y, x, 0.05, "less") == pytest.approx(p, rel=1e-9)


def test_ordering_is_monotone():
    """Z* never falls when a pair moves towards "+1", so the supremum lies on the boundary."""
    n = 14
    ib, ic, z = _outcomes(n, 0.05)
    table = {(b, c): v for b, c, v in zip(ib, ic, z)}
    for (b, c), v in table.items():
        if (b, c + 1) in table:
            assert table[(b, c + 1)] >= v
        if b >= 1:
            assert table[(b - 1, c)] >= v


@pytest.mark.parametrize("n", [8, 12, 20])
def test_size_on_and_inside_the_null(n):
    """P(p <= alpha) <= alpha (+ 2 Monte Carlo SE) for p+ - p- = delta at several nuisance
    values, and for a point strictly inside H0."""
    rng = np.random.default_rng(n)
    delta, alpha, reps = 0.05, 0.05, 3000
    for p_minus, p_plus in [(0.0, 0.05), (0.2, 0.25), (0.475, 0.525), (0.3, 0.3)]:
        rejected = 0
        for _ in range(reps):
            u = rng.random(n)
            x = (u < p_minus).astype(float)
            y = ((u >= p_minus) & (u < p_minus + p_plus)).astype(float)
            rejected += paired_binary_margin_p(x, y, delta) <= alpha
        assert rejected / reps <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / reps), (p_minus, p_plus)


def test_relevance_test_on_fixed_n_binary_readings_uses_the_exact_margin_test():
    """The validator's relevance test for McNemar: the intersection-union of McNemar and the
    exact margin test. Ten of twelve sign-offs gained is confirmed at SAFFRON's first level
    (0.0055); the betting e-process it replaced gave p = 0.041 on the same pairs."""
    from md_framework.drivers import create_driver

    mcnemar = create_driver("paired_test", "mcnemar", {})
    betting = create_driver("paired_test", "betting-e", {"lo": -0.05, "hi": 1.05})
    rel = RelevanceTest(mcnemar, 0.05, bounded=betting)
    assert rel.name == "mcnemar+exact-margin(D>0.05)"
    x, y = _pairs(0, 10, 12)
    p = rel.test_pairs(x, y, "greater").p_value
    assert p == pytest.approx(max(mcnemar.test(x, y, "greater").p_value,
                                  paired_binary_margin_p(x, y, 0.05)))
    assert p < 0.0055
    assert 1.0 / betting.test(x + 0.05, y, "greater").e_value > 0.04
    # two-sided: Bonferroni over both sides; a change in the other direction is not one
    assert rel.test_pairs(x, y, "two-sided").p_value == pytest.approx(min(1.0, 2 * p))
    assert rel.test_pairs(x, y, "less").p_value == 1.0
    # anytime tests keep the betting e-process
    anytime = RelevanceTest(create_driver("paired_test", "beta-binomial-e", {}), 0.05,
                            bounded=betting)
    assert anytime.name == "beta-binomial-e+betting-e(D>0.05)"


def test_bad_inputs_are_refused():
    x, y = _pairs(0, 3, 5)
    with pytest.raises(ValueError, match="delta"):
        paired_binary_margin_p(x, y, 0.0)
    with pytest.raises(ValueError, match="0/1"):
        paired_binary_margin_p(x, y + 0.5, 0.05)
    with pytest.raises(ValueError, match="alternative"):
        paired_binary_margin_p(x, y, 0.05, "two-sided")  # type: ignore[arg-type]
    assert paired_binary_margin_p([], [], 0.05) == 1.0
