"""Paired tests of "both models behave identically", as md-framework drivers.

Each test receives the metric of the base and of the intervention model on the same
prompts, pair ``i`` being ``(base[i], intervention[i])``, and tests the null that the two
members of every pair are exchangeable (the models are identical) against
``alternative``: ``"greater"`` means the intervention's metric tends to be larger,
``"less"`` smaller, ``"two-sided"`` either. Differences are ``intervention - base``.

Fixed-n tests (valid when n is fixed in advance):

* ``wilcoxon`` – Wilcoxon signed-rank (scipy ``wilcoxon``; exact for small n without ties).
* ``sign`` – sign test: binomial(1/2) on the signs of the non-zero differences.
* ``permutation`` – paired (sign-flip) permutation test of the mean difference (scipy
  ``permutation_test``): exact enumeration of all 2^n flips for small n, otherwise a seeded
  Monte Carlo p-value (1 + #{T* >= T}) / (1 + B), which is valid (Phipson & Smyth 2010).
* ``mcnemar`` – exact McNemar test on binary outcomes: binomial(1/2) on the discordant pairs
  (b = base only, c = intervention only), McNemar (1947).

Anytime-valid sequential tests (e-processes; valid at *any* stopping time, so validation
may stop as soon as the evidence suffices): the result reports ``e_value`` = E_n and
``p_value`` = min(1, 1/E_n); ``details["anytime_p_value"]`` = min(1, 1/max_{t<=n} E_t) is the
p-value of the rule "stop the first time E_t >= 1/alpha", valid by Ville's inequality
P(sup_t E_t >= 1/alpha) <= alpha (Ville 1939; Ramdas, Grünwald, Vovk & Shafer 2023, Statist.
Sci. "Game-theoretic statistics and safe anytime-valid inference").

* ``beta-binomial-e`` – beta-binomial mixture e-process on the discordant pairs of binary
  outcomes. With k discordant pairs of which s favour the intervention and a Beta(a, b)
  prior on theta = P(intervention wins | discordant):
  E_k = 2^k B(a+s, b+k-s) / B(a, b) (two-sided); for one-sided alternatives the prior is
  truncated to theta >= 1/2 (or <= 1/2), which multiplies E_k by
  P_post(theta >= 1/2) / P_prior(theta >= 1/2); a mixture of likelihood ratios
  (theta / (1/2))^s ((1-theta) / (1/2))^(k-s), each a (super)martingale under the null
  (Robbins 1970; Lai 1976; Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Statist.).
* ``betting-e`` – betting e-process for a bounded metric in [lo, hi] (Waudby-Smith & Ramdas
  2024, JRSS-B "Estimating means of bounded random variables by betting"). Differences are
  mapped to X_i = (D_i / (hi - lo) + 1) / 2 in [0, 1], whose mean is m = 1/2 under the null;
  capital K_t = prod_{i<=t} (1 + lambda_i (X_i - m)) with the aGRAPA bet
  lambda_t = (mu_{t-1} - m) / (sigma2_{t-1} + (mu_{t-1} - m)^2), clipped to
  [-c/(1-m), c/m] (sign-restricted for one-sided alternatives), where
  mu_t = (1/2 + sum_{i<=t} X_i) / (t + 1) and
  sigma2_t = (1/4 + sum_{i<=t} (X_i - mu_i)^2) / (t + 1) are predictable estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from md_framework.stats_api import (
    Alternative,
    PairedTest,
    PairedTestResult,
    StatisticsError,
)
from md_framework.types import StrictModel

__all__ = [
    "BetaBinomialEProcess",
    "BettingEProcess",
    "ExactMcNemar",
    "PairedPermutation",
    "SignTest",
    "WilcoxonSignedRank",
    "first_crossing",
]

_ALTERNATIVES = ("two-sided", "greater", "less")


def _pairs(base: Sequence[float], intervention: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(base, dtype=float).reshape(-1)
        y = np.asarray(intervention, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise StatisticsError(f"paired measurements must be numbers: {exc}") from None
    if x.shape != y.shape:
        raise StatisticsError(
            f"base and intervention must have the same length, got {x.size} and {y.size}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise StatisticsError("paired measurements must be finite (no NaN or inf)")
    return x, y


def _check_alternative(alternative: str) -> Alternative:
    if alternative not in _ALTERNATIVES:
        raise StatisticsError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    return alternative  # type: ignore[return-value]


def _scipy_alternative(alternative: Alternative) -> str:
    return alternative  # scipy uses the same spelling: two-sided / greater / less


def _binary(values: np.ndarray, which: str) -> np.ndarray:
    if not np.all((values == 0) | (values == 1)):
        raise StatisticsError(f"{which} outcomes must be binary (0/1 or false/true)")
    return values.astype(bool)


def first_crossing(e_path: Sequence[float] | np.ndarray, alpha: float) -> int | None:
    """1-based index of the first t with E_t >= 1/alpha (where a sequential test may stop
    and reject), or ``None`` if the e-process never crosses."""
    path = np.asarray(e_path, dtype=float)
    hits = np.flatnonzero(path >= 1.0 / alpha)
    return int(hits[0]) + 1 if hits.size else None


def _e_result(name: str, path: np.ndarray, alternative: Alternative, **details: Any) -> PairedTestResult:
    e_now = float(path[-1]) if path.size else 1.0
    e_max = float(max(1.0, path.max())) if path.size else 1.0
    return PairedTestResult(
        test=name, n=int(path.size),
        statistic=math.log(e_now) if e_now > 0 else -math.inf,
        p_value=min(1.0, 1.0 / e_now) if e_now > 0 else 1.0,
        e_value=e_now, alternative=alternative,
        details={"max_e_value": e_max, "anytime_p_value": min(1.0, 1.0 / e_max), **details},
    )


# --------------------------------------------------------------------------- fixed-n tests


class WilcoxonOptions(StrictModel):
    zero_method: Literal["wilcox", "pratt", "zsplit"] = Field(
        default="wilcox", description="treatment of zero differences (scipy)"
    )
    method: Literal["auto", "exact", "asymptotic"] = Field(
        default="auto", description="exact null distribution for small n, else normal"
    )
    correction: bool = Field(default=False, description="continuity correction (asymptotic)")


class WilcoxonSignedRank(PairedTest):
    """Wilcoxon (1945) signed-rank test of the paired differences (scipy.stats.wilcoxon).
    Valid for identical models because exchangeable pairs give differences symmetric
    about zero. ``statistic`` is scipy's (W+ for one-sided, min(W+, W-) for two-sided)."""

    Options = WilcoxonOptions
    description = "Wilcoxon signed-rank test on paired differences (default)"
    outcome = "continuous"

    def test(self, base, intervention, alternative="two-sided") -> PairedTestResult:
        from scipy.stats import wilcoxon

        alternative = _check_alternative(alternative)
        x, y = _pairs(base, intervention)
        d = y - x
        nonzero = int(np.count_nonzero(d))
        if nonzero == 0:
            return PairedTestResult(test="wilcoxon", n=int(d.size), statistic=None,
                                    p_value=1.0, alternative=alternative,
                                    details={"n_nonzero": 0})
        opts = self.options
        method = opts.method
        if method == "exact" and (nonzero != d.size or np.unique(np.abs(d)).size != d.size):
            method = "asymptotic"  # exact distribution assumes no zeros and no ties
        result = wilcoxon(d, zero_method=opts.zero_method, correction=opts.correction,
                          alternative=_scipy_alternative(alternative), method=method)
        p = float(result.pvalue)
        return PairedTestResult(
            test="wilcoxon", n=int(d.size), statistic=float(result.statistic),
            p_value=min(1.0, max(0.0, p)) if math.isfinite(p) else 1.0,
            alternative=alternative,
            details={"n_nonzero": nonzero, "median_difference": float(np.median(d)),
                     "method": method},
        )


class SignOptions(StrictModel):
    pass


class SignTest(PairedTest):
    """Sign test (Arbuthnot 1710; Dixon & Mood 1946): under identical models each non-zero
    difference is positive with probability 1/2; exact binomial p-value (scipy
    ``binomtest``). Ties (zero differences) are dropped."""

    Options = SignOptions
    description = "sign test (exact binomial on signs of the differences)"
    outcome = "continuous"

    def test(self, base, intervention, alternative="two-sided") -> PairedTestResult:
        from scipy.stats import binomtest

        alternative = _check_alternative(alternative)
        x, y = _pairs(base, intervention)
        d = y - x
        pos, neg = int(np.sum(d > 0)), int(np.sum(d < 0))
        p = 1.0 if pos + neg == 0 else float(
            binomtest(pos, pos + neg, 0.5, alternative=alternative).pvalue
        )
        return PairedTestResult(
            test="sign", n=int(d.size), statistic=float(pos), p_value=min(1.0, p),
            alternative=alternative, details={"n_positive": pos, "n_negative": neg,
                                              "n_ties": int(d.size) - pos - neg},
        )


class PermutationOptions(StrictModel):
    n_resamples: int = Field(default=9999, ge=99, description="Monte Carlo sign flips")
    exact_max_pairs: int = Field(
        default=16, ge=0, le=20, description="enumerate all 2^n flips when n <= this"
    )
    seed: int = Field(default=0, description="seed of the Monte Carlo flips")


class PairedPermutation(PairedTest):
    """Paired permutation (randomisation) test of the mean difference (Fisher 1935; Pitman
    1937): swapping the members of any pair leaves the null distribution unchanged. Uses
    scipy ``permutation_test(permutation_type="samples")``; exact for n <= exact_max_pairs,
    otherwise a seeded Monte Carlo p-value (k+1)/(B+1)."""

    Options = PermutationOptions
    description = "paired sign-flip permutation test of the mean difference"
    outcome = "continuous"

    def test(self, base, intervention, alternative="two-sided") -> PairedTestResult:
        from scipy.stats import permutation_test

        alternative = _check_alternative(alternative)
        x, y = _pairs(base, intervention)
        n = int(x.size)
        if n == 0 or not np.any(x != y):
            return PairedTestResult(test="permutation", n=n, statistic=0.0, p_value=1.0,
                                    alternative=alternative, details={"exact": True})
        opts = self.options
        exact = n <= opts.exact_max_pairs
        result = permutation_test(
            (x, y), lambda a, b, axis: np.mean(b - a, axis=axis),
            permutation_type="samples", vectorized=True,
            n_resamples=np.inf if exact else opts.n_resamples,
            alternative=_scipy_alternative(alternative), rng=np.random.default_rng(opts.seed),
        )
        return PairedTestResult(
            test="permutation", n=n, statistic=float(result.statistic),
            p_value=min(1.0, float(result.pvalue)), alternative=alternative,
            details={"exact": exact, "n_resamples": None if exact else opts.n_resamples,
                     "seed": None if exact else opts.seed},
        )


class McNemarOptions(StrictModel):
    pass


class ExactMcNemar(PairedTest):
    """Exact McNemar test (McNemar 1947) on binary outcomes: conditional on the b + c
    discordant pairs, c (intervention succeeds, base fails) ~ Binomial(b + c, 1/2) under
    identical models. ``statistic`` is c."""

    Options = McNemarOptions
    description = "exact McNemar test (binomial on discordant pairs) for binary outcomes"
    outcome = "binary"

    def test(self, base, intervention, alternative="two-sided") -> PairedTestResult:
        from scipy.stats import binomtest

        alternative = _check_alternative(alternative)
        x, y = _pairs(base, intervention)
        xb, yb = _binary(x, "base"), _binary(y, "intervention")
        b, c = int(np.sum(xb & ~yb)), int(np.sum(~xb & yb))
        p = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5, alternative=alternative).pvalue)
        return PairedTestResult(
            test="mcnemar", n=int(x.size), statistic=float(c), p_value=min(1.0, p),
            alternative=alternative,
            details={"b_base_only": b, "c_intervention_only": c, "n_discordant": b + c},
        )


# --------------------------------------------------------------------------- e-processes


class BetaBinomialOptions(StrictModel):
    prior_a: float = Field(default=1.0, gt=0.0, description="Beta prior a on theta")
    prior_b: float = Field(default=1.0, gt=0.0, description="Beta prior b on theta")


class BetaBinomialEProcess(PairedTest):
    """Beta-binomial mixture e-process on the discordant pairs of binary outcomes
    (formula in the module docstring). Anytime-valid: may be evaluated after every pair."""

    Options = BetaBinomialOptions
    description = "anytime-valid beta-binomial mixture e-process on discordant pairs"
    outcome = "binary"
    anytime_valid = True

    def e_path(self, base, intervention, alternative: Alternative = "two-sided") -> np.ndarray:
        """E_t after each pair t = 1..n (concordant pairs leave it unchanged)."""
        from scipy.special import betaln
        from scipy.stats import beta as beta_dist

        alternative = _check_alternative(alternative)
        x, y = _pairs(base, intervention)
        xb, yb = _binary(x, "base"), _binary(y, "intervention")
        discordant = xb != yb
        k = np.cumsum(discordant).astype(float)
        s = np.cumsum(discordant & yb).astype(float)
        a, b = self.options.prior_a, self.options.prior_b
        log_e = k * math.log(2.0) + betaln(a + s, b + k - s) - betaln(a, b)
        if alternative == "greater":
            log_e += beta_dist.logsf(0.5, a + s, b + k - s) - beta_dist.logsf(0.5, a, b)
        elif alternative == "less":
            log_e += beta_dist.logcdf(0.5, a + s, b + k - s) - beta_dist.logcdf(0.5, a, b)
        return np.exp(log_e)

    def test(self, base, intervention, alternative="two-sided") -> PairedTestResult:
        path = self.e_path(base, intervention, alternative)
        x, y = _pairs(base, intervention)
        c = int(np.sum((y == 1) & (x == 0)))
        b = int(np.sum((x == 1) & (y == 0)))
        return _e_result("beta-binomial-e", path, _check_alternative(alternative),
                         b_base_only=b, c_intervention_only=c, n_discordant=b + c)


class BettingOptions(StrictModel):
    lo: float = Field(default=0.0, description="lower bound of the metric")
    hi: float = Field(default=1.0, description="upper bound of the metric")
    clip: float = Field(
        default=0.5, gt=0.0, lt=1.0,
        description="c: bets are clipped to [-c/(1-m), c/m] (Waudby-Smith & Ramdas use 1/2)",
    )

    @model_validator(mode="after")
    def _range(self) -> BettingOptions:
        if not self.hi > self.lo:
            raise ValueError(f"hi must be greater than lo, got lo={self.lo}, hi={self.hi}")
        return self


class BettingEProcess(PairedTest):
    """Betting e-process with aGRAPA bets for bounded metrics (formula in the module
    docstring; Waudby-Smith & Ramdas 2024). Anytime-valid: may be evaluated after every
    pair. Every metric value must lie in [lo, hi]."""

    Options = BettingOptions
    description = "anytime-valid betting e-process (aGRAPA) for bounded metrics"
    outcome = "bounded"
    anytime_valid = True

    def bets_and_scores(
        self, base, intervention, alternative: Alternative = "two-sided"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lambda_t, X_t - 1/2) for every pair: K_t = prod (1 + lambda_i (X_i - 1/2))."""
        alternative = _check_alternative(alternative)
        x, y = _pairs(base, intervention)
        lo, hi = self.options.lo, self.options.hi
        if x.size and (min(x.min(), y.min()) < lo or max(x.max(), y.max()) > hi):
            raise StatisticsError(
                f"betting-e needs every metric value in [lo={lo}, hi={hi}];"
                " set the options lo/hi to the metric's bounds"
            )
        m = 0.5
        xs = ((y - x) / (hi - lo) + 1.0) / 2.0
        t = np.arange(1, xs.size + 1, dtype=float)
        mu = (0.5 + np.cumsum(xs)) / (t + 1.0)  # mu_t after t observations
        sigma2 = (0.25 + np.cumsum((xs - mu) ** 2)) / (t + 1.0)
        mu_prev = np.concatenate(([0.5], mu[:-1]))  # predictable: uses pairs < t only
        sigma2_prev = np.concatenate(([0.25], sigma2[:-1]))
        lam = (mu_prev - m) / (sigma2_prev + (mu_prev - m) ** 2)
        c = self.options.clip
        low, high = -c / (1 - m), c / m
        if alternative == "greater":
            low = 0.0
        elif alternative == "less":
            high = 0.0
        return np.clip(lam, low, high), xs - m

    def e_path(self, base, intervention, alternative: Alternative = "two-sided") -> np.ndarray:
        """E_t = K_t after each pair t = 1..n."""
        lam, score = self.bets_and_scores(base, intervention, alternative)
        return np.exp(np.cumsum(np.log1p(lam * score)))

    def test(self, base, intervention, alternative="two-sided") -> PairedTestResult:
        alternative = _check_alternative(alternative)
        path = self.e_path(base, intervention, alternative)
        x, y = _pairs(base, intervention)
        return _e_result("betting-e", path, alternative,
                         mean_difference=float(np.mean(y - x)) if x.size else 0.0,
                         lo=self.options.lo, hi=self.options.hi)


PAIRED_TESTS: dict[str, type[PairedTest]] = {
    "wilcoxon": WilcoxonSignedRank, "sign": SignTest, "permutation": PairedPermutation,
    "mcnemar": ExactMcNemar, "beta-binomial-e": BetaBinomialEProcess,
    "betting-e": BettingEProcess,
}
