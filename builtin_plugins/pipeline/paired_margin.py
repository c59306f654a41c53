"""Exact unconditional test of a relevance margin for paired binary outcomes.

For n pairs of 0/1 readings (base x, intervention y) let b = #(x=1, y=0), c = #(x=0, y=1),
m = n - b - c, and p- = P(y < x), p+ = P(y > x). The mean difference is E[D] = p+ - p-.
:func:`paired_binary_margin_p` tests

    H0: p+ - p- <= delta   against   H1: p+ - p- > delta       (delta > 0; "greater")

(``"less"`` swaps the roles of b and c). McNemar's test conditions on b + c and therefore
cannot test a margin on the unconditional scale: given the discordant pairs, c / (b + c) can
be 1 under H0 when p- -> 0. The unconditional test follows Sidik (2003, Statistics in
Medicine 22: 265-278, "Exact unconditional tests for testing non-inferiority in
matched-pairs design"):

* the ordering statistic is the score statistic of Nam (1997, Biometrics 53: 1422-1430) and
  Tango (1998, Statistics in Medicine 17: 891-908),
  Z = ((c - b) / n - delta) / sqrt((2 t + delta - delta^2) / n), with t the maximum
  likelihood estimate of p- restricted to p+ - p- = delta (the positive root of
  2 n t^2 - B t - b delta (1 - delta) = 0, B = b (1 - 3 delta) + c (1 - delta) - 2 m delta,
  from setting the derivative of b log t + c log(t + delta) + m log(1 - delta - 2 t) to 0);
* Z is made monotone (non-decreasing in c, non-increasing in b) by taking its running
  maximum over the outcomes (b', c') with b' >= b, c' <= c (Z* below). The rejection regions
  {Z* >= z} are then up-sets in that order, and moving probability from "-1" or "0" to "+1"
  (which is how any point of H0 reaches the boundary p+ - p- = delta) can only raise their
  probability, so the supremum over H0 is attained on the boundary;
* p = sup over t in [0, (1 - delta) / 2] of P_t(Z* >= Z*_obs) under the trinomial
  (p- = t, p+ = t + delta, p0 = 1 - delta - 2 t), found on a grid of 1,001 values of t and
  refined by bounded Brent search around the best five (the usual computation of an exact
  unconditional p-value; scipy.stats.barnard_exact also optimises over its nuisance).

Assumptions: the n pairs are independent and identically distributed (held-out prompts
drawn at random from the family). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

__all__ = ["paired_binary_margin_p", "margin_counts"]

#: points of the nuisance grid before refinement
GRID = 1001
#: grid points around which the supremum is refined
REFINE = 5


def margin_counts(base: Sequence[float], intervention: Sequence[float]) -> tuple[int, int, int]:
    """(b, c, n): pairs where only the base reads 1, where only the intervention does, all."""
    x = np.asarray(base, dtype=float)
    y = np.asarray(intervention, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired readings need equal lengths")
    if not (np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()):
        raise ValueError("paired_binary_margin_p needs 0/1 readings")
    return int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1))), int(x.size)


@lru_cache(maxsize=64)
def _outcomes(n: int, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every outcome (b, c) with b + c <= n and its monotone score statistic Z*."""
    b, c = np.array([(i, j) for i in range(n + 1) for j in range(n + 1 - i)], dtype=float).T
    m = n - b - c
    s = 1.0 - delta
    big_b = b * (s - 2.0 * delta) + c * s - 2.0 * m * delta
    t = (big_b + np.sqrt(big_b ** 2 + 8.0 * n * b * delta * s)) / (4.0 * n)
    t = np.clip(t, 0.0, s / 2.0)
    z = ((c - b) / n - delta) / np.sqrt((2.0 * t + delta - delta ** 2) / n)
    # Z*: running maximum over b' >= b, c' <= c (rows from b = n down, cumulative max in c)
    table = np.full((n + 2, n + 2), -np.inf)
    ib, ic = b.astype(int), c.astype(int)
    table[ib, ic] = z
    for row in range(n, -1, -1):
        width = n - row + 1
        current = np.maximum(table[row, :width], table[row + 1, :width])
        table[row, :width] = np.maximum.accumulate(current)
    return ib, ic, table[ib, ic]


def _tail(theta: np.ndarray, b: np.ndarray, c: np.ndarray, n: int, delta: float,
          log_coef: np.ndarray) -> np.ndarray:
    """P_theta(outcome in the region (b, c)) for each theta (rows)."""
    from scipy.special import xlogy

    th = theta[:, None]
    m = n - b - c
    lp = (log_coef[None, :] + xlogy(b[None, :], th) + xlogy(c[None, :], th + delta)
          + xlogy(m[None, :], np.clip(1.0 - delta - 2.0 * th, 0.0, None)))
    return np.exp(lp).sum(axis=1)


def paired_binary_margin_p(base: Sequence[float], intervention: Sequence[float], delta: float,
                           alternative: Literal["greater", "less"] = "greater") -> float:
    """Exact unconditional p-value of H0 "E[intervention - base] <= delta" (``greater``) or
    "E[intervention - base] >= -delta" (``less``) for paired 0/1 readings (module docstring:
    Sidik 2003 with the Nam / Tango score ordering). ``delta`` must lie in (0, 1)."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    b_obs, c_obs, n = margin_counts(base, intervention)
    if alternative == "less":
        b_obs, c_obs = c_obs, b_obs
    return 1.0 if n == 0 else _p_from_counts(b_obs, c_obs, n, float(delta))


@lru_cache(maxsize=4096)
def _p_from_counts(b_obs: int, c_obs: int, n: int, delta: float) -> float:
    """The p-value depends on the readings only through (b, c, n)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import gammaln

    ib, ic, zstar = _outcomes(n, delta)
    observed = zstar[(ib == b_obs) & (ic == c_obs)][0]
    region = zstar >= observed - 1e-9
    b, c = ib[region].astype(float), ic[region].astype(float)
    log_coef = gammaln(n + 1) - gammaln(b + 1) - gammaln(c + 1) - gammaln(n - b - c + 1)
    hi = (1.0 - delta) / 2.0
    grid = np.linspace(0.0, hi, GRID)
    values = _tail(grid, b, c, n, delta, log_coef)
    best = float(values.max())
    step = grid[1] - grid[0]
    for k in np.argsort(values)[-REFINE:]:
        lo_k, hi_k = max(0.0, grid[k] - step), min(hi, grid[k] + step)
        res = minimize_scalar(
            lambda t: -float(_tail(np.array([t]), b, c, n, delta, log_coef)[0]),
            bounds=(lo_k, hi_k), method="bounded", options={"xatol": 1e-10})
        best = max(best, -float(res.fun))
    return float(min(1.0, best))
