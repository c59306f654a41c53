"""The activation-difference lens (ADL) stage: config switch, cost, and naming the planted
family of a toy single-change organism."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from md_framework.config import ActivationDifferenceLensConfig, AnalysisConfig


def test_config_switch_rejects_unknown_options_and_large_prompt_sets() -> None:
    cfg = AnalysisConfig(base_model="a", intervention_model="b")
    assert cfg.activation_difference_lens.enabled is False
    on = AnalysisConfig(base_model="a", intervention_model="b",
                        activation_difference_lens={"enabled": True, "k_tokens": 3})
    assert on.activation_difference_lens.enabled and on.activation_difference_lens.k_tokens == 3
    with pytest.raises(ValidationError, match="no_such"):
        AnalysisConfig(base_model="a", intervention_model="b",
                       activation_difference_lens={"enabled": True, "no_such": 1})
    with pytest.raises(ValidationError):
        ActivationDifferenceLensConfig(n_prompts=33)


def test_disabled_stage_contributes_nothing() -> None:
    from md_framework.types import CircuitDiff

    from builtin_plugins.adl import md_detect_patterns

    cfg = AnalysisConfig(base_model="a", intervention_model="b")
    assert md_detect_patterns(diff=CircuitDiff(base_model_id="a", intervention_model_id="b"),
                              interpretations={}, config=cfg) == []


def test_generic_prompts_are_fixed_per_seed_and_at_most_32() -> None:
    from builtin_plugins.adl.lens import GENERIC_PROMPTS, generic_prompts

    assert len(generic_prompts(64, 0)) == 32
    assert generic_prompts(8, 1) == generic_prompts(8, 1)
    assert set(generic_prompts(8, 1)) <= set(GENERIC_PROMPTS)


@pytest.mark.slow
def test_adl_names_the_planted_family_of_toy_safety(safety_pair, toy_safety) -> None:
    from md_framework.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import activation_difference_lens

    base, inter = safety_pair
    explore, _ = split_universe(toy_safety.universe, 0.5, 0)
    res = activation_difference_lens(base, inter, explore,
                                     ActivationDifferenceLensConfig(enabled=True), seed=0)
    planted = {p["family"] for p in toy_safety.ground_truth()["planted"]}
    assert res.named_families[0] in planted
    assert res.hypotheses[0][1] == "refusal_probability"
    # fixed cost: 2 passes per generic prompt, plus one base pass per mapping prompt
    n_map = sum(len(v) for v in explore.values())
    assert res.cost["forward_passes"] == 2 * res.cost["generic_prompts"] + n_map
    # the direction part does not grow with the universe: a one-family universe costs the same
    small = activation_difference_lens(base, inter, {"x": explore["cooking"][:1]},
                                       ActivationDifferenceLensConfig(enabled=True), seed=0)
    assert small.cost["forward_passes"] - 1 == res.cost["forward_passes"] - n_map
    assert small.directions[0].direction == res.directions[0].direction


@pytest.mark.slow
def test_adl_patterns_become_self_typed_hypotheses(safety_pair, toy_safety) -> None:
    from md_framework.pipeline.discovery import generate_hypotheses
    from md_framework.plugins import Hooks, get_plugin_manager
    from md_framework.pipeline.testgen import split_universe

    from builtin_plugins.adl import PATTERN_TYPE, patterns_from_result
    from builtin_plugins.adl.lens import activation_difference_lens

    base, inter = safety_pair
    explore, _ = split_universe(toy_safety.universe, 0.5, 0)
    res = activation_difference_lens(base, inter, explore,
                                     ActivationDifferenceLensConfig(enabled=True), seed=0)
    patterns = patterns_from_result(res)
    assert patterns and all(p.pattern_type == PATTERN_TYPE for p in patterns)
    hyps = generate_hypotheses(patterns, {}, hooks=Hooks(get_plugin_manager()))
    assert hyps
    # only the ADL plugin typed them (the generic template skips self-typed patterns)
    assert {h.metric for h in hyps} == {c[1] for c in res.hypotheses}
    assert all(h.families == patterns[0].families for h in hyps if h.source_patterns == [patterns[0].id])
