"""Difference latents of the crosscoder tracer: a `changed` latent turns its decoder but keeps
its norms, so its node is the same in both graphs; its difference latent ``n + j`` (decoder
``d_j^I - d_j^B`` on the intervention side only) is what the diff can see."""

from __future__ import annotations

import pytest

from md_framework.errors import ConfigError
from md_framework.types import FeatureRef

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracers(safety_crosscoder, artefact_cache_dir):
    from builtin_plugins.tracers.crosscoder import CrosscoderTracer

    opts = {"crosscoder": str(safety_crosscoder), "cache_dir": str(artefact_cache_dir)}
    return CrosscoderTracer(opts), CrosscoderTracer({**opts, "difference_nodes": False})


@pytest.fixture(scope="module")
def hacking(toy_safety):
    return sorted(toy_safety.universe["harmful_hacking"])[:4]


def _changed(tracer) -> tuple[int, list[int], int]:
    """(layer, its changed latents, its number of latents n)."""
    xc = tracer.crosscoder()
    layer = min(xc.states)
    changed = [j for j, c in enumerate(xc.classes[layer]) if c == "changed"]
    assert changed, "the toy-safety crosscoder has changed latents (benchmarks/README: 2.3 %)"
    return layer, changed, xc.n_latents(layer)


def test_difference_nodes_are_in_intervention_graphs_only(tracers, safety_pair, hacking) -> None:
    from builtin_plugins.tracers._common import encode_prompt, tracing_text

    tracer, plain = tracers
    base, inter = safety_pair
    layer, changed, n = _changed(tracer)
    xc = tracer.crosscoder()
    gb, gi = tracer.trace(base, hacking), tracer.trace(inter, hacking)
    assert not [nd for g in gb for nd in g.feature_nodes() if nd.feature >= n]
    diff_nodes = [(g, nd) for g in gi for nd in g.feature_nodes() if nd.feature >= n]
    assert diff_nodes
    W = xc.states[layer]["W_dec"]
    for g, nd in diff_nodes:
        j = nd.feature - n
        assert j in changed and g.metadata["latent_classes"][f"{layer}:{nd.feature}"] == "difference"
        ids = encode_prompt(inter.tokenizer, tracing_text(inter.tokenizer, g.prompt, "auto"))
        f = tracer._pair_codes(inter, ids)[2][layer]
        assert nd.activation == pytest.approx(float(f[nd.position, j] * (W[1, j] - W[0, j]).norm()), rel=1e-4)
    # the latents' own nodes are what they were without difference nodes (own top-k)
    for g, g0 in zip(gi, plain.trace(inter, hacking)):
        assert [nd for nd in g.feature_nodes() if nd.feature < n] == g0.feature_nodes()
    assert not [nd for g in plain.trace(inter, hacking) for nd in g.feature_nodes() if nd.feature >= n]


def test_reader_and_decoder_of_a_difference_latent(tracers, safety_pair, hacking) -> None:
    tracer, _ = tracers
    base, inter = safety_pair
    layer, changed, n = _changed(tracer)
    xc = tracer.crosscoder()
    refs = [FeatureRef(layer=layer, feature=n + j) for j in changed]
    on_inter = tracer.feature_activations(inter, hacking, refs)
    on_base = tracer.feature_activations(base, hacking, refs)
    assert max(v for row in on_inter for v, _ in row.values()) > 0
    assert all(v == 0 for row in on_base for v, _ in row.values())
    W = xc.states[layer]["W_dec"]
    ref = refs[0]
    assert tracer.decoder_directions(inter, [ref])[ref.key] == pytest.approx(
        (W[1, changed[0]] - W[0, changed[0]]).tolist(), abs=1e-6)
    assert not any(tracer.decoder_directions(base, [ref])[ref.key])


def test_zeroing_a_difference_latent_patches_its_latent_to_the_base(tracers, safety_pair, hacking) -> None:
    import torch

    from builtin_plugins.tracers._common import encode_prompt

    tracer, _ = tracers
    base, inter = safety_pair
    layer, changed, n = _changed(tracer)
    ids = torch.tensor([encode_prompt(inter.tokenizer, hacking[0])])
    latents = [FeatureRef(layer=layer, feature=j) for j in changed]
    differences = [FeatureRef(layer=layer, feature=n + j) for j in changed]

    def logits(model, refs, mode):
        with tracer.intervened_model(model, refs, mode, base=base if model is inter else None) as m:
            with torch.no_grad():
                return m.model(input_ids=ids).logits

    with torch.no_grad():
        before = inter.model(input_ids=ids).logits
        base_before = base.model(input_ids=ids).logits
    patched = logits(inter, latents, "base")
    assert not torch.allclose(patched, before)
    assert torch.allclose(logits(inter, differences, "zero"), patched, atol=1e-5)
    assert torch.allclose(logits(inter, differences, "base"), patched, atol=1e-5)
    # the base side of a difference latent writes nothing
    assert torch.allclose(logits(base, differences, "zero"), base_before, atol=1e-6)


def test_only_changed_latents_have_a_difference_latent(tracers, safety_pair) -> None:
    tracer, plain = tracers
    _, inter = safety_pair
    xc = tracer.crosscoder()
    layer, changed, n = _changed(tracer)
    shared = next(j for j, c in enumerate(xc.classes[layer]) if c == "shared")
    with pytest.raises(ConfigError, match="only `changed` latents"):
        tracer.decoder_directions(inter, [FeatureRef(layer=layer, feature=n + shared)])
    with pytest.raises(ConfigError, match="out of range"):
        tracer.decoder_directions(inter, [FeatureRef(layer=layer, feature=2 * n)])
    with pytest.raises(ConfigError, match="out of range"):
        plain.decoder_directions(inter, [FeatureRef(layer=layer, feature=n + changed[0])])


def test_the_diff_sees_changed_latents_through_their_difference_latents(tracers, safety_pair,
                                                                        four_families) -> None:
    """Without difference nodes a changed latent's two nodes differ only by the ratio of its
    decoder norms; with them the diff lists new, significantly increased features."""
    from builtin_plugins.pipeline.diff import diff_graph_sets

    base, inter = safety_pair
    prompts, fams = four_families
    found = []
    for tracer in tracers:
        n = _changed(tracer)[2]
        diff = diff_graph_sets(tracer.trace(base, prompts, fams), tracer.trace(inter, prompts, fams),
                               base.model_id, inter.model_id)
        found.append([c for c in diff.systematic_changes
                      if c.feature.feature >= n and c.mean_delta > 0 and c.q_value <= 0.1])
    with_nodes, without = found
    assert with_nodes and not without
