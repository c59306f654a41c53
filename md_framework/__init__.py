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

def _config_names() -> dict:
    from md_framework.config import AnalysisConfig, ExplorationStrategy, TestingProcedure

    return {"AnalysisConfig": AnalysisConfig, "TestingProcedure": TestingProcedure,
            "ExplorationStrategy": ExplorationStrategy}


def _analyzer() -> dict:
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    return {"MechanisticBehavioralAnalyzer": MechanisticBehavioralAnalyzer}


def _utils() -> dict:
    from md_framework.utils import CircuitCache, check_memory_requirements

    return {"CircuitCache": CircuitCache, "check_memory_requirements": check_memory_requirements}


# the public façade may reach into builtin plugins (lazily): the kernel itself never does
def _explorer() -> dict:
    from builtin_plugins.pipeline.design_stages import ActiveCircuitExplorer

    return {"ActiveCircuitExplorer": ActiveCircuitExplorer}


def _visualizer() -> dict:
    from builtin_plugins.report.visualizer import CircuitVisualizer

    return {"CircuitVisualizer": CircuitVisualizer}


def _test_generator() -> dict:
    from builtin_plugins.test_generators import TestGenerator

    return {"TestGenerator": TestGenerator}


#: public name -> the function importing it on first access, so that ``import md_framework``
#: stays torch-free
_LAZY = {
    "AnalysisConfig": _config_names, "TestingProcedure": _config_names,
    "ExplorationStrategy": _config_names, "MechanisticBehavioralAnalyzer": _analyzer,
    "ActiveCircuitExplorer": _explorer, "CircuitCache": _utils,
    "check_memory_requirements": _utils, "CircuitVisualizer": _visualizer,
    "TestGenerator": _test_generator,
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
        names = _LAZY[name]()
        globals().update(names)
        return names[name]
    from md_framework.errors import did_you_mean

    raise AttributeError(f"module 'md_framework' has no attribute {name!r}.{did_you_mean(name, __all__)}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
