"""Effect sizes with CIs, power / sample size, meta-analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from builtin_plugins.stats import effect_sizes as es
from builtin_plugins.stats import meta, power
from md_framework.stats_api import StatisticsError
from md_framework.types import EffectSize


def test_dz_estimate_and_exact_ci_coverage():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = x + 0.5 + rng.normal(size=20)
    d = y - x
    res = es.paired_standardized_mean_difference(x, y)
    assert isinstance(res, EffectSize) and res.name == "cohens_dz"
    assert res.estimate == pytest.approx(d.mean() / d.std(ddof=1))
    assert res.ci_low < res.estimate < res.ci_high
    covered = 0
    for _ in range(120):
        d = 0.5 + rng.normal(size=15)
        r = es.paired_standardized_mean_difference(np.zeros(15), d, confidence=0.9)
        covered += r.ci_low <= 0.5 <= r.ci_high
    assert 0.81 <= covered / 120 <= 0.97  # nominal 0.90, MC SE 0.027


def test_dz_input_checks():
    with pytest.raises(StatisticsError):
        es.paired_standardized_mean_difference([1, 2], [2, 3])  # sd = 0
    with pytest.raises(StatisticsError):
        es.paired_standardized_mean_difference([1], [2])
    with pytest.raises(StatisticsError):
        es.paired_standardized_mean_difference([1, 2], [2])


def test_rank_biserial_matches_signed_rank_sums_and_is_seeded():
    from scipy.stats import rankdata

    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    y = x + 0.3 + rng.normal(size=25)
    d = y - x
    ranks = rankdata(np.abs(d))
    expected = (ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum()
    a = es.rank_biserial(x, y, seed=3)
    assert a.estimate == pytest.approx(expected)
    assert a.ci_low <= a.estimate <= a.ci_high
    assert a == es.rank_biserial(x, y, seed=3)
    assert es.rank_biserial([0, 0, 0], [1, 2, 3]).estimate == 1.0


def test_rates_effect_sizes_match_statsmodels():
    from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

    h = es.cohens_h(30, 100, 45, 100)
    assert h.estimate == pytest.approx(proportion_effectsize(0.45, 0.30))
    assert h.ci_high - h.ci_low == pytest.approx(2 * 1.959964 * math.sqrt(2 / 100), rel=1e-5)
    rd = es.risk_difference(30, 100, 45, 100)
    low, high = confint_proportions_2indep(45, 100, 30, 100, method="newcomb", compare="diff")
    assert (rd.estimate, rd.ci_low, rd.ci_high) == pytest.approx((0.15, low, high))
    with pytest.raises(StatisticsError):
        es.cohens_h(5, 4, 1, 2)


def test_paired_risk_difference():
    base = [1, 0, 0, 1, 0, 0, 1, 1]
    inter = [1, 1, 1, 1, 0, 1, 0, 1]
    r = es.paired_risk_difference(base, inter)
    assert r.estimate == pytest.approx((3 - 1) / 8)
    assert -1 <= r.ci_low < r.estimate < r.ci_high <= 1
    with pytest.raises(StatisticsError):
        es.paired_risk_difference([0, 2], [1, 1])


def test_generic_bootstrap_is_seeded_and_covers():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=40), rng.normal(size=40) + 1.0
    stat = lambda a, b, axis: np.mean(b - a, axis=axis)  # noqa: E731
    first = es.bootstrap_ci((x, y), stat, seed=5, n_resamples=999)
    assert first == es.bootstrap_ci((x, y), stat, seed=5, n_resamples=999)
    assert first[1] < first[0] < first[2]
    median = es.bootstrap_ci(y, np.median, method="percentile", n_resamples=999)
    assert median[1] < median[0] < median[2]


def test_power_and_required_sizes():
    r = power.required_pairs(0.5)
    assert r.n == 34 and r.power >= 0.8  # textbook value for d=0.5, 80 %, two-sided
    assert power.paired_t_power(0.5, 33).power < 0.8
    one_sided = power.required_pairs(0.5, alternative="greater")
    assert one_sided.n < r.n
    p = power.required_n_two_proportions(0.30, 0.45)
    assert p.n == 162 and p.power >= 0.8
    assert power.two_proportion_power(0.3, 0.45, 161).power < 0.8
    with pytest.raises(StatisticsError):
        power.required_pairs(-0.3, alternative="greater")
    with pytest.raises(StatisticsError):
        power.required_pairs(0.3, alpha=1.5)


def test_fixed_and_random_effects_by_hand():
    eff = np.array([0.2, 0.5, 0.1, 0.8])
    var = np.array([0.01, 0.02, 0.015, 0.03])
    w = 1 / var
    fixed = (w * eff).sum() / w.sum()
    q = (w * (eff - fixed) ** 2).sum()
    tau2 = max(0.0, (q - 3) / (w.sum() - (w**2).sum() / w.sum()))  # DerSimonian-Laird
    w_re = 1 / (var + tau2)
    random = (w_re * eff).sum() / w_re.sum()
    res = meta.combine_effects(eff, var)
    assert res.fixed.estimate == pytest.approx(fixed)
    assert res.q == pytest.approx(q) and res.tau2 == pytest.approx(tau2)
    assert res.random.estimate == pytest.approx(random)
    assert res.fixed.ci_high - res.fixed.ci_low == pytest.approx(
        2 * 1.959964 / math.sqrt(w.sum()), rel=1e-5)
    assert res.i2 == pytest.approx((q - 3) / q)
    single = meta.combine_effects([0.3], [0.04])
    assert single.random == single.fixed.model_copy(update={"name": "pooled_effect_random"})
    with pytest.raises(StatisticsError):
        meta.combine_effects([0.1, 0.2], [0.01, -1])


def test_combine_p_values():
    from scipy.stats import chi2, norm

    p = [0.01, 0.2, 0.3]
    fisher = meta.combine_p_values(p)
    assert fisher.statistic == pytest.approx(-2 * np.log(p).sum())
    assert fisher.p_value == pytest.approx(chi2.sf(fisher.statistic, 6))
    st = meta.combine_p_values(p, "stouffer")
    assert st.p_value == pytest.approx(norm.sf(norm.isf(p).sum() / math.sqrt(3)))
    assert meta.combine_p_values([0.0, 1.0]).p_value < 1e-300
    with pytest.raises(StatisticsError):
        meta.combine_p_values([1.2])
    with pytest.raises(StatisticsError):
        meta.combine_p_values(p, "fisher", weights=[1, 1, 1])
