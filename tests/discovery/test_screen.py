"""Two-stage tracing: which seed prompts get attribution graphs after the screen."""

from __future__ import annotations

from builtin_plugins.pipeline.discovery import evidence_of, select_evidence
from builtin_plugins.pipeline.screen import choose_prompts, flagged_families, rank_families
from md_framework.types import Hypothesis, Pattern

SEEDS = [(f"{f}-{i}", f) for i in range(4) for f in ("a", "b", "c", "d")]


def _p(pid: str, kind: str, families: list[str], strength: float = 0.0) -> Pattern:
    return Pattern(id=pid, pattern_type=kind, description="", families=families, strength=strength)


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


def test_families_rank_by_agreeing_pattern_types_then_strength() -> None:
    # "d" is named by three pattern types, "b" and "c" by two each ("c" more strongly), "a"
    # by one very strong pattern: agreement outranks one detector's large strength
    pats = [_p("1", "suppression", ["a", "b", "c", "d"], 0.2), _p("2", "emergence", ["b", "c", "d"], 0.1),
            _p("3", "output_shift", ["d"], 0.05), _p("4", "suppression", ["c"], 5.0),
            _p("5", "suppression", ["b"], 0.3)]
    assert rank_families(pats) == ["d", "c", "b", "a"]
    assert flagged_families(pats, max_families=2) == ["c", "d"]
    assert flagged_families(pats) == ["a", "b", "c", "d"]
    assert rank_families([_p("x", "t", ["b"], -3.0), _p("y", "t", ["a"], 1.0)]) == ["b", "a"]


def test_prompts_per_family_keeps_each_flagged_familys_first_prompts() -> None:
    chosen, checks = choose_prompts(SEEDS, ["b"], 1, seed=0, prompts_per_family=2)
    assert [p for p, f in chosen if f == "b"] == ["b-0", "b-1"]
    assert len(checks) == 1 and checks[0][1] != "b" and len(chosen) == 3
    assert choose_prompts(SEEDS, ["b"], 1, seed=0, prompts_per_family=9) == \
        choose_prompts(SEEDS, ["b"], 1, seed=0)


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
