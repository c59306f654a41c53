"""The example detector, tested with md-framework's kit (fixtures from md_framework.testing,
loaded by pytest through the pytest11 entry point: no import needed)."""

from __future__ import annotations

import md_example_detector.detector as detector


def test_demoted_family_is_found(md_hooks, md_synthetic_diff) -> None:
    hooks = md_hooks(("example-detector", detector))  # a fresh manager: this plugin only
    found = hooks.collect("md_detect_patterns", diff=md_synthetic_diff(changed_family="math"),
                          interpretations={}, config=None)
    assert [(c.plugin, c.value.pattern_type, c.value.families) for c in found] == \
        [("example-detector", "top_answer_demotion", ["math"])]
    assert found[0].value.evidence["mean_delta"] < 0


def test_no_change_no_pattern(md_synthetic_diff) -> None:
    diff = md_synthetic_diff()
    unchanged = diff.model_copy(update={"prompt_diffs": [
        pd.model_copy(update={"intervention_logit_targets": pd.base_logit_targets}) for pd in diff.prompt_diffs]})
    assert detector.top_answer_demotion(unchanged) == []


def test_a_softer_demotion_without_a_flip_is_found(md_synthetic_diff) -> None:
    (pattern,) = detector.top_answer_demotion(md_synthetic_diff(flip_token=None))
    assert pattern.families == ["harmful"] and -0.4 < pattern.evidence["mean_delta"] < -0.3


def test_declared_type_yields_its_own_hypothesis(md_hooks, md_synthetic_diff) -> None:
    from md_framework.testing import discover_with

    result = discover_with(md_synthetic_diff(changed_family="weather"), ("example-detector", detector))
    assert result.unregistered_pattern_types == []
    ours = [h for h in result.hypotheses if h.hypothesis_type == "answer_demotion"]
    assert [(h.metric, h.direction, h.families) for h in ours] == [("target_logprob", "decrease", ["weather"])]
    assert "example-detector" in ours[0].provenance and "hypothesis-templates" in ours[0].provenance
