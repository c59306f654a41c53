"""Paired tests and e-processes: agreement with references, validity under identical models
(fixed n and at any stopping time), power sanity, input checks."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from builtin_plugins.stats.paired_tests import PAIRED_TESTS, first_crossing
from md_framework.drivers import create_driver
from md_framework.errors import ConfigError
from md_framework.stats_api import StatisticsError

ALPHA = 0.05


def slack(n_reps: int, alpha: float = ALPHA) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_reps)


def test_wilcoxon_and_sign_agree_with_scipy():
    from scipy.stats import binomtest, wilcoxon

    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    y = x + 0.4 + rng.normal(size=25)
    for alt in ("two-sided", "greater", "less"):
        res = PAIRED_TESTS["wilcoxon"]().test(x, y, alt)
        assert res.p_value == pytest.approx(wilcoxon(y - x, alternative=alt).pvalue)
        pos = int(np.sum(y > x))
        sign = PAIRED_TESTS["sign"]().test(x, y, alt)
        assert sign.p_value == pytest.approx(binomtest(pos, 25, 0.5, alternative=alt).pvalue)


def test_exact_mcnemar_is_binomial_on_discordant_pairs():
    base = [1] * 10 + [0] * 12 + [1] * 3 + [0] * 5  # b = 3, c = 12 discordant
    inter = [1] * 10 + [1] * 12 + [0] * 3 + [0] * 5
    res = create_driver("paired_test", "mcnemar", {}).test(base, inter)
    assert res.details["b_base_only"] == 3 and res.details["c_intervention_only"] == 12
    # two-sided exact binomial P(X<=3 or X>=12 | n=15) = 2 * 576 / 2^15
    assert res.p_value == pytest.approx(2 * (1 + 15 + 105 + 455) / 2**15)
    assert create_driver("paired_test", "mcnemar", {}).test([1, 0], [1, 0]).p_value == 1.0


def test_permutation_exact_and_monte_carlo():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = x + np.array([0.3, 0.2, 0.4, 0.1, 0.5])
    res = create_driver("paired_test", "permutation", {}).test(x, y, "greater")
    assert res.details["exact"] and res.p_value == pytest.approx(1 / 32)
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    mc = create_driver("paired_test", "permutation", {"n_resamples": 999, "seed": 3})
    a, b = mc.test(x, y), mc.test(x, y)
    assert a == b and not a.details["exact"]
    assert a.p_value >= 1 / 1000


def test_beta_binomial_closed_form():
    e = create_driver("paired_test", "beta-binomial-e", {})
    # two discordant pairs both won by the intervention: E = 4 B(3,1)/B(1,1) = 4/3
    res = e.test([0, 0, 1], [1, 1, 1])
    assert res.e_value == pytest.approx(4 / 3)
    assert res.p_value == pytest.approx(0.75)
    # one-sided: prior truncated to theta >= 1/2: E = 4 * int_{1/2}^1 t^2 dt / (1/2) = 7/3
    assert e.test([0, 0], [1, 1], "greater").e_value == pytest.approx(7 / 3)
    path = e.e_path([0, 1, 0, 1], [0, 1, 1, 1])
    assert path.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_betting_e_process_first_bet_is_zero_and_grows_under_alternative():
    e = create_driver("paired_test", "betting-e", {"lo": 0, "hi": 10})
    assert e.e_path([5.0], [10.0])[0] == 1.0  # lambda_1 = 0 (predictable)
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 6, size=300)
    y = np.clip(x + rng.uniform(0, 4, size=300), 0, 10)
    res = e.test(x, y, "greater")
    assert res.e_value > 1 / ALPHA and res.p_value < ALPHA
    assert e.test(x, y, "less").e_value <= 1.0  # bets only on the wrong side: stays <= 1


def _continuous_null(rng, n):
    prompt = rng.normal(size=n)
    return prompt + rng.normal(size=n), prompt + rng.normal(size=n)


@pytest.mark.parametrize("name", ["wilcoxon", "sign", "permutation"])
@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_fixed_n_tests_hold_alpha_for_identical_models(name, alternative):
    rng = np.random.default_rng(hash((name, alternative)) % 2**32)
    options = {"n_resamples": 499} if name == "permutation" else {}
    test = PAIRED_TESTS[name](options)
    n_reps = 300
    rejections = 0
    for i in range(n_reps):
        x, y = _continuous_null(rng, 12 if i % 2 else 30)  # exact and asymptotic regimes
        if name != "permutation" and i % 4 == 0:
            # ties and zero differences (n=30: scipy's small-n tie permutation is slow)
            x, y = np.round(x), np.round(y)
        rejections += test.test(x, y, alternative).p_value <= ALPHA
    assert rejections / n_reps <= slack(n_reps)


def test_mcnemar_holds_alpha_for_identical_models():
    rng = np.random.default_rng(7)
    test = PAIRED_TESTS["mcnemar"]()
    n_reps, rejections = 400, 0
    for _ in range(n_reps):
        p = rng.uniform(0.2, 0.8, size=60)  # per-prompt success probability, same model
        rejections += test.test(rng.random(60) < p, rng.random(60) < p).p_value <= ALPHA
    assert rejections / n_reps <= slack(n_reps)


def test_beta_binomial_e_process_is_valid_at_any_stopping_time():
    rng = np.random.default_rng(8)
    test = PAIRED_TESTS["beta-binomial-e"]()
    n_reps, n = 1000, 400
    crossings = {"two-sided": 0, "greater": 0}
    for _ in range(n_reps):
        p = rng.uniform(0.1, 0.9, size=n)
        x, y = rng.random(n) < p, rng.random(n) < p
        for alt in crossings:
            crossings[alt] += first_crossing(test.e_path(x, y, alt), ALPHA) is not None
    for alt, count in crossings.items():
        assert count / n_reps <= slack(n_reps), alt
    # composite one-sided null: the intervention is worse, "greater" must still hold alpha
    worse = sum(
        first_crossing(test.e_path(rng.random(n) < 0.6, rng.random(n) < 0.5, "greater"),
                       ALPHA) is not None
        for _ in range(300)
    )
    assert worse / 300 <= slack(300)


def test_betting_e_process_is_valid_at_any_stopping_time():
    rng = np.random.default_rng(9)
    test = PAIRED_TESTS["betting-e"]({"lo": 0.0, "hi": 1.0})
    n_reps, n = 1000, 300
    crossings = {"two-sided": 0, "greater": 0, "less": 0}
    for i in range(n_reps):
        if i % 2:  # continuous bounded metric
            prompt = rng.beta(2, 2, size=n)
            x = np.clip(prompt + 0.2 * rng.normal(size=n), 0, 1)
            y = np.clip(prompt + 0.2 * rng.normal(size=n), 0, 1)
        else:  # binary metric
            p = rng.uniform(0.2, 0.8, size=n)
            x, y = (rng.random(n) < p).astype(float), (rng.random(n) < p).astype(float)
        for alt in crossings:
            lam, score = test.bets_and_scores(x, y, alt)
            path = np.exp(np.cumsum(np.log1p(lam * score)))
            crossings[alt] += first_crossing(path, ALPHA) is not None
    for alt, count in crossings.items():
        assert count / n_reps <= slack(n_reps), alt


def test_e_processes_have_power():
    rng = np.random.default_rng(10)
    bb = PAIRED_TESTS["beta-binomial-e"]()
    x, y = rng.random(300) < 0.4, rng.random(300) < 0.6
    res = bb.test(x, y, "greater")
    assert res.e_value >= 1 / ALPHA
    assert res.details["anytime_p_value"] <= res.p_value + 1e-15


@pytest.mark.parametrize("name", sorted(PAIRED_TESTS))
def test_input_checks(name):
    test = PAIRED_TESTS[name]()
    with pytest.raises(StatisticsError):
        test.test([0, 1], [1])
    with pytest.raises(StatisticsError):
        test.test([0, float("nan")], [1, 1])
    with pytest.raises(StatisticsError):
        test.test([0, 1], [1, 0], alternative="bigger")
    empty = test.test([], [])
    assert empty.n == 0 and empty.p_value == 1.0


def test_type_specific_input_checks():
    with pytest.raises(StatisticsError, match="binary"):
        PAIRED_TESTS["mcnemar"]().test([0, 2], [1, 1])
    with pytest.raises(StatisticsError, match="lo="):
        PAIRED_TESTS["betting-e"]().test([0.5, 2.0], [1, 1])
    with pytest.raises(ConfigError, match="hi must be greater"):
        create_driver("paired_test", "betting-e", {"lo": 1, "hi": 0})
    with pytest.raises(ConfigError):
        create_driver("paired_test", "wilcoxon", {"zero_method": "nope"})


@settings(max_examples=40, deadline=None)
@given(data=st.data(), alt=st.sampled_from(["two-sided", "greater", "less"]))
def test_e_processes_never_look_ahead(data, alt):
    # E_t may depend only on the first t pairs (a prefix's path is the path's prefix)
    n = data.draw(st.integers(1, 40))
    bits = st.lists(st.integers(0, 1), min_size=n, max_size=n)
    x, y = data.draw(bits), data.draw(bits)
    cut = data.draw(st.integers(1, n))
    for name in ("beta-binomial-e", "betting-e"):
        test = PAIRED_TESTS[name]()
        full = test.e_path(x, y, alt)
        assert test.e_path(x[:cut], y[:cut], alt) == pytest.approx(full[:cut], rel=1e-12)
        assert np.all(full > 0)
