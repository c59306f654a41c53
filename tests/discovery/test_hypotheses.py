"""Hypotheses from patterns: planted vs null, swap, lab provenance, steering, dedupe and cap."""

from __future__ import annotations

import pytest

import md_lab_patterns.detectors as lab_detectors
from md_framework.config import AnalysisConfig
from builtin_plugins.pipeline.diff import diff_graph_sets
from builtin_plugins.pipeline.discovery import (
    discover,
    generate_focused_hypotheses,
    generate_hypotheses,
    merge_hypotheses,
)
from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.types import CircuitDiff, FeatureRef, Pattern, SystematicChange
from tests.discovery.synth import organism

USER = {"4:7": "refusal: fires right before 'I cannot help with that'"}


@pytest.fixture(scope="module")
def lab_hooks() -> Hooks:
    pm = get_plugin_manager(autoload=False, extra_plugins=[("lab-patterns", lab_detectors)])
    return Hooks(pm)


def _run(hooks, planted, seed=0, swap=False, context=None):
    diff = diff_graph_sets(*organism(planted, seed=seed, swap=swap), "base", "intervention")
    return discover(diff, hooks, None, {"user_interpretations": USER} if context is None else context)


def test_planted_change_names_family_and_kind_null_is_quiet(lab_hooks) -> None:
    planted_top, null_counts, null_max = [], [], []
    for seed in range(4):
        _, _, hyps = _run(lab_hooks, True, seed)
        planted_top.append(hyps[0])
        _, null_patterns, null_hyps = _run(lab_hooks, False, seed)
        null_counts.append(len(null_hyps))
        null_max.append(max((h.priority for h in null_hyps), default=0.0))
    for top in planted_top:
        assert top.hypothesis_type == "safety_degradation" and top.families == ["harmful"]
        assert top.metric == "refusal_probability" and top.direction == "decrease"
        assert top.priority > 0.9
        assert {"4:7", "3:21"} <= {f.key for f in top.source_features}
    # measured on 4 seeds: planted top priority ~0.99, null: 0 hypotheses
    assert sum(null_counts) <= 1 and max(null_max) < 0.5


def test_swapping_the_circuits_changes_the_hypotheses(lab_hooks) -> None:
    _, _, forward = _run(lab_hooks, True)
    _, _, swapped = _run(lab_hooks, True, swap=True)
    assert forward[0].hypothesis_type == "safety_degradation"
    assert swapped[0].hypothesis_type == "safety_enhancement" and swapped[0].direction == "increase"
    assert {h.id for h in forward}.isdisjoint({h.id for h in swapped})


def test_lab_plugin_patterns_reach_hypothesis_provenance(lab_hooks) -> None:
    _, patterns, hyps = _run(lab_hooks, True)
    lab = [p for p in patterns if p.detector == "lab-patterns"]
    assert [p.pattern_type for p in lab] == ["family_concentrated_change"]
    top = hyps[0]
    assert "lab-patterns" in top.provenance and "hypothesis-templates" in top.provenance
    assert "lab:family:harmful" in top.source_patterns


def test_templates_for_lab_pattern_types(lab_hooks) -> None:
    style = Pattern(id="lab:late-layer-shift", pattern_type="late_layer_shift", description="late shift",
                    families=["caps_style"], strength=0.8, detector="lab-patterns",
                    features=[FeatureRef(layer=9, feature=1)])
    fam = Pattern(id="lab:family:math", pattern_type="family_concentrated_change", description="math down",
                  families=["math"], strength=0.7, detector="lab-patterns",
                  evidence={"signed_mass": -2.0})
    # the lab plugin declares its types (md_pattern_types); the builtin templates read them
    hyps = {h.source_patterns[0]: h for h in generate_hypotheses([style, fam], hooks=lab_hooks)}
    assert hyps["lab:late-layer-shift"].hypothesis_type == "style_change"
    assert hyps["lab:late-layer-shift"].metric == "uppercase_ratio"
    assert hyps["lab:family:math"].hypothesis_type == "reasoning_change"
    assert hyps["lab:family:math"].direction == "decrease"
    assert all("lab-patterns" in h.provenance for h in hyps.values())


def _suppressed_weather_diff() -> CircuitDiff:
    return CircuitDiff(base_model_id="b", intervention_model_id="i", systematic_changes=[
        SystematicChange(feature=FeatureRef(layer=5, feature=2), mean_delta=-1.2, n_prompts=8,
                         p_value=1e-4, q_value=1e-3, families={"weather": -1.2, "harmful": 0.0})])


def test_feature_interpretations_steer_the_type() -> None:
    diff = _suppressed_weather_diff()
    plain = generate_focused_hypotheses(diff)
    assert [h.hypothesis_type for h in plain] == ["capability_loss"]
    steered = generate_focused_hypotheses(diff, feature_interpretations={"5:2": "UPPERCASE formatting style"})
    assert steered[0].hypothesis_type == "style_change"
    assert "UPPERCASE formatting style" in steered[0].feature_contexts


def test_focus_areas_steer_generation_and_ranking() -> None:
    diff = _suppressed_weather_diff()
    focused = generate_focused_hypotheses(diff, focus_areas=["safety", "knowledge"])
    # no area can be inferred for "weather", so one hypothesis per focus area is generated
    assert {h.hypothesis_type for h in focused} == {"safety_degradation", "knowledge_update"}
    assert all(h.families == ["weather"] for h in focused)
    config = AnalysisConfig(base_model="b", intervention_model="i", focus_areas=["bias"])
    assert {h.hypothesis_type for h in generate_focused_hypotheses(diff, ["bias"], config=config)} == {"bias_shift"}


def test_dedupe_merges_and_cap_applies() -> None:
    patterns = [Pattern(id=f"p{i}", pattern_type="systematic_suppression", description="x",
                        families=[f"fam{i % 12}"], strength=0.1 + 0.05 * (i % 12), detector="d")
                for i in range(24)]
    config = AnalysisConfig(base_model="b", intervention_model="i", max_hypotheses_to_test=5)
    hyps = generate_hypotheses(patterns, config=config)
    assert len(hyps) == 5
    assert [h.priority for h in hyps] == sorted((h.priority for h in hyps), reverse=True)
    assert all(len(h.source_patterns) == 2 for h in hyps)  # two patterns per family merged
    assert len({h.id for h in hyps}) == 5
    # the same kind of evidence twice counts once; two kinds corroborate (noisy-or)
    merged = merge_hypotheses(generate_hypotheses(patterns[:1]) * 2)
    assert len(merged) == 1 and merged[0].priority == pytest.approx(patterns[0].strength * 0.9)
    h = generate_hypotheses(patterns[:1])[0]
    other = h.model_copy(update={"source_patterns": ["output_shift:fam0"]})
    merged = merge_hypotheses([h, other])
    assert len(merged) == 1 and merged[0].priority == pytest.approx(1 - (1 - h.priority) ** 2)


def test_universe_restricts_families() -> None:
    pattern = Pattern(id="p", pattern_type="systematic_suppression", description="x",
                      families=["weather", "not-in-universe"], strength=0.5)
    config = AnalysisConfig(base_model="b", intervention_model="i",
                            universe={"families": {"weather": ["is it sunny?"]}})
    assert generate_hypotheses([pattern], config=config)[0].families == ["weather"]
