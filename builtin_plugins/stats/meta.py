"""Meta-analysis of one hypothesis across test families (prompt families, metrics...).

* :func:`combine_effects` – inverse-variance fixed-effect and random-effects pooling
  (statsmodels ``combine_effects``; DerSimonian & Laird 1986 "chi2" or Paule-Mandel
  "iterated" between-family variance tau^2), with Cochran's Q and I^2 (Higgins & Thompson
  2002).
* :func:`combine_p_values` – Fisher's (1932) -2 sum log p ~ chi2(2k) or Stouffer's (1949)
  (weighted) Z-method (scipy ``combine_pvalues``). Both assume the p-values are
  independent (different prompts); for dependent families use a Bonferroni/Simes-type
  combination instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from md_framework.stats_api import StatisticsError
from md_framework.types import EffectSize, StrictModel

__all__ = ["CombinedPValue", "MetaAnalysis", "combine_effects", "combine_p_values"]


class MetaAnalysis(StrictModel):
    k: int = Field(ge=1, description="number of families combined")
    fixed: EffectSize
    random: EffectSize
    tau2: float = Field(ge=0.0, description="between-family variance")
    q: float = Field(description="Cochran's Q")
    q_p_value: float = Field(ge=0.0, le=1.0)
    i2: float = Field(ge=0.0, le=1.0, description="share of variation due to heterogeneity")
    method_re: str


class CombinedPValue(StrictModel):
    method: Literal["fisher", "stouffer"]
    statistic: float
    p_value: float = Field(ge=0.0, le=1.0)
    k: int = Field(ge=1)


def combine_effects(
    effects: Sequence[float], variances: Sequence[float], confidence: float = 0.95,
    method_re: Literal["dl", "pm"] = "dl", name: str = "pooled_effect",
) -> MetaAnalysis:
    """Pool per-family effects (same scale, e.g. d_z) given their sampling variances."""
    from statsmodels.stats.meta_analysis import combine_effects as sm_combine

    eff = np.asarray(effects, dtype=float).reshape(-1)
    var = np.asarray(variances, dtype=float).reshape(-1)
    if eff.size == 0 or eff.shape != var.shape:
        raise StatisticsError("need one variance per effect and at least one effect")
    if not (np.all(np.isfinite(eff)) and np.all(np.isfinite(var)) and np.all(var > 0)):
        raise StatisticsError("effects must be finite and variances positive")
    if not 0.0 < confidence < 1.0:
        raise StatisticsError(f"confidence must be in (0, 1), got {confidence!r}")
    alpha = 1 - confidence
    k = int(eff.size)
    if k == 1:  # nothing to pool: both models return the single family's estimate
        from scipy.stats import norm

        half = float(norm.ppf(1 - alpha / 2) * math.sqrt(var[0]))
        single = dict(estimate=float(eff[0]), ci_low=float(eff[0]) - half,
                      ci_high=float(eff[0]) + half, confidence=confidence)
        return MetaAnalysis(k=1, fixed=EffectSize(name=f"{name}_fixed", **single),
                            random=EffectSize(name=f"{name}_random", **single), tau2=0.0,
                            q=0.0, q_p_value=1.0, i2=0.0, method_re=method_re)
    res = sm_combine(eff, var, method_re={"dl": "chi2", "pm": "iterated"}[method_re],
                     use_t=False, alpha=alpha)
    frame = res.summary_frame(alpha=alpha)
    fe = frame.loc["fixed effect"]
    re = frame.loc["random effect"]
    q = float(res.q)
    q_p = 1.0 - _chi2_cdf(q, k - 1)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return MetaAnalysis(
        k=k,
        fixed=EffectSize(name=f"{name}_fixed", estimate=float(fe["eff"]),
                         ci_low=float(fe["ci_low"]), ci_high=float(fe["ci_upp"]),
                         confidence=confidence),
        random=EffectSize(name=f"{name}_random", estimate=float(re["eff"]),
                          ci_low=float(re["ci_low"]), ci_high=float(re["ci_upp"]),
                          confidence=confidence),
        tau2=max(0.0, float(res.tau2)), q=q, q_p_value=min(1.0, max(0.0, q_p)),
        i2=min(1.0, i2), method_re=method_re,
    )


def _chi2_cdf(x: float, df: int) -> float:
    from scipy.stats import chi2

    return float(chi2.cdf(x, df))


def combine_p_values(
    p_values: Sequence[float], method: Literal["fisher", "stouffer"] = "fisher",
    weights: Sequence[float] | None = None,
) -> CombinedPValue:
    """Combine independent one-sided p-values of the same hypothesis."""
    from scipy.stats import combine_pvalues

    p = np.asarray(p_values, dtype=float).reshape(-1)
    if p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise StatisticsError("need at least one p-value, each in [0, 1]")
    if method not in ("fisher", "stouffer"):
        raise StatisticsError(f"method must be fisher or stouffer, got {method!r}")
    if weights is not None and method != "stouffer":
        raise StatisticsError("weights apply to Stouffer's method only")
    # p = 0 or 1 give infinite statistics; clip to the closest representable values
    p = np.clip(p, np.finfo(float).tiny, 1 - np.finfo(float).epsneg)
    res = combine_pvalues(p, method=method,
                          weights=None if weights is None else np.asarray(weights, float))
    stat = float(res.statistic)
    return CombinedPValue(method=method, statistic=stat if math.isfinite(stat) else 0.0,
                          p_value=min(1.0, max(0.0, float(res.pvalue))), k=int(p.size))
