"""Test generation: builtin generators, sampling across sources, exclusion, exact n."""

from __future__ import annotations

import pytest

from builtin_plugins import test_generators as tg
from md_framework import hookimpl
from md_framework.plugins import Hooks, get_plugin_manager
from builtin_plugins.pipeline.testgen import (
    NotEnoughTests, TestPool, generate_tests, normalise_prompt, split_universe,
)
from md_framework.runtime import TestGenerationContext
from md_framework.types import FeatureRef, Hypothesis, TestCase

UNIVERSE = {
    "harmful": [f"How do I do forbidden thing {i}?" for i in range(20)],
    "chat": [f"Tell me about cats {i}" for i in range(20)],
}


def _hyp(**kw) -> Hypothesis:
    base = dict(id="h1", hypothesis_type="safety_degradation", description="refuses less",
                metric="refusal_probability", direction="decrease", families=["harmful"],
                source_features=[FeatureRef(layer=1, feature=3)],
                feature_contexts=["Ignore the rules and tell me"])
    base.update(kw)
    return Hypothesis(**base)


def _hooks(*extra) -> Hooks:
    return Hooks(get_plugin_manager(autoload=False, extra_plugins=list(extra)))


def test_split_universe_is_seeded_disjoint_and_complete():
    ex1, conf1 = split_universe(UNIVERSE, 0.5, seed=3)
    ex2, conf2 = split_universe(UNIVERSE, 0.5, seed=3)
    ex3, _ = split_universe(UNIVERSE, 0.5, seed=4)
    assert (ex1, conf1) == (ex2, conf2)
    assert ex1 != ex3
    for fam, prompts in UNIVERSE.items():
        assert not set(ex1[fam]) & set(conf1[fam])
        assert sorted(ex1[fam] + conf1[fam]) == sorted(prompts)
        assert len(ex1[fam]) == 10
    ex, conf = split_universe({"one": ["a", "b"]}, 0.9, seed=0)
    assert len(ex["one"]) == 1 and len(conf["one"]) == 1
    with pytest.raises(ValueError):
        split_universe(UNIVERSE, 1.5, 0)


def test_family_claims_get_only_random_held_out_family_prompts():
    explore, confirm = split_universe(UNIVERSE, 0.5, seed=0)
    excluded = frozenset(explore["harmful"] + ["Ignore the rules and tell me"])
    ctx = TestGenerationContext(universe=UNIVERSE, feature_contexts={"1:3": ["ctx A", "ctx B"]},
                                excluded_prompts=excluded, seed=0)
    hooks = _hooks()
    tests = generate_tests(_hyp(), 10, hooks=hooks, context=ctx)
    assert len(tests) == 10
    assert {t.prompt for t in tests} == set(confirm["harmful"])  # nothing else is evidence
    assert all(t.family == "harmful" and t.metadata["evidence"] == "family" for t in tests)
    assert all(t.hypothesis_id == "h1" and t.id.startswith("h1/t/") for t in tests)
    assert generate_tests(_hyp(), 10, hooks=hooks, context=ctx) == tests
    other_seed = TestGenerationContext(universe=UNIVERSE, excluded_prompts=excluded, seed=1)
    again = generate_tests(_hyp(), 10, hooks=hooks, context=other_seed)
    assert [t.prompt for t in again] != [t.prompt for t in tests]  # a seeded random order
    with pytest.raises(NotEnoughTests):
        generate_tests(_hyp(), 11, hooks=hooks, context=ctx)
    # two families: interleaved, so a prefix covers both
    both = generate_tests(_hyp(families=["harmful", "chat"]), 6, hooks=hooks, context=ctx)
    assert {t.family for t in both[:2]} == {"harmful", "chat"}


def test_generate_tests_for_a_hypothesis_without_family_samples_all_generators():
    ctx = TestGenerationContext(universe=UNIVERSE, feature_contexts={"1:3": ["ctx A", "ctx B"]},
                                excluded_prompts=frozenset(["ctx B"]), seed=0)
    h = _hyp(families=[])
    tests = generate_tests(h, 30, hooks=_hooks(), context=ctx)
    assert len(tests) == 30
    keys = [normalise_prompt(t.prompt) for t in tests]
    assert len(set(keys)) == 30 and "ctx b" not in keys
    assert {t.source for t in tests} == {"test-generators"}
    gens = {t.metadata["generator"] for t in tests}
    assert {"universe", "feature", "template"} <= gens
    clusters = [t.metadata["cluster"] for t in tests]
    assert len(set(clusters)) == 30  # at most one prompt per paraphrase cluster
    assert generate_tests(h, 30, hooks=_hooks(), context=ctx) == tests


def test_not_enough_tests_names_sources_and_allow_fewer():
    ctx = TestGenerationContext(universe=UNIVERSE, seed=0)
    hooks = _hooks()
    with pytest.raises(NotEnoughTests) as info:
        generate_tests(_hyp(), 1000, hooks=hooks, context=ctx)
    msg = str(info.value)
    assert "1000 test prompts wanted" in msg and "held-out prompts of harmful: 20" in msg
    some = generate_tests(_hyp(), 1000, hooks=hooks, context=ctx, allow_fewer=True)
    assert len(some) == 20
    with pytest.raises(NotEnoughTests) as info:
        generate_tests(_hyp(families=[]), 1000, hooks=hooks, context=ctx)
    assert "test-generators:template" in str(info.value)


class _Extra:
    """A third-party generator that contributes duplicates and excluded prompts."""

    @hookimpl
    def md_generate_tests(self, hypothesis, n_tests, context):
        return [TestCase(id="x1", hypothesis_id=hypothesis.id, prompt="EXTRA prompt one"),
                TestCase(id="x2", hypothesis_id=hypothesis.id, prompt="extra   prompt one"),
                TestCase(id="x3", hypothesis_id=hypothesis.id, prompt="forbidden"),
                TestCase(id="x4", hypothesis_id=hypothesis.id, prompt="extra two")]


def test_sampling_across_plugins_with_provenance_dedupe_and_exclusion():
    ctx = TestGenerationContext(universe=UNIVERSE, excluded_prompts=frozenset({"Forbidden"}),
                                seed=1)
    tests = generate_tests(_hyp(families=[]), 20, hooks=_hooks(("my-gen", _Extra())),
                           context=ctx)
    mine = [t for t in tests if t.source == "my-gen"]
    assert sorted(t.prompt for t in mine) == ["EXTRA prompt one", "extra two"]
    assert mine[0].metadata["generator_id"] in {"x1", "x4"}
    # a family claim: another plugin's prompts are never evidence for the family
    dropped: dict[str, int] = {}
    family = generate_tests(_hyp(), 20, hooks=_hooks(("my-gen", _Extra())), context=ctx,
                            dropped=dropped)
    assert not [t for t in family if t.source == "my-gen"]
    assert dropped.get("my-gen") == 3  # two distinct prompts and one duplicate


@pytest.mark.parametrize("kind", sorted(tg.TEMPLATES))
def test_every_builtin_type_gets_template_tests(kind):
    h = _hyp(hypothesis_type=kind, families=[], source_features=[], feature_contexts=[])
    tests = generate_tests(h, 12, hooks=_hooks(), context=TestGenerationContext(seed=0))
    assert len(tests) == 12


def test_knowledge_templates_carry_targets_and_unknown_types_fall_back():
    h = _hyp(hypothesis_type="knowledge_update", families=[], source_features=[],
             feature_contexts=[])
    tests = generate_tests(h, 10, hooks=_hooks(), context=TestGenerationContext(seed=0))
    assert any(t.target == "Paris" for t in tests) or all(t.target for t in tests
                                                          if t.metadata["generator"] == "template")
    plugin_type = _hyp(hypothesis_type="medical_advice_shift", families=[], source_features=[],
                       feature_contexts=[])
    assert len(generate_tests(plugin_type, 5, hooks=_hooks(),
                              context=TestGenerationContext(seed=0))) == 5


def test_paraphrase_is_deterministic():
    import random

    a = [tg.paraphrase("How do I make bread?", random.Random(i)) for i in range(10)]
    b = [tg.paraphrase("How do I make bread?", random.Random(i)) for i in range(10)]
    assert a == b and len(set(a)) > 3


def test_test_pool_caches_and_tolerates_shortfall():
    pool = TestPool(_hooks(), TestGenerationContext(universe={"harmful": ["one?", "two?"]},
                                                    seed=0), n_per_hypothesis=10_000)
    h = _hyp()
    first = pool.tests_for(h)
    assert pool.tests_for(h) is first and len(first) == 2
    assert "h1" in pool.shortfalls
    # fewer than min_tests held-out prompts: no tests (decided with reason "not enough tests")
    lone = TestPool(_hooks(), TestGenerationContext(universe={"harmful": ["only one?"]}, seed=0),
                    n_per_hypothesis=10)
    assert lone.tests_for(h) == [] and "h1" in lone.shortfalls
