"""md-framework: mechanistic discovery of how a language model changed after an intervention.

The kernel imports without torch. Heavy dependencies are imported inside the plugins that
need them.
"""

from __future__ import annotations

from md_framework.hookspecs import hookimpl, hookspec
from md_framework.types import (
    AnalysisReport,
    CircuitDiff,
    CircuitGraph,
    FeatureInterpretation,
    FeatureRef,
    Hypothesis,
    HypothesisType,
    Observation,
    Pattern,
    TestCase,
    ValidationResult,
)

__version__ = "0.1.0"

__all__ = [
    "AnalysisConfig",
    "AnalysisReport",
    "CircuitDiff",
    "CircuitGraph",
    "FeatureInterpretation",
    "FeatureRef",
    "Hypothesis",
    "HypothesisType",
    "Observation",
    "Pattern",
    "TestCase",
    "ValidationResult",
    "__version__",
    "hookimpl",
    "hookspec",
]


def __getattr__(name: str):  # lazy: config pulls in nothing heavy, but keep import minimal
    if name == "AnalysisConfig":
        from md_framework.config import AnalysisConfig

        return AnalysisConfig
    raise AttributeError(f"module 'md_framework' has no attribute {name!r}")
