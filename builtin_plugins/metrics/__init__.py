"""Builtin behaviour metrics (pluggy plugin ``behaviour-metrics``, hook ``md_behaviour_metrics``).

The names and meanings follow the table in ``docs/architecture.md``. Everything that touches
torch is imported inside functions (:mod:`builtin_plugins.metrics.core`).
"""

from __future__ import annotations

from md_framework import hookimpl

from builtin_plugins.metrics.core import (
    ALL_METRIC_NAMES,
    ExactMatch,
    Length,
    MetricOptions,
    RefusalProbability,
    RefusalText,
    Sentiment,
    Signoff,
    TargetLogprob,
    UppercaseRatio,
    builtin_metrics,
    clear_generation_cache,
    format_prompt,
    generate_answer_ids,
    generate_answers,
)

__all__ = [
    "ALL_METRIC_NAMES", "ExactMatch", "Length", "MetricOptions", "RefusalProbability",
    "RefusalText", "Sentiment", "Signoff", "TargetLogprob", "UppercaseRatio",
    "builtin_metrics", "clear_generation_cache", "format_prompt", "generate_answer_ids",
    "generate_answers",
]


@hookimpl
def md_behaviour_metrics() -> list:
    return builtin_metrics()


@hookimpl
def md_metric_from_name(name: str):
    """``signoff:<phrase>`` and ``exact_match:<phrase>`` (:mod:`builtin_plugins.metrics.derived`)."""
    from builtin_plugins.metrics.derived import metric_from_name

    return metric_from_name(name)
