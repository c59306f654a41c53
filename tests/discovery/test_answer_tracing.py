"""Answer-aware tracing on the toy-multi organism: both models' greedy answers teacher-forced
through both models, divergences per answer position, features there, costs and caching."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(toy_multi):
    from builtin_plugins.organisms.build import load_dir

    return load_dir(toy_multi.base_dir), load_dir(toy_multi.intervention_dir)


def test_the_fact_change_peaks_where_the_answers_part(models) -> None:
    from builtin_plugins.organisms.toy_language import items
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer
    from builtin_plugins.tracers.answers import max_divergence

    base, inter = models
    prompts = [p for p, _ in items("telephone_fact", 3, 1)] + [p for p, _ in items("cooking", 2, 1)]
    fams = ["telephone_fact"] * 3 + ["cooking"] * 2
    traces = ActivationDiffTracer().trace_answers(base, inter, prompts, fams)
    fact, control = traces[:3], traces[3:]
    for t in fact:
        assert t.base_answer.split()[-2] == "bell" and t.intervention_answer.split()[-2] == "edison"
        peak, where = max_divergence(t, "base")
        assert t.base_tokens[where].strip() == "bell" and peak > 0.3
        pos = t.answers[0].positions[where]
        assert pos.intervention_top.strip() == "edison" and pos.base_top.strip() == "bell"
        assert pos.intervention_logprob < pos.base_logprob - 1.0
        assert any(m.token.strip() == "edison" for m in pos.moved) and pos.features
        assert t.generated_tokens > 0 and t.teacher_forced_tokens > 2 * len(t.base_tokens)
        assert t.dictionary_id == "neurons" and t.base_features.keys() == t.intervention_features.keys()
    for t in control:
        assert t.base_answer == t.intervention_answer
        assert max_divergence(t, "base")[0] < 0.05


def test_answer_traces_are_cached_and_cached_ones_cost_nothing(models, tmp_path) -> None:
    from md_framework.tracing import trace_answer_pairs

    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer

    base, inter = models
    tracer = ActivationDiffTracer()
    prompts = ["who invented the telephone ?", "hello , my name is anna ."]
    first = trace_answer_pairs(tracer, base, inter, prompts, ["telephone_fact", "greetings"], tmp_path)
    again = trace_answer_pairs(tracer, base, inter, prompts, ["telephone_fact", "greetings"], tmp_path)
    assert [t.intervention_answer for t in first] == [t.intervention_answer for t in again]
    assert sum(t.teacher_forced_tokens for t in first) > 0
    assert sum(t.teacher_forced_tokens + t.generated_tokens for t in again) == 0
    assert trace_answer_pairs(object(), base, inter, prompts) is None  # no capability
