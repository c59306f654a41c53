"""Interpretation -> patterns -> hypotheses: calls the contribute-all hooks, merges, ranks, caps.

* :func:`interpret_features` — ``md_interpret_features``; interpretations grouped by
  ``FeatureRef.key``, ``source`` defaulting to the contributing plugin's name.
* :func:`detect_patterns` — ``md_detect_patterns``; ``Pattern.detector`` = plugin name.
* :func:`generate_hypotheses` — ``md_hypotheses_from_patterns``; ``provenance`` = the
  template plugin's name, then the detector plugins of the hypothesis's source patterns;
  duplicates (same type, metric, direction and families) are merged, ranked by priority
  (focus areas steer it) and capped at ``max_hypotheses_to_test``.
* :func:`generate_focused_hypotheses` and :func:`discover` — the whole stage.

Torch-free. ``hooks=None`` means md-framework's own plugins only, loaded through their
entry points (:func:`builtin_hooks`; no builtin package is imported here); pass a
:class:`~md_framework.plugins.Hooks` over a full plugin manager to include third-party
detectors and templates.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from md_framework.hookspecs import hookimpl
from md_framework.config import AnalysisConfig
from md_framework.detector_api import EXPLORATORY_Q
from md_framework.errors import did_you_mean
from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.runtime import InterpretationContext
from md_framework.types import (
    CircuitDiff,
    DiscoveryResult,
    DroppedHypothesis,
    FeatureInterpretation,
    FeatureRef,
    Hypothesis,
    HypothesisType,
    HypothesisTypeSpec,
    Pattern,
    PatternType,
)

#: features handed to the interpreters besides the screened ones: the best-ranked N
DEFAULT_MAX_FEATURES = 32
#: discover() drops hypotheses below this priority (context key min_hypothesis_priority):
#: weak, feature-level-only evidence is not worth validation budget
MIN_PRIORITY = 0.3


def builtin_hooks() -> Hooks:
    """Hooks over md-framework's own plugins, loaded through their entry points like any
    plugin (third-party entry points are not scanned): what ``hooks=None`` means here."""
    return Hooks(get_plugin_manager(autoload=False))


def _max_hypotheses(config: AnalysisConfig | None) -> int:
    if config is not None:
        return config.max_hypotheses_to_test
    return AnalysisConfig.model_fields["max_hypotheses_to_test"].default


# --------------------------------------------------------------------------- registries


def pattern_types(hooks: Hooks | None) -> dict[str, PatternType]:
    """The pattern types the plugins declare (``md_pattern_types``), by name. A name
    declared twice keeps the first declaration and warns (names are unique across plugins)."""
    hooks = hooks or builtin_hooks()
    out: dict[str, PatternType] = {}
    owner: dict[str, str] = {}
    for contribution in hooks.collect("md_pattern_types"):
        spec = contribution.value
        if not isinstance(spec, PatternType):
            spec = PatternType.model_validate(spec)
        if spec.name in out:
            warnings.warn(f'pattern type "{spec.name}" is declared by both {owner[spec.name]} and'
                          f" {contribution.plugin}; {owner[spec.name]}'s declaration is used", stacklevel=2)
            continue
        out[spec.name], owner[spec.name] = spec, contribution.plugin
    return out


def hypothesis_types(hooks: Hooks | None) -> dict[str, HypothesisTypeSpec]:
    """The hypothesis types plugins declare (``md_hypothesis_types``), by name; the builtin
    ``HypothesisType`` values are always known (with an empty spec when no plugin describes
    them)."""
    hooks = hooks or builtin_hooks()
    out: dict[str, HypothesisTypeSpec] = {}
    for contribution in hooks.collect("md_hypothesis_types"):
        spec = contribution.value
        out.setdefault(spec.name, spec)
    for kind in HypothesisType:
        out.setdefault(kind.value, HypothesisTypeSpec(name=kind.value, description=kind.value.replace("_", " ")))
    return out


def unregistered_pattern_types(patterns: Sequence[Pattern], registry: Mapping[str, PatternType]) -> list[str]:
    """Pattern types among ``patterns`` that no plugin declared through ``md_pattern_types``."""
    return sorted({p.pattern_type for p in patterns if p.pattern_type not in registry})


def _warn_unregistered(patterns: Sequence[Pattern], registry: Mapping[str, PatternType]) -> list[str]:
    unknown = unregistered_pattern_types(patterns, registry)
    for name in unknown:
        detectors = sorted({p.detector for p in patterns if p.pattern_type == name and p.detector})
        warnings.warn(
            f'pattern type "{name}" (from {", ".join(detectors) or "an unnamed detector"}) is not'
            f" declared by any plugin's md_pattern_types.{did_you_mean(name, registry)} Its"
            " patterns get only the generic, down-weighted template reading; declare it"
            " (level, hypothesis_type, sign_key, weight) to give it its own (CONTRIBUTING.md)",
            stacklevel=3)
    return unknown


# --------------------------------------------------------------------------- interpretation


def normalise_interpretations(data: Any) -> dict[str, list[FeatureInterpretation]]:
    """Accept ``{key: [FeatureInterpretation]}``, ``{key: FeatureInterpretation}``, the seed
    README's ``{"layer:feature": "description"}``, Neuronpedia-style records or a JSON path."""
    if not data:
        return {}
    if isinstance(data, Mapping) and all(
        isinstance(v, list) and all(isinstance(i, FeatureInterpretation) for i in v) for v in data.values()
    ):
        return {str(k): list(v) for k, v in data.items()}
    from builtin_plugins.interpreters.user import by_key, parse_user_interpretations

    return by_key(parse_user_interpretations(data))


def interpret_features(hooks: Hooks | None, features: Sequence[FeatureRef],
                       context: InterpretationContext | Mapping[str, Any] | None = None
                       ) -> dict[str, list[FeatureInterpretation]]:
    hooks = hooks or builtin_hooks()
    out: dict[str, list[FeatureInterpretation]] = {}
    for contribution in hooks.collect("md_interpret_features", features=list(features),
                                      context=InterpretationContext.of(context)):
        interp: FeatureInterpretation = contribution.value
        if not interp.source:
            interp = interp.model_copy(update={"source": contribution.plugin})
        out.setdefault(interp.feature.key, []).append(interp)
    return out


def features_to_interpret(diff: CircuitDiff, max_features: int = DEFAULT_MAX_FEATURES) -> list[FeatureRef]:
    """Screened changes (q <= EXPLORATORY_Q) plus the best-ranked ``max_features``."""
    ranked = sorted(diff.systematic_changes, key=lambda c: (c.q_value if c.q_value is not None else
                                                           c.p_value if c.p_value is not None else 1.0))
    chosen: dict[str, FeatureRef] = {}
    for i, change in enumerate(ranked):
        q = change.q_value if change.q_value is not None else 1.0
        if q <= EXPLORATORY_Q or i < max_features:
            chosen.setdefault(change.feature.key, change.feature)
    return list(chosen.values())


# --------------------------------------------------------------------------- patterns


def detect_patterns(hooks: Hooks | None, diff: CircuitDiff,
                    interpretations: Mapping[str, list[FeatureInterpretation]] | None,
                    config: AnalysisConfig | None) -> list[Pattern]:
    hooks = hooks or builtin_hooks()
    patterns: list[Pattern] = []
    seen: set[str] = set()
    for contribution in hooks.collect("md_detect_patterns", diff=diff,
                                      interpretations=dict(interpretations or {}), config=config):
        pattern: Pattern = contribution.value
        update: dict[str, Any] = {"detector": contribution.plugin}
        if pattern.id in seen:
            update["id"] = f"{contribution.plugin}:{pattern.id}"
        pattern = pattern.model_copy(update=update)
        seen.add(pattern.id)
        patterns.append(pattern)
    _warn_unregistered(patterns, pattern_types(hooks))
    return patterns


# --------------------------------------------------------------------------- hypotheses


def _union(*lists: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for items in lists:
        for item in items:
            if item not in out:
                out.append(item)
    return out


def _dedupe_key(h: Hypothesis) -> tuple:
    return (h.hypothesis_type, h.metric, h.direction, tuple(sorted(h.families)))


def _overlap(a: Hypothesis, b: Hypothesis) -> bool:
    if a.hypothesis_type != b.hypothesis_type or a.metric != b.metric or a.direction != b.direction:
        return False
    if not a.families or not b.families:
        return not a.families and not b.families
    return bool(set(a.families) & set(b.families))


def merge_hypotheses(hypotheses: Sequence[Hypothesis]) -> list[Hypothesis]:
    """Merge hypotheses with the same type, metric and direction whose families overlap
    (or that both name no family).

    Members are taken strongest first; the merged hypothesis keeps the strongest member's
    families and description (the most specific evidence says where it shows), its priority
    is the noisy-or ``1 - prod(1 - p_i)`` of the members (independent patterns pointing
    the same way corroborate each other); provenance, patterns and features are unioned."""
    merged: list[Hypothesis] = []
    kinds: list[dict[str, float]] = []  # per merged hypothesis: evidence kind -> best priority
    for h in sorted(hypotheses, key=lambda h: -h.priority):
        kind = _evidence_kind(h)
        for i, m in enumerate(merged):
            if not _overlap(m, h):
                continue
            kinds[i][kind] = max(kinds[i].get(kind, 0.0), h.priority)
            none = 1.0
            for p in kinds[i].values():
                none *= 1.0 - p
            merged[i] = m.model_copy(update={
                "priority": min(1.0, 1.0 - none),
                "feature_contexts": _union(m.feature_contexts, h.feature_contexts)[:20],
                "source_patterns": _union(m.source_patterns, h.source_patterns),
                "source_features": _union(m.source_features, h.source_features),
                "provenance": _union(m.provenance, h.provenance),
            })
            break
        else:
            merged.append(h)
            kinds.append({kind: h.priority})
    return merged


def _evidence_kind(h: Hypothesis) -> str:
    """The kind of evidence behind a hypothesis: its first source pattern's id prefix
    (``output_shift``, ``family_specific``, ``suppression``, ``lab``...). Many patterns of
    one kind (e.g. suppression patterns over overlapping family sets) are one piece of
    evidence, not independent corroboration."""
    first = h.source_patterns[0] if h.source_patterns else h.hypothesis_type
    return first.split(":", 1)[0]


def _hypothesis_id(h: Hypothesis) -> str:
    fams = ",".join(sorted(h.families)) or "all"
    return re.sub(r"[^A-Za-z0-9_.,:+-]", "_", f"{h.hypothesis_type}:{h.metric}:{h.direction}:{fams}")


def rank_hypotheses(hypotheses: Sequence[Hypothesis], focus_areas: Sequence[str] = ()) -> list[Hypothesis]:
    """Sort by priority; with focus areas, the focused types come first (each group by
    priority). Priorities are left as they are: focus orders the work and the budget, it
    never pushes a change under the priority floor (config.FOCUS_AREAS, docs/api.md)."""
    from md_framework.config import focus_types

    focused = focus_types(focus_areas)
    return sorted(hypotheses, key=lambda h: (bool(focused) and h.hypothesis_type not in focused,
                                             -h.priority, h.id))


def generate_hypotheses(
    patterns: Sequence[Pattern],
    feature_interpretations: Any = None,
    *,
    hooks: Hooks | None = None,
    config: AnalysisConfig | None = None,
    focus_areas: Sequence[str] | None = None,
    max_hypotheses: int | None = None,
) -> list[Hypothesis]:
    """Hypotheses from patterns: templates -> provenance -> merge -> rank -> cap.

    ``feature_interpretations`` takes interpretations grouped by key or any form
    :func:`normalise_interpretations` accepts. ``focus_areas`` (default
    ``config.focus_areas``) reaches the templates through the config and steers ranking.
    """
    hooks = hooks or builtin_hooks()
    interpretations = normalise_interpretations(feature_interpretations)
    focus = list(focus_areas if focus_areas is not None else (config.focus_areas if config else []))
    if focus and (config is None or list(config.focus_areas) != focus):
        config = (config.model_copy(update={"focus_areas": focus}) if config is not None else
                  AnalysisConfig(base_model="unknown", intervention_model="unknown", focus_areas=focus))
    detector_of = {p.id: p.detector for p in patterns}
    produced: list[Hypothesis] = []
    for contribution in hooks.collect("md_hypotheses_from_patterns", patterns=list(patterns),
                                      interpretations=interpretations, config=config,
                                      pattern_types=pattern_types(hooks),
                                      hypothesis_types=hypothesis_types(hooks)):
        h: Hypothesis = contribution.value
        detectors = [detector_of[p] for p in h.source_patterns if detector_of.get(p)]
        h = h.model_copy(update={"provenance": _union(h.provenance, [contribution.plugin], detectors)})
        produced.append(h.model_copy(update={"id": _hypothesis_id(h)}))
    ranked = rank_hypotheses(merge_hypotheses(produced), focus)
    cap = max_hypotheses if max_hypotheses is not None else _max_hypotheses(config)
    return ranked[:cap]


def generate_focused_hypotheses(
    diff: CircuitDiff,
    focus_areas: Sequence[str] = (),
    *,
    hooks: Hooks | None = None,
    config: AnalysisConfig | None = None,
    feature_interpretations: Any = None,
    context: Mapping[str, Any] | None = None,
) -> list[Hypothesis]:
    """Patterns of ``diff`` -> hypotheses steered to ``focus_areas`` ("safety", "style",
    "knowledge", "reasoning", "bias", "capability", "rerouting")."""
    hooks = hooks or builtin_hooks()
    focus = list(focus_areas)
    if config is not None:
        config = config.model_copy(update={"focus_areas": focus})
    interpretations = normalise_interpretations(feature_interpretations)
    if context:
        found = interpret_features(hooks, features_to_interpret(diff),
                                   InterpretationContext.of(context, config=config))
        for key, items in found.items():
            interpretations.setdefault(key, []).extend(items)
    patterns = detect_patterns(hooks, diff, interpretations, config)
    return generate_hypotheses(patterns, interpretations, hooks=hooks, config=config, focus_areas=focus)


def select_hypotheses(patterns: Sequence[Pattern], interpretations: Any, hooks: Hooks | None,
                      config: AnalysisConfig | None, floor: float = MIN_PRIORITY
                      ) -> tuple[list[Hypothesis], list[DroppedHypothesis]]:
    """What the analysis tests, and what it does not: hypotheses at or above the priority
    ``floor``, the focus areas' first, capped at ``max_hypotheses_to_test`` (the floor
    comes before the cap); every other hypothesis is returned as dropped with its reason,
    so the report can say what was left untested and why."""
    every = 10 ** 9  # all of them: the dropped ones are reported, not cut silently
    hypotheses = generate_hypotheses(patterns, interpretations, hooks=hooks, config=config,
                                     max_hypotheses=every)
    if config is not None and config.focus_areas:
        # focus steers templates to its areas; the unsteered readings are kept behind the
        # focused ones, so a focus orders the work and never hides a change
        plain = generate_hypotheses(patterns, interpretations, hooks=hooks,
                                    config=config.model_copy(update={"focus_areas": []}),
                                    max_hypotheses=every)
        hypotheses = rank_hypotheses(merge_hypotheses([*hypotheses, *plain]), config.focus_areas)
    cap = _max_hypotheses(config)
    kept: list[Hypothesis] = []
    dropped: list[DroppedHypothesis] = []
    for h in hypotheses:
        if h.priority < floor:
            dropped.append(DroppedHypothesis(
                hypothesis=h, reason="below_floor", limit=floor,
                detail=f"priority {h.priority:.3f} below the floor {floor:.2f}"))
        elif len(kept) >= cap:
            dropped.append(DroppedHypothesis(
                hypothesis=h, reason="over_cap", limit=float(cap),
                detail=f"over the cap of {cap} (max_hypotheses_to_test); priority {h.priority:.3f}"))
        else:
            kept.append(h)
    return kept, dropped


def hypotheses_to_test(patterns: Sequence[Pattern], interpretations: Any, hooks: Hooks | None,
                       config: AnalysisConfig | None, floor: float = MIN_PRIORITY) -> list[Hypothesis]:
    """The hypotheses :func:`select_hypotheses` keeps."""
    return select_hypotheses(patterns, interpretations, hooks, config, floor)[0]


def discover_stage(
    diff: CircuitDiff,
    hooks: Hooks | None,
    config: AnalysisConfig | None,
    context: InterpretationContext | Mapping[str, Any] | None = None,
) -> DiscoveryResult:
    """The discovery stage: interpret the screened features, detect patterns, generate
    hypotheses, keep those above the priority floor and under the cap. ``context`` is the
    interpreter context (docs/discovery.md); its ``max_features_to_interpret`` bounds the
    interpreted set, ``min_hypothesis_priority`` sets the floor."""
    hooks = hooks or builtin_hooks()
    context = InterpretationContext.of(context)
    if context.config is None:
        context = context.model_copy(update={"config": config})
    features = features_to_interpret(diff, int(context.get("max_features_to_interpret", DEFAULT_MAX_FEATURES)))
    interpretations = interpret_features(hooks, features, context)
    registry = pattern_types(hooks)
    found = detect_patterns(hooks, diff, interpretations, config)
    patterns = select_evidence(found, getattr(config, "discovery_evidence", "all"), registry)
    floor = float(context.get("min_hypothesis_priority", MIN_PRIORITY))
    kept, dropped = select_hypotheses(patterns, interpretations, hooks, config, floor)
    return DiscoveryResult(interpretations, patterns, kept, dropped,
                           unregistered_pattern_types(found, registry))


def discover(
    diff: CircuitDiff,
    hooks: Hooks | None,
    config: AnalysisConfig | None,
    context: InterpretationContext | Mapping[str, Any] | None = None,
) -> tuple[dict[str, list[FeatureInterpretation]], list[Pattern], list[Hypothesis]]:
    """:func:`discover_stage` without the dropped hypotheses: (interpretations, patterns,
    hypotheses to test)."""
    result = discover_stage(diff, hooks, config, context)
    return result.interpretations, result.patterns, result.hypotheses


def is_output_evidence(pattern: Pattern, registry: Mapping[str, PatternType] | None = None) -> bool:
    """Whether ``pattern`` reads the models' outputs: its registered type's ``level`` is
    ``output`` (``registry`` defaults to the builtin plugins' pattern types)."""
    registry = pattern_types(None) if registry is None else registry
    spec = registry.get(pattern.pattern_type)
    return spec is not None and spec.level == "output"


def select_evidence(patterns: Sequence[Pattern], evidence: str = "all",
                    registry: Mapping[str, PatternType] | None = None) -> list[Pattern]:
    """Patterns allowed to form hypotheses: ``all``, ``output`` (output evidence only) or
    ``internal`` (feature changes only); config ``discovery_evidence``. Output patterns
    dropped under ``internal`` also stop typing families for the internal ones."""
    if evidence == "all":
        return list(patterns)
    registry = pattern_types(None) if registry is None else registry
    if evidence == "output":
        return [p for p in patterns if is_output_evidence(p, registry)]
    if evidence == "internal":
        return [p for p in patterns if not is_output_evidence(p, registry)]
    return list(patterns)


def evidence_of(hypothesis: Hypothesis, patterns: Sequence[Pattern],
                registry: Mapping[str, PatternType] | None = None) -> str:
    """``output``, ``internal`` or ``both``: the kinds of the hypothesis' source patterns."""
    registry = pattern_types(None) if registry is None else registry
    by_id = {p.id: p for p in patterns}
    kinds = {"output" if is_output_evidence(by_id[i], registry) else "internal"
             for i in hypothesis.source_patterns if i in by_id}
    return "both" if len(kinds) == 2 else kinds.pop() if kinds else "internal"


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_patterns(hooks: Hooks, diff: CircuitDiff,
                      interpretations: Mapping[str, list[FeatureInterpretation]],
                      config: AnalysisConfig | None) -> list[Pattern]:
    return detect_patterns(hooks, diff, interpretations, config)


@hookimpl
def md_stage_discover(hooks: Hooks, diff: CircuitDiff, config: AnalysisConfig,
                      context: InterpretationContext) -> DiscoveryResult:
    return discover_stage(diff, hooks, config, context)
