"""Transcoder-feature interventions of the circuit-tracer tracer (forward hooks on the MLP)."""

from __future__ import annotations

import pytest

from md_framework.types import FeatureRef

pytestmark = pytest.mark.slow
pytest.importorskip("circuit_tracer")


def test_zeroing_a_feature_subtracts_its_decoder_contribution_after_the_first_position(
        toy_multi, artefact_cache_dir) -> None:
    import torch

    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.tracers._common import encode_prompt
    from builtin_plugins.tracers.circuit_tracer import CircuitTracerTracer, _layers_of

    base, inter = load_dir(toy_multi.base_dir), load_dir(toy_multi.intervention_dir)
    tracer = CircuitTracerTracer({"transcoders": "toy", "cache_dir": str(artefact_cache_dir)})
    tc = _layers_of(tracer._load_transcoders())[1]
    ids = torch.tensor([encode_prompt(inter.tokenizer, sorted(toy_multi.universe["harmful_hacking"])[0])])
    mlp = inter.model.model.layers[1].mlp
    seen: dict = {}

    def record(m, a, o):
        seen.update(x=a[0].detach(), y=o.detach())

    handle = mlp.register_forward_hook(record)
    try:
        with torch.no_grad():
            clean = inter.model(input_ids=ids).logits
    finally:
        handle.remove()
    x, y_clean = seen["x"], seen["y"]
    acts = tc.encode(x)[0]
    # a feature active at the first position and later: the patch must skip the first
    both = (acts[0] > 0) & (acts[1:].amax(dim=0) > 0)
    assert both.any()
    feature = int(torch.where(both, acts[1:].amax(dim=0), torch.zeros_like(acts[0])).argmax())
    with tracer.intervened_model(inter, [FeatureRef(layer=1, feature=feature)], "zero") as z:
        handle = mlp.register_forward_hook(record)  # after the patch hook: sees its output
        try:
            with torch.no_grad():
                ablated = z.model(input_ids=ids).logits
        finally:
            handle.remove()
    # layer 1 is the last layer: its MLP input is unchanged, so the output moves by -a * W_dec,
    # except at the first position, which the transcoders never saw in training
    expected = -acts[:, feature:feature + 1] @ tc.W_dec[feature:feature + 1].to(acts.dtype)
    expected[0] = 0.0
    assert torch.equal(seen["x"], x) and expected.abs().max() > 0
    assert torch.allclose(seen["y"][0] - y_clean[0], expected, atol=1e-5)
    assert not torch.allclose(clean, ablated)
    with tracer.intervened_model(base, [FeatureRef(layer=1, feature=feature)], "base", base=base) as same:
        with torch.no_grad():
            assert torch.allclose(same.model(input_ids=ids).logits, base.model(input_ids=ids).logits)
