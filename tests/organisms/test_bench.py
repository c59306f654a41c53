from __future__ import annotations

from pathlib import Path

import pytest


def test_bench_baselines_on_toy_organism(toy_multi, organism_cache: Path, tmp_path: Path):
    """Acceptance (issue 13): re-scored against measured real units, the exhaustive baseline's
    discoveries are real (precision >= 0.95) and no method is credited twice for one unit;
    every method's work is counted in tokens by the models themselves."""
    from builtin_plugins.organisms.bench import BenchConfig, run_bench

    cfg = BenchConfig(specs=["toy-multi"], out_dir=tmp_path, cache_dir=organism_cache,
                      methods=["exhaustive", "sequential", "bandit", "output-screen"],
                      n_prompts=12, screen_n=3, plots=False,
                      metrics=["refusal_probability", "uppercase_ratio", "target_logprob"], threads=1)
    out = run_bench(cfg, log=lambda *a, **k: None)
    rows = {r["method"]: r for r in out["rows"]}
    gt = toy_multi.ground_truth()
    real = {(u["family"], u["metric"], u["direction"]) for u in gt["real_units"]}
    for method, row in rows.items():
        assert row["status"] == "ok", (method, row.get("error"))
        assert row["true_units"] <= len(real)  # deduplicated by unit
        assert row["tokens"] > 0 and row["prompt_tokens"] > 0, method
        assert row["fdp"] <= 0.5, (method, row["false_discovery_labels"])
    for row in rows.values():  # every row names the build it was judged on
        assert row["build"]["intervention_model_id"] == gt["intervention_model_id"]
        assert row["build"]["spec_hash"] == gt["spec_hash"]
    ex = rows["exhaustive"]
    assert ex["planted_recall"] == 1.0
    assert ex["precision"] >= 0.95
    assert ex["generated_tokens"] > 0  # uppercase_ratio decodes
    assert rows["sequential"]["planted_recall"] >= 2 / 3
    assert rows["bandit"]["planted_recall"] >= 2 / 3
    assert out["summary"] and (tmp_path / "bench.json").exists()
    assert "## Summary" in (tmp_path / "bench.md").read_text()


def test_rows_of_two_builds_of_one_organism_are_not_merged(tmp_path: Path):
    """Two builds of one spec can hold different models (training is not bit-reproducible
    across machines) or different real units (a re-measured ground truth): a summary over
    their seeds would average two organisms, so write_rows refuses; rows without a build
    (written before rows carried one) and rows of one build pass."""
    from builtin_plugins.organisms.bench_report import check_one_build

    def row(seed, intervention, units="u1", organism="toy-x"):
        return {"organism": organism, "seed": seed, "method": "bandit",
                "build": {"spec_hash": "s", "base_model_id": "b",
                          "intervention_model_id": intervention, "real_units_sha256": units}}

    check_one_build([row(0, "i1"), row(1, "i1"), {"organism": "toy-x", "seed": 2,
                                                   "method": "bandit"}, row(0, "i2", organism="toy-y")])
    with pytest.raises(ValueError, match="intervention_model_id differ"):
        check_one_build([row(0, "i1"), row(1, "i2")])
    with pytest.raises(ValueError, match="real_units_sha256 differ"):
        check_one_build([row(0, "i1"), row(1, "i1", units="u2")])


def test_unknown_method_gets_a_did_you_mean():
    from md_framework.errors import ConfigError

    from builtin_plugins.organisms.bench import BenchConfig

    with pytest.raises(ConfigError, match="sequential"):
        BenchConfig(specs=["toy-multi"], methods=["sequentail"])


def test_evidence_switch_is_the_pipeline_ablation():
    from md_framework.config import AnalysisConfig

    cfg = AnalysisConfig(base_model="toy", intervention_model="toy", discovery_evidence="internal")
    assert cfg.discovery_evidence == "internal"
    with pytest.raises(Exception, match="discovery_evidence"):
        AnalysisConfig(base_model="toy", intervention_model="toy", discovery_evidence="outputs")


def test_pipeline_runs_in_a_fresh_cache_even_with_md_cache_dir_set(tmp_path: Path, monkeypatch):
    """$MD_CACHE_DIR outranks a config's cache_dir; a bench pipeline run must still get its
    own empty artefact cache (else later seeds read earlier seeds' graphs, uncounted)."""
    from md_framework.cache import default_cache_dir
    from md_framework.pipeline import analyzer

    from builtin_plugins.organisms import bench

    env_cache = tmp_path / "env-cache"
    monkeypatch.setenv("MD_CACHE_DIR", str(env_cache))
    seen = []

    class Recorder:
        def __init__(self, config):
            seen.append(default_cache_dir(config.cache_dir))

        def analyze(self):
            raise RuntimeError("recorded")

    monkeypatch.setattr(analyzer, "MechanisticBehavioralAnalyzer", Recorder)
    cfg = bench.BenchConfig(specs=["toy-null"], cache_dir=tmp_path / "organisms", plots=False)
    res = bench.run_pipeline("toy-null", {}, cfg, seed=0)
    assert res["status"] == "failed" and "recorded" in res["error"]
    assert seen and env_cache not in seen[0].parents and seen[0] != env_cache
    import os

    assert os.environ["MD_CACHE_DIR"] == str(env_cache)  # restored afterwards


def test_every_method_generates_as_many_tokens_as_the_ground_truth_measured(monkeypatch):
    """A `length` read on 24 generated tokens is not the one the judge measured on 16: the
    bench takes each organism's measurement length and refuses another."""
    from md_framework.errors import ConfigError

    from builtin_plugins.metrics.core import metric_by_name
    from builtin_plugins.organisms.bench import METRIC_LENGTH_ENV, answer_length, organism_answer_length
    from builtin_plugins.organisms.spec import load_spec

    spec = load_spec("toy-multi")
    short = spec.model_copy(update={"measurement": spec.measurement.model_copy(update={"max_new_tokens": 7})})
    assert organism_answer_length("toy-multi", None) == spec.measurement.max_new_tokens
    assert organism_answer_length(short, None) == organism_answer_length(short, 7) == 7
    with pytest.raises(ConfigError, match="measured on 7 generated tokens"):
        organism_answer_length(short, 24)

    monkeypatch.setenv(METRIC_LENGTH_ENV, "30")
    length = metric_by_name("length", {})
    with answer_length(7):
        assert length.options.resolved_max_new_tokens() == 7
    assert length.options.resolved_max_new_tokens() == 30
    monkeypatch.delenv(METRIC_LENGTH_ENV)
    with answer_length(9):
        pass
    import os

    assert METRIC_LENGTH_ENV not in os.environ


def test_run_bench_hands_the_organisms_length_to_every_method(toy_multi, organism_cache: Path,
                                                              tmp_path: Path, monkeypatch):
    import os

    from builtin_plugins.organisms import bench

    seen = []

    def record(method, spec_ref, base, inter, cases, universe, metrics, cfg, seed, max_new_tokens=24):
        seen.append((method, max_new_tokens, os.environ.get(bench.METRIC_LENGTH_ENV)))
        return {"status": "failed", "error": "recorded"}

    monkeypatch.setattr(bench, "run_method", record)
    monkeypatch.setattr(bench, "organism_answer_length", lambda spec_ref, requested: 11)
    monkeypatch.delenv(bench.METRIC_LENGTH_ENV, raising=False)
    cfg = bench.BenchConfig(specs=["toy-multi"], out_dir=tmp_path, cache_dir=organism_cache,
                            methods=["exhaustive", "output-screen"], plots=False,
                            metrics=["length"], threads=1)
    bench.run_bench(cfg, log=lambda *a, **k: None)
    assert seen == [("exhaustive", 11, "11"), ("output-screen", 11, "11")]
    assert bench.METRIC_LENGTH_ENV not in os.environ


def test_pipeline_rows_keep_each_decision_p_value_and_level(tmp_path: Path, monkeypatch):
    """A bench row keeps what the validator decided per hypothesis (p, level, n, effect), so
    an unconfirmed planted change can be told apart as 'level not reached' at which p."""
    from types import SimpleNamespace

    from md_framework.pipeline import analyzer
    from md_framework.types import Costs, EffectSize, Hypothesis, ValidationResult

    from builtin_plugins.organisms import bench

    h1 = Hypothesis(id="h1", hypothesis_type="safety_enhancement", description="d",
                    metric="refusal_probability", direction="increase", families=["a"], priority=0.7)
    h2 = Hypothesis(id="h2", hypothesis_type="style_change", description="d", metric="signoff",
                    direction="increase", families=["b"], priority=0.5)
    results = [
        ValidationResult(hypothesis=h1, test_name="wilcoxon", p_value=0.0007, decision=True,
                         test_level=0.0055, n=10, effect_size=EffectSize(name="mean", estimate=0.9,
                                                                        ci_low=0.7, ci_high=1.0)),
        ValidationResult(hypothesis=h2, test_name="wilcoxon", p_value=0.0041, decision=False,
                         test_level=0.0018, n=7, reason="level not reached"),
    ]
    report = SimpleNamespace(hypotheses=[h1, h2], validation_results=results,
                             validated=lambda: [], costs=Costs(behaviour_queries=17))

    class Fake:
        def __init__(self, config):
            pass

        def analyze(self):
            return report

    monkeypatch.setattr(analyzer, "MechanisticBehavioralAnalyzer", Fake)
    cfg = bench.BenchConfig(specs=["toy-null"], cache_dir=tmp_path / "organisms", plots=False)
    res = bench.run_pipeline("toy-null", {"a": ["p"], "b": ["q"]}, cfg, seed=0)
    assert res["status"] == "ok", res.get("error")
    (t1,), (t2,) = (h["tests"] for h in res["hypotheses"])
    assert t1 == {"p_value": 0.0007, "level": 0.0055, "n": 10, "decision": True, "reason": None,
                  "test": "wilcoxon", "effect": {"name": "mean", "estimate": 0.9, "ci": [0.7, 1.0]}}
    assert (t2["p_value"], t2["level"], t2["n"], t2["reason"], t2["effect"]) == (
        0.0041, 0.0018, 7, "level not reached", None)
    assert res["not_validated_reasons"] == ["level not reached"]
