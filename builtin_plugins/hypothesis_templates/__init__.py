"""Builtin hypothesis templates (``md_hypotheses_from_patterns``); entry ``hypothesis-templates``.

Covers the builtin detectors' pattern types, the ``md-lab-patterns`` example's
``family_concentrated_change`` and ``late_layer_shift``, and any other pattern type
(generic template: area from interpretations/families, sign from evidence). See
:mod:`builtin_plugins.hypothesis_templates.templates` and ``docs/discovery.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework import hookimpl
from md_framework.types import FeatureInterpretation, Hypothesis, Pattern

from builtin_plugins.hypothesis_templates.templates import (
    FAMILY_LEVEL_TYPES,
    hypotheses_for,
    output_types,
)


@hookimpl
def md_hypotheses_from_patterns(patterns: Sequence[Pattern],
                                interpretations: Mapping[str, list[FeatureInterpretation]],
                                config: Any) -> list[Hypothesis]:
    interpretations = interpretations or {}
    typed = output_types(patterns)
    family_level = any(p.pattern_type in FAMILY_LEVEL_TYPES and p.pattern_type != "computation_rerouting"
                       for p in patterns)
    # a pattern whose detector types its own hypotheses (evidence "self_typed", e.g. the
    # activation-difference lens) gets no generic reading here
    return [h for pattern in patterns if not pattern.evidence.get("self_typed")
            for h in hypotheses_for(pattern, interpretations, config, typed, family_level)]
