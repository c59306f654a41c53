"""Ground truth that decides: an organism's set of *real units*, measured.

A unit is ``(family, metric, direction)``. For every family the builder measures, on the
family's **evaluation split** (prompts no method ever sees: drawn from the family's
generator, disjoint from the universe and from the training prompts; ``eval_per_family``,
32 by default), every metric that applies to the family, on both models:

* ``exact_match`` only where the family's prompts carry reference answers (matched against
  the base's own greedy answer, any drift anywhere in the answer would read as a change);
* ``signoff`` with the organism's planted sign-off phrases added to the metric's list, so a
  planted sign-off is measured by a metric that can see it;
* every other registered builtin metric everywhere.

Per family × metric: the mean paired difference (intervention − base), a paired test
(Wilcoxon signed-rank, zero differences split, Pratt/“zsplit”), and the metric's
``min_change``. Relevance is applied *before* the multiple-testing step (p := 1 when
|mean difference| < ``min_change``), then Benjamini-Hochberg (1995) at ``measurement.alpha``
over every family × metric of the organism: the rejected ones are the real units, their
direction the sign of the mean difference. Planted or not: a fine-tune that moves a family it
was not meant to move has really changed it, and a method that finds it is right.

A planted change must measure as real on at least one of its metrics in its direction;
otherwise the build fails with the numbers (:class:`PlantedNotReal`).

When a family cannot provide ``eval_per_family`` disjoint prompts (a template family with
few distinct prompts, inline prompts), the evaluation split falls back to the universe
prompts and the ground truth records it (``eval_source``); the method's own confirmation
prompts then overlap the ground truth's, which the bench reports.
"""

from __future__ import annotations

import math
from typing import Any

from md_framework.errors import ConfigError

#: measured only on families whose prompts carry reference answers
REFERENCE_ONLY_METRICS = frozenset({"exact_match"})


class PlantedNotReal(ConfigError):
    """A planted change that does not measure as a real unit (the build fails)."""


def applicable_metrics(metrics: list[str], has_reference: bool) -> list[str]:
    return [m for m in metrics if has_reference or m not in REFERENCE_ONLY_METRICS]


def bh_reject(p_values: list[float], alpha: float) -> list[bool]:
    """Benjamini & Hochberg (1995) step-up: reject the k smallest p with p_(k) <= k·α/m."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    k = 0
    for rank, i in enumerate(order, 1):
        if p_values[i] <= rank * alpha / m:
            k = rank
    out = [False] * m
    for i in order[:k]:
        out[i] = True
    return out


def paired_p(d: Any) -> float:
    """The ground truth's paired test of the differences ``d``: Wilcoxon signed-rank with zero
    differences split (Pratt/"zsplit"); 1 when nothing differs or the test is undefined."""
    import numpy as np

    if not np.any(np.asarray(d) != 0):
        return 1.0
    from scipy.stats import wilcoxon

    p = float(wilcoxon(d, zero_method="zsplit").pvalue)
    return p if math.isfinite(p) else 1.0


def measure_family(base: Any, inter: Any, items: list[tuple[str, str | None]], metrics: list[str],
                   base_answers: dict[str, str], opts: Any,
                   signoffs: list[str] | None = None) -> dict[str, Any]:
    """Per metric: means, mean difference, its sd, n, Wilcoxon p and min_change."""
    import numpy as np

    from md_framework.types import TestCase

    from builtin_plugins.metrics.core import metric_by_name, model_word_lists

    cases = [TestCase(id=f"gt{i}", hypothesis_id="ground-truth", prompt=p,
                      target=t if t else base_answers.get(p))
             for i, (p, t) in enumerate(items)]
    has_reference = any(t for _, t in items)
    out = {}
    for name in applicable_metrics(metrics, has_reference):
        mopts: dict[str, Any] = {"max_new_tokens": opts.max_new_tokens, "batch_size": opts.batch_size}
        if name == "signoff" and signoffs:
            from builtin_plugins.metrics.core import DEFAULT_SIGNOFFS

            known = list(model_word_lists(base).get("signoffs") or DEFAULT_SIGNOFFS)
            mopts["signoffs"] = known + [s for s in signoffs if s not in known]
        metric = metric_by_name(name, mopts)
        b = np.array([r.value for r in metric.measure(base, cases)])
        i = np.array([r.value for r in metric.measure(inter, cases)])
        d = i - b
        p = paired_p(d)
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
        out[name] = {"base_mean": float(b.mean()), "intervention_mean": float(i.mean()),
                     "delta": float(d.mean()), "sd_delta": sd,
                     "standardized": float(d.mean() / sd) if sd > 0 else 0.0,
                     "n": int(len(d)), "p_value": p,
                     "min_change": float(metric.min_change)}
    return out


def decide_units(measured: dict[str, dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Real units: relevance as p := 1 below ``min_change``, then BH at ``alpha``."""
    arms = [(fam, metric, v) for fam, vals in measured.items() for metric, v in vals.items()]
    p_gated = [v["p_value"] if abs(v["delta"]) >= v["min_change"] else 1.0 for _, _, v in arms]
    rejected = bh_reject(p_gated, alpha)
    units = []
    for (fam, metric, v), rej in zip(arms, rejected):
        v["real"] = bool(rej)
        if rej:
            units.append({"family": fam, "metric": metric,
                          "direction": "increase" if v["delta"] > 0 else "decrease",
                          "delta": v["delta"], "p_value": v["p_value"], "n": v["n"]})
    return units


def unit_matches_planted(unit: dict[str, Any], planted: dict[str, Any]) -> bool:
    if unit["family"] != planted["family"] or unit["metric"] not in planted["metrics"]:
        return False
    return planted["direction"] == "change" or unit["direction"] == planted["direction"]


def label_planted(units: list[dict[str, Any]], planted: list[dict[str, Any]]) -> None:
    """Mark each planted change ``real`` (with its units) and each unit with its planted id."""
    for u in units:
        u["planted"] = next((p["id"] for p in planted if unit_matches_planted(u, p)), None)
    for p in planted:
        p["units"] = [f"{u['family']}|{u['metric']}|{u['direction']}" for u in units
                      if unit_matches_planted(u, p)]
        p["real"] = bool(p["units"])


def check_planted(name: str, planted: list[dict[str, Any]],
                  measured: dict[str, dict[str, Any]], alpha: float) -> None:
    """Fail the build when a planted change does not measure as real (with the numbers)."""
    bad = [p for p in planted if not p["real"]]
    if not bad:
        return
    lines = []
    for p in bad:
        vals = measured.get(p["family"], {})
        nums = ", ".join(
            f"{m} Δ {vals[m]['delta']:+.3f} (p {vals[m]['p_value']:.2g}, min_change "
            f"{vals[m]['min_change']}, n {vals[m]['n']})" if m in vals else f"{m} not applicable"
            for m in p["metrics"])
        lines.append(f"{p['id']} in {p['family']} ({p['direction']}): {nums}")
    raise PlantedNotReal(
        f"organism {name!r}: planted change(s) do not measure as real units (paired Wilcoxon, "
        f"relevance p := 1 below min_change, BH at {alpha}): " + "; ".join(lines)
        + ". Train longer, raise planted_share, or name a metric that can see the change.")


def judge_phrase_claims(base: Any, inter: Any, claims: list[tuple[str, str]],
                        evaluation: dict[str, list[tuple[str, str | None]]], gt: dict[str, Any],
                        opts: Any) -> list[dict[str, Any]]:
    """Measure claims whose metric is made from what the diff saw (``signoff:<phrase>``,
    ``exact_match:<phrase>``; :mod:`builtin_plugins.metrics.derived`), which no ground truth
    can measure in advance (the phrase comes from the run), on the family's evaluation split.

    Each claim (family, metric) is measured like a ground-truth arm (both models, paired
    Wilcoxon with zero differences split, p := 1 below the metric's ``min_change``) and
    decided as if it had joined the organism's Benjamini-Hochberg family as one more arm:
    real iff p <= (R + 1) alpha / (M + 1), with M the arms and R the real units the ground
    truth measured (the threshold BH would give an arm ranked just after the rejected ones).
    Returns one record per claim: family, metric, direction, delta, p_value, n, real."""
    import numpy as np

    from md_framework.types import TestCase

    from builtin_plugins.metrics.derived import metric_from_name

    measured = {**gt.get("controls", {}), **gt.get("distractors", {}),
                **gt.get("planted_families", {})}
    arms = sum(len(v) for v in measured.values()) or 1
    threshold = (len(gt.get("real_units") or []) + 1) * opts.alpha / (arms + 1)
    out = []
    for family, name in claims:
        metric = metric_from_name(name, {"max_new_tokens": opts.max_new_tokens,
                                         "batch_size": opts.batch_size})
        items = evaluation.get(family, [])[: opts.max_prompts_per_family or None]
        if metric is None or not items:
            out.append({"family": family, "metric": name, "direction": None, "delta": None,
                        "p_value": None, "n": len(items), "real": False})
            continue
        cases = [TestCase(id=f"judge{i}", hypothesis_id="judge", prompt=p)
                 for i, (p, _) in enumerate(items)]
        d = (np.array([r.value for r in metric.measure(inter, cases)])
             - np.array([r.value for r in metric.measure(base, cases)]))
        p = paired_p(d)
        delta = float(d.mean())
        gated = p if abs(delta) >= metric.min_change else 1.0
        out.append({"family": family, "metric": name,
                    "direction": "increase" if delta > 0 else "decrease", "delta": delta,
                    "p_value": p, "n": int(len(d)), "threshold": threshold,
                    "real": bool(gated <= threshold)})
    return out
