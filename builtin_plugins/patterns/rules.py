"""The four documented pattern rules over a :class:`~md_framework.types.CircuitDiff`.

Every rule starts from the diff's *exploratory* systematic changes: a feature "changed"
when its BH q-value is at most :data:`EXPLORATORY_Q` (10%). This is a screening level for
ranking what to test, not a confirmatory claim; validation spends the real FDR budget.
Each pattern carries its numbers in ``evidence`` and its prompt families in ``families``.

Families of a change: the families whose mean delta has the change's sign and at least
half the largest such family's magnitude (:func:`affected_families`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from builtin_plugins.pipeline.diff import path_features, path_signature, top_output
from md_framework.types import CircuitDiff, FeatureInterpretation, Pattern, SystematicChange

from builtin_plugins.interpreters.tags import interpretation_tags

from md_framework.detector_api import (  # the public detector helpers, shared with plugins
    EXPLORATORY_Q,
    FAMILY_SHARE,
    affected_families,
    evidence_strength,
    exploratory_changes,
    has_family_contrasts,
    q_of,
)

#: rerouting: a prompt is rerouted when its top paths share under half their features
REROUTE_OVERLAP = 0.5
REROUTE_MIN_PROMPTS = 2
SAFETY_TAGS = frozenset({"refusal", "harm"})


def significant(diff: CircuitDiff, q_max: float = EXPLORATORY_Q) -> list[SystematicChange]:
    """:func:`md_framework.detector_api.exploratory_changes`."""
    return exploratory_changes(diff, q_max)


_has_contrasts = has_family_contrasts

__all__ = ["EXPLORATORY_Q", "FAMILY_SHARE", "affected_families", "capability_emergence",
           "computation_rerouting", "evidence_strength", "q_of", "safety_change", "significant",
           "systematic_suppression"]


def _change_evidence(change: SystematicChange) -> dict:
    return {"feature": change.feature.key, "mean_delta": change.mean_delta, "q_value": q_of(change),
            "p_value": change.p_value, "n_prompts": change.n_prompts, "families": change.families}


def _grouped(changes: Sequence[SystematicChange],
             diff: CircuitDiff | None = None) -> dict[tuple[str, ...], list[SystematicChange]]:
    """Changes grouped by their specific families. With per-prompt data, changes that are
    specific to no family (diffuse drift of a full fine-tune) are left out: a pattern must
    say where the change shows."""
    groups: dict[tuple[str, ...], list[SystematicChange]] = defaultdict(list)
    for change in changes:
        fams = tuple(affected_families(change, diff))
        if not fams and _has_contrasts(diff):
            continue
        groups[fams].append(change)
    return dict(sorted(groups.items()))


def _fam_id(families: Sequence[str]) -> str:
    return ",".join(families) if families else "all"


# --------------------------------------------------------------------------- suppression


def systematic_suppression(diff: CircuitDiff) -> list[Pattern]:
    """Features consistently less active: significant (q <= 10%) negative mean delta.

    One pattern per set of affected families; strength from the best q-value."""
    patterns = []
    for fams, members in _grouped([c for c in significant(diff) if c.mean_delta < 0], diff).items():
        q = min(q_of(c) for c in members)
        patterns.append(Pattern(
            id=f"suppression:{_fam_id(fams)}", pattern_type="systematic_suppression",
            description=(f"{len(members)} feature(s) consistently less active in the intervention"
                         f" model{' on ' + ', '.join(fams) + ' prompts' if fams else ''}"
                         f" (best exploratory q={q:.2g})"),
            features=[c.feature for c in members], families=list(fams),
            strength=evidence_strength(q),
            evidence={"rule": "q <= 0.1 and mean_delta < 0", "changes": [_change_evidence(c) for c in members],
                      "total_delta": sum(c.mean_delta for c in members)},
        ))
    return patterns


# --------------------------------------------------------------------------- emergence


def _prompt_presence(diff: CircuitDiff) -> tuple[dict[str, int], dict[str, int]]:
    """Per feature key: prompts where it is active in the intervention, and where it is new
    (listed only in the intervention graph at every position on that prompt)."""
    active: dict[str, int] = defaultdict(int)
    new: dict[str, int] = defaultdict(int)
    for pd in diff.prompt_diffs:
        statuses: dict[str, set[str]] = defaultdict(set)
        for fc in pd.feature_changes:
            if fc.intervention_activation > 0 or fc.status == "intervention_only":
                statuses[f"{fc.layer}:{fc.feature}"].add(fc.status)
            elif fc.base_activation > 0:
                statuses[f"{fc.layer}:{fc.feature}"].add("base")
        for key, st in statuses.items():
            if st - {"base"}:
                active[key] += 1
                if st == {"intervention_only"}:
                    new[key] += 1
    return active, new


def capability_emergence(diff: CircuitDiff) -> list[Pattern]:
    """New feature combinations / paths.

    A feature *emerges* when it is significantly more active (q <= 10%, mean delta > 0) and,
    on at least half the prompts where the intervention uses it, the base graph does not
    list it at all. A new route *recurs* when a position-free top-path signature is in the
    intervention's top paths but not the base's on >= 2 prompts and passes through an
    emergent or significantly increased feature. One pattern per set of affected families.
    """
    increased = {c.feature.key: c for c in significant(diff) if c.mean_delta > 0}
    if not increased:
        return []
    active, new = _prompt_presence(diff)
    emergent = [c for k, c in increased.items() if active.get(k, 0) and new.get(k, 0) * 2 >= active[k]]
    routes: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for pd in diff.prompt_diffs:
        base_sigs = {path_signature(p) for p in pd.base_top_paths}
        for path in pd.intervention_top_paths:
            sig = path_signature(path)
            if sig not in base_sigs and pd.prompt not in routes[sig]:
                routes[sig].append(pd.prompt)
    recurring = {sig: prompts for sig, prompts in routes.items() if len(prompts) >= 2 and any(
        n.startswith("F:") and n[2:] in increased for n in sig)}
    route_feats = {n[2:] for sig in recurring for n in sig if n.startswith("F:") and n[2:] in increased}
    members = {c.feature.key: c for c in emergent}
    members.update({k: increased[k] for k in route_feats})
    patterns = []
    for fams, group in _grouped(list(members.values()), diff).items():
        keys = {c.feature.key for c in group}
        q = min(q_of(c) for c in group)
        group_routes = [{"path": list(sig), "n_prompts": len(ps)} for sig, ps in recurring.items()
                        if any(n[2:] in keys for n in sig if n.startswith("F:"))]
        patterns.append(Pattern(
            id=f"emergence:{_fam_id(fams)}", pattern_type="capability_emergence",
            description=(f"{len(group)} feature(s) newly recruited by the intervention model"
                         f"{' on ' + ', '.join(fams) + ' prompts' if fams else ''}"
                         f"{f', {len(group_routes)} recurring new top path(s)' if group_routes else ''}"),
            features=[c.feature for c in group], families=list(fams), strength=evidence_strength(q),
            evidence={"rule": "q <= 0.1, mean_delta > 0, new on >= half its active prompts, or on a"
                              " recurring new top path",
                      "changes": [_change_evidence(c) | {"new_on_prompts": new.get(c.feature.key, 0),
                                                         "active_on_prompts": active.get(c.feature.key, 0)}
                                  for c in group],
                      "recurring_new_paths": group_routes[:10]},
        ))
    return patterns


# --------------------------------------------------------------------------- safety


def safety_features(changes: Sequence[SystematicChange],
                    interpretations: Mapping[str, Sequence[FeatureInterpretation]]) -> list[tuple[SystematicChange, list[str], list[str]]]:
    out = []
    for change in changes:
        interps = interpretations.get(change.feature.key, [])
        tags = interpretation_tags(interps) & SAFETY_TAGS
        if tags:
            sources = sorted({i.source for i in interps if (interpretation_tags([i]) & SAFETY_TAGS)})
            out.append((change, sorted(tags), sources))
    return out


def safety_change(diff: CircuitDiff, interpretations: Mapping[str, Sequence[FeatureInterpretation]]) -> list[Pattern]:
    """Refusal- or harm-detection features weakened (``safety_degradation``) or strengthened
    (``safety_enhancement``): significant changes (q <= 10%) of features whose
    interpretations carry a ``refusal``/``harm`` tag, or whose description or logit-lens
    promoted tokens contain refusal/harm words ("cannot", "sorry", "refuse", "harm"...)."""
    patterns = []
    found = safety_features(significant(diff), interpretations)
    for kind, sign in (("safety_degradation", -1.0), ("safety_enhancement", 1.0)):
        members = [(c, t, s) for c, t, s in found if c.mean_delta * sign > 0]
        if not members:
            continue
        members = [(c, t, s) for c, t, s in members if affected_families(c, diff) or not _has_contrasts(diff)]
        if not members:
            continue
        q = min(q_of(c) for c, _, _ in members)
        fams = sorted({f for c, _, _ in members for f in affected_families(c, diff)})
        evidence = []
        for c, tags, sources in members:
            interps = interpretations.get(c.feature.key, [])
            evidence.append(_change_evidence(c) | {
                "tags": tags, "interpretation_sources": sources,
                "descriptions": [i.description for i in interps if i.description][:3],
                "promoted_tokens": next((i.promoted_tokens[:10] for i in interps if i.promoted_tokens), []),
            })
        patterns.append(Pattern(
            id=f"{kind}:{_fam_id(fams)}", pattern_type=kind,
            description=(f"{len(members)} refusal/harm feature(s) "
                         f"{'weakened' if sign < 0 else 'strengthened'} in the intervention model"
                         f"{' on ' + ', '.join(fams) + ' prompts' if fams else ''} (best q={q:.2g})"),
            features=[c.feature for c, _, _ in members], families=fams,
            strength=evidence_strength(q), evidence={"rule": "q <= 0.1 and refusal/harm interpretation",
                                                     "changes": evidence},
        ))
    return patterns


# --------------------------------------------------------------------------- rerouting


def computation_rerouting(diff: CircuitDiff) -> list[Pattern]:
    """Same output, different path.

    On a prompt whose two graphs have the same top output (the logit node their top paths
    end at), the route changed when the features on the base's and the intervention's top
    paths overlap (Jaccard, positions ignored) by less than half. A family shows rerouting
    when at least 2 of its output-agreeing prompts, and at least half of them by
    faithfulness weight, are rerouted. Strength = that weighted share x (1 - mean overlap)
    x 0.8 (no significance test stands behind it, so it ranks below tested changes).
    """
    by_family: dict[str, list[tuple[float, float, object]]] = defaultdict(list)
    for pd in diff.prompt_diffs:
        bo, io = top_output(pd.base_top_paths), top_output(pd.intervention_top_paths)
        if bo is None or bo != io:
            continue
        bf, inf = path_features(pd.base_top_paths), path_features(pd.intervention_top_paths)
        union = bf | inf
        overlap = len(bf & inf) / len(union) if union else 1.0
        by_family[pd.family or ""].append((overlap, pd.faithfulness_weight, pd))
    patterns = []
    for family, rows in sorted(by_family.items()):
        rerouted = [r for r in rows if r[0] < REROUTE_OVERLAP]
        total_w = sum(w for _, w, _ in rows)
        share = sum(w for _, w, _ in rerouted) / total_w if total_w > 0 else 0.0
        if len(rerouted) < REROUTE_MIN_PROMPTS or share < 0.5:
            continue
        gained: dict[str, int] = defaultdict(int)
        lost: dict[str, int] = defaultdict(int)
        for _, _, pd in rerouted:
            bf, inf = path_features(pd.base_top_paths), path_features(pd.intervention_top_paths)
            for k in inf - bf:
                gained[k] += 1
            for k in bf - inf:
                lost[k] += 1
        mean_overlap = sum(o for o, _, _ in rerouted) / len(rerouted)
        recurring = sorted([k for k, n in gained.items() if n >= 2] + [k for k, n in lost.items() if n >= 2])
        from md_framework.types import FeatureRef

        feats = [FeatureRef(layer=int(k.split(":")[0]), feature=int(k.split(":")[1]),
                            dictionary_id=diff.dictionary_id) for k in recurring]
        patterns.append(Pattern(
            id=f"rerouting:{family or 'all'}", pattern_type="computation_rerouting",
            description=(f"same top output through different features on {len(rerouted)} of {len(rows)}"
                         f" output-agreeing{' ' + family if family else ''} prompts"
                         f" (mean top-path feature overlap {mean_overlap:.2f})"),
            features=feats, families=[family] if family else [],
            strength=0.8 * share * (1.0 - mean_overlap),
            evidence={"rule": "same top output, top-path feature Jaccard < 0.5 on >= 2 prompts and"
                              " >= half the output-agreeing prompts (faithfulness-weighted)",
                      "weighted_share": share, "mean_overlap": mean_overlap,
                      "prompts": [{"prompt": pd.prompt, "overlap": o, "weight": w,
                                   "output": top_output(pd.base_top_paths)} for o, w, pd in rerouted][:20],
                      "gained_features": dict(sorted(gained.items())),
                      "lost_features": dict(sorted(lost.items()))},
        ))
    return patterns
