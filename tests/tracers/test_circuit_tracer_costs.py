"""circuit-tracer's attribution work is counted in the token currency (md_framework.costs):
the forward passes of the ReplacementModel's own weights copy and one backward pass per
attribution batch over every row of the batched sequence."""

from __future__ import annotations

import pytest

pytest.importorskip("circuit_tracer")


@pytest.mark.parametrize("batch_size", [8, 16])
def test_attribution_forward_and_backward_passes_are_counted(artefact_cache_dir, batch_size: int) -> None:
    import torch

    torch.set_num_threads(1)
    from md_framework import costs
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model
    from builtin_plugins.toy import build_toy_transcoders
    from builtin_plugins.tracers.circuit_tracer import CircuitTracerTracer

    model = load_model(ModelSpec(source="toy"), ModelLoadOptions(cache_dir=artefact_cache_dir))
    assert model.local_path is not None  # the ReplacementModel loads a second copy of it
    tracer = CircuitTracerTracer({"transcoders": str(build_toy_transcoders(artefact_cache_dir)),
                                  "batch_size": batch_size, "cache_dir": str(artefact_cache_dir)})
    prompt = "the capital of japan is"
    positions = len(tracer.replacement_model(model).ensure_tokenized(prompt))

    batches: list[int] = []
    rm = tracer.replacement_model(model)
    setup = rm.setup_attribution

    def spy_setup(*args, **kwargs):  # counts compute_batch calls independently of the counter
        ctx = setup(*args, **kwargs)
        compute = ctx.compute_batch

        def spy(*a, **k):
            batches.append(1)
            return compute(*a, **k)

        ctx.compute_batch = spy
        return ctx

    rm.setup_attribution = spy_setup
    with costs.measuring() as cost:
        graphs = tracer.trace(model, [prompt])
    work = cost()
    assert graphs and batches
    # phase 0 (the prompt) and phase 1 (the prompt repeated batch_size times)
    assert work.prompt_tokens == positions * (1 + batch_size)
    assert work.backward_passes == len(batches)
    assert work.backward_tokens == len(batches) * batch_size * positions
    assert work.tokens == work.prompt_tokens + 2 * work.backward_tokens
