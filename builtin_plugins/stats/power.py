"""Power analysis and required sample sizes (statsmodels ``TTestPower``,
``NormalIndPower``, ``proportion_effectsize``).

* Paired continuous metric: one-sample/paired t-test on the differences with effect size
  Cohen's d_z (:func:`paired_t_power`, :func:`required_pairs`).
* Two rates (e.g. refusal rate before/after): z-test on Cohen's h = 2 asin sqrt(p2) -
  2 asin sqrt(p1) (:func:`two_proportion_power`, :func:`required_n_two_proportions`).

Alternatives use md-framework's spelling (``two-sided``, ``greater``, ``less``; statsmodels'
``larger``/``smaller``). Required sizes are rounded up. The fixed-n power of a t-test
is an optimistic guide for the rank tests and e-processes (which pay for being
distribution-free or anytime-valid); use it to choose ``n_test_prompts_per_hypothesis``.
"""

from __future__ import annotations

import math

from pydantic import Field

from md_framework.stats_api import Alternative, StatisticsError
from md_framework.types import StrictModel

__all__ = [
    "PowerResult",
    "paired_t_power",
    "required_n_two_proportions",
    "required_pairs",
    "two_proportion_power",
]

_SM_ALTERNATIVE = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}


class PowerResult(StrictModel):
    test: str
    effect_size: float
    alpha: float = Field(gt=0.0, lt=1.0)
    power: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=1, description="pairs (paired t) or per-group size (two proportions)")
    alternative: Alternative = "two-sided"


def _check(alpha: float, alternative: str, power: float | None = None) -> str:
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1), got {alpha!r}")
    if power is not None and not 0.0 < power < 1.0:
        raise StatisticsError(f"power must be in (0, 1), got {power!r}")
    try:
        return _SM_ALTERNATIVE[alternative]
    except KeyError:
        raise StatisticsError(f"alternative must be one of {list(_SM_ALTERNATIVE)}") from None


def paired_t_power(effect_size: float, n: int, alpha: float = 0.05,
                   alternative: Alternative = "two-sided") -> PowerResult:
    """Power of the paired t-test with ``n`` pairs for standardized effect d_z."""
    from statsmodels.stats.power import TTestPower

    alt = _check(alpha, alternative)
    if n < 2:
        raise StatisticsError("a paired t-test needs at least 2 pairs")
    power = float(TTestPower().power(effect_size=effect_size, nobs=n, alpha=alpha,
                                     alternative=alt))
    return PowerResult(test="paired-t", effect_size=effect_size, alpha=alpha,
                       power=min(1.0, max(0.0, power)), n=n, alternative=alternative)


def required_pairs(effect_size: float, power: float = 0.8, alpha: float = 0.05,
                   alternative: Alternative = "two-sided") -> PowerResult:
    """Smallest number of pairs giving ``power`` for minimum effect size d_z."""
    from statsmodels.stats.power import TTestPower

    alt = _check(alpha, alternative, power)
    if effect_size == 0 or (alternative == "greater" and effect_size < 0) or (
            alternative == "less" and effect_size > 0):
        raise StatisticsError(f"no sample size detects effect {effect_size} ({alternative})")
    n = TTestPower().solve_power(effect_size=effect_size, alpha=alpha, power=power,
                                 alternative=alt)
    n_int = max(2, math.ceil(float(n) - 1e-9))
    achieved = paired_t_power(effect_size, n_int, alpha, alternative)
    return achieved


def _h(p1: float, p2: float) -> float:
    from statsmodels.stats.proportion import proportion_effectsize

    for p in (p1, p2):
        if not 0.0 <= p <= 1.0:
            raise StatisticsError(f"rates must be in [0, 1], got {p!r}")
    return float(proportion_effectsize(p2, p1))  # 2 asin sqrt(p2) - 2 asin sqrt(p1)


def two_proportion_power(p_base: float, p_intervention: float, n_per_group: int,
                         alpha: float = 0.05,
                         alternative: Alternative = "two-sided") -> PowerResult:
    """Power of the two-sample z-test of rates, effect size Cohen's h, equal group sizes."""
    from statsmodels.stats.power import NormalIndPower

    alt = _check(alpha, alternative)
    h = _h(p_base, p_intervention)
    power = float(NormalIndPower().power(effect_size=h, nobs1=n_per_group, alpha=alpha,
                                         ratio=1.0, alternative=alt))
    return PowerResult(test="two-proportion-z", effect_size=h, alpha=alpha,
                       power=min(1.0, max(0.0, power)), n=n_per_group,
                       alternative=alternative)


def required_n_two_proportions(p_base: float, p_intervention: float, power: float = 0.8,
                               alpha: float = 0.05,
                               alternative: Alternative = "two-sided") -> PowerResult:
    """Smallest per-group size detecting the change of rate p_base -> p_intervention."""
    from statsmodels.stats.power import NormalIndPower

    alt = _check(alpha, alternative, power)
    h = _h(p_base, p_intervention)
    if h == 0 or (alternative == "greater" and h < 0) or (alternative == "less" and h > 0):
        raise StatisticsError(f"no sample size detects Cohen's h = {h:.4g} ({alternative})")
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0,
                                     alternative=alt)
    return two_proportion_power(p_base, p_intervention, max(1, math.ceil(float(n) - 1e-9)),
                                alpha, alternative)
