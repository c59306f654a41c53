"""Builtin pattern detectors (``md_detect_patterns``); entry point ``pattern-detectors``.

Seven rules (see :mod:`builtin_plugins.patterns.rules` and ``docs/discovery.md``):
``systematic_suppression``, ``capability_emergence``, ``safety_degradation`` /
``safety_enhancement``, ``computation_rerouting``, and the family-level ``output_shift``
(top-token flips typed as refusal / case / content) and ``family_specific_change``
(:mod:`builtin_plugins.patterns.outputs`), and ``answer_change`` over the answer-aware
traces (:mod:`builtin_plugins.patterns.answers`). ``config`` may be ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from md_framework import hookimpl
from md_framework.types import CircuitDiff, FeatureInterpretation, Pattern, PatternType

from builtin_plugins.patterns.answers import answer_change
from builtin_plugins.patterns.outputs import family_specific_change, output_shift
from builtin_plugins.patterns.rules import (
    capability_emergence,
    computation_rerouting,
    safety_change,
    systematic_suppression,
)

__all__ = ["answer_change", "capability_emergence", "computation_rerouting", "family_specific_change", "output_shift",
           "safety_change", "systematic_suppression"]


#: the pattern types these detectors emit (weights: docs/discovery.md; what a level means:
#: md_framework.types.PatternLevel)
PATTERN_TYPES = [
    PatternType(name="output_shift", level="output", weight=1.0,
                description="next-token flips on a family, typed as refusal / case / content"),
    PatternType(name="answer_change", level="output", weight=1.0,
                description="edits of the greedy answer on a family (appended, inserted, replaced words)"),
    PatternType(name="family_specific_change", level="circuit", weight=0.9,
                description="features whose change is specific to a family (family contrasts)"),
    PatternType(name="computation_rerouting", level="circuit", hypothesis_type="computation_rerouting",
                weight=0.7, description="same top output through different top-path features"),
    PatternType(name="systematic_suppression", level="feature", sign=-1, sign_key="total_delta",
                weight=0.9, description="features consistently less active"),
    PatternType(name="capability_emergence", level="feature", sign=1, weight=0.9,
                description="features newly recruited, or on recurring new top paths"),
    PatternType(name="safety_degradation", level="feature", hypothesis_type="safety_degradation",
                sign=-1, weight=1.0, description="refusal/harm features weakened"),
    PatternType(name="safety_enhancement", level="feature", hypothesis_type="safety_enhancement",
                sign=1, weight=0.95, description="refusal/harm features strengthened"),
]


@hookimpl
def md_pattern_types() -> list[PatternType]:
    return list(PATTERN_TYPES)


@hookimpl
def md_detect_patterns(diff: CircuitDiff, interpretations: Mapping[str, list[FeatureInterpretation]],
                       config: Any) -> list[Pattern]:
    interpretations = interpretations or {}
    return (systematic_suppression(diff) + capability_emergence(diff)
            + safety_change(diff, interpretations) + computation_rerouting(diff)
            + output_shift(diff) + family_specific_change(diff) + answer_change(diff))
