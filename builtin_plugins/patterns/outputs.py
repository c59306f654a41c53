"""Output evidence and family-specific internal change, per prompt family.

* :func:`output_shift` compares the two models' top next tokens (``PromptDiff.base_logit_targets``
  / ``intervention_logit_targets``) prompt by prompt and types each flip:

  ==================== ============================================================
  kind                 rule (tokens lower-cased, tokenizer markers stripped)
  ==================== ============================================================
  ``refusal_gain``     the intervention's top token is refusal-like, the base's is not
  ``refusal_loss``     the reverse
  ``case_upper``       same word, the intervention's in upper case (``case_lower``: reverse)
  ``content``          a different word
  ==================== ============================================================

  A family shows an output shift when its share of flipped prompts exceeds the other
  families' (one-sided Fisher exact test of flipped/unflipped, family vs rest; BH over
  families, exploratory q <= 0.1); its kind is the majority kind of its flips. The refusal
  mass (probability on refusal-like tokens among the top targets) is compared the same way
  (Welch t, family deltas vs the rest's) and can type a family whose top token did not flip.
* :func:`family_specific_change` collects, per family, the features whose change is
  specific to it (:func:`builtin_plugins.pipeline.diff.family_contrasts`: contrast q <= 0.1
  and specific share >= 0.5) with a concentration score: the share of the family's total
  |mean delta| carried by those features beyond the other families' drift. Evidence says
  whether the family's top outputs changed (``outputs_changed``).

Both are exploratory (same seed prompts as the hypotheses); validation decides.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from builtin_plugins.pipeline.diff import CONTRAST_Q, SPECIFIC_SHARE, family_contrasts, welch_rows
from md_framework.types import CircuitDiff, FeatureRef, LogitTarget, Pattern, PromptDiff

from builtin_plugins.patterns.rules import evidence_strength

#: first words of refusals (matched on the whole lower-cased token, or as a prefix for stems)
REFUSAL_TOKENS = frozenset({"i", "cannot", "can't", "cant", "sorry", "refuse", "unable", "won't",
                            "wont", "decline", "no", "unfortunately", "apologies", "apologize",
                            "as", "not"})
REFUSAL_PREFIXES = ("apolog", "refus", "sorry", "cannot", "unabl")
OUTPUT_Q = 0.1
MIN_FLIPS = 2
MAX_FEATURES = 12
#: family-specific internal change: concentration relative to the median family at which
#: the pattern gets full strength (below it, strength scales down linearly)
RELATIVE_FULL = 2.0


def clean_token(token: str) -> str:
    return re.sub(r"^[\sĠ▁]+|[\s]+$", "", token)


def is_refusal_token(token: str) -> bool:
    low = clean_token(token).lower()
    return low in REFUSAL_TOKENS or low.startswith(REFUSAL_PREFIXES)


def _top(targets: Sequence[LogitTarget]) -> str | None:
    if not targets:
        return None
    return clean_token(max(targets, key=lambda t: t.probability).token)


def refusal_mass(targets: Sequence[LogitTarget]) -> float:
    return float(sum(t.probability for t in targets if is_refusal_token(t.token)))


def flip_kind(base_token: str | None, intervention_token: str | None) -> str | None:
    """The kind of a top-token change, or None when the top token did not change."""
    if base_token is None or intervention_token is None or base_token == intervention_token:
        return None
    if base_token.lower() == intervention_token.lower():
        letters = [c for c in intervention_token if c.isalpha()]
        upper = bool(letters) and sum(c.isupper() for c in letters) * 2 > len(letters)
        return "case_upper" if upper else "case_lower"
    b_ref, i_ref = is_refusal_token(base_token), is_refusal_token(intervention_token)
    if i_ref and not b_ref:
        return "refusal_gain"
    if b_ref and not i_ref:
        return "refusal_loss"
    return "content"


def _by_family(diff: CircuitDiff) -> dict[str, list[PromptDiff]]:
    out: dict[str, list[PromptDiff]] = defaultdict(list)
    for pd in diff.prompt_diffs:
        if pd.family is not None and pd.faithfulness_weight > 0:
            out[pd.family].append(pd)
    return dict(sorted(out.items()))


def output_table(diff: CircuitDiff) -> dict[str, dict]:
    """Per family: flips, kinds, refusal-mass deltas and the family-vs-rest tests."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    fams = _by_family(diff)
    rows: dict[str, dict] = {}
    for fam, pds in fams.items():
        flips = []
        for pd in pds:
            b, i = _top(pd.base_logit_targets), _top(pd.intervention_logit_targets)
            flips.append((pd.prompt, b, i, flip_kind(b, i)))
        rows[fam] = {
            "n": len(pds), "flips": flips,
            "n_flipped": sum(1 for f in flips if f[3] is not None),
            "refusal_delta": np.array([refusal_mass(pd.intervention_logit_targets)
                                       - refusal_mass(pd.base_logit_targets) for pd in pds]),
            "has_targets": any(pd.base_logit_targets and pd.intervention_logit_targets for pd in pds),
        }
    names = [f for f in rows if rows[f]["has_targets"]]
    if len(names) < 2:
        return {}
    total_n = sum(rows[f]["n"] for f in names)
    total_k = sum(rows[f]["n_flipped"] for f in names)
    p_flip, p_ref = [], []
    for fam in names:
        r = rows[fam]
        k, n = r["n_flipped"], r["n"]
        rest_k, rest_n = total_k - k, total_n - n
        p = stats.fisher_exact([[k, n - k], [rest_k, rest_n - rest_k]], alternative="greater")[1] \
            if k > 0 else 1.0
        r["rest_flip_share"] = rest_k / rest_n if rest_n else 0.0
        p_flip.append(float(p))
        rest = np.concatenate([rows[f]["refusal_delta"] for f in names if f != fam])
        _, pr = welch_rows(r["refusal_delta"][None, :], rest[None, :])
        r["refusal_rest_mean"] = float(rest.mean()) if rest.size else 0.0
        p_ref.append(float(pr[0]))
    q_flip = multipletests(p_flip, method="fdr_bh")[1]
    q_ref = multipletests(p_ref, method="fdr_bh")[1]
    for fam, p1, q1, p2, q2 in zip(names, p_flip, q_flip, p_ref, q_ref):
        rows[fam].update(p_flip=p1, q_flip=float(q1), p_refusal=p2, q_refusal=float(q2))
    return {f: rows[f] for f in names}


def _specific_features(diff: CircuitDiff, family: str) -> list[tuple[str, dict[str, float]]]:
    found = []
    for key, per_fam in family_contrasts(diff).items():
        c = per_fam.get(family)
        if c and c["q"] <= CONTRAST_Q and c["share"] >= SPECIFIC_SHARE and c["effect"] != 0:
            found.append((key, c))
    return sorted(found, key=lambda kc: (kc[1]["q"], -abs(kc[1]["effect"])))


def _refs(diff: CircuitDiff, keys: Sequence[str]) -> list[FeatureRef]:
    return [FeatureRef(layer=int(k.split(":")[0]), feature=int(k.split(":")[1]),
                       dictionary_id=diff.dictionary_id) for k in keys]


def output_shift(diff: CircuitDiff) -> list[Pattern]:
    """One ``output_shift`` pattern per family whose top outputs flipped more than the
    other families' (or whose refusal mass moved more), typed by the majority flip kind."""
    table = output_table(diff)
    patterns = []
    for fam, r in table.items():
        kinds = Counter(f[3] for f in r["flips"] if f[3] is not None)
        mean_ref = float(r["refusal_delta"].mean()) if r["refusal_delta"].size else 0.0
        ref_contrast = mean_ref - r["refusal_rest_mean"]
        flip_ok = r["q_flip"] <= OUTPUT_Q and r["n_flipped"] >= MIN_FLIPS
        # the family's own refusal mass must move (not just differ from a family that did)
        ref_ok = (r["q_refusal"] <= OUTPUT_Q and abs(ref_contrast) >= 0.1 and abs(mean_ref) >= 0.1
                  and mean_ref * ref_contrast > 0)
        if not (flip_ok or ref_ok):
            continue
        if flip_ok:
            kind, count = kinds.most_common(1)[0]
            consistency = count / r["n_flipped"]
            q = r["q_flip"]
            share = r["n_flipped"] / r["n"]
        else:
            kind = "refusal_gain" if ref_contrast > 0 else "refusal_loss"
            consistency, q, share = 1.0, r["q_refusal"], min(1.0, abs(ref_contrast))
        # refusal mass moving with the flips corroborates a refusal kind
        if kind in ("refusal_gain", "refusal_loss") and flip_ok and ref_ok:
            q = min(q, r["q_refusal"])
        specificity = max(0.0, share - r["rest_flip_share"]) if flip_ok else share
        strength = evidence_strength(q) * (0.5 + 0.5 * consistency) * (0.5 + 0.5 * specificity)
        feats = [k for k, _ in _specific_features(diff, fam)[:MAX_FEATURES]]
        examples = [{"prompt": p, "base": b, "intervention": i, "kind": k}
                    for p, b, i, k in r["flips"] if k is not None][:5]
        patterns.append(Pattern(
            id=f"output_shift:{fam}", pattern_type="output_shift",
            description=(f"top next token changed on {r['n_flipped']} of {r['n']} {fam} prompts"
                         f" (other families {r['rest_flip_share']:.0%}), mostly {kind.replace('_', ' ')}"
                         + (f", e.g. {examples[0]['base']!r} -> {examples[0]['intervention']!r}"
                            if examples else "")
                         + f" (exploratory q={q:.2g})"),
            features=_refs(diff, feats), families=[fam], strength=float(min(1.0, strength)),
            evidence={"rule": "family vs rest: Fisher exact on top-token flips / Welch t on refusal"
                              " mass, BH over families, q <= 0.1",
                      "kind": kind, "kinds": dict(kinds), "n_prompts": r["n"],
                      "n_flipped": r["n_flipped"], "rest_flip_share": r["rest_flip_share"],
                      "consistency": consistency, "p_flip": r["p_flip"], "q_flip": r["q_flip"],
                      "refusal_mass_delta": mean_ref, "refusal_mass_contrast": ref_contrast,
                      "q_refusal": r["q_refusal"], "examples": examples,
                      "signed_delta": 1.0 if kind in ("refusal_gain", "case_upper") else
                      -1.0 if kind in ("refusal_loss", "case_lower") else 0.0},
        ))
    # a change on (almost) every family is not family-specific but still an output change
    total_n = sum(r["n"] for r in table.values())
    all_flips = [f for r in table.values() for f in r["flips"] if f[3] is not None]
    if total_n and len(all_flips) * 2 >= total_n and not patterns:
        kind, count = Counter(f[3] for f in all_flips).most_common(1)[0]
        share = len(all_flips) / total_n
        if count * 2 >= len(all_flips):
            patterns.append(Pattern(
                id="output_shift:all", pattern_type="output_shift",
                description=(f"top next token changed on {len(all_flips)} of {total_n} prompts across"
                             f" all families, mostly {kind.replace('_', ' ')}"),
                families=[], strength=0.6 * share * count / len(all_flips),
                evidence={"rule": "flips on >= half of all prompts, one kind for >= half of them",
                          "kind": kind, "n_prompts": total_n, "n_flipped": len(all_flips),
                          "consistency": count / len(all_flips),
                          "examples": [{"prompt": p, "base": b, "intervention": i, "kind": k}
                                       for p, b, i, k in all_flips[:5]],
                          "signed_delta": 1.0 if kind in ("refusal_gain", "case_upper") else
                          -1.0 if kind in ("refusal_loss", "case_lower") else 0.0},
            ))
    return patterns


def family_specific_change(diff: CircuitDiff) -> list[Pattern]:
    """One ``family_specific_change`` pattern per family with at least two features whose
    change is specific to it. Concentration = sum over those features of |effect| / sum over
    all features of |family mean delta| (how much of the family's change is its own);
    strength = s(best q) x sqrt(concentration) x min(1, relative / 2), relative = the
    concentration over the median family's (a full fine-tune drifts unevenly everywhere;
    only a family standing out from that counts fully)."""
    contrasts = family_contrasts(diff)
    if not contrasts:
        return []
    outputs = output_table(diff)
    families = sorted({f for per_fam in contrasts.values() for f in per_fam})
    found_by: dict[str, list[tuple[str, dict[str, float]]]] = {}
    conc_by: dict[str, float] = {}
    for fam in families:
        found = _specific_features(diff, fam)
        total = sum(abs(per_fam[fam]["family_mean"]) for per_fam in contrasts.values() if fam in per_fam)
        specific = sum(abs(c["effect"]) for _, c in found)
        found_by[fam] = found
        conc_by[fam] = min(1.0, specific / total) if total > 0 else 0.0
    # a fine-tune drifts differently on every family: compare with the organism's own
    # typical family (median concentration), not with zero
    typical = float(np.median(list(conc_by.values()))) if conc_by else 0.0
    patterns = []
    for fam in families:
        found = found_by[fam]
        if len(found) < 2:
            continue
        concentration = conc_by[fam]
        relative = concentration / typical if typical > 0 else float("inf")
        q = min(c["q"] for _, c in found)
        signed = sum(c["effect"] for _, c in found)
        out = outputs.get(fam)
        changed = bool(out and out["q_flip"] <= OUTPUT_Q and out["n_flipped"] >= MIN_FLIPS)
        strength = evidence_strength(q) * concentration ** 0.5 * min(1.0, relative / RELATIVE_FULL)
        patterns.append(Pattern(
            id=f"family_specific:{fam}", pattern_type="family_specific_change",
            description=(f"{len(found)} feature(s) change specifically on {fam} prompts beyond the"
                         f" other families' drift ({concentration:.0%} of the family's change;"
                         f" best exploratory q={q:.2g}); top outputs"
                         f" {'changed' if changed else 'unchanged'}"),
            features=_refs(diff, [k for k, _ in found[:MAX_FEATURES]]), families=[fam],
            strength=float(strength),
            evidence={"rule": "contrast q <= 0.1 and specific share >= 0.5 on >= 2 features",
                      "n_features": len(found), "concentration": concentration,
                      "relative_concentration": relative, "typical_concentration": typical,
                      "signed_delta": signed, "outputs_changed": changed,
                      "changes": [{"feature": k, "effect": c["effect"], "q": c["q"],
                                   "share": c["share"], "family_mean": c["family_mean"],
                                   "rest_mean": c["rest_mean"]} for k, c in found[:MAX_FEATURES]]},
        ))
    return patterns
