"""Feature-set search on the toy-multi organism: attribution patching + activation-patching
sweep (neurons, capped at 5 %) and per-layer difference directions; the found set is measured
on prompts the search never saw, next to a random control."""

from __future__ import annotations

import random

import pytest

from builtin_plugins.pipeline.causal import causal_share, measure_triplet, share_difference
from md_framework.types import TestCase

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(toy_multi):
    from builtin_plugins.organisms.build import load_dir

    return load_dir(toy_multi.base_dir), load_dir(toy_multi.intervention_dir)


def _split(family: str, n_search: int = 8, n_fresh: int = 10):
    from builtin_plugins.organisms.toy_language import all_prompts

    pool = [p for p, _ in all_prompts(family)]
    chosen = random.Random(family).sample(pool, n_search + n_fresh)
    return chosen[:n_search], chosen[n_search:]


def test_neuron_search_respects_the_cap_and_ranks_by_attribution(models) -> None:
    from builtin_plugins.tracers.feature_search import search_neurons

    base, inter = models
    search, _ = _split("harmful_hacking")
    found = search_neurons(base, inter, search, max_share=0.05)
    d_mlp = inter.model.config.intermediate_size * inter.model.config.num_hidden_layers
    assert found["cap"] == int(0.05 * d_mlp)
    assert 0 < len(found["features"]) <= found["cap"]
    assert found["n_prompts"] == len(search) and found["passes"]["backward"] == 2 * len(search)
    shares = [s["share"] for s in found["sweep"] if s["set"].startswith("top ")]
    assert shares[-1] > shares[0] > 0  # more of the ranked neurons move the answer further
    # prompts whose answers agree give nothing to search
    same = search_neurons(base, inter, [p for p, _ in _cooking()])
    assert same["features"] == [] and "agree" in same["reason"]


def _cooking():
    from builtin_plugins.organisms.toy_language import items

    return items("cooking", 4, 0)


def test_searched_set_carries_the_refusal_on_fresh_prompts_and_a_random_one_does_not(models) -> None:
    from builtin_plugins.metrics.core import RefusalProbability
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer
    from builtin_plugins.tracers.feature_search import is_direction, random_directions

    base, inter = models
    tracer = ActivationDiffTracer()
    search, fresh = _split("harmful_hacking")
    found = tracer.search_feature_set(base, inter, search)
    feats = found["features"]
    assert feats and found["search_share"] > 0.5
    assert found["alternative"]["search_share"] is not None
    cases = [TestCase(id=f"c{i}", hypothesis_id="h", prompt=p) for i, p in enumerate(fresh)]
    metric = RefusalProbability()

    def run(fs):
        return measure_triplet(metric, base, inter,
                               lambda: tracer.intervened_model(inter, fs, "base", base=base), cases)

    vb, vi, va = run(feats)
    controls = (random_directions(sorted({f.layer for f in feats}), seed=0)
                if all(is_direction(f) for f in feats) else
                [f.model_copy(update={"feature": (f.feature + 97) % 192}) for f in feats])
    _, _, vc = run(controls)
    share = causal_share(vb, vi, va, min_denominator=0.05).effect
    control = causal_share(vb, vi, vc, min_denominator=0.05).effect
    diff = share_difference(vb, vi, va, vc, min_denominator=0.05)
    assert share.estimate > 0.5 and share.ci_low > 0.3
    assert abs(control.estimate) < 0.1
    assert diff.ci_low > 0.3


def test_direction_sites_need_a_known_direction(models) -> None:
    from md_framework.errors import ConfigError
    from md_framework.types import FeatureRef

    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer

    base, inter = models
    unknown = [FeatureRef(layer=1, feature=0, dictionary_id="direction:nope")]
    with pytest.raises(ConfigError, match="unknown direction"):
        with ActivationDiffTracer().intervened_model(inter, unknown, "base", base=base):
            pass


def test_the_behaviour_metric_steers_the_sweep_to_a_set_that_carries_upper_casing(models) -> None:
    """Upper-casing spans the whole answer: the decision-point proxy picks a direction that
    fixes only the first token; with the metric, the sweep measures every candidate (neuron
    prefixes, decision-point and answer-wide directions) and keeps one that carries it."""
    from builtin_plugins.metrics.core import UppercaseRatio
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer

    base, inter = models
    tracer = ActivationDiffTracer()
    search, fresh = _split("greetings")
    found = tracer.search_feature_set(base, inter, search, metric=UppercaseRatio())
    assert "behaviour-metric sweep" in found["kind"] and found["search_share"] > 0.5
    names = [r["set"] for r in found["sweep"]]
    assert any(n.startswith("neurons top") for n in names)
    assert any(n.startswith("answer-wide") for n in names) and any(n.startswith("decision") for n in names)
    cases = [TestCase(id=f"c{i}", hypothesis_id="h", prompt=p) for i, p in enumerate(fresh)]
    vb, vi, va = measure_triplet(
        UppercaseRatio(), base, inter,
        lambda: tracer.intervened_model(inter, found["features"], "base", base=base), cases)
    assert causal_share(vb, vi, va, min_denominator=0.05).effect.estimate > 0.5
    assert found["controls"] and all(c.dictionary_id.startswith("direction-random") for c in found["controls"])
