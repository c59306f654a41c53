"""Each builtin detector's rule, on hand-made diffs."""

from __future__ import annotations

from builtin_plugins.patterns import rules
from builtin_plugins.pipeline.diff import diff_graph_sets
from builtin_plugins.pipeline.discovery import detect_patterns
from md_framework.types import (
    CircuitDiff,
    FeatureChange,
    FeatureInterpretation,
    FeatureRef,
    PromptDiff,
    SystematicChange,
    feature_node_id as F,
    logit_node_id as L,
    token_node_id as T,
)
from tests.discovery.synth import graph


def _change(layer, feature, delta, q, families):
    return SystematicChange(feature=FeatureRef(layer=layer, feature=feature), mean_delta=delta,
                            n_prompts=8, p_value=q, q_value=q, families=families)


def _diff(changes, prompt_diffs=()):
    return CircuitDiff(base_model_id="b", intervention_model_id="i", systematic_changes=changes,
                       prompt_diffs=list(prompt_diffs))


def test_suppression_needs_significance_and_groups_by_family() -> None:
    diff = _diff([_change(2, 1, -1.0, 0.001, {"harmful": -3.0, "weather": -0.1}),
                  _change(3, 2, -0.5, 0.02, {"harmful": -1.4, "weather": 0.0}),
                  _change(1, 1, -0.4, 0.5, {"weather": -1.0}),  # not significant
                  _change(1, 2, 0.9, 0.001, {"weather": 2.0})])  # increase
    pats = rules.systematic_suppression(diff)
    assert [p.id for p in pats] == ["suppression:harmful"]
    assert {f.key for f in pats[0].features} == {"2:1", "3:2"}
    assert pats[0].strength == rules.evidence_strength(0.001)
    assert rules.systematic_suppression(_diff([_change(1, 1, -0.4, 0.5, {"a": -1})])) == []


def _prompt_diff(prompt, family, features, base_paths, inter_paths):
    return PromptDiff(prompt=prompt, family=family, feature_changes=[
        FeatureChange(node_id=F(l, p, f), layer=l, position=p, feature=f, base_activation=b,
                      intervention_activation=i, status=s) for (l, p, f, b, i, s) in features],
        base_top_paths=base_paths, intervention_top_paths=inter_paths)


def test_emergence_of_new_features_and_recurring_paths() -> None:
    new_path = [T(0, 10), F(2, 0, 5), L(7)]
    old_path = [T(0, 10), F(1, 0, 3), L(7)]
    pds = [_prompt_diff(f"p{i}", "math", [(2, 0, 5, 0.0, 1.5, "intervention_only"), (1, 0, 3, 1.0, 1.0, "shared")],
                        [old_path], [new_path, old_path]) for i in range(3)]
    diff = _diff([_change(2, 5, 1.5, 0.001, {"math": 1.5})], pds)
    pats = rules.capability_emergence(diff)
    assert [p.id for p in pats] == ["emergence:math"]
    ev = pats[0].evidence
    assert ev["changes"][0]["new_on_prompts"] == 3
    assert ev["recurring_new_paths"][0]["n_prompts"] == 3
    # an increase of a feature the base already used everywhere is not emergence
    shared = [_prompt_diff(f"p{i}", "math", [(2, 0, 5, 1.0, 2.5, "shared")], [old_path], [old_path])
              for i in range(3)]
    assert rules.capability_emergence(_diff([_change(2, 5, 1.5, 0.001, {"math": 1.5})], shared)) == []


def test_safety_degradation_uses_interpretations_and_logit_lens() -> None:
    diff = _diff([_change(4, 7, -2.0, 0.001, {"harmful": -2.0}), _change(1, 1, -2.0, 0.001, {"harmful": -2.0})])
    lens = {"4:7": [FeatureInterpretation(feature=FeatureRef(layer=4, feature=7),
                                          promoted_tokens=["Sorry", " cannot", "I"], source="logit-lens")]}
    pats = rules.safety_change(diff, lens)
    assert [p.pattern_type for p in pats] == ["safety_degradation"]
    assert [f.key for f in pats[0].features] == ["4:7"]
    assert pats[0].evidence["changes"][0]["interpretation_sources"] == ["logit-lens"]
    assert pats[0].families == ["harmful"]
    assert rules.safety_change(diff, {}) == []  # no interpretation, no safety claim
    up = _diff([_change(4, 7, 2.0, 0.001, {"harmful": 2.0})])
    assert [p.pattern_type for p in rules.safety_change(up, lens)] == ["safety_enhancement"]


def test_rerouting_same_output_different_path() -> None:
    base_edges = [(T(0, 10), F(1, 0, 1), 1.0), (F(1, 0, 1), F(2, 0, 2), 1.0), (F(2, 0, 2), L(901), 1.0)]
    new_edges = [(T(0, 10), F(1, 0, 8), 1.0), (F(1, 0, 8), F(2, 0, 9), 1.0), (F(2, 0, 9), L(901), 1.0),
                 (T(0, 10), F(1, 0, 1), 0.1), (F(1, 0, 1), L(901), 0.1)]
    feats_b = {(1, 0, 1): 1.0, (2, 0, 2): 1.0}
    feats_i = {(1, 0, 1): 0.1, (1, 0, 8): 1.0, (2, 0, 9): 1.0}
    bases = [graph(f"q{i}", "facts", feats_b, base_edges, logits=((901, 0.9),)) for i in range(3)]
    inters = [graph(f"q{i}", "facts", feats_i, new_edges, logits=((901, 0.9),)) for i in range(3)]
    diff = diff_graph_sets(bases, inters, "b", "i")
    pats = rules.computation_rerouting(diff)
    assert [p.id for p in pats] == ["rerouting:facts"]
    assert {f.key for f in pats[0].features} >= {"1:8", "2:9", "2:2"}
    # same graphs: no rerouting; different output: not rerouting either
    assert rules.computation_rerouting(diff_graph_sets(bases, bases, "b", "b")) == []
    other = [graph(f"q{i}", "facts", feats_i, [(s, t, w) for s, t, w in new_edges if t != L(901)] +
                   [(F(2, 0, 9), L(5), 1.0)], logits=((5, 0.9),)) for i in range(3)]
    assert rules.computation_rerouting(diff_graph_sets(bases, other, "b", "i")) == []


def test_detectors_fill_detector_name() -> None:
    diff = _diff([_change(2, 1, -1.0, 0.001, {"harmful": -3.0})])
    pats = detect_patterns(None, diff, {}, None)
    assert [(p.id, p.detector) for p in pats] == [("suppression:harmful", "pattern-detectors")]


def test_output_shift_types_top_token_flips() -> None:
    from builtin_plugins.patterns.outputs import flip_kind, output_shift
    from builtin_plugins.pipeline.diff import diff_graph_sets
    from md_framework.types import LogitTarget
    from tests.discovery.synth import organism

    assert flip_kind("hello", "HELLO") == "case_upper" and flip_kind("HELLO", "hello") == "case_lower"
    assert flip_kind("sure", "i") == "refusal_gain" and flip_kind("Ġsorry", "sure") == "refusal_loss"
    assert flip_kind("bell", "edison") == "content" and flip_kind("the", "the") is None
    # synthetic organism: harmful prompts move from "sorry" to "sure" -> refusal loss there only
    pats = output_shift(diff_graph_sets(*organism(True), "b", "i"))
    assert [(p.families, p.evidence["kind"]) for p in pats] == [(["harmful"], "refusal_loss")]
    assert pats[0].evidence["n_flipped"] == 8 and pats[0].strength > 0.4
    assert output_shift(diff_graph_sets(*organism(False), "b", "i")) == []

    def upper(graphs):
        out = []
        for g in graphs:
            if g.family == "weather":
                g = g.model_copy(update={"logit_targets": [LogitTarget(token_id=5, token="SURE", probability=0.8)]})
            out.append(g)
        return out
    base, inter = organism(False)
    pats = output_shift(diff_graph_sets(base, upper(inter), "b", "i"))
    assert [(p.families, p.evidence["kind"]) for p in pats] == [(["weather"], "case_upper")]
    from builtin_plugins.pipeline.discovery import generate_hypotheses
    top = generate_hypotheses(pats)[0]
    assert (top.hypothesis_type, top.metric, top.direction, top.families) == \
        ("style_change", "uppercase_ratio", "increase", ["weather"])


def test_family_specific_change_ignores_uniform_drift() -> None:
    from builtin_plugins.patterns.outputs import family_specific_change
    from builtin_plugins.pipeline.diff import diff_graph_sets
    from tests.discovery.synth import organism

    pats = family_specific_change(diff_graph_sets(*organism(True), "b", "i"))
    assert [p.families for p in pats] == [["harmful"]]
    assert {f.key for f in pats[0].features} == {"4:7", "3:21"}
    assert pats[0].evidence["outputs_changed"] is True
    base, inter = organism(False)
    from tests.discovery.synth import PLANTED
    drift = [g.model_copy(update={"nodes": [
        n.model_copy(update={"activation": n.activation + 0.5})
        if n.kind == "feature" and (n.layer, n.feature) not in PLANTED else n for n in g.nodes]})
        for g in inter]  # every shared feature up by 0.5 on every family
    assert family_specific_change(diff_graph_sets(base, drift, "b", "i")) == []
