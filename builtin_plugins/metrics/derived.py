"""Metrics made from what the diff saw (``<builtin metric>:<phrase>``).

Discovery's answer-aware detectors name a phrase the intervention adds or removes; no fixed
metric lists it (the builtin ``signoff`` knows a dozen phrases). These metrics are the
builtin generated metrics with that one phrase as their reference:

* ``signoff:<phrase>`` - 1 if the greedy answer ends with the phrase (words compared
  case-insensitively, punctuation kept as words, so ``have a nice day !`` must end it);
* ``exact_match:<phrase>`` - 1 if the greedy answer contains the phrase as whole words.

Both decode once per (model, prompt) through the shared generation cache, like every
generated metric, and ignore ``TestCase.target`` (the phrase is the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from md_framework.runtime import LoadedModel
from md_framework.types import TestCase

from builtin_plugins.metrics.core import MetricOptions, _Generated

#: ``<base>:<phrase>`` prefixes this module builds
DERIVED_BASES = ("signoff", "exact_match")


def _words(text: str) -> list[str]:
    return text.lower().split()


class _PhraseMetric(_Generated):
    """A binary generated metric with one phrase as its reference, named ``<prefix>:<phrase>``."""

    prefix = ""
    #: completes "1 if the greedy answer ... '<phrase>'"
    relation = ""
    outcome = "binary"
    bounds = (0.0, 1.0)
    min_change = 0.05

    def __init__(self, phrase: str, options: MetricOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.phrase = " ".join(phrase.split())
        self.name = f"{self.prefix}:{self.phrase}"
        self.description = f"1 if the greedy answer {self.relation} '{self.phrase}'"


class PhraseSignoff(_PhraseMetric):
    """1 if the greedy answer ends with ``phrase`` (word-level, case-insensitive)."""

    serves = frozenset({"style_change"})
    prefix, relation = "signoff", "ends with"

    def score(self, text: str, n_tokens: int, case: TestCase, model: LoadedModel) -> float:
        want, words = _words(self.phrase), _words(text)
        return float(bool(want) and words[-len(want):] == want)


class PhraseMatch(_PhraseMetric):
    """1 if the greedy answer contains ``phrase`` as consecutive whole words."""

    serves = frozenset({"capability_gain", "capability_loss", "knowledge_update",
                        "reasoning_change", "style_change"})
    prefix, relation = "exact_match", "contains"

    def score(self, text: str, n_tokens: int, case: TestCase, model: LoadedModel) -> float:
        want, words = _words(self.phrase), _words(text)
        n = len(want)
        return float(bool(want) and any(words[i:i + n] == want for i in range(len(words) - n + 1)))


def metric_from_name(name: str, options: MetricOptions | dict[str, Any] | None = None) -> Any:
    """The derived metric ``name`` (``signoff:<phrase>`` / ``exact_match:<phrase>``), or None."""
    base, sep, phrase = name.partition(":")
    if not sep or not phrase.strip():
        return None
    if base == "signoff":
        return PhraseSignoff(phrase, options)
    if base == "exact_match":
        return PhraseMatch(phrase, options)
    return None


def measure_texts(metric: Any, texts: Sequence[str]) -> list[float]:
    """Score already generated answers (tests and reports)."""
    dummy = TestCase(id="x", hypothesis_id="x", prompt="")
    return [metric.score(t, len(t.split()), dummy, None) for t in texts]
