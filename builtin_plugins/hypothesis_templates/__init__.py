"""Builtin hypothesis templates (``md_hypotheses_from_patterns``); entry ``hypothesis-templates``.

Covers the builtin detectors' pattern types and any pattern type a plugin declares through
``md_pattern_types`` (generic template: the declared hypothesis type or the area from
interpretations/families, sign from the declared sign key, priority from the declared
weight); an undeclared type gets the generic reading at :data:`GENERIC_WEIGHT`. See
:mod:`builtin_plugins.hypothesis_templates.templates` and ``docs/discovery.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework import hookimpl
from md_framework.types import FeatureInterpretation, Hypothesis, HypothesisTypeSpec, Pattern, PatternType

from builtin_plugins.hypothesis_templates.templates import (
    FAMILY_EVIDENCE_TYPES,
    hypotheses_for,
    output_types,
)


@hookimpl
def md_hypotheses_from_patterns(patterns: Sequence[Pattern],
                                interpretations: Mapping[str, list[FeatureInterpretation]],
                                config: Any, pattern_types: Mapping[str, PatternType],
                                hypothesis_types: Mapping[str, HypothesisTypeSpec]) -> list[Hypothesis]:
    interpretations = interpretations or {}
    pattern_types = pattern_types or {}
    typed = output_types(patterns)
    # the builtin detectors' family-level evidence was computed: feature-level patterns
    # become alternatives (a third party's family-level pattern does not reweigh the builtins')
    family_level = any(p.pattern_type in FAMILY_EVIDENCE_TYPES for p in patterns)
    # a pattern whose detector types its own hypotheses (evidence "self_typed", e.g. the
    # activation-difference lens) gets no generic reading here
    return [h for pattern in patterns if not pattern.evidence.get("self_typed")
            for h in hypotheses_for(pattern, interpretations, config, typed, family_level,
                                    pattern_types, hypothesis_types)]
