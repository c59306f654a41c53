"""The design document's public API around the analysis: names, configuration, defaults,
the cache location and the formatting helpers (no model is loaded here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from md_framework.config import AnalysisConfig, config_from_mapping, focus_types
from md_framework.errors import ConfigError

PUBLIC = ["MechanisticBehavioralAnalyzer", "AnalysisConfig", "TestingProcedure",
          "ExplorationStrategy", "ActiveCircuitExplorer", "CircuitCache", "CircuitVisualizer",
          "TestGenerator", "check_memory_requirements", "HypothesisType", "EffectSize"]


def test_public_names_import_lazily_without_torch() -> None:
    code = (
        "import sys, md_framework\n"
        "assert 'md_framework.pipeline.analyzer' not in sys.modules\n"
        f"from md_framework import {', '.join(PUBLIC)}\n"
        "from md_framework.utils import check_memory_requirements as c2\n"
        "assert c2 is check_memory_requirements\n"
        "heavy = [m for m in ('torch', 'transformers', 'circuit_tracer', 'sae_lens') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_unknown_public_name_has_a_did_you_mean() -> None:
    import md_framework

    with pytest.raises(AttributeError, match='Did you mean "TestGenerator"'):
        md_framework.TestGenerater  # noqa: B018


def _config(**kw):
    return AnalysisConfig(base_model="organism:toy-multi#base",
                          intervention_model="organism:toy-multi#intervention", **kw)


def test_statistical_config_and_method() -> None:
    from md_framework import TestingProcedure

    config = _config(statistical_config=TestingProcedure(alpha=0.01, method="lord++", min_effect_size=0.3))
    assert (config.statistics.procedure, config.statistics.alpha, config.statistics.min_effect_size) == ("lord++", 0.01, 0.3)
    assert config.statistics.method == "lord++"
    # the same keys in a config file
    again = config_from_mapping({"base_model": "a", "intervention_model": "b",
                                 "statistical_config": {"method": "addis", "alpha": 0.1}})
    assert again.statistics.procedure == "addis"
    with pytest.raises(ConfigError, match='unknown field. Did you mean "min_effect_size"'):
        config_from_mapping({"base_model": "a", "intervention_model": "b",
                             "statistical_config": {"min_efect_size": 0.1}})


def test_document_focus_areas_are_documented_and_others_are_errors() -> None:
    config = _config(focus_areas=["safety", "capabilities", "reasoning", "harmful_content"])
    assert config.focus_areas == ["safety", "capabilities", "reasoning", "harmful_content"]
    assert {"safety_degradation", "capability_gain", "knowledge_update", "reasoning_change"} <= focus_types(config.focus_areas)
    with pytest.raises(pydantic.ValidationError, match='Did you mean "capabilities"'):
        _config(focus_areas=["capabilites"])
    # a plugin's hypothesis type is an area of its own (md-medical may not be installed)
    assert _config(focus_areas=["style_change"]).focus_areas == ["style_change"]


def test_focus_orders_but_never_lowers_priority() -> None:
    from builtin_plugins.pipeline.discovery import rank_hypotheses
    from md_framework.types import Hypothesis

    fact = Hypothesis(id="k", hypothesis_type="knowledge_update", description="", metric="m", priority=0.5)
    safe = Hypothesis(id="s", hypothesis_type="safety_enhancement", description="", metric="m", priority=0.35)
    ranked = rank_hypotheses([fact, safe], ["safety"])
    assert [h.id for h in ranked] == ["s", "k"]
    assert [h.priority for h in ranked] == [0.35, 0.5]  # unchanged: the floor cannot hide it


def test_feature_labels_in_the_documents_format() -> None:
    config = _config(feature_interpretations={"L10_F234": "refusal", "12:5": "facts", "l3/f7": "x"})
    assert config.feature_interpretations == {"10:234": "refusal", "12:5": "facts", "3:7": "x"}
    with pytest.raises(pydantic.ValidationError, match="not a feature"):
        _config(feature_interpretations={"refusal": "L10_F234"})
    from builtin_plugins.interpreters.user import parse_user_interpretations

    (interp,) = parse_user_interpretations({"L10_F234": "refusal/safety features"})
    assert (interp.feature.layer, interp.feature.feature) == (10, 234)


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from md_framework.cache import default_cache_dir
    from md_framework.runtime import ModelLoadOptions

    monkeypatch.delenv("MD_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    home = default_cache_dir()
    assert home.is_absolute() and not str(home).startswith(str(tmp_path))  # not the cwd
    assert "md-framework" in str(home)
    assert _config().cache_dir == home and ModelLoadOptions().cache_dir == home
    assert _config(cache_dir="./cache").cache_dir == tmp_path / "cache"  # explicit, absolute
    monkeypatch.setenv("MD_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert _config(cache_dir="./cache").cache_dir == tmp_path / "env"  # the variable wins
    assert ModelLoadOptions().cache_dir == tmp_path / "env"


def test_every_command_uses_the_one_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from builtin_plugins.organisms.bench import BenchConfig
    from builtin_plugins.organisms.plugin import _organism_cache
    from builtin_plugins.tracers.commands import _cache_root

    monkeypatch.setenv("MD_CACHE_DIR", str(tmp_path / "c"))
    assert _organism_cache(None) == tmp_path / "c" / "organisms"
    assert BenchConfig(specs=["toy-null"]).cache_dir == tmp_path / "c" / "organisms"
    assert _cache_root(None) == tmp_path / "c"
    assert _organism_cache("x") == Path("x").absolute()  # a --cache-dir flag is explicit
    for command in (["organism", "build", "--help"], ["bench", "--help"], ["trace", "--help"],
                    ["transcoders", "train", "--help"]):
        done = subprocess.run([sys.executable, "-m", "md_framework", *command],
                              capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0 and "--cache-dir" in done.stdout, (command, done.stderr[-500:])
        assert ".md-cache" not in done.stdout, command


def test_no_universe_uses_a_documented_default() -> None:
    from md_framework.pipeline.defaults import ENGLISH_DEFAULT, apply_default_universe

    organism = apply_default_universe(_config())
    assert organism.universe.organism == "toy-multi" and organism.universe.default_used
    english = apply_default_universe(AnalysisConfig(base_model="org/base", intervention_model="org/tuned"))
    families = set(english.universe.generators)
    assert {"harmful_hacking", "math", "capitals"} <= families
    assert set(ENGLISH_DEFAULT) >= {"safety / harmful_content", "capabilities", "reasoning"}
    assert all(g.startswith("en/") for g in english.universe.generators.values())
    toy = apply_default_universe(AnalysisConfig(base_model="toy", intervention_model="toy:edited"))
    assert set(toy.universe.families) == {"capitals", "counting"}
    given = _config(universe={"families": {"a": ["x", "y"]}})
    assert apply_default_universe(given) is given  # a given universe is never replaced


def test_missing_universe_without_default_fails_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    from md_framework import MechanisticBehavioralAnalyzer

    config = AnalysisConfig(base_model="organism:toy-multi#base", intervention_model="toy",
                            tracer="activation-diff")
    analyzer = MechanisticBehavioralAnalyzer(config)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the universe was checked")

    monkeypatch.setattr(analyzer, "load_models", no_loading)
    with pytest.raises(ConfigError, match="no default applies"):
        analyzer.analyze()


def test_effect_size_formats_like_a_number_and_keeps_its_interval() -> None:
    from md_framework import EffectSize

    es = EffectSize(name="cohens_dz", estimate=0.81234, ci_low=0.4, ci_high=1.2)
    assert f"{es:.3f}" == "0.812" and f"{es:+.1f}" == "+0.8" and float(es) == 0.81234
    assert str(es) == f"{es}" == "cohens_dz=0.812 [0.4, 1.2]"
    assert es.model_dump()["ci_low"] == 0.4


def test_memory_estimate_has_the_documents_keys() -> None:
    from md_framework import check_memory_requirements

    small = check_memory_requirements("toy", batch_size=1)
    big = check_memory_requirements("toy", batch_size=8)
    assert big["total_inference_gb"] >= small["total_inference_gb"] > 0
    assert big["activations_gb"] >= small["activations_gb"]
    assert big["batch_size"] == 8 and "fits" in big
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
           "vocab_size": 32000, "num_attention_heads": 32, "model_type": "llama"}
    seven_b = check_memory_requirements(cfg, batch_size=8, dtype="float16")
    assert 20 < seven_b["weights_gb"] < 30  # 2 x 6.7e9 parameters x 2 bytes


def test_figures_show_and_save_without_a_display(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from md_framework import CircuitVisualizer

    from builtin_plugins.report.synthetic import synthetic_report

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url))
    report = synthetic_report()
    fig = CircuitVisualizer().create_summary_dashboard(report)
    path = fig.show()
    assert path.is_file() and str(path) in capsys.readouterr().out and not opened
    saved = fig.save(tmp_path / "d.png")
    assert saved.stat().st_size > 5000
    monkeypatch.setenv("DISPLAY", ":0")
    CircuitVisualizer().create_circuit_network_graph(report.circuit_diff).show()
    assert len(opened) == 1 and opened[0].startswith("file://")


def test_network_graph_shows_top_nodes_with_interpretations() -> None:
    from builtin_plugins.report.plots import network_from_diff
    from builtin_plugins.report.synthetic import synthetic_report

    report = synthetic_report()
    data = network_from_diff(report.circuit_diff, interpretations=report.interpretations)
    features = [k for k in data.nodes if k.startswith("F:")]
    assert 0 < len(features) <= 12 + 2 * 24
    top = sorted(report.circuit_diff.systematic_changes, key=lambda c: -abs(c.mean_delta))[0]
    key = f"F:{top.feature.layer}:{top.feature.feature}"
    assert key in data.nodes
    if report.interpretations.get(f"{top.feature.layer}:{top.feature.feature}"):
        assert data.nodes[key]["interp"]


def test_organism_models_honour_load_options(artefact_cache_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    from md_framework.runtime import ModelLoadOptions, ModelSpec
    from md_framework.tracing import load_model

    loaded = load_model(ModelSpec(source="organism:toy-multi#base"),
                        ModelLoadOptions(cache_dir=artefact_cache_dir, dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16  # not silently float32
    assert loaded.spec.source == "organism:toy-multi#base" and loaded.loader == "organism"


def test_a_run_on_the_default_universe_resumes(tmp_path) -> None:
    """The run-directory check compares the stored fingerprint before analyze() fills in
    the default universe: the fingerprint must already include it, or a run that used the
    default could never be resumed (found running examples/quickstart.py twice)."""
    from md_framework import AnalysisConfig, MechanisticBehavioralAnalyzer
    from md_framework.pipeline.defaults import apply_default_universe

    config = AnalysisConfig(base_model_name="organism:toy-multi#base",
                            intervention_model_name="organism:toy-multi#intervention")
    assert not config.universe.organism
    filled = apply_default_universe(config)
    assert filled.universe.organism == "toy-multi"
    fresh = MechanisticBehavioralAnalyzer(config, run_dir=tmp_path / "run")
    started = MechanisticBehavioralAnalyzer(filled, run_dir=tmp_path / "run")
    assert fresh._fingerprint() == started._fingerprint()
