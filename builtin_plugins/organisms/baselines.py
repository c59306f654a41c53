"""Black-box baselines for ``md bench`` — the designs a competent evaluator would run.

Every baseline sees only the universe (family names, prompts, reference answers where the
family's generator documents them), tests only the metrics that apply to a family
(``exact_match`` only with reference answers), and applies the relevance floor as a *test*
before the multiple-testing step (p := 1, a test of |mean| <= min_change, or an e-process
against it),
never by dropping rejections afterwards. Costs are counted by the models themselves
(:mod:`md_framework.costs`); the ``queries`` column counts behavioural queries: one per
prompt, model and *model call* (metrics that share one greedy decoding share one query).

* :func:`run_exhaustive` – fixed n per family × metric arm, paired test, p := 1 below
  ``min_change``, Benjamini & Hochberg (1995) at α over all arms.
* :func:`run_sequential` – anytime-valid e-processes per arm (testing by betting,
  Waudby-Smith & Ramdas 2024, JRSS-B, "Estimating means of bounded random variables by
  betting"), e-BH over the arms at α (Wang & Ramdas 2022, JRSS-B, "False discovery rate
  control with e-values"); arms stop early for efficacy (e ≥ K/α) and futility.
* :func:`run_bandit` – black-box bandit screen-then-confirm (``ucb`` + SAFFRON, relevance
  gate p := 1 before SAFFRON).
* :func:`run_output_screen` – per family, the Jensen-Shannon divergence between the two
  models' teacher-forced next-token distributions along both models' greedy answers on a
  few screening prompts; the families standing out are confirmed on fresh prompts
  (fixed-n paired tests, p := 1 below min_change, BH over the confirmed arms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from builtin_plugins.organisms.scoring import Discovery

#: metrics that run one model call type: the generated ones share one greedy decoding
_GENERATED_CALL = "greedy-decoding"
_PAIRED_TESTS: dict[str, Any] = {}


def min_effect(metric: Any) -> float:
    """The metric's ``min_change`` (the pipeline's validator uses the same)."""
    declared = getattr(metric, "min_change", None)
    if declared is not None:
        return float(declared)
    if metric.bounds:
        return 0.05 * float(metric.bounds[1] - metric.bounds[0])
    return 1.0


def _call_kind(metric: Any) -> str:
    return _GENERATED_CALL if getattr(metric, "kind", "") == "generated" else metric.name


def applicable(metrics: dict[str, Any], items: Sequence[tuple[str, str | None]]) -> list[str]:
    has_reference = any(t for _, t in items)
    return [m for m in metrics if has_reference or m != "exact_match"]


class Arms:
    """Measures family × metric arms on both models, counting behavioural queries once per
    (model, prompt, model call)."""

    def __init__(self, base: Any, inter: Any, cases: dict[str, list[tuple[str, str | None]]],
                 metrics: list[Any], relevance: str = "gate") -> None:
        if relevance not in ("gate", "shifted"):
            raise ValueError(f"relevance must be 'gate' or 'shifted', got {relevance!r}")
        self.relevance = relevance
        self.base, self.inter, self.cases = base, inter, cases
        self.metrics = {m.name: m for m in metrics}
        self._seen: set[tuple[str, str, str]] = set()

    @property
    def queries(self) -> int:
        return len(self._seen)

    def arms(self) -> list[tuple[str, str]]:
        return [(f, m) for f, items in self.cases.items() for m in applicable(self.metrics, items)]

    def measure(self, family: str, metric: str, items: Sequence[tuple[str, str | None]]
                ) -> tuple[list[float], list[float]]:
        from md_framework.types import TestCase

        cases = [TestCase(id=f"{family}:{metric}:{i}", hypothesis_id=f"{family}:{metric}",
                          prompt=p, family=family, target=t) for i, (p, t) in enumerate(items)]
        m = self.metrics[metric]
        if hasattr(m, "measure_pair"):  # same readings the pipeline's validator uses
            rb, ri = m.measure_pair(self.base, self.inter, cases)
        else:
            rb, ri = m.measure(self.base, cases), m.measure(self.inter, cases)
        kind = _call_kind(m)
        for p, _ in items:
            self._seen.add(("base", p, kind))
            self._seen.add(("intervention", p, kind))
            if metric in ("target_logprob", "exact_match") and not _:
                # anchored on the base's greedy answer: the decoding is part of the query
                self._seen.add(("base", p, _GENERATED_CALL))
        return [r.value for r in rb], [r.value for r in ri]

    def test(self, metric: str, b: Sequence[float], i: Sequence[float]) -> float:
        from md_framework.drivers import create_driver

        name = "mcnemar" if self.metrics[metric].outcome == "binary" else "wilcoxon"
        if name not in _PAIRED_TESTS:  # stateless drivers: one per process
            _PAIRED_TESTS[name] = create_driver("paired_test", name)
        return float(_PAIRED_TESTS[name].test(list(b), list(i)).p_value)

    def gated_p(self, metric: str, b: Sequence[float], i: Sequence[float]) -> tuple[float, float]:
        """(p, mean difference) with the relevance floor applied before any FDR step:
        ``relevance="gate"``: p := 1 when |mean difference| < min_change, else the paired
        test of "no difference" (valid for arms that did not change at all: a larger p is
        still a p-value; an arm with a real shift just below min_change can pass the gate
        about half the time at n = 12, see tests/organisms/test_baselines.py);
        ``relevance="shifted"``: a test of |mean| <= min_change itself, :func:`binary_shifted_p`
        for 0/1 metrics, :func:`shifted_p` for the others."""
        effect = mean_diff(b, i)
        delta = min_effect(self.metrics[metric])
        if self.relevance == "shifted":
            if self.metrics[metric].outcome == "binary" and 0.0 < delta < 1.0:
                return binary_shifted_p(b, i, delta), effect
            return shifted_p([y - x for x, y in zip(b, i)], delta), effect
        if abs(effect) < delta:
            return 1.0, effect
        return self.test(metric, b, i), effect


def shifted_p(diffs: Sequence[float], delta: float) -> float:
    """p-value of H0: |E[D]| <= δ — two one-sided t-tests (Schuirmann 1987's TOST turned
    round: H0⁺: μ <= δ tested on D − δ, H0⁻: μ >= −δ on D + δ), Bonferroni-combined:
    p = min(1, 2 min(p⁺, p⁻)). Assumes the mean of the n differences is approximately normal
    (bounded differences, n >= ~10); with zero spread, p is 0 when every difference lies
    beyond ±δ on one side, else 1."""
    n = len(diffs)
    if n < 2:
        return 1.0
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    if var <= 0:
        return 0.0 if (min(diffs) > delta or max(diffs) < -delta) else 1.0
    from scipy.stats import t

    se = math.sqrt(var / n)
    p_up = float(t.sf((mean - delta) / se, n - 1))
    p_down = float(t.cdf((mean + delta) / se, n - 1))
    return min(1.0, 2 * min(p_up, p_down))


def binary_shifted_p(b: Sequence[float], i: Sequence[float], delta: float) -> float:
    """p-value of H0: |E[D]| <= δ for paired 0/1 readings: the exact unconditional test of a
    margin for matched pairs (Sidik 2003, Statistics in Medicine 22:265-278, Nam 1997 /
    Tango 1998 score ordering; the validator's test, :mod:`builtin_plugins.pipeline.
    paired_margin`) on each side, Bonferroni-combined as in :func:`shifted_p`. Exact at any
    n (TOST's t has no spread to divide by when every pair flips: 3 of 3 would give p = 0;
    here it gives 0.29). Assumes i.i.d. pairs."""
    from builtin_plugins.pipeline.paired_margin import paired_binary_margin_p

    if not b:
        return 1.0
    p_up = paired_binary_margin_p(b, i, delta, "greater")
    p_down = paired_binary_margin_p(b, i, delta, "less")
    return min(1.0, 2 * min(p_up, p_down))


def mean_diff(b: Sequence[float], i: Sequence[float]) -> float:
    return sum(y - x for x, y in zip(b, i)) / len(b) if b else 0.0


def _result(discoveries: list[Discovery], arm_set: Arms, t0: float, **extra: Any) -> dict[str, Any]:
    return {"status": "ok", "discoveries": discoveries, "queries": arm_set.queries,
            "circuit_passes": 0, "wall_s": time.time() - t0, **extra}


def _discovery(family: str, metric: str, effect: float) -> Discovery:
    return Discovery(families=[family], metric=metric, effect=effect,
                     direction="increase" if effect > 0 else "decrease",
                     label=f"{family}:{metric}")


# --------------------------------------------------------------------------- exhaustive


def run_exhaustive(arms: Arms, alpha: float, n_prompts: int) -> dict[str, Any]:
    """Fixed n per applicable arm; p := 1 below min_change; BH (1995) at ``alpha``."""
    from md_framework.drivers import create_driver

    t0 = time.time()
    records = []
    for family, metric in arms.arms():
        b, i = arms.measure(family, metric, arms.cases[family][:n_prompts])
        p, effect = arms.gated_p(metric, b, i)
        records.append({"family": family, "metric": metric, "p": p, "effect": effect, "n": len(b)})
    decisions = create_driver("fdr_procedure", "bh", {}, alpha=alpha).test_many([r["p"] for r in records])
    found = []
    for r, d in zip(records, decisions):
        r["rejected"] = bool(d.rejected)
        if d.rejected:
            found.append(_discovery(r["family"], r["metric"], r["effect"]))
    return _result(found, arms, t0, arms=len(records), fdr="bh", records=records)


# --------------------------------------------------------------------------- sequential


def diff_range(metric: Any, max_new_tokens: int) -> float:
    """Half-width R of the range of one paired difference D (D ∈ [-R, R])."""
    if metric.bounds:
        return float(metric.bounds[1] - metric.bounds[0])
    if metric.name == "length":
        return float(max_new_tokens)
    return 5.0  # target_logprob: nats per token, clipped (docstring of BettingEProcess)


class BettingEProcess:
    """Anytime-valid e-process against H0: |E[D]| <= δ for paired differences D ∈ [-R, R].

    Two one-sided betting martingales (Waudby-Smith & Ramdas 2024, "Estimating means of
    bounded random variables by betting", eq. for the capital process
    K_t = Π_i (1 + λ_i (X_i − m)) with predictable λ_i ∈ [0, 1/(m − lo))):
    K⁺ bets on D > δ (H0⁺: E[D] <= δ), K⁻ on D < −δ (H0⁻: E[D] >= −δ). H0 = H0⁺ ∩ H0⁻, so
    under H0 both are nonnegative supermartingales with initial value 1 and their average
    E_t = (K⁺ + K⁻)/2 is an e-process (Ville's inequality: P(sup E_t ≥ 1/α) <= α).
    λ is the predictable plug-in of Waudby-Smith & Ramdas (eq. 26, "PrPl"):
    λ_t = min(c/(δ + R), sqrt(2 log(2/α) / (σ̂²_{t−1} t log(t+1)))), c = 3/4 (the
    paper uses 1/2 or 3/4; with at most a few dozen prompts per family the larger cap is
    what lets a large change reach K/α at all).

    Assumptions: the D are i.i.d. draws (prompts drawn at random from the family) and lie in
    [−R, R]; differences of an unbounded metric (``target_logprob``) are clipped to ±R, so
    for it the guarantee is about the clipped mean.
    """

    def __init__(self, delta: float, radius: float, alpha: float) -> None:
        self.delta, self.r, self.alpha = float(delta), float(radius), float(alpha)
        self.k_up = self.k_down = 1.0
        self.n, self.sum, self.sumsq = 0, 0.0, 0.0

    @property
    def e(self) -> float:
        return 0.5 * (self.k_up + self.k_down)

    def _lam(self, room: float) -> float:
        var = ((self.sumsq - self.sum ** 2 / self.n) / self.n) if self.n > 1 else (self.r ** 2) / 4
        var = max(var, 1e-4 * self.r ** 2)
        t = self.n + 1
        plug = math.sqrt(2 * math.log(2 / self.alpha) / (var * t * math.log(t + 1)))
        return max(0.0, min(0.75 / room, plug))

    def update(self, d: float) -> float:
        d = max(-self.r, min(self.r, float(d)))
        # H0+: mean <= δ; X − m with m = δ, X ≥ −R, so λ < 1/(δ + R)
        lam_up = self._lam(self.delta + self.r)
        lam_down = self._lam(self.delta + self.r)
        self.k_up *= 1 + lam_up * (d - self.delta)
        self.k_down *= 1 + lam_down * (-d - self.delta)
        self.n += 1
        self.sum += d
        self.sumsq += d * d
        return self.e

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0


def ebh(e_values: Sequence[float], alpha: float) -> list[bool]:
    """e-BH (Wang & Ramdas 2022, Definition 2): with K e-values, reject the k* largest,
    k* = max{k : e_(k) >= K / (α k)}. FDR <= α under arbitrary dependence."""
    k_total = len(e_values)
    order = sorted(range(k_total), key=lambda i: -e_values[i])
    k_star = 0
    for k, i in enumerate(order, 1):
        if e_values[i] >= k_total / (alpha * k):
            k_star = k
    out = [False] * k_total
    for i in order[:k_star]:
        out[i] = True
    return out


def run_sequential(arms: Arms, alpha: float, n_max: int, batch: int = 4, n_min: int = 8,
                   max_new_tokens: int = 24) -> dict[str, Any]:
    """Sequential exhaustive: every applicable arm gets a :class:`BettingEProcess`; prompts
    are drawn ``batch`` at a time per family (one draw serves all of the family's active
    arms: the generated metrics share one decoding); an arm stops for **efficacy** when its
    e-value reaches K/α (e-BH rejects it whatever the others do) and for **futility** after
    ``n_min`` prompts when its e-value is below 1 and its running mean is under half of
    ``min_change``, or at ``n_max``. e-BH at α over the final e-values. Stopping is
    optional stopping of e-processes, so every final value is an e-value and e-BH keeps
    FDR <= α (Wang & Ramdas 2022, Theorem 1)."""
    t0 = time.time()
    all_arms = arms.arms()
    k = len(all_arms)
    procs = {a: BettingEProcess(min_effect(arms.metrics[a[1]]),
                                diff_range(arms.metrics[a[1]], max_new_tokens), alpha)
             for a in all_arms}
    stop: dict[tuple[str, str], str] = {}
    drawn = {f: 0 for f in arms.cases}
    while len(stop) < k:
        progressed = False
        for family, items in arms.cases.items():
            active = [a for a in all_arms if a[0] == family and a not in stop]
            if not active:
                continue
            lo = drawn[family]
            chunk = items[lo: min(lo + batch, n_max, len(items))]
            if not chunk:
                for a in active:
                    stop[a] = "exhausted"
                continue
            drawn[family] = lo + len(chunk)
            progressed = True
            for a in active:
                b, i = arms.measure(family, a[1], chunk)
                proc = procs[a]
                for x, y in zip(b, i):
                    proc.update(y - x)
                delta = min_effect(arms.metrics[a[1]])
                if proc.e >= k / alpha:
                    stop[a] = "efficacy"
                elif proc.n >= n_min and proc.e < 1 and abs(proc.mean) < delta / 2:
                    stop[a] = "futility"
                elif proc.n >= n_max:
                    stop[a] = "n_max"
        if not progressed:
            break
    e_values = [procs[a].e for a in all_arms]
    rejected = ebh(e_values, alpha)
    found, records = [], []
    for a, e, rej in zip(all_arms, e_values, rejected):
        proc = procs[a]
        records.append({"family": a[0], "metric": a[1], "e": e, "n": proc.n,
                        "effect": proc.mean, "stop": stop.get(a, "exhausted"), "rejected": rej})
        if rej:
            found.append(_discovery(a[0], a[1], proc.mean))
    return _result(found, arms, t0, arms=k, fdr="e-BH", records=records)


# --------------------------------------------------------------------------- bandit


def _reward(metric: Any, diff: float) -> float:
    if abs(diff) < min_effect(metric):
        return 0.0
    if metric.bounds:
        return min(1.0, abs(diff) / float(metric.bounds[1] - metric.bounds[0]))
    return abs(diff) / (abs(diff) + 1.0)


def run_bandit(arms: Arms, alpha: float, n_prompts: int, screen_n: int, seed: int,
               budget: int) -> dict[str, Any]:
    """Screen-then-confirm: the ``ucb`` bandit driver screens arms ``screen_n`` prompts at a
    time (reward: relevant |mean difference| scaled to [0, 1]); an arm whose screen shows a
    relevant difference is confirmed on ``n_prompts`` fresh prompts (disjoint from the
    screening ones), gated (p := 1 below min_change) *before* SAFFRON (Tian & Ramdas 2019),
    decided online in confirmation order. Stops when the best remaining arm showed nothing
    or the query budget is spent."""
    from md_framework.drivers import create_driver

    t0 = time.time()
    bandit = create_driver("bandit_strategy", "ucb", {"seed": seed})
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=alpha)
    arm_ids = [f"{f}|{m}" for f, m in arms.arms()]
    for a in arm_ids:
        bandit.add_arm(a)
    screened: dict[str, float] = {}
    decided: list[dict[str, Any]] = []
    found: list[Discovery] = []
    while arms.queries < budget:
        picks = bandit.select(1)
        if not picks:
            break
        arm = picks[0]
        family, metric = arm.split("|", 1)
        items = arms.cases[family]
        if arm not in screened:
            b, i = arms.measure(family, metric, items[len(items) - screen_n:])
            screened[arm] = _reward(arms.metrics[metric], mean_diff(b, i))
            bandit.update(arm, screened[arm])
            continue
        if screened[arm] <= 0.0:
            break
        b, i = arms.measure(family, metric, items[: min(n_prompts, len(items) - screen_n)])
        p, effect = arms.gated_p(metric, b, i)
        decision = fdr.test(p)
        bandit.update(arm, _reward(arms.metrics[metric], effect))
        bandit.deactivate_arm(arm)
        decided.append({"family": family, "metric": metric, "p": p, "level": decision.level,
                        "rejected": decision.rejected, "effect": effect})
        if decision.rejected:
            found.append(_discovery(family, metric, effect))
    return _result(found, arms, t0, arms=len(arm_ids), confirmed=len(decided), fdr="saffron",
                   records=decided, budget=budget)


# --------------------------------------------------------------------------- output screen


def _teacher_forced_js(base: Any, inter: Any, prompt: str, answer_ids: Sequence[int]) -> float:
    """Mean Jensen-Shannon divergence (nats) between the two models' next-token
    distributions at each answer position (the answer fed to both: teacher forcing)."""
    import torch

    from builtin_plugins.metrics.core import encode_prompt

    ids = list(encode_prompt(base.tokenizer, prompt)) + list(answer_ids)
    # logits at position j predict token j + 1: the answer's tokens are predicted from the
    # last prompt position up to the one before the answer's last token (the first answer
    # position alone when the answer is empty)
    start = len(ids) - len(answer_ids) - 1
    end = len(ids) - 1 if answer_ids else len(ids)
    x = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        lp = torch.log_softmax(base.model(input_ids=x).logits[0, start:end].float(), -1)
        lq = torch.log_softmax(inter.model(input_ids=x).logits[0, start:end].float(), -1)
    m = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2)
    js = 0.5 * ((lp.exp() * (lp - m)).sum(-1) + (lq.exp() * (lq - m)).sum(-1))
    return float(js.mean())


def family_divergence(base: Any, inter: Any, prompts: Sequence[str], max_new_tokens: int,
                      batch_size: int = 8) -> float:
    """Mean over prompts and over both models' greedy answers of :func:`_teacher_forced_js`."""
    from builtin_plugins.metrics.core import generate_answer_ids

    vals = []
    for model in (base, inter):
        for p, (_, ids) in zip(prompts, generate_answer_ids(model, prompts, max_new_tokens, batch_size)):
            vals.append(_teacher_forced_js(base, inter, p, ids))
    return sum(vals) / len(vals) if vals else 0.0


def select_outliers(scores: dict[str, float], k_max: int, z: float = 3.0) -> list[str]:
    """Families whose score exceeds median + z × MAD × 1.4826 (a robust outlier rule; a
    fine-tune moves every family a little), best first, at least one, at most ``k_max``."""
    vals = sorted(scores.values())
    med = vals[len(vals) // 2]
    mad = sorted(abs(v - med) for v in vals)[len(vals) // 2] * 1.4826
    ranked = sorted(scores, key=lambda f: -scores[f])
    chosen = [f for f in ranked if scores[f] > med + z * max(mad, 1e-6)]
    return (chosen or ranked[:1])[:k_max]


def confirm_families(arms: Arms, families: Sequence[str], n_prompts: int, held_back: int,
                     alpha: float) -> tuple[list[dict[str, Any]], list[Discovery]]:
    """Confirm screened ``families``: every applicable metric on up to ``n_prompts`` of each
    family's prompts that the screen did not read (its last ``held_back`` are the screen's),
    relevance-gated p-values, then Benjamini-Hochberg (1995) over all of them at ``alpha``.
    Returns every test's record (``rejected`` filled in) and the discoveries."""
    from md_framework.drivers import create_driver

    records = []
    for family in families:
        items = arms.cases[family]
        confirm = items[: min(n_prompts, len(items) - held_back)]
        for metric in applicable(arms.metrics, items):
            b, i = arms.measure(family, metric, confirm)
            p, effect = arms.gated_p(metric, b, i)
            records.append({"family": family, "metric": metric, "p": p, "effect": effect})
    found = []
    if records:
        decisions = create_driver("fdr_procedure", "bh", {}, alpha=alpha).test_many([r["p"] for r in records])
        for r, d in zip(records, decisions):
            r["rejected"] = bool(d.rejected)
            if d.rejected:
                found.append(_discovery(r["family"], r["metric"], r["effect"]))
    return records, found


def run_output_screen(arms: Arms, alpha: float, n_prompts: int, screen_n: int = 4,
                      max_new_tokens: int = 24, k_max: int | None = None) -> dict[str, Any]:
    """Output-only screen, then confirm: per family the teacher-forced JS divergence of the
    two models' next-token distributions on ``screen_n`` screening prompts (the last ones
    of the family's shuffled list: never used for confirmation), the outlier families
    (:func:`select_outliers`) confirmed on ``n_prompts`` fresh prompts with every applicable
    metric; p := 1 below min_change, then BH (1995) at α over the confirmed arms. The
    selection uses only screening prompts, so the confirmation tests stay valid."""
    from md_framework.drivers import create_driver

    t0 = time.time()
    scores = {}
    for family, items in arms.cases.items():
        prompts = [p for p, _ in items[len(items) - screen_n:]]
        scores[family] = family_divergence(arms.base, arms.inter, prompts, max_new_tokens)
        for p in prompts:
            arms._seen.update({("base", p, "teacher-forced"), ("intervention", p, "teacher-forced")})
    chosen = select_outliers(scores, k_max or max(1, len(scores) // 3))
    records, found = confirm_families(arms, chosen, n_prompts, screen_n, alpha)
    return _result(found, arms, t0, screened=len(scores), confirmed_families=chosen,
                   divergence={f: round(v, 5) for f, v in scores.items()}, fdr="bh",
                   records=records)
