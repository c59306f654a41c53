"""md_framework.costs: forward, generate and backward work counted at the model."""

from __future__ import annotations

import pytest


def _tiny_llama():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=2, max_position_embeddings=64)
    return torch, transformers.LlamaForCausalLM(config).eval()


def test_kernel_module_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; import md_framework.costs as c; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(c.snapshot().tokens)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_forward_generate_backward_are_counted():
    from md_framework import costs

    from builtin_plugins.models.cost_counting import attach

    torch, model = _tiny_llama()
    counter = attach(model)
    assert attach(model) is counter  # idempotent
    with costs.measuring() as work:
        ids = torch.tensor([[1, 2, 3, 4], [0, 0, 5, 6]])
        mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    w = work()
    assert (w.prompt_tokens, w.forward_passes, w.generated_tokens, w.backward_passes) == (6, 1, 0, 0)

    with costs.measuring() as work:
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    w = work()
    assert out.shape[1] == 9
    assert w.prompt_tokens == 6 and w.generated_tokens == 10 and w.forward_passes == 1

    with costs.measuring() as work:
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
        logits[0, -1, 7].backward()
    w = work()
    assert (w.prompt_tokens, w.backward_passes, w.backward_tokens) == (3, 1, 3)
    assert w.tokens == 3 + 2 * 3
    assert counter.work.forward_passes >= 3


def test_loaded_models_carry_a_counter(toy_multi):
    from builtin_plugins.models.cost_counting import counter_of

    from builtin_plugins.organisms.build import load_dir

    loaded = load_dir(toy_multi.base_dir)
    assert counter_of(loaded.model) is not None
