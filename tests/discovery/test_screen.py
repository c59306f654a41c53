"""Two-stage tracing: which seed prompts get attribution graphs after the screen."""

from __future__ import annotations

from builtin_plugins.pipeline.discovery import evidence_of, select_evidence
from builtin_plugins.pipeline.screen import choose_prompts, flagged_families
from md_framework.types import Hypothesis, Pattern

SEEDS = [(f"{f}-{i}", f) for i in range(4) for f in ("a", "b", "c", "d")]


def _p(pid: str, kind: str, families: list[str]) -> Pattern:
    return Pattern(id=pid, pattern_type=kind, description="", families=families)


def test_flagged_families_get_graphs_plus_round_robin_checks() -> None:
    flagged = flagged_families([_p("x", "answer_change", ["b"]), _p("y", "output_shift", []),
                                _p("z", "family_specific_change", ["d", "b"])])
    assert flagged == ["b", "d"]
    chosen, checks = choose_prompts(SEEDS, flagged, 3, seed=0)
    assert {p for p, f in chosen if f in flagged} == {p for p, f in SEEDS if f in flagged}
    assert len(checks) == 3 and {f for _, f in checks} == {"a", "c"}  # both unflagged families
    assert [c for c in chosen if c in checks] == checks
    assert chosen == [s for s in SEEDS if s in chosen]  # seed order kept
    assert choose_prompts(SEEDS, flagged, 3, seed=0) == (chosen, checks)  # deterministic
    assert choose_prompts(SEEDS, flagged, 0, seed=0)[1] == []


def test_nothing_flagged_traces_every_seed_prompt() -> None:
    assert choose_prompts(SEEDS, [], 2, seed=1) == (SEEDS, [])


def test_output_and_internal_evidence_are_separable() -> None:
    pats = [_p("o", "output_shift", ["a"]), _p("ans", "answer_change", ["b"]),
            _p("i", "family_specific_change", ["a"]), _p("s", "systematic_suppression", ["c"])]
    assert [p.id for p in select_evidence(pats, "output")] == ["o", "ans"]
    assert [p.id for p in select_evidence(pats, "internal")] == ["i", "s"]
    assert select_evidence(pats, "all") == pats
    h = Hypothesis(id="h", hypothesis_type="t", description="", metric="m", source_patterns=["o", "i"])
    assert evidence_of(h, pats) == "both"
    assert evidence_of(h.model_copy(update={"source_patterns": ["s"]}), pats) == "internal"
    assert evidence_of(h.model_copy(update={"source_patterns": ["ans"]}), pats) == "output"
