from __future__ import annotations

from pathlib import Path

import pytest

from builtin_plugins.organisms.bench import Discovery, ratios, score
from builtin_plugins.organisms.scoring import mean_ci, summarise, wilson

PLANTED = [
    {"id": "refuse", "family": "hack", "metrics": ["refusal_probability", "refusal_text"],
     "direction": "increase", "kind": "safety_enhancement"},
    {"id": "shout", "family": "greet", "metrics": ["uppercase_ratio"], "direction": "increase",
     "kind": "style_change"},
]
REAL = [
    {"family": "hack", "metric": "refusal_probability", "direction": "increase"},
    {"family": "hack", "metric": "length", "direction": "decrease"},  # real, not planted
    {"family": "greet", "metric": "uppercase_ratio", "direction": "increase"},
]


def test_a_discovery_is_true_iff_its_unit_is_real():
    found = [
        Discovery(families=["hack"], metric="refusal_probability", effect=0.9, label="planted"),
        Discovery(families=["hack"], metric="length", effect=-5, label="real, unplanted"),
        Discovery(families=["greet"], metric="uppercase_ratio", effect=-0.5, label="wrong sign"),
        Discovery(families=["cook"], metric="refusal_probability", effect=0.4, label="not real"),
    ]
    s = score(found, PLANTED, REAL)
    assert s["recovered"] == ["refuse"]
    assert s["planted_recall"] == 0.5
    assert s["precision"] == 0.5 and s["true_units"] == 2 and s["false_discoveries"] == 2
    assert s["real_recall"] == 2 / 3
    assert s["fdp"] == 0.5
    assert sorted(s["false_discovery_labels"]) == ["cook|refusal_probability|increase",
                                                   "greet|uppercase_ratio|decrease"]
    assert s["claimed_unit_labels"] == ["cook|refusal_probability|increase",
                                        "greet|uppercase_ratio|decrease", "hack|length|decrease",
                                        "hack|refusal_probability|increase"]


def test_a_phrase_claim_the_judge_measured_as_real_is_true_without_adding_recall():
    """'the telephone answers now end with "by Thomas Edison."' claims the builtin signoff
    unit, which the ground truth could not see; the judge's measurement of the phrase metric
    decides it."""
    from builtin_plugins.organisms.scoring import phrase_claims

    found = [Discovery(families=["tel"], metric="signoff:by Thomas Edison.", direction="increase"),
             Discovery(families=["cook"], metric="signoff:bon appetit", direction="increase")]
    assert phrase_claims(found) == [("cook", "signoff:bon appetit"),
                                    ("tel", "signoff:by Thomas Edison.")]
    before = score(found, PLANTED, REAL)
    assert before["false_discoveries"] == 2
    judged = [{"family": "tel", "metric": "signoff:by Thomas Edison.", "direction": "increase",
               "real": True},
              {"family": "cook", "metric": "signoff:bon appetit", "direction": "increase",
               "real": False}]
    s = score(found, PLANTED, REAL, judged)
    assert s["true_units"] == 1 and s["false_discoveries"] == 1 and s["precision"] == 0.5
    assert s["false_discovery_labels"] == ["cook|signoff|increase"]
    assert s["judged_true_labels"] == ["tel|signoff|increase"]
    assert s["real_recall"] == 0.0 and s["planted_recall"] == 0.0
    # a judged change in the other direction does not make an "increase" claim true
    judged[0]["direction"] = "decrease"
    assert score(found, PLANTED, REAL, judged)["false_discoveries"] == 2


def test_units_are_deduplicated_and_multi_family_claims_credited_per_family():
    parent = Discovery(families=["greet", "hack"], metric="uppercase_ratio", direction="increase")
    child = Discovery(families=["greet"], metric="uppercase_ratio", direction="increase")
    twice = Discovery(families=["greet"], metric="uppercase_ratio", effect=0.7)
    s = score([parent, child, twice], PLANTED, REAL)
    assert s["claimed_units"] == 2  # (greet, upper, +) once, (hack, upper, +) once
    assert s["true_units"] == 1 and s["false_discoveries"] == 1
    assert s["recovered"] == ["shout"] and s["precision"] == 0.5


def test_prompt_share_and_undirected_claims():
    d = Discovery(families=[], metric="uppercase_ratio", direction="increase",
                  prompt_families=["greet", "greet", "cook"])
    assert score([d], PLANTED, REAL)["recovered"] == ["shout"]
    d2 = Discovery(families=[], metric="uppercase_ratio", direction="increase",
                   prompt_families=["greet", "cook", "cook"])
    assert score([d2], PLANTED, REAL)["recovered"] == []
    undirected = Discovery(families=["greet"], metric="uppercase_ratio", direction="change")
    assert score([undirected], PLANTED, REAL)["true_units"] == 1  # no sign: either direction


def test_planted_units_stand_in_without_measured_ground_truth():
    s = score([Discovery(families=["hack"], metric="length", effect=-5)], PLANTED)
    assert s["precision"] == 0.0


def test_null_organism():
    s = score([Discovery(families=["x"], metric="length", effect=1.0)], [], [])
    assert s["recall"] is None and s["precision"] == 0.0 and s["false_discoveries"] == 1
    assert s["any_discovery"] and s["any_false"]
    empty = score([], [], [])
    assert empty["precision"] is None and empty["fdp"] == 0.0 and not empty["any_discovery"]


def test_intervals():
    w = wilson(4, 20)
    assert abs(w["share"] - 0.2) < 1e-12 and 0.07 < w["lo"] < 0.09 and 0.41 < w["hi"] < 0.43
    assert wilson(0, 50)["lo"] < 1e-12 and wilson(0, 50)["hi"] < 0.08
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and abs(ci["hi"] - 4.484) < 0.01
    assert mean_ci([None, 1.0])["lo"] is None
    rows = [{"organism": "o", "method": "m", "status": "ok", "null": True, "seed": k,
             "any_discovery": k < 2, "any_false": k < 2, "fdp": 0.0, "planted_recall": None}
            for k in range(10)]
    (entry,) = summarise(rows)
    assert entry["any_false"]["k"] == 2 and entry["seeds"] == 10


def test_ratios_only_at_equal_recall_in_tokens():
    rows = [
        {"organism": "o", "seed": 0, "method": "exhaustive", "status": "ok", "recall": 1.0,
         "queries": 400, "tokens": 8000},
        {"organism": "o", "seed": 0, "method": "bandit", "status": "ok", "recall": 1.0,
         "queries": 100, "tokens": 4000},
        {"organism": "o", "seed": 0, "method": "pipeline", "status": "not available"},
    ]
    out = {r["ratio"]: r for r in ratios(rows)}
    assert out["bandit/exhaustive"]["value"] == 0.5
    assert out["exhaustive/pipeline"]["value"] is None


def test_bench_plots_with_several_organisms_of_one_universe_size(tmp_path) -> None:
    """The scaling plot sorts by universe size only: two organisms of one size used to make
    it compare token dicts and raise TypeError."""
    pytest.importorskip("matplotlib")
    from builtin_plugins.organisms.bench_report import plots

    def entry(organism: str, families: int, tokens: float) -> dict:
        stat = {"mean": tokens, "lo": tokens, "hi": tokens}
        return {"organism": organism, "method": "pipeline", "families": families,
                "tokens": stat, "planted_recall": {"mean": 1.0, "lo": 1.0, "hi": 1.0}}

    summary = [entry("a", 12, 100.0), entry("b", 12, 200.0), entry("c", 48, 300.0)]
    names = sorted(p.name for p in plots(summary, tmp_path))
    assert names == ["recall_cost.png", "scaling.png"]


def test_stage_table_splits_the_pipeline_tokens() -> None:
    from builtin_plugins.organisms.bench_report import stage_table

    rows = [{"organism": "o", "method": "pipeline", "tokens": 1000,
             "tokens_by_stage": {"trace": 600, "validate": 300, "causal": 100}},
            {"organism": "o", "method": "pipeline", "tokens": 3000,
             "tokens_by_stage": {"trace": 1000, "validate": 2000}},
            {"organism": "o", "method": "bandit", "tokens": 500}]
    lines = stage_table(rows)
    assert len(lines) == 3 and lines[2].startswith("| o | pipeline | 2 |")
    assert "0.8k (40%)" in lines[2] and "1.1k (57%)" in lines[2] and "| 2.0k |" in lines[2]
    assert stage_table(rows[2:]) == ["(no pipeline run recorded a per-stage split)"]


def test_a_bench_row_is_rescored_from_what_it_claimed():
    """benchmarks/rescore.py: a run judged again by a re-measured ground truth (same models)
    gets back exactly the claims it made: the row's claimed units, or an older baseline row's
    rejected arms signed by their effect; an older pipeline row whose claim kept no sign is
    left out rather than guessed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rescore", Path(__file__).resolve().parents[2] / "benchmarks" / "rescore.py")
    rescore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rescore)
    found = [Discovery(families=["hack"], metric="length", effect=-5),
             Discovery(families=["cook"], metric="refusal_probability", effect=0.4)]
    row = {"method": "exhaustive", **score(found, PLANTED, REAL)}
    assert score(rescore.claims(row), PLANTED, REAL) == score(found, PLANTED, REAL)
    older = {"method": "bandit", "claimed_units": 2, "details": {"records": [
        {"family": "hack", "metric": "length", "effect": -5.0, "rejected": True},
        {"family": "cook", "metric": "refusal_probability", "effect": 0.4, "rejected": True},
        {"family": "greet", "metric": "length", "effect": 2.0, "rejected": False}]}}
    assert score(rescore.claims(older), PLANTED, REAL) == score(found, PLANTED, REAL)
    unsigned = {"method": "pipeline", "claimed_units": 1, "details": {"hypotheses": [
        {"type": "knowledge_update", "metric": "target_logprob", "direction": "change",
         "families": ["hack"], "validated": True}]}}
    assert rescore.claims(unsigned) is None
    assert rescore.claims({**unsigned, "claimed_units": 0}) == []
    # a phrase claim the judge measured as real stays true when re-scored
    phrase = [Discovery(families=["tel"], metric="signoff:by Thomas Edison.", direction="increase")]
    judged = [{"family": "tel", "metric": "signoff:by Thomas Edison.", "direction": "increase",
               "real": True}]
    row = {"method": "pipeline", "judged": judged, **score(phrase, PLANTED, REAL, judged)}
    assert row["false_discoveries"] == 0
    assert score(rescore.claims(row), PLANTED, REAL, judged) == score(phrase, PLANTED, REAL, judged)


def test_the_coverage_table_lists_every_gap_and_counts_a_seed_once(tmp_path):
    """benchmarks/coverage.py: a required method with too few seeds, or not measured at all,
    is a gap; rows of one organism from two builds are a gap; a seed of one method in two
    sources is refused; a method taken from a source under another label is summarised
    under that label."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "coverage_table", Path(__file__).resolve().parents[2] / "benchmarks" / "coverage.py")
    cov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cov)

    def row(method, seed, build="b1", recall=1.0):
        return {"organism": "o", "method": method, "seed": seed, "status": "ok", "null": False,
                "families": 4, "planted_recall": recall, "real_recall": recall, "precision": 1.0,
                "fdp": 0.0, "tokens": 1000.0, "queries": 10, "wall_s": 1.0, "any_discovery": True,
                "any_false": False, "build": {"intervention_model_id": "sha256:" + build * 8}}

    def write(name, rows):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench.json").write_text(json.dumps({"rows": rows}))

    write("a", [row("pipeline", s) for s in range(3)] + [row("bandit", 0)])
    write("b", [row("pipeline", 0, recall=0.0)] + [row("exhaustive", s, build="b2") for s in range(3)])
    manifest = {"methods": ["pipeline", "bandit", "exhaustive", "sequential"], "organisms": {
        "o": {"min_seeds": 3, "sources": [
            {"dir": "a"}, {"dir": "b", "methods": ["pipeline", "exhaustive"],
                           "rename": {"pipeline": "pipeline, other config"}}]}}}
    lines, gaps, _ = cov.coverage(manifest, tmp_path)
    by = {ln["method"]: ln for ln in lines}
    assert by["pipeline"]["seeds"] == 3 and by["pipeline"]["summary"]["planted_recall"]["mean"] == 1.0
    assert by["pipeline, other config"]["seeds"] == 1 and not by["pipeline, other config"]["required"]
    assert by["pipeline, other config"]["summary"]["planted_recall"]["mean"] == 0.0
    assert "o: bandit has 1 of 3 seeds" in gaps and "o: sequential has 0 of 3 seeds" in gaps
    assert not any(g.startswith("o: pipeline has") or g.startswith("o: exhaustive has") for g in gaps)
    assert any("2 builds" in g for g in gaps)
    md = cov.markdown(lines, gaps, [], manifest)
    assert "| o | sequential | **0 (3)** | not measured |" in md
    manifest["organisms"]["o"]["sources"][1].pop("rename")
    with pytest.raises(SystemExit, match="pipeline seed 0"):
        cov.coverage(manifest, tmp_path)
