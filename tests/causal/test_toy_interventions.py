"""Feature interventions on the toy-multi organism (activation-diff neurons)."""

from __future__ import annotations

import random

import pytest

from builtin_plugins.pipeline.causal import causal_share, measure_triplet
from md_framework.types import FeatureRef, TestCase

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(toy_multi):
    from builtin_plugins.metrics.core import RefusalProbability
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer, activation_differences

    base, inter = load_dir(toy_multi.base_dir), load_dir(toy_multi.intervention_dir)
    harmful = sorted(toy_multi.universe["harmful_hacking"])
    discover, held_out = harmful[::2], harmful[1::2]  # neurons found on one half, tested on the other
    diffs = activation_differences(base, inter, discover, top_n=25)
    behind = [FeatureRef(layer=n["layer"], feature=n["neuron"]) for n in diffs["neurons"]]
    d_mlp = inter.model.config.intermediate_size
    n_layers = inter.model.config.num_hidden_layers
    # unrelated: the neurons whose activations changed least on these prompts
    everything = activation_differences(base, inter, discover, top_n=n_layers * d_mlp)["neurons"]
    quiet = [FeatureRef(layer=n["layer"], feature=n["neuron"]) for n in everything[-100:]]
    unrelated = random.Random(0).sample(quiet, len(behind))
    cases = [TestCase(id=f"c{i}", hypothesis_id="h", prompt=p) for i, p in enumerate(held_out)]
    return base, inter, ActivationDiffTracer(), RefusalProbability(), behind, unrelated, cases


def _share(setup, features, mode="base"):
    base, inter, tracer, metric, _, _, cases = setup
    vb, vi, va = measure_triplet(
        metric, base, inter,
        lambda: tracer.intervened_model(inter, features, mode, base=base), cases)
    return causal_share(vb, vi, va, min_denominator=metric.min_change, seed=0)


def test_base_patching_the_refusal_neurons_accounts_for_a_share(setup) -> None:
    behind = setup[4]
    est = _share(setup, behind)
    assert est.mean_intervention - est.mean_base > 0.5  # the planted refusal change
    assert est.effect is not None and est.effect.ci_low > 0.0
    assert est.effect.estimate > 0.01


def test_unrelated_neurons_account_for_about_nothing(setup) -> None:
    behind, unrelated = setup[4], setup[5]
    assert not set(f.key for f in behind) & set(f.key for f in unrelated)
    related = _share(setup, behind).effect.estimate
    control = _share(setup, unrelated).effect
    assert abs(control.estimate) < 0.005
    assert abs(control.estimate) < related / 5


def test_patching_everything_back_to_base_recovers_most_of_the_effect(setup) -> None:
    inter = setup[1]
    everything = [FeatureRef(layer=layer, feature=f)
                  for layer in range(inter.model.config.num_hidden_layers)
                  for f in range(inter.model.config.intermediate_size)]
    assert _share(setup, everything).effect.estimate > 0.5


def test_hooks_are_removed_and_self_patching_is_a_no_op(setup) -> None:
    base, inter, tracer, metric, behind, _, cases = setup
    before = [r.value for r in metric.measure(inter, cases)]
    with tracer.intervened_model(inter, behind, "zero") as zeroed:
        assert zeroed.model_id != inter.model_id and zeroed.model is inter.model
        changed = [r.value for r in metric.measure(zeroed, cases)]
    assert changed != before
    assert [r.value for r in metric.measure(inter, cases)] == before
    with tracer.intervened_model(base, behind, "base", base=base) as same:
        assert [r.value for r in metric.measure(same, cases)] == \
            [r.value for r in metric.measure(base, cases)]


def test_base_patching_works_while_generating(setup) -> None:
    from builtin_plugins.metrics.core import generate_answers

    base, inter, tracer = setup[0], setup[1], setup[2]
    prompts = [c.prompt for c in setup[6][:3]]
    everything = [FeatureRef(layer=layer, feature=f)
                  for layer in range(inter.model.config.num_hidden_layers)
                  for f in range(inter.model.config.intermediate_size)]
    with tracer.intervened_model(inter, everything, "base", base=base) as patched:
        answers = generate_answers(patched, prompts, 8, 2)  # KV cache on both models
    assert len(answers) == 3 and all(isinstance(t, str) for t, _ in answers)


def test_bad_features_and_modes_are_refused(setup) -> None:
    from md_framework.errors import ConfigError

    inter, tracer = setup[1], setup[2]
    with pytest.raises(ConfigError, match="out of range"):
        with tracer.intervened_model(inter, [FeatureRef(layer=0, feature=10**6)], "zero"):
            pass
    with pytest.raises(ConfigError, match="needs the base model"):
        with tracer.intervened_model(inter, [FeatureRef(layer=0, feature=1)], "base"):
            pass
    with pytest.raises(ConfigError, match="mode"):
        with tracer.intervened_model(inter, [FeatureRef(layer=0, feature=1)], "nope"):
            pass
