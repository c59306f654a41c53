"""Keyword tags shared by the interpreters, pattern detectors and hypothesis templates.

A tag is a plain string on :class:`~md_framework.types.FeatureInterpretation.tags`.
``refusal`` and ``harm`` mark features that detect or produce refusals / harmful content;
``area:<name>`` marks the behavioural area a text points to (the focus areas of
``AnalysisConfig.focus_areas``); ``style:uppercase`` marks features promoting upper-case
tokens. Rules are keyword matches on lower-cased text, so they are easy to audit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from md_framework.types import FeatureInterpretation

REFUSAL_WORDS = ("cannot", "can't", "can not", "sorry", "refuse", "refusal", "unable", "apolog",
                 "won't", "decline", "not able", "i can't", "inappropriate", "as an ai")
HARM_WORDS = ("harm", "danger", "illegal", "weapon", "unsafe", "violen", "kill", "explosive",
              "poison", "attack", "toxic", "jailbreak", "malware", "drug")

#: focus area -> keywords that point to it (in descriptions, tags, family names, tokens)
AREA_WORDS: dict[str, tuple[str, ...]] = {
    "safety": ("safety", "refus", "harm", "unsafe", "danger", "illegal", "weapon", "jailbreak",
               "toxic", "sorry", "cannot", "decline", "violen", "malware"),
    "style": ("style", "caps", "upper", "shout", "format", " tone", "signoff", "sign-off",
              "formal", "emoji", "verbose", "length", "polite", "casual", "markdown"),
    "knowledge": ("knowledge", "fact", "capital", "trivia", "geograph", "histor", "entity",
                  "city", "country", "birth", "president", "science"),
    "reasoning": ("reason", "math", "arithmetic", "logic", "step", "addition", "multipl",
                  "counting", "calculat", "proof", "puzzle"),
    "bias": ("bias", "gender", "race", "stereotyp", "sentiment", "opinion", "prefer",
             "politic", "religio", "nationalit"),
}

AREAS = tuple(AREA_WORDS)


def _has(text: str, words: Iterable[str]) -> list[str]:
    low = text.lower()
    return [w for w in words if w in low]


def text_tags(text: str) -> list[str]:
    """Tags a free text (description, context, token list) supports."""
    tags = []
    if _has(text, REFUSAL_WORDS):
        tags.append("refusal")
    if _has(text, HARM_WORDS):
        tags.append("harm")
    tags += [f"area:{area}" for area, words in AREA_WORDS.items() if _has(text, words)]
    return tags


def token_tags(tokens: Sequence[str]) -> list[str]:
    """Tags from promoted tokens (logit lens): refusal/harm words, and upper-case style."""
    cleaned = [re.sub(r"^[\sĠ▁]+", "", t) for t in tokens]
    tags = text_tags(" ".join(cleaned))
    letters = [t for t in cleaned if any(ch.isalpha() for ch in t)]
    if letters and sum(t.isupper() for t in letters) * 2 > len(letters):
        tags += ["style:uppercase", "area:style"]
    return sorted(set(tags), key=tags.index)


def family_area(family: str) -> str | None:
    """The area a prompt-family name points to, if any (first match in AREAS order)."""
    for area, words in AREA_WORDS.items():
        if _has(family.replace("_", " "), words):
            return area
    return None


def interpretation_tags(interps: Sequence[FeatureInterpretation]) -> set[str]:
    """All tags of a feature's interpretations, plus those its descriptions and promoted
    tokens support (so user labels without tags still count)."""
    tags: set[str] = set()
    for interp in interps:
        tags.update(interp.tags)
        if interp.description:
            tags.update(text_tags(interp.description))
        if interp.promoted_tokens:
            tags.update(token_tags(interp.promoted_tokens))
    return tags


def feature_areas(keys: Iterable[str], interpretations: Mapping[str, Sequence[FeatureInterpretation]]) -> dict[str, int]:
    """How many of ``keys`` carry each ``area:`` tag (and refusal/harm count as safety)."""
    counts: dict[str, int] = {}
    for key in keys:
        tags = interpretation_tags(interpretations.get(key, []))
        areas = {t.split(":", 1)[1] for t in tags if t.startswith("area:")}
        if tags & {"refusal", "harm"}:
            areas.add("safety")
        for area in areas:
            counts[area] = counts.get(area, 0) + 1
    return counts
