"""Answer positions in the diff: matching answer traces to prompts, their features in the
systematic-change table, and the word-level edit between the two models' answers.

Torch-free. The traces come from a tracer's optional ``trace_answers`` capability
(:func:`md_framework.tracing.trace_answer_pairs`); see docs/discovery.md, "Answer-aware
tracing".
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

    from md_framework.types import AnswerTrace, CircuitGraph

EditKind = Literal["none", "append", "prepend", "insert", "delete", "replace", "rewrite"]
#: words of context before an edit that a hypothesis quotes ("after 'the capital of peru is'")
CONTEXT_WORDS = 5


def match_answers(pairs: Sequence[tuple[CircuitGraph, CircuitGraph]],
                  answers: Sequence[AnswerTrace | None] | None,
                  notes: list[str]) -> list[AnswerTrace | None]:
    """Each graph pair's answer trace, matched by (prompt, family); [] without traces."""
    if not answers:
        return []
    by_key: dict[tuple[str, str | None], AnswerTrace] = {}
    for t in answers:
        if t is not None:
            by_key.setdefault((t.prompt, t.family), t)
    out = [by_key.get((b.prompt, b.family if b.family is not None else i.family)) for b, i in pairs]
    missing = sum(1 for t in out if t is None)
    if missing:
        notes.append(f"{missing} of {len(pairs)} prompts have no answer trace")
    return out


def attach_answers(pairs: Sequence[tuple[CircuitGraph, CircuitGraph]], prompt_diffs: list[Any],
                   answers: Sequence[AnswerTrace | None] | None, dictionary_id: str | None,
                   notes: list[str]) -> tuple[list[Any], list[AnswerTrace | None]]:
    """(prompt diffs with ``answer`` attached, per pair the trace whose features join the
    table: those that read ``dictionary_id``, else None)."""
    traces = match_answers(pairs, answers, notes)
    if not traces:
        return prompt_diffs, [None] * len(pairs)
    attached = [pd.model_copy(update={"answer": t}) if t is not None else pd
                for pd, t in zip(prompt_diffs, traces)]
    feats = [t if t is not None and t.dictionary_id is not None and t.dictionary_id == dictionary_id
             else None for t in traces]
    return attached, feats


def answer_maxima(pd: Any, acc: dict[str, list[float]]) -> None:
    """Fold a prompt diff's answer activations into ``acc[key] = [base max, intervention max]``."""
    if pd.answer is None or pd.answer.dictionary_id is None:
        return
    for side, values in ((0, pd.answer.base_features), (1, pd.answer.intervention_features)):
        for key, value in values.items():
            cur = acc.setdefault(key, [0.0, 0.0])
            cur[side] = max(cur[side], value)


def add_answer_features(base_t: np.ndarray, inter_t: np.ndarray,
                        traces: Sequence[AnswerTrace | None], index: dict[str, int],
                        aggregate: str) -> None:
    """Fold each trace's per-feature answer activations into column ``j`` of the tables."""
    for j, t in enumerate(traces):
        if t is None:
            continue
        for table, values in ((base_t, t.base_features), (inter_t, t.intervention_features)):
            for key, value in values.items():
                row = index.get(key)
                if row is None:
                    continue
                if aggregate == "sum":
                    table[row, j] += value
                else:
                    table[row, j] = max(table[row, j], value)


@dataclass
class AnswerEdit:
    """The span where the intervention's answer departs from the base's (words)."""

    kind: EditKind
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    start: int = 0  # word index in the base answer where the edit starts
    base_words: int = 0

    @property
    def location(self) -> Literal["none", "start", "middle", "end"]:
        if self.kind == "none":
            return "none"
        if self.start == 0:
            return "start"
        if self.start + len(self.removed) >= self.base_words:
            return "end"
        return "middle"

    def describe(self) -> str:
        rem, add = " ".join(self.removed), " ".join(self.added)
        after = f" after '{' '.join(self.before)}'" if self.before else ""
        where = {"start": " at the start", "end": " at the end", "middle": " in the middle"}.get(
            self.location, "")
        if self.kind in ("append", "prepend", "insert"):
            return f"adds '{add}'{where}{after if self.kind != 'prepend' else ''}"
        if self.kind == "delete":
            return f"removes '{rem}'{where}{after}"
        if self.kind == "rewrite":
            return f"rewrites the answer ('{rem}' -> '{add}')"
        if self.kind == "replace":
            return f"replaces '{rem}' with '{add}'{after}"
        return "no change"


def answer_edit(base_answer: str, intervention_answer: str) -> AnswerEdit:
    """The word-level edit from the base's answer to the intervention's: the span from the
    first to the last differing word (``difflib.SequenceMatcher`` opcodes, Ratcliff and
    Obershelp's gestalt matching), typed by where it sits."""
    b, i = base_answer.split(), intervention_answer.split()
    if b == i:
        return AnswerEdit("none", base_words=len(b))
    ops = [op for op in difflib.SequenceMatcher(None, b, i, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    i1, j1 = ops[0][1], ops[0][3]
    i2, j2 = ops[-1][2], ops[-1][4]
    removed, added = b[i1:i2], i[j1:j2]
    if not removed:
        kind: EditKind = "append" if i1 == len(b) else "prepend" if i1 == 0 else "insert"
    elif not added:
        kind = "delete"
    elif i1 == 0 and i2 == len(b):
        kind = "rewrite"
    else:
        kind = "replace"
    return AnswerEdit(kind, removed, added, b[max(0, i1 - CONTEXT_WORDS):i1], i1, len(b))


def common_phrase(phrases: Sequence[Sequence[str]]) -> tuple[list[str], float]:
    """The most frequent non-empty phrase and the share of ``phrases`` that are it."""
    counts: dict[tuple[str, ...], int] = {}
    for p in phrases:
        if p:
            counts[tuple(p)] = counts.get(tuple(p), 0) + 1
    if not counts:
        return [], 0.0
    best = max(counts.items(), key=lambda kv: (kv[1], -len(kv[0]), kv[0]))
    return list(best[0]), best[1] / len(phrases)


def common_suffix(phrases: Sequence[Sequence[str]]) -> list[str]:
    """The longest word suffix all ``phrases`` share (the context right before an edit)."""
    if not phrases:
        return []
    out: list[str] = []
    for words in zip(*(list(reversed(p)) for p in phrases)):
        if len(set(words)) != 1:
            break
        out.append(words[0])
    return list(reversed(out))
