"""Scoring discoveries against measured ground truth (the same rule for every method).

Units: a discovery claims one unit ``(family, metric, direction)`` per family it names —
a multi-family claim is credited family by family. A hypothesis that names no family is
credited to the family that supplied at least half of its test prompts. The direction is the
claim's own, or the sign of its measured effect when it says "change" (no sign at all: it
matches a real unit of either direction).

* A claimed unit is **true** iff it is one of the organism's real units
  (:mod:`builtin_plugins.organisms.ground_truth`), planted or not. A claim whose metric is
  made from what the diff saw (``signoff:<phrase>``) claims its builtin metric's unit; when
  that unit is not real, the judge measures the phrase metric itself on the family's
  evaluation split (``judged``), and a change it measures as real makes the claim true
  without adding to recall.
* Claims are **deduplicated by unit** before counting: a validated parent and its
  refinement child, merged hypotheses, two metrics' … the same unit counts once.
* Per run: ``planted_recall`` (planted changes with a true claimed unit matching them),
  ``real_recall`` (real units claimed / real units), ``precision`` (true claimed units /
  claimed units), ``fdp`` (false claimed units / max(1, claimed units)).
* Over seeds: means with a 95 % Student-t interval; on nulls (no real unit): the share of
  runs with any discovery, with its Wilson (1927) score interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from md_framework.types import StrictModel


class Discovery(StrictModel):
    """A validated result in the scorer's terms."""

    families: list[str] = []
    metric: str
    direction: str = "change"
    effect: float | None = None
    prompt_families: list[str] = []
    label: str = ""


def discovery_direction(d: Discovery) -> str:
    if d.direction in ("increase", "decrease"):
        return d.direction
    if d.effect is None or d.effect == 0 or not math.isfinite(d.effect):
        return "change"
    return "increase" if d.effect > 0 else "decrease"


def claimed_families(d: Discovery) -> list[str]:
    if d.families:
        return list(dict.fromkeys(d.families))
    if d.prompt_families:
        counts: dict[str, int] = {}
        for f in d.prompt_families:
            counts[f] = counts.get(f, 0) + 1
        return [f for f, c in counts.items() if c / len(d.prompt_families) >= 0.5]
    return []


def claimed_units(d: Discovery) -> list[tuple[str, str, str]]:
    direction = discovery_direction(d)
    # a metric made from what the diff saw (``signoff:<phrase>``) claims its builtin metric's unit
    metric = d.metric.partition(":")[0]
    return [(f, metric, direction) for f in claimed_families(d)]


def _unit_key(u: dict[str, Any]) -> tuple[str, str, str]:
    return (u["family"], u["metric"], u["direction"])


def _is_real(unit: tuple[str, str, str], real: set[tuple[str, str, str]]) -> tuple[str, str, str] | None:
    """The real unit a claimed unit is (an undirected claim matches either direction)."""
    fam, metric, direction = unit
    if direction == "change":
        for want in ("increase", "decrease"):
            if (fam, metric, want) in real:
                return (fam, metric, want)
        return None
    return unit if unit in real else None


def _matches_planted(unit: tuple[str, str, str], planted: dict[str, Any]) -> bool:
    fam, metric, direction = unit
    if fam != planted["family"] or metric not in planted["metrics"]:
        return False
    want = planted.get("direction", "change")
    return want == "change" or direction == want


def planted_units(planted: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fallback real units of an organism built before ground truth v2 (planted only)."""
    out = []
    for p in planted:
        for metric in p["metrics"]:
            dirs = ["increase", "decrease"] if p.get("direction", "change") == "change" else [p["direction"]]
            out += [{"family": p["family"], "metric": metric, "direction": d} for d in dirs]
    return out


def phrase_claims(discoveries: Sequence[Discovery]) -> list[tuple[str, str]]:
    """(family, metric) of each claim whose metric is made from what the diff saw
    (``signoff:<phrase>``): the ground truth cannot have measured it in advance."""
    return sorted({(f, d.metric) for d in discoveries if ":" in d.metric
                   for f in claimed_families(d)})


def score(discoveries: Sequence[Discovery], planted: Sequence[dict[str, Any]],
          real_units: Sequence[dict[str, Any]] | None = None,
          judged: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One run's score (module docstring). ``real_units`` default: the planted units.
    ``judged``: phrase-metric claims measured by the judge
    (:func:`builtin_plugins.organisms.ground_truth.judge_phrase_claims`); a claim judged real
    is a true discovery even when its builtin metric's unit is not real (the phrase is not
    among that metric's fixed ones), but adds nothing to recall (no other method could
    have found that unit)."""
    real = {_unit_key(u) for u in (planted_units(planted) if real_units is None else real_units)}
    judged_real = {(j["family"], j["metric"], j["direction"]) for j in judged or [] if j["real"]}
    claimed: dict[tuple[str, str, str], list[str]] = {}
    shown_by_judge: set[tuple[str, str, str]] = set()
    for d in discoveries:
        for unit in claimed_units(d):
            claimed.setdefault(unit, []).append(d.label)
            if (unit[0], d.metric, unit[2]) in judged_real:
                shown_by_judge.add(unit)
    if any(not claimed_units(d) for d in discoveries):  # names no family at all: false
        for d in discoveries:
            if not claimed_units(d):
                claimed.setdefault(("(no family)", d.metric, discovery_direction(d)), []).append(d.label)
    true_units = {u: _is_real(u, real) for u in claimed}
    hits = {r for r in true_units.values() if r is not None}
    true_units.update({u: u for u in shown_by_judge if true_units[u] is None})
    n_true = sum(r is not None for r in true_units.values())
    false = sorted(u for u, r in true_units.items() if r is None)
    recovered = sorted({p["id"] for p in planted for r in hits if _matches_planted(r, p)})
    n = len(claimed)
    return {
        "validated": len(discoveries),
        "claimed_units": n,
        "true_units": n_true,
        "false_discoveries": len(false),
        "recovered": recovered,
        "recall": (len(recovered) / len(planted)) if planted else None,
        "planted_recall": (len(recovered) / len(planted)) if planted else None,
        "real_units": len(real),
        "real_recall": (len(hits) / len(real)) if real else None,
        "precision": (n_true / n) if n else None,
        "fdp": len(false) / max(1, n),
        "any_discovery": n > 0,
        "any_false": bool(false),
        "false_discovery_labels": ["|".join(u) for u in false],
        "judged_true_labels": sorted("|".join(u) for u in shown_by_judge if u not in hits),
        # every claimed unit, so a later ground truth (a re-measured organism) can re-score it
        "claimed_unit_labels": sorted("|".join(u) for u in claimed),
    }


# --------------------------------------------------------------------------- over seeds


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean with a Student-t interval (None-values are left out; n = 1: no interval)."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    m = sum(xs) / n
    if n == 1:
        return {"mean": m, "lo": None, "hi": None, "n": 1}
    from scipy.stats import t

    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": m, "lo": m - half, "hi": m + half, "n": n}


def wilson(k: int, n: int, level: float = 0.95) -> dict[str, Any]:
    """Wilson (1927) score interval for a binomial share k / n."""
    if n == 0:
        return {"share": None, "lo": None, "hi": None, "k": k, "n": n}
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return {"share": p, "lo": max(0.0, centre - half), "hi": min(1.0, centre + half), "k": k, "n": n}


SUMMARY_FIELDS = ("planted_recall", "real_recall", "precision", "fdp", "tokens",
                  "queries", "wall_s")


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per organism × method over seeds: mean and 95 % CI of every score and cost; the
    share of runs with any discovery (Wilson) — the family-wise error on a null."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["organism"], r["method"]), []).append(r)
    out = []
    for (org, method), rs in sorted(groups.items()):
        entry: dict[str, Any] = {"organism": org, "method": method, "seeds": len(rs),
                                 "null": bool(rs[0].get("null")),
                                 "families": rs[0].get("families")}
        for f in SUMMARY_FIELDS:
            ci = mean_ci([r.get(f) for r in rs])
            if ci["lo"] is not None:  # a t-interval can leave the statistic's range: clip it
                top = 1.0 if f in ("planted_recall", "real_recall", "precision", "fdp") else math.inf
                ci["lo"], ci["hi"] = max(0.0, ci["lo"]), min(top, ci["hi"])
            entry[f] = ci
        entry["any_discovery"] = wilson(sum(bool(r.get("any_discovery")) for r in rs), len(rs))
        entry["any_false"] = wilson(sum(bool(r.get("any_false")) for r in rs), len(rs))
        out.append(entry)
    return out
