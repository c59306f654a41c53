"""Pattern -> hypothesis templates.

A template decides three things from a pattern, its features' interpretations and its
families:

* the **area** (safety, style, knowledge, reasoning, bias, or none): the hypothesis type
  the pattern type declares (``md_pattern_types``: safety patterns -> safety), else votes
  from the features' interpretation tags (``refusal``/``harm``/``area:*``; 2 votes per
  feature) and from the family names (1 vote each); a declared hypothesis type with no
  area (a plugin's own type) is used as it is;
* the **sign** of the change (the declared ``sign``, or the sign of ``evidence[sign_key]``);
* from both, the hypothesis type, the behaviour metric (shared names of
  docs/architecture.md) and the predicted direction (:func:`typed`).

With ``config.focus_areas`` set, a pattern whose area cannot be inferred yields one
hypothesis per focus area (steering), at 0.6x priority. Priority = pattern strength x
the declared pattern type's weight (:data:`GENERIC_WEIGHT` when undeclared) x the
factors below (diffuse, feature-level, corroboration...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework.types import (
    FeatureInterpretation,
    Hypothesis,
    HypothesisType as HT,
    HypothesisTypeSpec,
    Pattern,
    PatternType,
)

from builtin_plugins.interpreters.tags import AREAS, family_area, feature_areas, interpretation_tags

#: behaviour metric names shared across stages (docs/architecture.md)
KNOWN_METRICS = ("refusal_probability", "target_logprob", "exact_match", "refusal_text",
                 "uppercase_ratio", "length", "signoff", "sentiment")

#: weight of a pattern type no plugin declares (``md_pattern_types``): the generic reading
GENERIC_WEIGHT = 0.6
FOCUS_STEER_WEIGHT = 0.6

#: hypothesis type -> the template area whose typing (:func:`typed`) produces it; a pattern
#: type declaring one of these gets that area, any other declared hypothesis type is used
#: as it is (:func:`declared_choice`)
HYPOTHESIS_AREA = {
    HT.SAFETY_DEGRADATION.value: "safety", HT.SAFETY_ENHANCEMENT.value: "safety",
    HT.STYLE_CHANGE.value: "style", HT.KNOWLEDGE_UPDATE.value: "knowledge",
    HT.REASONING_CHANGE.value: "reasoning", HT.BIAS_SHIFT.value: "bias",
}
#: evidence fields an undeclared pattern type's sign is read from, in this order
FALLBACK_SIGN_KEYS = ("signed_mass", "total_delta", "mean_delta", "signed_delta")

SENTENCE = {
    HT.SAFETY_DEGRADATION: "The intervention model refuses or flags harmful requests less often",
    HT.SAFETY_ENHANCEMENT: "The intervention model refuses or flags harmful requests more often",
    HT.STYLE_CHANGE: "The form of the intervention model's answers changed",
    HT.KNOWLEDGE_UPDATE: "The intervention model states different facts",
    HT.REASONING_CHANGE: "The intervention model reaches multi-step answers differently",
    HT.BIAS_SHIFT: "The intervention model's preferences between groups or options shifted",
    HT.CAPABILITY_LOSS: "The intervention model lost an ability the base model had",
    HT.CAPABILITY_GAIN: "The intervention model does something the base model could not",
    HT.COMPUTATION_REROUTING: "The intervention model produces the same outputs through a different internal path",
}


def pattern_sign(pattern: Pattern, spec: PatternType | None = None) -> int:
    """The direction of the change: the declared type's fixed ``sign``, else the sign of
    ``evidence[sign_key]``; an undeclared type is read from :data:`FALLBACK_SIGN_KEYS`."""
    if spec is not None and spec.sign is not None:
        return spec.sign
    keys = ((spec.sign_key,) if spec.sign_key else ()) if spec is not None else FALLBACK_SIGN_KEYS
    for key in keys:
        value = pattern.evidence.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0:
            return 1 if value > 0 else -1
    return 0


def _style_metric(tags: set[str], families: Sequence[str]) -> str:
    text = " ".join(families).lower()
    if "style:uppercase" in tags or any(w in text for w in ("caps", "upper", "shout")):
        return "uppercase_ratio"
    if any(w in text for w in ("signoff", "sign-off", "sign_off", "closing")):
        return "signoff"
    if any(w in text for w in ("sentiment", "tone", "positiv", "negativ")):
        return "sentiment"
    return "length"


def typed(area: str | None, sign: int, tags: set[str], families: Sequence[str]) -> tuple[str, str, str]:
    """(hypothesis type, metric, direction) for an area and a sign of change."""
    up = "increase" if sign > 0 else "decrease" if sign < 0 else "change"
    if area == "safety":
        if sign > 0:
            return HT.SAFETY_ENHANCEMENT.value, "refusal_probability", "increase"
        return HT.SAFETY_DEGRADATION.value, "refusal_probability", "decrease"
    if area == "style":
        metric = _style_metric(tags, families)
        return HT.STYLE_CHANGE.value, metric, up if metric == "uppercase_ratio" else "change"
    if area == "knowledge":
        return HT.KNOWLEDGE_UPDATE.value, "target_logprob", "change"
    if area == "reasoning":
        return HT.REASONING_CHANGE.value, "target_logprob", "change" if sign == 0 else up
    if area == "bias":
        return HT.BIAS_SHIFT.value, "sentiment", "change"
    if sign > 0:
        return HT.CAPABILITY_GAIN.value, "target_logprob", "increase"
    if sign < 0:
        return HT.CAPABILITY_LOSS.value, "target_logprob", "decrease"
    return HT.KNOWLEDGE_UPDATE.value, "target_logprob", "change"


def infer_area(pattern: Pattern, interpretations: Mapping[str, Sequence[FeatureInterpretation]],
               spec: PatternType | None = None) -> tuple[str | None, dict[str, float]]:
    votes: dict[str, float] = {}
    for area, n in feature_areas([f.key for f in pattern.features], interpretations).items():
        votes[area] = votes.get(area, 0.0) + 2.0 * n
    for family in pattern.families:
        area = family_area(family)
        if area:
            votes[area] = votes.get(area, 0.0) + 1.0
    if spec is not None and spec.hypothesis_type in HYPOTHESIS_AREA:
        return HYPOTHESIS_AREA[spec.hypothesis_type], votes
    if not votes:
        return None, votes
    best = max(votes.values())
    return next(a for a in AREAS if votes.get(a) == best), votes


def feature_contexts(pattern: Pattern, interpretations: Mapping[str, Sequence[FeatureInterpretation]],
                     limit: int = 10) -> list[str]:
    out: list[str] = []
    for ref in pattern.features:
        for interp in interpretations.get(ref.key, []):
            for text in ([interp.description] if interp.description else []) + \
                    [c.text for c in interp.top_contexts]:
                if text and text not in out:
                    out.append(text)
    return out[:limit]


def _universe(config: Any) -> set[str]:
    universe = getattr(config, "universe", None)
    return set(getattr(universe, "families", None) or {})


#: output_shift kind -> [(type, metric, direction, factor)]: the first is the reading the
#: flips support; "content" is ambiguous, so a second candidate follows at lower priority
OUTPUT_KIND = {
    "refusal_gain": [(HT.SAFETY_ENHANCEMENT.value, "refusal_probability", "increase", 1.0)],
    "refusal_loss": [(HT.SAFETY_DEGRADATION.value, "refusal_probability", "decrease", 1.0)],
    "case_upper": [(HT.STYLE_CHANGE.value, "uppercase_ratio", "increase", 1.0)],
    "case_lower": [(HT.STYLE_CHANGE.value, "uppercase_ratio", "decrease", 1.0)],
    "content": [(HT.KNOWLEDGE_UPDATE.value, "target_logprob", "change", 1.0),
                (HT.STYLE_CHANGE.value, "length", "change", 0.4)],
}
#: a family-specific internal change whose top outputs did not move: a later token (a
#: fact) may have changed, or the same answer is computed differently
INTERNAL_ONLY = [(HT.KNOWLEDGE_UPDATE.value, "target_logprob", "change", 0.6),
                 (HT.COMPUTATION_REROUTING.value, "target_logprob", "change", 0.35)]
#: family-specific internal change on a family whose outputs are typed: corroboration
CORROBORATE = 0.5
#: a pattern whose families are typed by output evidence as another type
OFF_OUTPUT = 0.5
#: a pattern naming no family or at least half of the universe is not family-specific
DIFFUSE = 0.3
#: pattern levels judged on the family contrasts / outputs (family-level evidence)
FAMILY_LEVELS = frozenset({"output", "circuit"})
#: the builtin detectors' family-level pattern types: when one is present, the family
#: contrasts / outputs were computed (rerouting has no significance test behind it)
FAMILY_EVIDENCE_TYPES = frozenset({"output_shift", "family_specific_change", "answer_change"})
#: when family-level patterns were computed, feature-level patterns (screened on pooled
#: per-feature tests, which a full fine-tune's drift makes tiny everywhere) only add
#: lower-priority alternatives and corroboration
FEATURE_LEVEL = 0.35


#: a phrase-derived metric needs a phrase seen on at least this share of the edited answers
PHRASE_CONSISTENCY = 0.5


def derived_metric(base: str, phrase: str) -> str:
    """The name of a metric made from what the diff saw: ``<builtin metric>:<phrase>``
    (``signoff:have a nice day !``, ``exact_match:bell``); the builtin metrics plugin builds
    it on demand (``md_metric_from_name``)."""
    return f"{base}:{' '.join(phrase.split())}"


def answer_choices(pattern: Pattern) -> list[tuple[str, str, str, float]]:
    """(type, metric, direction, factor) for an ``answer_change`` pattern.

    * words appended at the end: a style change, ``signoff:<phrase>`` should increase;
    * words inserted mid-answer: ``exact_match:<phrase>`` (the answer contains it) increases;
    * words removed or replaced: the answer states something else; ``exact_match:<removed>``
      decreases (a knowledge update when mid-answer, a style change at the end);
    * no consistent phrase, or only the distribution moved: the base's own answer becomes
      less likely, ``target_logprob`` (base-anchored) should decrease.
    """
    ev = pattern.evidence
    kind = str(ev.get("kind"))
    added, removed = str(ev.get("added") or ""), str(ev.get("removed") or "")
    consistent = float(ev.get("consistency") or 0.0) >= PHRASE_CONSISTENCY
    fallback = (HT.KNOWLEDGE_UPDATE.value, "target_logprob", "decrease", 0.6)
    if kind == "append" and added and consistent:
        return [(HT.STYLE_CHANGE.value, derived_metric("signoff", added), "increase", 1.0)]
    if kind in ("insert", "prepend") and added and consistent:
        return [(HT.STYLE_CHANGE.value, derived_metric("exact_match", added), "increase", 1.0)]
    if kind in ("replace", "delete") and removed and consistent:
        area = HT.STYLE_CHANGE.value if ev.get("location") == "end" and kind == "delete" \
            else HT.KNOWLEDGE_UPDATE.value
        return [(area, derived_metric("exact_match", removed), "decrease", 1.0)]
    if kind == "append":
        return [(HT.STYLE_CHANGE.value, "length", "increase", 0.8)]
    if kind == "delete":
        return [(HT.STYLE_CHANGE.value, "length", "decrease", 0.8)]
    return [fallback]


def output_types(patterns: Sequence[Pattern]) -> dict[str, list[tuple[str, str, str, float]]]:
    """Family -> candidate (type, metric, direction, factor) from ``output_shift`` and
    ``answer_change`` patterns (output evidence of the first answer token, or later)."""
    out: dict[str, list[tuple[str, str, str, float]]] = {}
    for p in sorted(patterns, key=lambda p: p.pattern_type != "output_shift"):
        if p.pattern_type == "answer_change":
            choices = answer_choices(p)
        elif p.pattern_type == "output_shift":
            choices = OUTPUT_KIND.get(str(p.evidence.get("kind")), [])
        else:
            continue
        for fam in p.families or ["*"]:
            out.setdefault(fam, list(choices))
    return out


def declared_choice(hypothesis_type: str, sign: int,
                    hypothesis_types: Mapping[str, HypothesisTypeSpec] | None) -> tuple[str, str, str, float]:
    """(type, metric, direction, factor) for a pattern type that declares a hypothesis type
    with no template area (a plugin's own type, capability gain/loss): the type's first
    default metric (``target_logprob`` when it names none), the direction from the sign,
    else the type's default direction."""
    spec = (hypothesis_types or {}).get(hypothesis_type)
    metric = spec.default_metrics[0] if spec is not None and spec.default_metrics else "target_logprob"
    default = spec.default_direction if spec is not None else "change"
    direction = "increase" if sign > 0 else "decrease" if sign < 0 else default
    return hypothesis_type, metric, direction, 1.0


def hypotheses_for(pattern: Pattern, interpretations: Mapping[str, Sequence[FeatureInterpretation]],
                   config: Any = None,
                   typed_families: Mapping[str, list[tuple[str, str, str, float]]] | None = None,
                   family_level: bool = False,
                   pattern_types: Mapping[str, PatternType] | None = None,
                   hypothesis_types: Mapping[str, HypothesisTypeSpec] | None = None) -> list[Hypothesis]:
    """The hypotheses one pattern suggests; priority = strength x weight x factors
    (module docstring, CONTRIBUTING.md "From pattern strength to priority")."""
    families = list(pattern.families)
    known = _universe(config)
    if known:
        families = [f for f in families if f in known]
    typed_families = typed_families or {}
    spec = (pattern_types or {}).get(pattern.pattern_type)
    sign = pattern_sign(pattern, spec)
    tags = set().union(*(interpretation_tags(interpretations.get(f.key, [])) for f in pattern.features)) \
        if pattern.features else set()
    weight = spec.weight if spec is not None else GENERIC_WEIGHT
    diffuse = pattern.pattern_type != "output_shift" and (
        not families or (len(known) >= 4 and len(families) * 2 >= len(known)))
    if diffuse:
        weight *= DIFFUSE
    # an undeclared type counts as feature-level: nothing says it is better evidence
    if family_level and (spec is None or spec.level not in FAMILY_LEVELS):
        weight *= FEATURE_LEVEL
    if pattern.pattern_type == "output_shift":
        choices = list(OUTPUT_KIND.get(str(pattern.evidence.get("kind")), []))
    elif pattern.pattern_type == "answer_change":
        choices = answer_choices(pattern)
    elif pattern.pattern_type == "family_specific_change":
        from_outputs = [typed_families[f] for f in families if f in typed_families]
        if from_outputs:
            choices = [(k, m, d, f * CORROBORATE) for k, m, d, f in from_outputs[0]]
        else:
            choices = list(INTERNAL_ONLY)
    elif pattern.pattern_type == "computation_rerouting":
        choices = [(HT.COMPUTATION_REROUTING.value, "target_logprob", "change", 1.0)]
    else:
        area, _ = infer_area(pattern, interpretations, spec)
        focus = [a for a in (getattr(config, "focus_areas", None) or []) if a in AREAS]
        declared = spec is not None and spec.hypothesis_type and spec.hypothesis_type not in HYPOTHESIS_AREA
        if declared:
            choices = [declared_choice(spec.hypothesis_type, sign, hypothesis_types)]
        elif area is None and focus:
            choices = [(*typed(a, sign, tags, families), FOCUS_STEER_WEIGHT) for a in focus]
        else:
            choices = [(*typed(area, sign, tags, families), 1.0)]
        # unambiguous output evidence (refusal / case flips) on all of the pattern's families
        # points elsewhere: keep the reading as a lower-priority alternative
        typed_here = [typed_families[f] for f in families if f in typed_families]
        ambiguous = any(cs and cs[0][0] == HT.KNOWLEDGE_UPDATE.value for cs in typed_here)
        # (a declared type of its own is what its detector says the pattern means: kept as is)
        if families and len(typed_here) == len(families) and not ambiguous and not declared:
            output_kinds = {c[0] for cs in typed_here for c in cs}
            choices = [(k, m, d, f * (1.0 if k in output_kinds else OFF_OUTPUT))
                       for k, m, d, f in choices]
    contexts = feature_contexts(pattern, interpretations)
    if pattern.pattern_type == "answer_change" and pattern.evidence.get("edit"):
        contexts = [f"the answer {pattern.evidence['edit']}", *contexts][:10]
    fam_text = ", ".join(f"'{f}'" for f in families) if families else "all"
    out = []
    for kind, metric, direction, factor in choices:
        kind_spec = (hypothesis_types or {}).get(kind)
        sentence = (SENTENCE.get(HT(kind), kind.replace("_", " ")) if kind in HT._value2member_map_ else
                    kind_spec.description[:1].upper() + kind_spec.description[1:] if kind_spec is not None
                    and kind_spec.description else kind)
        out.append(Hypothesis(
            id=f"{kind}:{metric}:{direction}:{','.join(families) or 'all'}",
            hypothesis_type=kind,
            description=(f"{sentence} on {fam_text} prompts ({metric} should {direction}), "
                         f"because {pattern.description[:1].lower() + pattern.description[1:]}."),
            metric=metric, direction=direction, families=families, feature_contexts=contexts,
            source_patterns=[pattern.id], source_features=list(pattern.features),
            priority=max(0.0, min(1.0, pattern.strength * weight * factor)),
        ))
    return out
