"""The tracers' FeatureReader capability (feature_activations, decoder_directions) and the
analyzer's feature-driven test prompts built on it."""

from __future__ import annotations

import pytest

from builtin_plugins.pipeline.testgen import FeatureContextFinder
from md_framework.tracing_api import FeatureReader, can_read_features
from md_framework.types import FeatureRef, Hypothesis

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inter(toy_multi):
    from builtin_plugins.organisms.build import load_dir

    return load_dir(toy_multi.intervention_dir)


def test_activation_diff_reads_neurons_as_the_trace_sees_them(inter, toy_multi) -> None:
    from builtin_plugins.tracers._common import encode_prompt
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer, run_with_activations

    tracer = ActivationDiffTracer()
    assert isinstance(tracer, FeatureReader) and can_read_features(tracer)
    prompt = sorted(toy_multi.universe["harmful_hacking"])[0]
    _, neurons, _ = run_with_activations(inter, encode_prompt(inter.tokenizer, prompt))
    acts = neurons[1][1:].abs()  # position 0 skipped, |activation|
    peak, pos = acts.max(dim=0)
    top = [int(i) for i in peak.argsort(descending=True)[:3]]
    features = [FeatureRef(layer=1, feature=f) for f in top]
    (row,) = tracer.feature_activations(inter, [prompt], features)
    for f in top:
        value, where = row[f"1:{f}"]
        assert value == pytest.approx(float(peak[f]), rel=1e-5) and where == int(pos[f]) + 1
    directions = tracer.decoder_directions(inter, features)
    weight = inter.model.model.layers[1].mlp.down_proj.weight
    assert directions[f"1:{top[0]}"] == pytest.approx(weight[:, top[0]].tolist(), rel=1e-6)


def test_circuit_tracer_reads_transcoder_features(inter, toy_multi, artefact_cache_dir) -> None:
    pytest.importorskip("circuit_tracer")
    import torch

    from builtin_plugins.tracers._common import encode_prompt
    from builtin_plugins.tracers.circuit_tracer import CircuitTracerTracer, _layers_of

    tracer = CircuitTracerTracer({"transcoders": "toy", "cache_dir": str(artefact_cache_dir)})
    tc = _layers_of(tracer._load_transcoders())[0]
    prompt = sorted(toy_multi.universe["greetings"])[0]
    seen: dict = {}
    mlp = inter.model.model.layers[0].mlp
    handle = mlp.register_forward_hook(lambda m, a, o: seen.update(x=a[0].detach()))
    try:
        with torch.no_grad():
            inter.model(input_ids=torch.tensor([encode_prompt(inter.tokenizer, prompt)]))
    finally:
        handle.remove()
    with torch.no_grad():  # the transcoder's weights require grad; the values are all we read
        acts = tc.encode(seen["x"])[0][1:]
    feature = int(acts.max(dim=0).values.argmax())
    (row,) = tracer.feature_activations(inter, [prompt], [FeatureRef(layer=0, feature=feature)])
    value, where = row[f"0:{feature}"]
    assert value == pytest.approx(float(acts[:, feature].max()), rel=1e-5) and value > 0
    assert where == int(acts[:, feature].argmax()) + 1
    vec = tracer.decoder_directions(inter, [FeatureRef(layer=0, feature=feature)])[f"0:{feature}"]
    assert vec == pytest.approx(tc.W_dec[feature].float().tolist(), rel=1e-5)


class _FakeReader:
    def __init__(self, table: dict[str, dict[str, float]]) -> None:
        self.table, self.calls = table, []

    def feature_activations(self, model, prompts, features):
        self.calls.append((tuple(prompts), tuple(f.key for f in features)))
        return [{f.key: (self.table.get(p, {}).get(f.key, 0.0), 1) for f in features} for p in prompts]

    def decoder_directions(self, model, features):
        return {}


def test_feature_context_finder_ranks_held_out_prompts_by_activation() -> None:
    table = {"a1": {"0:1": 0.5}, "a2": {"0:1": 2.0}, "b1": {"0:1": 1.0, "0:2": 3.0}, "b2": {}}
    reader = _FakeReader(table)
    finder = FeatureContextFinder(reader, model=None, universe={"a": ["a1", "a2"], "b": ["b1", "b2"]},
                                  top_n=2)
    h1 = Hypothesis(id="h1", hypothesis_type="t", description="d", metric="m",
                    source_features=[FeatureRef(layer=0, feature=1)])
    h2 = Hypothesis(id="h2", hypothesis_type="t", description="d", metric="m",
                    source_features=[FeatureRef(layer=0, feature=1), FeatureRef(layer=0, feature=2)])
    finder.prepare(h1.source_features + h2.source_features)
    assert finder.contexts_for(h1) == {"0:1": ["a2", "b1"]}        # top 2, inactive left out
    assert finder.contexts_for(h2) == {"0:1": ["a2", "b1"], "0:2": ["b1"]}
    assert len(reader.calls) == 1                                  # one pass for every feature
    # a tracer without the capability: no contexts, no error
    assert finder.forward_passes == 4                              # counted as cost
    # a hypothesis about family "a" is confirmed on random "a" prompts: no feature contexts
    h3 = Hypothesis(id="h3", hypothesis_type="t", description="d", metric="m", families=["a"],
                    source_features=[FeatureRef(layer=0, feature=1), FeatureRef(layer=0, feature=2)])
    assert finder.contexts_for(h3) == {}
    plain = FeatureContextFinder(object(), model=None, universe={"a": ["a1"]})
    assert plain.contexts_for(h1) == {}


def test_chat_models_are_traced_through_their_chat_template(inter) -> None:
    """The last traced position must predict the answer, as the metrics see it: with a chat
    template the tracer traces the templated prompt (``never``: the raw text)."""
    from builtin_plugins.metrics.core import encode_prompt as metric_ids
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer

    tok = inter.tokenizer
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} ?{% endfor %}"
    try:
        (chat,) = ActivationDiffTracer().trace(inter, ["hello , my name is anna ."])
        (raw,) = ActivationDiffTracer({"chat_template": "never"}).trace(inter, ["hello , my name is anna ."])
        assert chat.input_token_ids[-len(metric_ids(tok, "hello , my name is anna .")):] == \
            metric_ids(tok, "hello , my name is anna .")
        assert chat.input_tokens[-1] == "?" and raw.input_tokens[-1] == "."
    finally:
        tok.chat_template = None


def test_interpret_activations_feeds_the_interpreters(inter, toy_multi, artefact_cache_dir) -> None:
    """With ``interpret_activations: true`` the analyzer hands its tracer (read on the
    intervention model) and decoder directions to the interpreters: max-activating contexts
    and the logit lens then describe the features; off (default), neither runs."""
    from md_framework.config import config_from_mapping
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    from builtin_plugins.interpreters import contexts, logit_lens
    from builtin_plugins.organisms.build import load_dir

    features = [FeatureRef(layer=1, feature=f) for f in range(4)]
    corpus = {f: sorted(p)[:4] for f, p in toy_multi.universe.items()}
    seen = {}
    for flag in (False, True):
        config = config_from_mapping({
            "base_model": "organism:toy-multi#base", "intervention_model": "organism:toy-multi#intervention",
            "tracer": "activation-diff", "cache_dir": str(artefact_cache_dir), "interpret_activations": flag})
        analyzer = MechanisticBehavioralAnalyzer(config)
        analyzer.models = {"base": load_dir(toy_multi.base_dir), "intervention": inter}
        context = analyzer.interpretation_context(corpus)
        seen[flag] = (contexts.interpret(features, context), logit_lens.interpret(features, context))
    assert seen[False] == ([], [])
    by_contexts, by_lens = seen[True]
    assert by_contexts and all(i.top_contexts for i in by_contexts)
    assert len(by_lens) == len(features) and all(i.promoted_tokens for i in by_lens)
