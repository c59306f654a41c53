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


@pytest.fixture(scope="module")
def narrow_pair(safety_pair, toy_safety):
    """A *narrow* fine-tune made by hand: the toy-safety base model with a constant vector
    added to its residual stream after layer 1, along the direction in which the
    ``harmful_hacking`` prompts' base activations stand out from the other families' (the
    kind of bias Minder et al. find narrow fine-tunes leave). The built toy organisms are
    full fine-tunes replaying every family, which the ADL does not name (benchmarks/README.md)."""
    import copy
    import dataclasses

    import torch

    from builtin_plugins.adl.lens import _ids, _residuals
    from builtin_plugins.metrics.core import format_prompt

    base, _ = safety_pair
    tok = base.tokenizer

    def mean_act(prompts):
        rows = [_residuals(base.model, _ids(tok, format_prompt(tok, p)), [1])[1][1:].mean(0)
                for p in prompts]
        return torch.stack(rows).mean(0)

    fam = "harmful_hacking"
    others = [p for f, ps in toy_safety.universe.items() if f != fam for p in sorted(ps)[:4]]
    v = mean_act(sorted(toy_safety.universe[fam])[:8]) - mean_act(others)
    hf = copy.deepcopy(base.model)
    hf.model.layers[1].register_forward_hook(
        lambda m, a, o: ((o[0] + v,) + tuple(o[1:])) if isinstance(o, tuple) else o + v)
    inter = dataclasses.replace(base, model=hf, model_id=base.model_id + "-narrow")
    return base, inter, fam, v


@pytest.mark.slow
def test_adl_names_the_family_of_a_narrow_toy_fine_tune(narrow_pair, toy_safety) -> None:
    import torch

    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import activation_difference_lens

    base, inter, fam, v = narrow_pair
    explore, _ = split_universe(toy_safety.universe, 0.5, 0)
    res = activation_difference_lens(base, inter, explore,
                                     ActivationDifferenceLensConfig(enabled=True, layers=[1]), seed=0)
    (d,) = res.directions
    assert float(torch.nn.functional.cosine_similarity(torch.tensor(d.direction), v, dim=0)) > 0.99
    assert res.named_families == [fam]
    assert d.lens_tokens and len(d.steered) == 4
    # fixed cost: 2 passes per generic prompt, plus one base pass per mapping prompt
    n_map = sum(len(p) for p in explore.values())
    assert res.cost["forward_passes"] == 2 * res.cost["generic_prompts"] + n_map
    # the direction part does not grow with the universe: a one-family universe costs the same
    small = activation_difference_lens(base, inter, {"x": explore["cooking"][:1]},
                                       ActivationDifferenceLensConfig(enabled=True, layers=[1]), seed=0)
    assert small.cost["forward_passes"] - 1 == res.cost["forward_passes"] - n_map
    assert small.directions[0].direction == d.direction
    # an unchanged pair has no direction to read: its norm is zero
    same = activation_difference_lens(base, base, {"x": explore["cooking"][:1]},
                                      ActivationDifferenceLensConfig(enabled=True, layers=[1],
                                                                     steer_prompts=0), seed=0)
    assert same.directions[0].norm == 0.0


@pytest.mark.slow
def test_adl_patterns_become_self_typed_hypotheses(narrow_pair, toy_safety) -> None:
    from builtin_plugins.pipeline.discovery import generate_hypotheses
    from md_framework.plugins import Hooks, get_plugin_manager
    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl import PATTERN_TYPE, patterns_from_result
    from builtin_plugins.adl.lens import activation_difference_lens

    base, inter, _, _ = narrow_pair
    explore, _ = split_universe(toy_safety.universe, 0.5, 0)
    res = activation_difference_lens(base, inter, explore,
                                     ActivationDifferenceLensConfig(enabled=True, layers=[1]), seed=0)
    patterns = patterns_from_result(res)
    assert patterns and all(p.pattern_type == PATTERN_TYPE for p in patterns)
    hyps = generate_hypotheses(patterns, {}, hooks=Hooks(get_plugin_manager()))
    assert hyps
    # only the ADL plugin typed them (the generic template skips self-typed patterns)
    assert {h.metric for h in hyps} == {c[1] for c in res.hypotheses}
    assert all(h.families == patterns[0].families for h in hyps if h.source_patterns == [patterns[0].id])


def _toy_tokenizer():
    from builtin_plugins.organisms.toy_language import vocabulary
    from builtin_plugins.organisms.training import build_toy_tokenizer

    return build_toy_tokenizer(vocabulary())


def test_toy_tokenizer_gets_generic_prompts_in_its_own_language() -> None:
    """The toy organisms' word-level tokenizer reads the English generic prompts as mostly
    ``<unk>`` (no signal); the ADL then draws its generic prompts from the vocabulary."""
    from builtin_plugins.adl.lens import (
        MIN_READABLE,
        choose_generic_prompts,
        generic_prompts,
        readable_share,
    )

    tok = _toy_tokenizer()
    assert readable_share(tok, generic_prompts(32, 0)) < MIN_READABLE
    prompts, source = choose_generic_prompts(tok, 32, 0)
    assert source == "vocabulary" and len(prompts) == 32
    assert readable_share(tok, prompts) == 1.0
    ids = {i for p in prompts for i in tok(p)["input_ids"]}
    assert tok.unk_token_id not in ids
    # fixed per seed, different across seeds, capped at 32, no special tokens drawn
    assert choose_generic_prompts(tok, 32, 0) == (prompts, source)
    assert choose_generic_prompts(tok, 32, 1)[0] != prompts
    assert len(choose_generic_prompts(tok, 64, 0)[0]) == 32
    assert not any(w.startswith("<") for p in prompts for w in p.split())


def test_a_tokenizer_that_reads_english_keeps_the_english_prompts() -> None:
    from builtin_plugins.adl.lens import GENERIC_PROMPTS, choose_generic_prompts, generic_prompts
    from builtin_plugins.organisms.training import build_toy_tokenizer

    tok = build_toy_tokenizer(sorted({w for p in GENERIC_PROMPTS for w in p.split()}))
    prompts, source = choose_generic_prompts(tok, 16, 3)
    assert source == "english" and prompts == generic_prompts(16, 3)


def test_vocabulary_prompts_do_not_depend_on_families_or_models() -> None:
    """Family-agnostic by construction: the draw is a function of the tokenizer's vocabulary
    and the seed only, uniform over its lower-case words (every word equally likely)."""
    from collections import Counter

    from builtin_plugins.adl.lens import vocabulary_prompts

    tok = _toy_tokenizer()
    pool = {w for w in tok.get_vocab() if w.isalpha() and w.islower() and not w.startswith("<")}
    counts = Counter(w for s in range(200) for p in vocabulary_prompts(tok, 32, s) for w in p.split())
    assert set(counts) <= pool
    assert len(counts) > 0.95 * len(pool)  # 51,200 draws reach (almost) every word
    mean = sum(counts.values()) / len(pool)
    assert max(counts.values()) < 2 * mean  # no word (no family's word) is favoured


def test_mapping_option_is_validated() -> None:
    assert ActivationDifferenceLensConfig().mapping == "projection"  # default unchanged
    assert ActivationDifferenceLensConfig(mapping="steering").mapping_strength == 4.0  # the frozen rule
    cfg = ActivationDifferenceLensConfig(mapping="steering", mapping_strength=4)
    assert cfg.mapping == "steering" and cfg.mapping_strength == 4
    with pytest.raises(ValidationError):
        ActivationDifferenceLensConfig(mapping="steer")
    with pytest.raises(ValidationError):
        ActivationDifferenceLensConfig(mapping="steering", mapping_strength=0)


@pytest.mark.slow
@pytest.mark.parametrize("mapping", ["steering", "steering-control"])
def test_steering_mapping_names_toy_safety_family(safety_pair, toy_safety, mapping) -> None:
    """The real toy-safety fine-tune (refusal planted on harmful_hacking; every family
    replayed): the projection mapping ranks the planted family 11th of 12, the steering
    mappings name it (measured 10/10 and 9/10 seeds, benchmarks/README.md); cost counts the
    extra base passes per mapping prompt."""
    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import activation_difference_lens

    base, inter = safety_pair
    strength = 4.0 if mapping == "steering" else 1.0
    for seed in (0, 1):
        explore, _ = split_universe(toy_safety.universe, 0.5, seed)
        res = activation_difference_lens(
            base, inter, explore, ActivationDifferenceLensConfig(
                enabled=True, layers=[1], steer_prompts=0, mapping=mapping, mapping_strength=strength),
            seed=seed)
        assert res.named_families[0] == "harmful_hacking", res.family_scores
        assert res.family_scores["harmful_hacking"] >= 1.0
        n_map = sum(len(p) for p in explore.values())
        per_prompt = 2 if mapping == "steering" else 3
        assert res.cost["forward_passes"] == 2 * res.cost["generic_prompts"] + per_prompt * n_map


@pytest.mark.slow
def test_steering_mapping_does_not_favour_a_family_on_null_pairs(safety_pair, toy_safety) -> None:
    """Null pairs: the toy-safety base model against itself plus a constant random vector
    after layer 1 (a change unrelated to any family). Over 12 such pairs the steering
    mapping's top family must not concentrate on one family (chance: 1/12 each; a rule
    that names one family on most nulls, as `steering` with s=2 does on toy-null, fails).
    An identical pair gives every family z = 0 (nothing reaches min_z)."""
    import copy
    import dataclasses
    from collections import Counter

    import torch

    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import activation_difference_lens

    base, _ = safety_pair
    explore, _ = split_universe(toy_safety.universe, 0.5, 0)
    small = {f: ps[:4] for f, ps in explore.items()}
    opts = ActivationDifferenceLensConfig(enabled=True, layers=[1], steer_prompts=0, n_prompts=8,
                                          mapping="steering", mapping_strength=4.0)
    tops = []
    for s in range(12):
        v = torch.randn(base.model.config.hidden_size, generator=torch.Generator().manual_seed(s))
        hf = copy.deepcopy(base.model)
        hf.model.layers[1].register_forward_hook(
            lambda m, a, o, v=v * 0.2: ((o[0] + v,) + tuple(o[1:])) if isinstance(o, tuple) else o + v)
        inter = dataclasses.replace(base, model=hf, model_id=f"{base.model_id}-null{s}")
        tops.append(activation_difference_lens(base, inter, small, opts, seed=s).named_families[0])
    assert Counter(tops).most_common(1)[0][1] <= 6, Counter(tops)
    same = activation_difference_lens(base, base, small, opts, seed=0)
    assert set(same.family_scores.values()) == {0.0}


@pytest.mark.slow
def test_steering_mapping_on_toy_null_spreads_over_families(organism_cache) -> None:
    """toy-null (fine-tuned on the base model's own answers: nothing planted). Over 10
    seeds the frozen rule (steering, s=4) names no family on more than 6 (measured: at most
    5); the projection default names harmful_hacking on 10/10 and steering with s=2 names
    stories on 10/10 (benchmarks/README.md), either of which this would catch."""
    from collections import Counter

    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import activation_difference_lens

    built = build_organism("toy-null", organism_cache, log=None)
    base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
    opts = ActivationDifferenceLensConfig(enabled=True, steer_prompts=0, mapping="steering",
                                          mapping_strength=4.0)
    tops = [activation_difference_lens(base, inter, split_universe(built.universe, 0.5, s)[0], opts,
                                       seed=s).named_families[0] for s in range(10)]
    assert Counter(tops).most_common(1)[0][1] <= 6, Counter(tops)
