"""Builtin feature interpreters: each skips without its inputs and tags what it finds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import builtin_plugins.interpreters as interpreters
from builtin_plugins.interpreters.user import parse_user_interpretations
from builtin_plugins.pipeline.discovery import interpret_features
from md_framework.plugins import Hooks, MDPluginManager, get_plugin_manager
from md_framework.types import FeatureRef

A, B = FeatureRef(layer=4, feature=7), FeatureRef(layer=1, feature=3)


def test_every_interpreter_skips_without_inputs() -> None:
    assert interpreters.md_interpret_features(features=[A, B], context={}) == []


def test_max_activating_contexts_record_families() -> None:
    corpus = {"harmful": ["how to build a weapon", "make poison"], "weather": ["is it sunny", "rain?"]}

    def acts(prompts):
        return [{"4:7": (2.0 if "weapon" in p or "poison" in p else 0.0, 3), "1:3": 0.5} for p in prompts]

    out = interpreters.md_interpret_features(features=[A, B], context={"corpus": corpus, "feature_activation_fn": acts})
    by = {i.feature.key: i for i in out}
    assert {c.family for c in by["4:7"].top_contexts} == {"harmful"}
    assert by["4:7"].top_contexts[0].token_position == 3
    assert "family:harmful" in by["4:7"].tags and "area:safety" in by["4:7"].tags
    assert by["4:7"].source == "max-activating-contexts"
    assert len(by["1:3"].top_contexts) == 4


def test_logit_lens_tells_refusal_from_style() -> None:
    vocab = ["cannot", "sorry", "Paris", "HELLO", "WORLD", "the"]
    unembed = np.eye(6)  # d_model = vocab, token i is basis vector i
    dirs = {"4:7": [3, 2, 0, 0, 0, -1], "1:3": [0, 0, 0, 3, 2, -1]}
    ctx = {"decoder_directions": lambda fs: {f.key: dirs[f.key] for f in fs}, "unembed": unembed,
           "vocab": vocab, "logit_lens_k": 2}
    by = {i.feature.key: i for i in interpreters.md_interpret_features(features=[A, B], context=ctx)}
    assert by["4:7"].promoted_tokens == ["cannot", "sorry"] and "refusal" in by["4:7"].tags
    assert by["4:7"].suppressed_tokens[0] == "the"
    assert "style:uppercase" in by["1:3"].tags and "refusal" not in by["1:3"].tags
    # without an unembedding the logit lens is skipped
    assert interpreters.md_interpret_features(features=[A], context={"decoder_directions": ctx["decoder_directions"]}) == []


def test_user_dict_and_neuronpedia_json(tmp_path) -> None:
    seed_style = {"4:7": "refusal: fires before 'I cannot help'", "9:9": "unrelated"}
    out = interpreters.md_interpret_features(features=[A, B], context={"user_interpretations": seed_style})
    assert [(i.feature.key, i.source) for i in out] == [("4:7", "user")]
    assert "refusal" in out[0].tags
    export = [
        {"modelId": "toy", "layer": "1-transcoder", "index": "3",
         "explanations": [{"description": "UPPERCASE shouting"}], "pos_str": ["HELLO", "WORLD"], "neg_str": ["hello"]},
        {"layer": 4, "index": 7, "description": "harmful request detector"},
        {"layer": "bad", "index": "x"},
    ]
    path = tmp_path / "np.json"
    path.write_text(json.dumps(export))
    out = interpreters.md_interpret_features(features=[A, B], context={"user_interpretations": str(path)})
    by = {i.feature.key: i for i in out}
    assert by["1:3"].description == "UPPERCASE shouting" and by["1:3"].promoted_tokens == ["HELLO", "WORLD"]
    assert "style:uppercase" in by["1:3"].tags and by["1:3"].source == "user:neuronpedia"
    assert "harm" in by["4:7"].tags
    assert len(parse_user_interpretations({"explanations": export})) == 2


def test_autointerp_is_off_unless_given_a_model() -> None:
    corpus = {"harmful": ["build a weapon"]}
    acts = lambda prompts: [{"4:7": 1.0} for _ in prompts]  # noqa: E731
    ctx = {"corpus": corpus, "feature_activation_fn": acts}
    sources = {i.source for i in interpreters.md_interpret_features(features=[A], context=ctx)}
    assert sources == {"max-activating-contexts"}
    seen = []
    ctx["autointerp_model"] = lambda prompt: seen.append(prompt) or "requests for weapons\nextra"
    out = interpreters.md_interpret_features(features=[A], context=ctx)
    auto = [i for i in out if i.source == "autointerp"]
    assert auto[0].description == "requests for weapons" and "harm" in auto[0].tags
    assert "build a weapon" in seen[0]


def test_interpret_features_groups_by_key_through_hooks() -> None:
    hooks = Hooks(get_plugin_manager(autoload=False))
    out = interpret_features(hooks, [A, B], {"user_interpretations": {"4:7": "refusal", "1:3": "caps"}})
    assert set(out) == {"4:7", "1:3"} and out["4:7"][0].source == "user"


def test_interpretation_context_is_typed_and_refuses_unknown_keys() -> None:
    from md_framework.errors import ConfigError
    from md_framework.runtime import InterpretationContext

    ctx = InterpretationContext.of({"corpus": {"a": ["x"]}, "max_contexts": 3})
    assert ctx.corpus == {"a": ["x"]} and ctx.max_contexts == 3
    assert ctx.get("corpus") == {"a": ["x"]} and ctx["max_contexts"] == 3  # mapping-style reads
    assert ctx.get("tracer", "none") == "none" and "tracer" not in ctx and "corpus" in ctx
    assert InterpretationContext.of(ctx, max_contexts=5).max_contexts == 5 and ctx.max_contexts == 3
    with pytest.raises(ConfigError, match="unknown key.*'corpora'.*corpus.*plugin_options"):
        InterpretationContext.of({"corpora": {}})


def test_interpreters_receive_an_interpretation_context() -> None:
    from md_framework import hookimpl
    from md_framework.runtime import InterpretationContext

    seen = []

    class Spy:
        @hookimpl
        def md_interpret_features(self, features, context):
            seen.append(context)

    pm = MDPluginManager()
    pm.register(Spy(), name="spy")
    interpret_features(Hooks(pm), [A], {"corpus": {"f": ["p"]}})
    assert isinstance(seen[0], InterpretationContext) and seen[0].corpus == {"f": ["p"]}
