"""The analyzer end to end with ``tracer: crosscoder`` and the ADL stage switched on."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_analyzer_with_the_crosscoder_tracer_and_the_adl_stage(safety_crosscoder, toy_safety,
                                                               organism_cache) -> None:
    from md_framework.config import AnalysisConfig
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer
    from md_framework.plugins import get_plugin_manager

    config = AnalysisConfig.model_validate({
        "base_model": "organism:toy-safety#base", "intervention_model": "organism:toy-safety#intervention",
        "universe": {"organism": "toy-safety", "n_per_family": 12}, "seed": 0,
        "cache_dir": str(organism_cache.parent), "threads": 1, "n_seed_prompts": 24,
        "max_hypotheses_to_test": 4, "n_test_prompts_per_hypothesis": 8,
        "tracer": "crosscoder",
        "tracer_options": {"crosscoder": str(safety_crosscoder), "cache_dir": str(organism_cache.parent)},
        "activation_difference_lens": {"enabled": True, "n_prompts": 8, "steer_prompts": 1}})
    analyzer = MechanisticBehavioralAnalyzer(config, plugin_manager=get_plugin_manager())
    report = analyzer.analyze()
    assert analyzer.diff is not None and analyzer.diff.dictionary_id.startswith("xc:")
    adl = [p for p in report.patterns if p.pattern_type == "activation_difference_lens"]
    assert len(adl) == 1 and adl[0].detector == "activation-difference-lens"
    assert adl[0].evidence["cost"]["generic_prompts"] == 8
    # crosscoder latents reach the hypotheses, and causal confirmation patches them
    featured = [h for h in report.hypotheses if h.source_features]
    assert featured
    latents = analyzer._context_tracer.crosscoder().states
    assert all(f.layer in latents for h in featured for f in h.source_features)
    confirmed = [r for r in report.validated() if r.hypothesis.source_features]
    for r in confirmed:
        assert any("causal" in n for n in r.notes)
