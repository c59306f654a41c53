"""md-framework: mechanistic discovery of how a language model changed after an intervention.

The kernel imports without torch. Heavy dependencies are imported inside the plugins that
need them. The design document's public names (``MechanisticBehavioralAnalyzer``,
``AnalysisConfig``, ``TestingProcedure``, ``ExplorationStrategy``, ``ActiveCircuitExplorer``,
``CircuitCache``, ``CircuitVisualizer``, ``TestGenerator``, ``check_memory_requirements``)
are importable from here and load their modules on first use (docs/api.md).
"""

from __future__ import annotations

from md_framework.hookspecs import hookimpl, hookspec
from md_framework.types import (
    AnalysisReport,
    CircuitDiff,
    CircuitGraph,
    EffectSize,
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

#: public name -> (module, attribute); imported on first access so that ``import
#: md_framework`` stays torch-free
_LAZY = {
    "AnalysisConfig": ("md_framework.config", "AnalysisConfig"),
    "TestingProcedure": ("md_framework.config", "TestingProcedure"),
    "ExplorationStrategy": ("md_framework.config", "ExplorationStrategy"),
    "MechanisticBehavioralAnalyzer": ("md_framework.pipeline.analyzer", "MechanisticBehavioralAnalyzer"),
    "ActiveCircuitExplorer": ("md_framework.stages", "ActiveCircuitExplorer"),
    "CircuitCache": ("md_framework.utils", "CircuitCache"),
    "check_memory_requirements": ("md_framework.utils", "check_memory_requirements"),
    # the public façade may reach into builtin plugins (lazily): the kernel itself never does
    "CircuitVisualizer": ("builtin_plugins.report.visualizer", "CircuitVisualizer"),
    "TestGenerator": ("builtin_plugins.test_generators", "TestGenerator"),
}

__all__ = [
    "AnalysisReport",
    "CircuitDiff",
    "CircuitGraph",
    "EffectSize",
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
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    from md_framework.errors import did_you_mean

    raise AttributeError(f"module 'md_framework' has no attribute {name!r}.{did_you_mean(name, __all__)}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
