"""Builtin pattern detectors (``md_detect_patterns``); entry point ``pattern-detectors``.

Four documented rules (see :mod:`builtin_plugins.patterns.rules` and ``docs/discovery.md``):
``systematic_suppression``, ``capability_emergence``, ``safety_degradation`` /
``safety_enhancement`` and ``computation_rerouting``. ``config`` may be ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from md_framework import hookimpl
from md_framework.types import CircuitDiff, FeatureInterpretation, Pattern

from builtin_plugins.patterns.rules import (
    capability_emergence,
    computation_rerouting,
    safety_change,
    systematic_suppression,
)

__all__ = ["capability_emergence", "computation_rerouting", "safety_change", "systematic_suppression"]


@hookimpl
def md_detect_patterns(diff: CircuitDiff, interpretations: Mapping[str, list[FeatureInterpretation]],
                       config: Any) -> list[Pattern]:
    interpretations = interpretations or {}
    return (systematic_suppression(diff) + capability_emergence(diff)
            + safety_change(diff, interpretations) + computation_rerouting(diff))
