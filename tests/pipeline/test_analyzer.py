"""End-to-end analyses on the toy organisms (built once, cached under artefact_cache_dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from md_framework.config import config_from_mapping
from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer, check_pair_compatible
from md_framework.types import AnalysisReport

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _config(cache_dir: Path, base: str, intervention: str, **overrides):
    data = yaml.safe_load((REPO / "examples" / "configs" / "demo.yaml").read_text())
    data.update(base_model=base, intervention_model=intervention, cache_dir=str(cache_dir), threads=1)
    data.update(overrides)
    return config_from_mapping(data)


@pytest.fixture(scope="module")
def demo_run(artefact_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("demo")
    config = _config(artefact_cache_dir, "organism:toy-multi#base", "organism:toy-multi#intervention")
    analyzer = MechanisticBehavioralAnalyzer(config, run_dir=run_dir)
    return analyzer, analyzer.analyze(), run_dir


def test_demo_validates_planted_changes(demo_run) -> None:
    _, report, _ = demo_run
    found = {(r.hypothesis.hypothesis_type, tuple(r.hypothesis.families)) for r in report.validated()}
    assert ("safety_enhancement", ("harmful_hacking",)) in found
    assert ("style_change", ("greetings",)) in found
    for result in report.validated():
        assert result.p_value is not None and result.effect_size is not None and result.n > 0


def test_demo_writes_a_round_trippable_report(demo_run) -> None:
    _, report, run_dir = demo_run
    again = AnalysisReport.model_validate_json((run_dir / "report.json").read_text())
    assert [r.decision for r in again.validation_results] == [r.decision for r in report.validation_results]
    assert (run_dir / "summary.txt").read_text().startswith("Analysis:")
    assert (run_dir / "ledger.sqlite").exists()
    assert report.costs.behaviour_queries > 0 and report.costs.traced_prompts > 0
    assert len(report.fdr_trace) == len(report.validation_results)


def test_resume_reaches_the_same_decisions_without_new_queries(demo_run, artefact_cache_dir: Path) -> None:
    analyzer, report, run_dir = demo_run
    again = MechanisticBehavioralAnalyzer(analyzer.config, run_dir=run_dir, resume=True)
    resumed = again.analyze()
    assert again.exploration.fresh_queries == 0  # every reading came from the ledger
    assert again.trace_stats["base"]["traced"] == 0  # every graph came from the cache
    assert [(r.hypothesis.id, r.decision) for r in resumed.validation_results] == \
        [(r.hypothesis.id, r.decision) for r in report.validation_results]
    # causal confirmation's readings are ledgered too: the same shares, nothing re-measured
    import sqlite3

    assert [(r.causal_share, r.causal_control_share) for r in resumed.validation_results] == \
        [(r.causal_share, r.causal_control_share) for r in report.validation_results]
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        causal_rows = conn.execute(
            "SELECT count(*) FROM queries WHERE case_id LIKE 'causal/%'").fetchone()[0]
    assert causal_rows > 0


def test_demo_causal_confirmation_has_a_random_feature_control(demo_run) -> None:
    _, report, _ = demo_run
    confirmed = [r for r in report.validated() if r.causal_share is not None]
    assert confirmed, "no validated feature hypothesis got a causal share"
    assert any(r.causal_control_share is not None for r in confirmed)
    for r in confirmed:
        assert any("random-feature control" in n for n in r.notes), r.notes
    # measured on the claim's own family (harmful_hacking), where the refusal change lives
    refusal = next(r for r in report.validated() if r.hypothesis.hypothesis_type == "safety_enhancement")
    assert refusal.causal_share is not None, refusal.notes


def test_model_paired_with_itself_validates_nothing(artefact_cache_dir: Path, tmp_path: Path) -> None:
    config = _config(artefact_cache_dir, "organism:toy-multi#base", "organism:toy-multi#base")
    report = MechanisticBehavioralAnalyzer(config, run_dir=tmp_path).analyze()
    assert report.validated() == []
    assert report.circuit_statistics["significant_changes_q10"] == 0
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["base_model_id"] == summary["intervention_model_id"]


def test_incompatible_pair_is_refused_before_tracing() -> None:
    from md_framework.errors import ConfigError
    from md_framework.runtime import LoadedModel, ModelSpec

    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    a = LoadedModel(model=None, tokenizer=Tok({"a": 0, "b": 1}), model_id="a", spec=ModelSpec(source="a"),
                    architecture={"hidden_size": 64})
    b = LoadedModel(model=None, tokenizer=Tok({"a": 0, "c": 1}), model_id="b", spec=ModelSpec(source="b"),
                    architecture={"hidden_size": 32})
    with pytest.raises(ConfigError, match=r"hidden_size: 64 vs 32.*vocabularies differ"):
        check_pair_compatible(a, b)


def test_demo_dashboard_shows_every_section(demo_run) -> None:
    """After md analyze on the demo, report.html is self-contained and shows every section;
    where a headless Chromium is installed, it also renders there without console errors."""
    import re
    import shutil
    import subprocess

    _, report, run_dir = demo_run
    html = (run_dir / "report.html").read_text()
    for section in ("overview", "plots", "hypotheses", "fdr", "bandit", "changes", "exports"):
        assert f'id="{section}"' in html, section
    assert "<script" not in html
    # nothing is fetched from the network (a link to circuit-tracer's local viewer is fine)
    assert not re.search(r'(src|href)="https?://(?!localhost)', html)
    assert html.count('src="data:image/png;base64,') >= 4
    assert sorted((run_dir / "graphs").glob("*.base.json")), "example graphs for the viewer"
    browser = next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)
    if browser is None:
        pytest.skip("no headless Chromium on PATH (CI installs Debian's chromium)")
    run = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", (run_dir / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert not [line for line in run.stderr.splitlines()
                if re.search(r"CONSOLE[:(]|Uncaught|Refused to|Failed to load resource", line)]
    assert 'id="hypotheses"' in run.stdout


def test_multi_family_hypotheses_are_decided_per_family_on_their_own_prompts(demo_run) -> None:
    """One decision per (family, metric, direction): the planted fact change is validated on
    telephone_fact, not on the family discovery bundled it with, and every validated claim
    rests on held-out prompts of its own family only."""
    analyzer, report, _ = demo_run
    _, pool = analyzer._causal_inputs
    assert all(len(r.hypothesis.families) <= 1 for r in report.validation_results)
    units = [r.unit for r in report.validation_results]
    assert len(units) == len(set(units))
    validated = {r.hypothesis.families[0]: r for r in report.validated()}
    assert {"harmful_hacking", "greetings", "telephone_fact"} <= set(validated)
    for r in report.validated():
        tests = pool.tests_for(r.hypothesis)
        assert all(c.family == r.hypothesis.families[0] for c in tests)
        assert all(c.metadata.get("evidence") == "family" for c in tests)
    for r in report.validation_results:
        assert r.decision or r.reason, r.hypothesis.id


def test_family_hypotheses_are_never_tested_on_templates_or_feature_contexts(demo_run) -> None:
    """Feature contexts (read on the base model) serve only hypotheses without a family;
    the forward passes spent choosing them are reported as cost."""
    analyzer, report, _ = demo_run
    _, pool = analyzer._causal_inputs
    family = [h for h in report.hypotheses if h.families]
    assert family
    generators = {c.metadata.get("generator") for h in family for c in pool.tests_for(h)}
    assert generators <= {"universe"}, generators
    assert report.costs.selection_forward_passes >= 0


def test_every_stage_ran_through_its_hook(demo_run) -> None:
    analyzer, report, _ = demo_run
    expected = {"md_stage_split_universe": "test-selection", "md_stage_diff": "graph-diff",
                "md_stage_discover": "discovery", "md_stage_validate": "validation",
                "md_stage_causal": "causal"}
    if analyzer.config.exploration.refine:
        expected["md_stage_refiner"] = "refinement"
    assert {k: v for k, v in report.stage_providers.items() if k in expected} == expected


def test_a_replaced_stage_runs_in_the_analysis(demo_run, artefact_cache_dir: Path,
                                               tmp_path: Path) -> None:
    from md_framework import hookimpl
    from md_framework.plugins import get_plugin_manager

    calls = []

    class NoInterventions:  # a third party's causal stage: records the call, intervenes on nothing
        @hookimpl(tryfirst=True)
        def md_stage_causal(self, run, exploration):
            calls.append(len(exploration.results))
            return False

    analyzer, report, _ = demo_run
    pm = get_plugin_manager(extra_plugins=[("no-interventions", NoInterventions())])
    replaced = MechanisticBehavioralAnalyzer(analyzer.config, run_dir=tmp_path / "run",
                                             plugin_manager=pm).analyze()
    assert calls == [len(replaced.validation_results)]
    assert replaced.stage_providers["md_stage_causal"] == "no-interventions"
    assert all(r.causal_share is None for r in replaced.validation_results)
    # the other stages are untouched: the same decisions
    assert [(r.hypothesis.id, r.decision) for r in replaced.validation_results] == \
        [(r.hypothesis.id, r.decision) for r in report.validation_results]


def test_the_report_splits_model_work_by_stage(demo_run) -> None:
    _, report, _ = demo_run
    by_stage = report.costs.tokens_by_stage
    assert set(by_stage) <= {"load", "trace", "discover", "validate", "causal", "examples"}
    # graphs may come from the artefact cache (no model work); measuring never does
    assert by_stage["validate"] > 0, by_stage
    assert all(v >= 0 for v in by_stage.values())


def test_thin_families_are_those_with_fewer_than_two_seeds() -> None:
    from md_framework.pipeline.analyzer import seed_prompts, thin_families

    explore = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"], "c": ["c1"], "d": []}
    assert thin_families(explore, seed_prompts(explore, 3, 0)) == ["a", "b"]  # c cannot reach 2
    assert thin_families(explore, seed_prompts(explore, 4, 0)) == ["b"]
    assert thin_families(explore, seed_prompts(explore, 5, 0)) == []
    assert thin_families(explore, []) == ["a", "b"]


def test_too_few_seed_prompts_for_the_families_is_said(artefact_cache_dir: Path, tmp_path: Path) -> None:
    """With fewer traced prompts than two per family a family change cannot be detected; at
    192 families the bench's 96 seeds found nothing without a word. Now it is said."""
    config = _config(artefact_cache_dir, "organism:toy-multi#base", "organism:toy-multi#base",
                     n_seed_prompts=4)
    lines = []
    analyzer = MechanisticBehavioralAnalyzer(config, progress=lambda phase, msg: lines.append(msg))
    with pytest.warns(UserWarning, match="fewer than 2 traced seed prompts") as caught:
        analyzer.analyze()
    message = str(caught[0].message)
    assert "Raise n_seed_prompts to at least" in message
    assert any("fewer than 2 traced seed prompts" in line for line in lines)
    # the demo's universe (24 per family) leaves 12 held-out prompts a family, fewer than the
    # 20 test prompts it asks for: said before anything is traced
    short = [line for line in lines if "fewer than n_test_prompts_per_hypothesis=20" in line]
    assert short and "families hold 12 held-out prompts" in short[0], lines
