"""Effect sizes with confidence intervals for paired model comparisons.

Every function returns :class:`md_framework.types.EffectSize` (name, estimate, ci_low,
ci_high, confidence). Differences are ``intervention - base``.

* :func:`paired_standardized_mean_difference` – Cohen's d_z = mean(D) / sd(D) with the exact
  CI from inverting the noncentral t distribution of t = d_z sqrt(n) (Cumming & Finch 2001;
  Lakens 2013, "Calculating and reporting effect sizes", Front. Psychol.).
* :func:`rank_biserial` – matched-pairs rank-biserial correlation r = (W+ - W-) / (W+ + W-)
  (Kerby 2014, Compr. Psychol.; King & Minium 2003) with a seeded BCa bootstrap CI.
* :func:`cohens_h` – h = 2 asin sqrt(p_int) - 2 asin sqrt(p_base) (Cohen 1988) with the
  normal CI of var(h) ~ 1/n_base + 1/n_int (independent samples; for paired binary data use
  :func:`paired_risk_difference` or a bootstrap).
* :func:`risk_difference` – p_int - p_base with Newcombe's hybrid-score CI (statsmodels
  ``confint_proportions_2indep``, method "newcomb"; Newcombe 1998, Statist. Med.).
* :func:`paired_risk_difference` – (c - b) / n for paired binary outcomes with the Wald CI
  of Agresti & Min (2005) with their +0.5 cell adjustment (Bonett & Price 2012 style).
* :func:`bootstrap_ci` – generic seeded bootstrap (scipy ``bootstrap``, BCa by default) for
  any statistic of paired samples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from md_framework.stats_api import StatisticsError
from md_framework.types import EffectSize

__all__ = [
    "bootstrap_ci",
    "cohens_h",
    "paired_risk_difference",
    "paired_standardized_mean_difference",
    "rank_biserial",
    "risk_difference",
]


def _paired(base: Sequence[float], intervention: Sequence[float]) -> np.ndarray:
    x = np.asarray(base, dtype=float).reshape(-1)
    y = np.asarray(intervention, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise StatisticsError(f"base and intervention lengths differ: {x.size} vs {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise StatisticsError("measurements must be finite")
    return y - x


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise StatisticsError(f"confidence must be in (0, 1), got {confidence!r}")


def bootstrap_ci(
    data: Sequence[Sequence[float]] | Sequence[float],
    statistic: Callable[..., float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    paired: bool = True,
    method: Literal["BCa", "percentile", "basic"] = "BCa",
) -> tuple[float, float, float]:
    """(estimate, ci_low, ci_high) of ``statistic(*samples)`` by a seeded bootstrap.

    ``data`` is one sample or a tuple of samples; with ``paired=True`` pairs are resampled
    together. ``statistic`` receives the (resampled) samples and an ``axis`` keyword.
    Degenerate resamples (a constant statistic) give a zero-width interval.
    """
    from scipy import stats
    from scipy.stats import bootstrap

    _check_confidence(confidence)
    samples = tuple(np.asarray(s, dtype=float) for s in data) if (
        len(data) and np.ndim(data[0]) == 1) else (np.asarray(data, dtype=float),)
    estimate = float(statistic(*samples, axis=-1))
    if samples[0].size < 2:
        return estimate, float("nan"), float("nan")
    with warnings.catch_warnings():  # BCa on degenerate data: handled just below
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", getattr(stats, "DegenerateDataWarning", RuntimeWarning))
        res = bootstrap(samples, statistic, confidence_level=confidence,
                        n_resamples=n_resamples, paired=paired and len(samples) > 1,
                        vectorized=True, method=method, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa undefined (degenerate)
        spread = np.asarray(res.bootstrap_distribution)
        tail = (1 - confidence) / 2
        low, high = float(np.quantile(spread, tail)), float(np.quantile(spread, 1 - tail))
    return estimate, low, high


def paired_standardized_mean_difference(
    base: Sequence[float], intervention: Sequence[float], confidence: float = 0.95
) -> EffectSize:
    """Cohen's d_z of the paired differences with the exact noncentral-t CI."""
    from scipy.optimize import brentq
    from scipy.stats import nct

    _check_confidence(confidence)
    d = _paired(base, intervention)
    n = d.size
    if n < 2:
        raise StatisticsError("d_z needs at least 2 pairs")
    sd = float(np.std(d, ddof=1))
    if sd == 0.0:
        raise StatisticsError("d_z is undefined when every difference is equal (sd = 0)")
    dz = float(np.mean(d)) / sd
    t_obs = dz * math.sqrt(n)
    df = n - 1
    tail = (1 - confidence) / 2

    def solve(target: float) -> float:
        # find delta with P(T <= t_obs | nc=delta) = target (decreasing in delta)
        f = lambda nc: nct.cdf(t_obs, df, nc) - target  # noqa: E731
        lo, hi = t_obs - 10.0, t_obs + 10.0
        while f(lo) < 0:
            lo -= 10.0
        while f(hi) > 0:
            hi += 10.0
        return brentq(f, lo, hi, xtol=1e-10)

    low = solve(1 - tail) / math.sqrt(n)
    high = solve(tail) / math.sqrt(n)
    return EffectSize(name="cohens_dz", estimate=dz, ci_low=low, ci_high=high,
                      confidence=confidence)


def _rank_biserial(d: np.ndarray, axis: int = -1) -> np.ndarray:
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=float)
    absd = np.where(d == 0, np.nan, np.abs(d))
    ranks = rankdata(absd, axis=axis, nan_policy="omit")
    ranks = np.nan_to_num(ranks, nan=0.0)
    w_plus = np.sum(np.where(d > 0, ranks, 0.0), axis=axis)
    w_minus = np.sum(np.where(d < 0, ranks, 0.0), axis=axis)
    total = w_plus + w_minus
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w_plus - w_minus) / np.where(total > 0, total, 1), 0.0)


def rank_biserial(
    base: Sequence[float], intervention: Sequence[float], confidence: float = 0.95,
    n_resamples: int = 2000, seed: int = 0,
) -> EffectSize:
    """Matched-pairs rank-biserial correlation (zero differences dropped) with a seeded
    bootstrap CI (BCa; percentile where BCa is undefined)."""
    d = _paired(base, intervention)
    if d.size == 0:
        raise StatisticsError("rank-biserial needs at least one pair")
    estimate, low, high = bootstrap_ci(
        (d,), _rank_biserial, confidence=confidence, n_resamples=n_resamples, seed=seed,
    )
    return EffectSize(name="rank_biserial", estimate=float(estimate),
                      ci_low=None if math.isnan(low) else max(-1.0, low),
                      ci_high=None if math.isnan(high) else min(1.0, high),
                      confidence=confidence)


def _counts(successes: int, n: int, which: str) -> float:
    if n <= 0 or not 0 <= successes <= n:
        raise StatisticsError(f"{which}: need 0 <= successes <= n and n > 0, got {successes}/{n}")
    return successes / n


def cohens_h(
    successes_base: int, n_base: int, successes_intervention: int, n_intervention: int,
    confidence: float = 0.95,
) -> EffectSize:
    """Cohen's h of two rates with the normal-approximation CI (independent samples)."""
    from scipy.stats import norm

    _check_confidence(confidence)
    p1 = _counts(successes_base, n_base, "base")
    p2 = _counts(successes_intervention, n_intervention, "intervention")
    h = 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))
    half = norm.ppf(1 - (1 - confidence) / 2) * math.sqrt(1 / n_base + 1 / n_intervention)
    return EffectSize(name="cohens_h", estimate=h, ci_low=h - half, ci_high=h + half,
                      confidence=confidence)


def risk_difference(
    successes_base: int, n_base: int, successes_intervention: int, n_intervention: int,
    confidence: float = 0.95,
) -> EffectSize:
    """p_intervention - p_base with Newcombe's hybrid-score CI (independent samples)."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    _check_confidence(confidence)
    p1 = _counts(successes_base, n_base, "base")
    p2 = _counts(successes_intervention, n_intervention, "intervention")
    low, high = confint_proportions_2indep(
        successes_intervention, n_intervention, successes_base, n_base,
        method="newcomb", compare="diff", alpha=1 - confidence,
    )
    return EffectSize(name="risk_difference", estimate=p2 - p1, ci_low=float(low),
                      ci_high=float(high), confidence=confidence)


def paired_risk_difference(
    base: Sequence[float], intervention: Sequence[float], confidence: float = 0.95
) -> EffectSize:
    """Difference of success rates of paired binary outcomes, (c - b) / n, with the
    adjusted Wald CI of Agresti & Min (2005): add 0.5 to every cell of the 2x2 table."""
    from scipy.stats import norm

    _check_confidence(confidence)
    x = np.asarray(base, dtype=float).reshape(-1)
    y = np.asarray(intervention, dtype=float).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise StatisticsError("paired binary outcomes need equal, non-zero lengths")
    if not (np.all((x == 0) | (x == 1)) and np.all((y == 0) | (y == 1))):
        raise StatisticsError("paired risk difference needs binary (0/1) outcomes")
    n = x.size
    b = float(np.sum((x == 1) & (y == 0)))
    c = float(np.sum((x == 0) & (y == 1)))
    estimate = (c - b) / n
    n_adj, b_adj, c_adj = n + 2.0, b + 0.5, c + 0.5
    diff = (c_adj - b_adj) / n_adj
    var = ((b_adj + c_adj) - (c_adj - b_adj) ** 2 / n_adj) / n_adj**2
    half = norm.ppf(1 - (1 - confidence) / 2) * math.sqrt(max(var, 0.0))
    return EffectSize(name="paired_risk_difference", estimate=estimate,
                      ci_low=max(-1.0, diff - half), ci_high=min(1.0, diff + half),
                      confidence=confidence)
