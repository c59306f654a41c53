"""Builtin plugin ``activation-difference-lens``: the ADL stage (:mod:`builtin_plugins.adl.lens`).

Switched by ``AnalysisConfig.activation_difference_lens.enabled`` (off by default). When on,
``md_detect_patterns`` loads the pair, computes the difference directions on the fixed
generic prompts, maps the strongest onto the families of the traced discovery prompts (where
it fires on the base model) and returns one ``activation_difference_lens`` pattern per named
family; ``md_hypotheses_from_patterns`` types them from the lens tokens and steered texts.
The pattern carries ``self_typed`` evidence so the generic template leaves it alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework import hookimpl
from md_framework.types import CircuitDiff, FeatureInterpretation, Hypothesis, Pattern, PatternType

from builtin_plugins.adl.lens import ADLResult, activation_difference_lens

PATTERN_TYPE = "activation_difference_lens"
__all__ = ["PATTERN_TYPE", "activation_difference_lens", "patterns_from_result"]


def _options(config: Any) -> Any:
    return getattr(config, "activation_difference_lens", None)


def patterns_from_result(result: ADLResult) -> list[Pattern]:
    """One pattern per named family, strength from its z score (z/3, capped at 1)."""
    best = next(d for d in result.directions if d.layer == result.layer)
    out = []
    for fam in result.named_families:
        z = result.family_scores.get(fam, 0.0)
        out.append(Pattern(
            id=f"adl:{fam}:L{result.layer}", pattern_type=PATTERN_TYPE, families=[fam],
            strength=max(0.05, min(1.0, z / 3.0)),
            description=(f"the mean activation difference at layer {result.layer} on "
                         f"{len(result.prompts)} generic prompts fires most on '{fam}' prompts "
                         f"of the base model (z={z:.2f}); its logit lens promotes "
                         f"{', '.join(repr(t) for t in best.lens_tokens[:8])}"),
            evidence={"self_typed": True, "z": z, "layer": result.layer,
                      "lens_tokens": best.lens_tokens, "steered": best.steered, "tags": best.tags,
                      "family_scores": dict(result.family_scores),
                      "candidates": [list(c) for c in result.hypotheses],
                      "cost": dict(result.cost)}))
    return out


@hookimpl
def md_pattern_types() -> list[PatternType]:
    # typed by this plugin's own template (evidence self_typed); the weight is not used by
    # the generic template, which skips these patterns
    return [PatternType(name=PATTERN_TYPE, level="feature", weight=1.0,
                        description="the activation difference on generic prompts, mapped to a family")]


@hookimpl
def md_detect_patterns(diff: CircuitDiff, interpretations: Mapping[str, list[FeatureInterpretation]],
                       config: Any) -> list[Pattern]:
    options = _options(config)
    if options is None or not options.enabled:
        return []
    from md_framework.runtime import ModelLoadOptions
    from md_framework.tracing import load_model

    families: dict[str, list[str]] = {}
    for pd in diff.prompt_diffs:
        if pd.family is not None and pd.prompt not in families.setdefault(pd.family, []):
            families[pd.family].append(pd.prompt)
    if not families:
        return []
    load = ModelLoadOptions(device=config.device, dtype=config.dtype,
                            quantization=config.quantization, cache_dir=config.cache_dir)
    base = load_model(config.base_model, load)
    intervention = load_model(config.intervention_model, load)
    result = activation_difference_lens(base, intervention, families, options, seed=config.seed)
    return patterns_from_result(result)


@hookimpl
def md_hypotheses_from_patterns(patterns: Sequence[Pattern],
                                interpretations: Mapping[str, list[FeatureInterpretation]],
                                config: Any) -> list[Hypothesis]:
    out = []
    for p in patterns:
        if p.pattern_type != PATTERN_TYPE:
            continue
        fams = ",".join(p.families)
        for kind, metric, direction, factor in p.evidence.get("candidates", []):
            out.append(Hypothesis(
                id=f"{kind}:{metric}:{direction}:{fams}", hypothesis_type=kind,
                description=(f"{kind.replace('_', ' ')} on {fams} prompts ({metric} should "
                             f"{direction}), because {p.description}."),
                metric=metric, direction=direction, families=list(p.families),
                feature_contexts=[str(t) for t in p.evidence.get("steered", [])][:5],
                source_patterns=[p.id], priority=max(0.0, min(1.0, p.strength * float(factor)))))
    return out
