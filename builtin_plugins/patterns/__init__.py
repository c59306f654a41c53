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
from md_framework.types import CircuitDiff, FeatureInterpretation, Pattern

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


@hookimpl
def md_detect_patterns(diff: CircuitDiff, interpretations: Mapping[str, list[FeatureInterpretation]],
                       config: Any) -> list[Pattern]:
    interpretations = interpretations or {}
    return (systematic_suppression(diff) + capability_emergence(diff)
            + safety_change(diff, interpretations) + computation_rerouting(diff)
            + output_shift(diff) + family_specific_change(diff) + answer_change(diff))
