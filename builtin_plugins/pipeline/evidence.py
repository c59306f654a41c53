"""Relevance tests, confidence sequences and "why not validated" for the validator.

* :class:`RelevanceTest` turns a paired test of "no change" into a test of practical
  relevance: H0 "the effect is at most ``delta`` (the metric's ``min_change``) in the
  hypothesised direction" against "it exceeds ``delta``". Differences D = intervention -
  base are shifted by ``delta`` before the test (the base reading is moved by +delta for
  ``increase``, -delta for ``decrease``), so the test runs on D - delta (or D + delta).
  ``change`` with delta > 0 is the union of both one-sided tests: p = min(1, 2 min(p+, p-))
  (Bonferroni), e = (e+ + e-) / 2 (an average of e-values is an e-value; Vovk & Wang 2021).
  Binary tests (exact McNemar, beta-binomial) test the *conditional* flip probability and
  cannot take a shift; for them relevance is an intersection-union test (Berger 1982,
  Technometrics "Multiparameter hypothesis testing and acceptance sampling"): reject only
  if both the configured test rejects "no change" and a test of "mean(D) <= delta" does.
  That margin test is, for fixed-n tests, the exact unconditional test of Sidik (2003) with
  the Nam / Tango score ordering (:mod:`builtin_plugins.pipeline.paired_margin`), and for
  anytime tests a betting e-process (Waudby-Smith & Ramdas 2024); the combined p is the
  larger p-value, the combined e-process the smaller e-value at every step (each is valid
  under the union of the two nulls). The betting e-process is far weaker at small n (8
  pairs that all flip: p = 0.081 against the exact test's 0.0058; 10 of 12: 0.041 against
  0.00087), which is why fixed-n tests no longer use it.
* :func:`confidence_sequence` is the predictable plug-in empirical-Bernstein confidence
  sequence for a bounded mean (Waudby-Smith & Ramdas 2024, JRSS-B, "Estimating means of
  bounded random variables by betting", Theorem 2 / eq. (13)), intersected over time (a
  running intersection of a confidence sequence is one; Howard, Ramdas, McAuliffe & Sekhon
  2021, Ann. Statist.). It covers the mean at every n simultaneously, so it stays valid when
  an anytime test stops early; fixed-n tests keep their Wald intervals.

Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from builtin_plugins.pipeline.paired_margin import paired_binary_margin_p
from md_framework.stats_api import Alternative, PairedTest, PairedTestResult
from md_framework.types import EffectSize

__all__ = ["CS_METHOD", "RelevanceTest", "confidence_sequence", "mean_difference_cs",
           "not_validated_reason"]

CS_METHOD = ("confidence sequence (predictable plug-in empirical Bernstein; Waudby-Smith &"
             " Ramdas 2024, JRSS-B, Thm 2), valid at every n")


def _e_process(test: PairedTest, base: np.ndarray, inter: np.ndarray,
               alternative: Alternative) -> tuple[np.ndarray, PairedTestResult]:
    """(E_t path, result) of an anytime test; a test without ``e_path`` gives a path whose
    only step is E_n (its maximum is then E_n itself: conservative)."""
    result = test.test(base, inter, alternative)
    if callable(getattr(test, "e_path", None)) and base.size:
        return np.asarray(test.e_path(base, inter, alternative), dtype=float), result
    e = float(result.e_value if result.e_value is not None else 1.0)
    return np.array([e]), result


def _e_result(name: str, path: np.ndarray, alternative: Alternative, n: int,
              **details: Any) -> PairedTestResult:
    e_now = float(path[-1]) if path.size else 1.0
    e_max = float(max(1.0, path.max())) if path.size else 1.0
    return PairedTestResult(
        test=name, n=n, statistic=math.log(e_now) if e_now > 0 else None,
        p_value=min(1.0, 1.0 / e_now) if e_now > 0 else 1.0, e_value=e_now,
        alternative=alternative,
        details={"max_e_value": e_max, "anytime_p_value": min(1.0, 1.0 / e_max), **details})


class RelevanceTest:
    """A paired test of H0 "effect <= delta in the hypothesised direction" (module docstring).

    ``test`` is the configured test of "no change"; ``bounded`` (optional) is a betting
    e-process with bounds widened by ``delta`` on both sides, used by anytime tests only: for
    binary ones (the intersection-union combination) and for bounded ones whose bounds a
    shift would leave.
    With ``delta == 0`` it is exactly ``test``.
    """

    def __init__(self, test: PairedTest, delta: float, *, bounded: PairedTest | None = None) -> None:
        self.test = test
        self.delta = max(0.0, float(delta))
        self.bounded = bounded
        self.anytime_valid = bool(type(test).anytime_valid)
        self.binary = type(test).outcome == "binary"

    @property
    def name(self) -> str:
        base = getattr(self.test, "name", None) or type(self.test).__name__
        if self.delta == 0:
            return base
        if not self.binary:
            return f"{base}(D-{self.delta:g})"
        margin = "betting-e" if self.anytime_valid else "exact-margin"
        return f"{base}+{margin}(D>{self.delta:g})"

    def _shifted(self, test: PairedTest, x: np.ndarray, y: np.ndarray, side: Alternative
                 ) -> tuple[np.ndarray | None, PairedTestResult]:
        shift = self.delta if side == "greater" else -self.delta
        if self.anytime_valid or type(test).anytime_valid:
            path, result = _e_process(test, x + shift, y, side)
            return path, result
        return None, test.test(x + shift, y, side)

    def _one_sided(self, x: np.ndarray, y: np.ndarray, side: Alternative
                   ) -> tuple[np.ndarray | None, float]:
        """(e path or None, p) of "effect <= delta" on one side."""
        if self.binary:
            # intersection-union: "no change" (McNemar / beta-binomial) and "mean <= delta"
            # (fixed n: the exact unconditional margin test; anytime: a betting e-process on
            # D - delta); reject only if both reject
            if not self.anytime_valid:
                res_a = self.test.test(x, y, side)
                p_margin = 1.0 if self.delta >= 1 else paired_binary_margin_p(
                    x, y, self.delta, "greater" if side == "greater" else "less")
                return None, max(float(res_a.p_value), p_margin)
            assert self.bounded is not None
            path_a, _ = _e_process(self.test, x, y, side)
            path_b, _ = self._shifted(self.bounded, x, y, side)
            assert path_b is not None
            path = np.minimum(path_a, path_b)
            return path, min(1.0, 1.0 / max(1.0, float(path.max())) if path.size else 1.0)
        test = self.bounded if self.bounded is not None and self.anytime_valid else self.test
        path, result = self._shifted(test, x, y, side)
        if path is not None:
            return path, min(1.0, 1.0 / max(1.0, float(path.max())) if path.size else 1.0)
        return None, float(result.p_value)

    def test_pairs(self, base: Sequence[float], intervention: Sequence[float],
                   alternative: Alternative) -> PairedTestResult:
        """The relevance test's result; for anytime tests ``e_value`` is E_n and
        ``details["max_e_value"]`` / ``["anytime_p_value"]`` describe the combined path."""
        x = np.asarray(base, dtype=float)
        y = np.asarray(intervention, dtype=float)
        if self.delta == 0:
            return self.test.test(x, y, alternative)
        sides: list[Alternative] = ["greater", "less"] if alternative == "two-sided" else [alternative]
        outs = [self._one_sided(x, y, side) for side in sides]
        details = {"min_change": self.delta, "relevance": True}
        if self.anytime_valid:
            paths = [p for p, _ in outs]
            assert all(p is not None for p in paths)
            size = min(p.size for p in paths)  # type: ignore[union-attr]
            path = np.mean([p[-size:] for p in paths], axis=0) if size else np.array([])  # type: ignore[index]
            return _e_result(self.name, path, alternative, int(x.size), **details)
        p = min(1.0, len(outs) * min(p for _, p in outs))
        return PairedTestResult(test=self.name, n=int(x.size), statistic=None, p_value=p,
                                alternative=alternative, details=details)


def confidence_sequence(values: Sequence[float], lo: float, hi: float, confidence: float = 0.95,
                        clip: float = 0.75) -> tuple[float, float]:
    """The (1 - alpha) predictable plug-in empirical-Bernstein confidence sequence for the
    mean of i.i.d. values in [lo, hi] at the last n, running intersection over all n
    (Waudby-Smith & Ramdas 2024, Thm 2): with X_i scaled to [0, 1],
    lambda_t = min(sqrt(2 log(2/alpha) / (sigma2_{t-1} t log(1 + t))), clip),
    centre_t = sum lambda_i X_i / sum lambda_i, radius_t = (log(2/alpha) + sum v_i psi(lambda_i))
    / sum lambda_i, v_i = 4 (X_i - mu_{i-1})^2, psi(l) = (-log(1 - l) - l) / 4,
    mu_t = (1/2 + sum X_i) / (t + 1), sigma2_t = (1/4 + sum (X_i - mu_i)^2) / (t + 1)."""
    v = np.asarray(values, dtype=float)
    if not hi > lo:
        raise ValueError("hi must exceed lo")
    if v.size == 0:
        return lo, hi
    alpha = 1.0 - confidence
    xs = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    t = np.arange(1, xs.size + 1, dtype=float)
    mu = (0.5 + np.cumsum(xs)) / (t + 1.0)
    sigma2 = (0.25 + np.cumsum((xs - mu) ** 2)) / (t + 1.0)
    mu_prev = np.concatenate(([0.5], mu[:-1]))
    sigma2_prev = np.concatenate(([0.25], sigma2[:-1]))
    log_term = math.log(2.0 / alpha)
    lam = np.minimum(np.sqrt(2.0 * log_term / (sigma2_prev * t * np.log1p(t))), clip)
    psi = (-np.log1p(-lam) - lam) / 4.0
    vi = 4.0 * (xs - mu_prev) ** 2
    s_lam = np.cumsum(lam)
    centre = np.cumsum(lam * xs) / s_lam
    radius = (log_term + np.cumsum(vi * psi)) / s_lam
    low = float(np.max(np.clip(centre - radius, 0.0, 1.0)))
    high = float(np.min(np.clip(centre + radius, 0.0, 1.0)))
    if low > high:  # an empty running intersection (probability <= alpha): report the last set
        low, high = float(max(0.0, centre[-1] - radius[-1])), float(min(1.0, centre[-1] + radius[-1]))
    return lo + low * (hi - lo), lo + high * (hi - lo)


def mean_difference_cs(base: Sequence[float], intervention: Sequence[float],
                       bounds: tuple[float, float], confidence: float = 0.95) -> EffectSize:
    """The mean difference D = intervention - base with the confidence sequence above (D lies
    in [-(hi - lo), hi - lo] when both readings lie in ``bounds``)."""
    d = np.asarray(intervention, dtype=float) - np.asarray(base, dtype=float)
    width = float(bounds[1] - bounds[0])
    est = float(d.mean()) if d.size else 0.0
    if d.size == 0:
        return EffectSize(name="mean_difference", estimate=0.0, confidence=confidence,
                          method=CS_METHOD)
    low, high = confidence_sequence(d, -width, width, confidence)
    return EffectSize(name="mean_difference", estimate=est, ci_low=low, ci_high=high,
                      confidence=confidence, method=CS_METHOD)


def not_validated_reason(ev: Any, level: float, *, floor_ok: bool = True) -> str:
    """Why the evidence ``ev`` (a validator's ``HypothesisEvidence``) did not validate its
    hypothesis at ``level``: "not enough tests" (no pairs; or fewer held-out prompts than
    asked for while the mean change exceeds min_change in the hypothesised direction),
    "budget" (the budget ended before the planned n, no early stop), "effect below
    relevance" (``floor_ok`` is False, or "no change" would have been rejected at ``level``
    while "effect <= min_change" was not), otherwise "level not reached"."""
    if ev.n == 0:
        return "not enough tests"
    delta = ev.relevance.delta if ev.relevance is not None else 0.0
    differences = [o.difference for o in ev.observations]
    if ev.short:  # more prompts might have confirmed a relevant-looking estimate
        mean = float(np.mean(differences))
        side = {"increase": mean, "decrease": -mean}.get(ev.hypothesis.direction, abs(mean))
        if side > delta:
            return "not enough tests"
    if ev.n < ev.n_planned and not ev.stopped_early:
        return "budget"
    if not floor_ok:
        return "effect below relevance"
    if delta > 0:
        base = [o.base_value for o in ev.observations]
        inter = [o.intervention_value for o in ev.observations]
        plain = ev.test.test(base, inter, ev.alternative)
        p0 = float(plain.details.get("anytime_p_value", plain.p_value)
                   if ev.anytime_valid else plain.p_value)
        if p0 <= level:  # "no change" would have been rejected; "<= min_change" was not
            return "effect below relevance"
    return "level not reached"
