"""Model identity is the content hash of the weights (issue 19, finding 1): damaged weights
are an error naming the file, never another model's identity, graphs or ledger rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from md_framework.runtime import ModelLoadOptions  # noqa: E402
from md_framework.storage_errors import DamagedFileError  # noqa: E402


def _tiny_model_dir(out: Path, seed: int = 0, *, stamp: bool = False, meta: bool = True) -> Path:
    """A 2-layer Llama with the toy word tokenizer, saved the way our builders save models."""
    import torch
    from transformers import LlamaForCausalLM

    from builtin_plugins.models.loaders import stamp_weights
    from builtin_plugins.organisms.training import save_model_dir
    from builtin_plugins.toy import _config, build_tokenizer

    torch.manual_seed(seed)
    config = _config(seed)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 16, 32, 1
    config.num_attention_heads = config.num_key_value_heads = 2
    model = LlamaForCausalLM(config)
    save_model_dir(model, build_tokenizer(), out, {"kind": "test"})
    if stamp:
        stamp_weights(out)
    if not meta:
        (out / "md_meta.json").unlink()
    return out


def _flip_mantissa_bits(path: Path, n: int = 64) -> None:
    """Flip low mantissa bits of ``n`` float32 values in the tensor data (header intact)."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    step = max(4, (len(data) - header) // n) & ~3
    for offset in range(header, len(data) - 4, step):
        data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _load(path: Path, cache: Path):
    from builtin_plugins.models.loaders import load_model

    return load_model(str(path), ModelLoadOptions(cache_dir=cache))


def test_flipped_mantissa_bits_are_an_error_naming_the_file(tmp_path: Path) -> None:
    model_dir = _tiny_model_dir(tmp_path / "m")  # md_meta.json with the state-dict id only
    good = _load(model_dir, tmp_path / "cache")
    _flip_mantissa_bits(model_dir / "model.safetensors")
    with pytest.raises(DamagedFileError) as info:
        _load(model_dir, tmp_path / "cache")
    message = str(info.value)
    assert message.startswith(f"{model_dir / 'model.safetensors'}: damaged or replaced")
    assert good.model_id[:23] in message and "rebuild" in message


def test_recorded_file_hashes_refuse_damage_before_loading(tmp_path: Path, monkeypatch) -> None:
    import transformers

    model_dir = _tiny_model_dir(tmp_path / "m", stamp=True)
    meta = json.loads((model_dir / "md_meta.json").read_text())
    assert set(meta["weights_sha256"]) == {"model.safetensors"}
    _load(model_dir, tmp_path / "cache")
    _flip_mantissa_bits(model_dir / "model.safetensors")

    def no_loading(*args, **kwargs):
        raise AssertionError("damaged weights must be refused before loading")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(DamagedFileError, match="recorded in md_meta.json when it was built"):
        _load(model_dir, tmp_path / "cache")


def test_identity_without_md_meta_follows_the_bytes(tmp_path: Path) -> None:
    from md_framework.tracing import graph_cache_key

    model_dir = _tiny_model_dir(tmp_path / "m", meta=False)
    before = _load(model_dir, tmp_path / "cache").model_id
    assert before.startswith("sha256:")
    _flip_mantissa_bits(model_dir / "model.safetensors")
    after = _load(model_dir, tmp_path / "cache").model_id
    assert after != before  # so no graph, ledger row or organism of the old bytes is reused
    assert graph_cache_key(after, "t", "p", None) != graph_cache_key(before, "t", "p", None)


def test_weights_are_hashed_once_per_file_version(tmp_path: Path, monkeypatch) -> None:
    from builtin_plugins.models import weights_identity as wid

    model_dir = _tiny_model_dir(tmp_path / "m", meta=False)
    hashed: list[Path] = []
    real = wid._sha256_file
    monkeypatch.setattr(wid, "_sha256_file", lambda p: (hashed.append(p), real(p))[1])
    first = _load(model_dir, tmp_path / "cache").model_id
    second = _load(model_dir, tmp_path / "cache").model_id
    assert first == second and len(hashed) == 1  # the memo served the second load
    weights = model_dir / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime: verify again
    assert _load(model_dir, tmp_path / "cache").model_id == first
    assert len(hashed) == 2


def test_legacy_directory_is_verified_once(tmp_path: Path, monkeypatch) -> None:
    import builtin_plugins.models.loaders as loaders

    model_dir = _tiny_model_dir(tmp_path / "m")
    calls = []
    real = loaders.state_dict_sha256
    monkeypatch.setattr(loaders, "state_dict_sha256", lambda m: (calls.append(1), real(m))[1])
    a = _load(model_dir, tmp_path / "cache").model_id
    b = _load(model_dir, tmp_path / "cache").model_id
    assert a == b == json.loads((model_dir / "md_meta.json").read_text())["model_id"]
    assert len(calls) == 1  # the tensors were compared with md_meta.json once


def test_truncated_weights_are_an_error_naming_the_file(tmp_path: Path) -> None:
    model_dir = _tiny_model_dir(tmp_path / "m", meta=False)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DamagedFileError) as info:
        _load(model_dir, tmp_path / "cache")
    assert str(info.value).startswith(f"{weights}: cannot be loaded as model weights")


def test_damaged_md_meta_is_an_error_naming_it(tmp_path: Path) -> None:
    model_dir = _tiny_model_dir(tmp_path / "m")
    (model_dir / "md_meta.json").write_text("{not json")
    with pytest.raises(DamagedFileError) as info:
        _load(model_dir, tmp_path / "cache")
    assert str(info.value).startswith(f"{model_dir / 'md_meta.json'}: unreadable")


def test_reduced_precision_gets_its_own_identity(tmp_path: Path) -> None:
    from builtin_plugins.models.loaders import load_model

    model_dir = _tiny_model_dir(tmp_path / "m", stamp=True)
    full = _load(model_dir, tmp_path / "cache").model_id
    half = load_model(str(model_dir), ModelLoadOptions(cache_dir=tmp_path / "cache",
                                                       dtype="bfloat16")).model_id
    assert half != full and half.startswith("sha256:")
