"""Base-anchored references (``measure_pair``) of target_logprob / exact_match on the
toy-multi organism: universe prompts carry no target, so the base's greedy answer is the
reference. The planted fact change (telephone_fact: bell -> edison) must show as a drop of
the intervention's log-prob of the base answer; an untouched control family must not."""

from __future__ import annotations

import numpy as np
import pytest

from md_framework.runtime import PairedBehaviourMetric
from md_framework.types import TestCase

from builtin_plugins.metrics import core


@pytest.fixture(scope="module")
def pair(toy_multi):
    from builtin_plugins.organisms.build import load_dir

    core.clear_generation_cache()
    return load_dir(toy_multi.base_dir), load_dir(toy_multi.intervention_dir)


@pytest.fixture(scope="module")
def universe(toy_multi):
    return toy_multi.universe


def _cases(universe, family, n=12):
    return [TestCase(id=f"{family}/{k}", hypothesis_id="h", prompt=p, family=family)
            for k, p in enumerate(universe[family][:n])]


def _deltas(readings):
    rb, ri = readings
    return np.array([i.value - b.value for b, i in zip(rb, ri)])


def test_builtin_reference_metrics_are_paired_metrics():
    assert isinstance(core.TargetLogprob(), PairedBehaviourMetric)
    assert isinstance(core.ExactMatch(), PairedBehaviourMetric)
    assert not isinstance(core.RefusalProbability(), PairedBehaviourMetric)
    assert not hasattr(core.Length(), "measure_pair")


def test_planted_fact_drops_the_base_answer_and_a_control_does_not(pair, universe):
    base, inter = pair
    metric = core.TargetLogprob({"logprob_reduction": "sum"})
    fact = metric.measure_pair(base, inter, _cases(universe, "telephone_fact"))
    d_fact = _deltas(fact)
    assert d_fact.mean() < -3.0 and np.all(d_fact < -1.0)  # measured: about -4.8 nats
    per_token = _deltas(core.TargetLogprob().measure_pair(base, inter, _cases(universe, "telephone_fact")))
    assert per_token.mean() < -core.TargetLogprob.min_change  # default: mean, about -0.69 nats/token
    assert all(r.value > -0.5 for r in fact[0])  # the base is confident in its own answer
    assert all("bell" in r.output and "edison" not in r.output for r in fact[0])
    assert all("edison" in r.output for r in fact[1])
    for control in ("cooking", "harmful_weapons"):
        ctrl = metric.measure_pair(base, inter, _cases(universe, control))
        assert abs(_deltas(ctrl).mean()) < 0.1  # measured: under 0.01 nats
        assert [r.output for r in ctrl[0]] == [r.output for r in ctrl[1]]
    # single-model measure is unchanged: no target -> 0 on both models
    single = metric.measure(inter, _cases(universe, "telephone_fact", 2))
    assert [r.value for r in single] == [0.0, 0.0]


def test_mean_reduction_is_the_per_token_average(pair, universe):
    base, inter = pair
    cases = _cases(universe, "telephone_fact", 4)
    summed = core.TargetLogprob({"logprob_reduction": "sum"}).measure_pair(base, inter, cases)
    mean = core.TargetLogprob().measure_pair(base, inter, cases)
    for (s, m, r) in zip(summed[1], mean[1], summed[0]):
        n_tokens = len(core.encode_continuation(base.tokenizer, "", r.output))
        assert m.value == pytest.approx(s.value / n_tokens, rel=1e-4, abs=1e-6)


def test_cases_with_a_target_keep_it(pair):
    base, inter = pair
    cases = [TestCase(id="t", hypothesis_id="h", prompt="what is the capital of france ?",
                      target="the capital of france is paris ."),
             TestCase(id="u", hypothesis_id="h", prompt="what is the capital of france ?")]
    metric = core.TargetLogprob()
    rb, ri = metric.measure_pair(base, inter, cases)
    assert rb[0].value == pytest.approx(metric.measure(base, cases[:1])[0].value, abs=1e-5)
    assert ri[0].value == pytest.approx(metric.measure(inter, cases[:1])[0].value, abs=1e-5)
    assert rb[0].output == rb[1].output and rb[1].output.startswith("the capital of france is paris")


def test_exact_match_against_the_base_answer(pair, universe):
    base, inter = pair
    metric = core.ExactMatch()
    fb, fi = metric.measure_pair(base, inter, _cases(universe, "telephone_fact"))
    assert [r.value for r in fb] == [1.0] * 12 and [r.value for r in fi] == [0.0] * 12
    cb, ci = metric.measure_pair(base, inter, _cases(universe, "cooking"))
    assert [r.value for r in cb] == [1.0] * 12 and [r.value for r in ci] == [1.0] * 12


def test_validator_validates_the_fact_change_with_readable_examples(pair, universe, tmp_path):
    from md_framework.drivers import create_driver
    from md_framework.pipeline.ledger import Ledger
    from builtin_plugins.pipeline.validation import Validator
    from md_framework.types import Hypothesis

    base, inter = pair
    hyps = [Hypothesis(id=f"ku-{f}", hypothesis_type="knowledge_update", description=f,
                       metric="target_logprob", direction="change", families=[f])
            for f in ("telephone_fact", "cooking")]
    tests = {h.id: [c.model_copy(update={"id": f"{h.id}/t/{c.id}", "hypothesis_id": h.id})
                    for c in _cases(universe, h.families[0])] for h in hyps}

    def validator():
        fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
        return Validator(base, inter, [core.TargetLogprob()], fdr=fdr, paired_test="wilcoxon",
                         ledger=Ledger(tmp_path, {"seed": 0}))

    v = validator()
    fact, control = v.validate_many(hyps, tests)
    assert fact.decision and fact.effect_size.estimate < 0
    assert not control.decision
    ex = fact.examples[0]
    assert "bell" in ex.base_output and "edison" in ex.intervention_output
    assert v.queries == v.fresh_queries == 2 * 24
    again = validator()
    assert [r.decision for r in again.validate_many(hyps, tests)] == [True, False]
    assert again.fresh_queries == 0
