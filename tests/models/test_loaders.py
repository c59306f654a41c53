"""Model loaders: source dispatch, identity, errors, adapters, compatibility, memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from md_framework.errors import ConfigError, MDError
from md_framework.runtime import LoadedModel, ModelLoadOptions, ModelSpec

from builtin_plugins.models.loaders import (
    check_compatibility,
    check_memory_requirements,
    classify_source,
    load_model,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_classify_sources(tmp_path):
    assert classify_source(ModelSpec(source="toy")) == "toy"
    assert classify_source(ModelSpec(source="toy:edited")) == "toy"
    assert classify_source(ModelSpec(source="SmolLM2-135M-Instruct")) == "smollm2"
    assert classify_source(ModelSpec(source="weights/model.Q4.gguf")) == "gguf"
    assert classify_source(ModelSpec(source=str(tmp_path))) == "local"
    assert classify_source(ModelSpec(source="HuggingFaceTB/SmolLM2-135M")) == "hub"
    assert classify_source(ModelSpec(source="no such thing")) is None


def test_hook_returns_none_for_unknown_sources():
    from md_framework.plugins import get_plugin_manager

    pm = get_plugin_manager()
    result = pm.hook.md_load_model(spec=ModelSpec(source="not a model"), options=ModelLoadOptions())
    assert result is None
    with pytest.raises(ConfigError, match="not a hub id"):
        load_model(ModelSpec(source="not a model"))


def test_toy_through_plugin_hook(artefact_cache_dir):
    from md_framework.plugins import get_plugin_manager

    pm = get_plugin_manager()
    opts = ModelLoadOptions(cache_dir=artefact_cache_dir)
    a = pm.hook.md_load_model(spec=ModelSpec(source="toy"), options=opts)
    b = load_model(ModelSpec(source="toy"), opts)
    edited = load_model(ModelSpec(source="toy:edited"), opts)
    assert isinstance(a, LoadedModel) and a.loader == "toy"
    assert a.model_id == b.model_id != edited.model_id
    assert a.model_id.startswith("sha256:")
    from builtin_plugins.models._util import state_dict_sha256

    assert a.model_id == f"sha256:{state_dict_sha256(a.model)}"  # recorded id = weights hash
    assert a.local_path is not None and (a.local_path / "config.json").exists()
    assert a.architecture["num_hidden_layers"] == 2
    with pytest.raises(ConfigError, match="toy model source"):
        load_model(ModelSpec(source="toy:banana"), opts)


def test_hub_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MDError, match="offline"):
        load_model(ModelSpec(source="HuggingFaceTB/SmolLM2-135M-Instruct"),
                   ModelLoadOptions(cache_dir=tmp_path, offline=True))


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantization_needs_cuda(quant, artefact_cache_dir):
    with pytest.raises(MDError, match="CUDA"):
        load_model(ModelSpec(source="toy"),
                   ModelLoadOptions(cache_dir=artefact_cache_dir, quantization=quant))


def test_dtype_option(artefact_cache_dir):
    m = load_model(ModelSpec(source="toy"), ModelLoadOptions(cache_dir=artefact_cache_dir,
                                                             dtype="bfloat16"))
    assert next(m.model.parameters()).dtype == torch.bfloat16
    base = load_model(ModelSpec(source="toy"), ModelLoadOptions(cache_dir=artefact_cache_dir))
    assert m.model_id != base.model_id  # different weights bytes, different identity


def _make_lora(base: LoadedModel, out: Path) -> Path:
    peft = pytest.importorskip("peft")
    import copy

    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                          init_lora_weights=False)  # random B so the adapter changes outputs
    model = peft.get_peft_model(copy.deepcopy(base.model), cfg)
    model.save_pretrained(out)
    return out


def test_lora_adapter_merged_and_kept(artefact_cache_dir, tmp_path):
    opts = ModelLoadOptions(cache_dir=artefact_cache_dir)
    base = load_model(ModelSpec(source="toy"), opts)
    adapter = _make_lora(base, tmp_path / "lora")
    merged = load_model(ModelSpec(source="toy", adapter=str(adapter)), opts)
    kept = load_model(ModelSpec(source="toy", adapter=str(adapter), merge_adapter=False), opts)
    assert merged.loader == "toy+lora-merged" and kept.loader == "toy+lora"
    assert merged.model_id != base.model_id
    assert merged.local_path is not None and (merged.local_path / "config.json").exists()
    assert kept.local_path is None and hasattr(kept.model, "merge_and_unload")
    ids = torch.tensor([base.tokenizer("the capital of japan is").input_ids])
    with torch.no_grad():
        lb, lm, lk = (m.model(input_ids=ids).logits for m in (base, merged, kept))
    assert not torch.allclose(lb, lm, atol=1e-4)
    assert torch.allclose(lm, lk, atol=1e-4)
    check_compatibility(base, merged)
    with pytest.raises(ConfigError, match="adapter"):
        load_model(ModelSpec(source="toy", adapter=str(tmp_path / "missing")), opts)


def test_check_compatibility(artefact_cache_dir):
    opts = ModelLoadOptions(cache_dir=artefact_cache_dir)
    base = load_model(ModelSpec(source="toy"), opts)
    edited = load_model(ModelSpec(source="toy:edited"), opts)
    assert check_compatibility(base, edited)["compatible"]
    wider = LoadedModel(model=None, tokenizer=base.tokenizer, model_id="x", spec=base.spec,
                        architecture={**base.architecture, "hidden_size": 128})
    with pytest.raises(ConfigError, match="hidden_size"):
        check_compatibility(base, wider)
    other_tok = LoadedModel(model=None, tokenizer=None, model_id="y", spec=base.spec,
                            architecture=dict(base.architecture))
    from transformers import AutoTokenizer

    other_tok.tokenizer = AutoTokenizer.from_pretrained(base.local_path)
    other_tok.tokenizer.add_tokens(["zebra"])
    with pytest.raises(ConfigError, match="tokenizer size"):
        check_compatibility(base, other_tok)


def test_check_memory_requirements(artefact_cache_dir):
    toy = check_memory_requirements(ModelSpec(source="toy"))
    assert toy["fits"] and toy["n_models"] == 2
    base = load_model(ModelSpec(source="toy"), ModelLoadOptions(cache_dir=artefact_cache_dir))
    assert toy["n_parameters"] == base.architecture["n_parameters"]
    smol = check_memory_requirements(ModelSpec(source="smollm2-135m-instruct"))
    assert abs(smol["n_parameters"] - 134_515_008) / 134_515_008 < 0.01
    assert smol["required_bytes"] == int(smol["n_parameters"] * 4 * 2 * 1.5)
    huge = check_memory_requirements({"hidden_size": 16384, "num_hidden_layers": 200,
                                      "intermediate_size": 65536, "vocab_size": 256000,
                                      "num_attention_heads": 128})
    assert not huge["fits"] and huge["required_gb"] > huge["available_gb"]
    half = check_memory_requirements(str(base.local_path), ModelLoadOptions(dtype="bfloat16"))
    assert half["bytes_per_parameter"] == 2
