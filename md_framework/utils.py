"""Utilities the design document imports from ``utils``: :func:`check_memory_requirements`
and :class:`CircuitCache`. Torch-free at import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from md_framework.cache import ArtifactCache, default_cache_dir

__all__ = ["CircuitCache", "check_memory_requirements"]

#: tokens per sequence assumed by the activation estimate when none is given
DEFAULT_SEQ_LEN = 512


class CircuitCache(ArtifactCache):
    """The artefact cache under the design document's name: traced graphs, models and
    dictionaries, content-addressed (docs/cache.md). ``cache_dir`` defaults to
    :func:`md_framework.cache.default_cache_dir`; ``clear_old_entries(days=7)`` removes
    entries not used for ``days`` days."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None,
                 max_bytes: int | None = None) -> None:
        # absolute once, here: a later chdir must not move the cache
        root = Path(cache_dir).expanduser().absolute() if cache_dir is not None else default_cache_dir()
        super().__init__(root, max_bytes=max_bytes)


def _model_config(model_info: Any, cache_dir: Path | None) -> Any:
    """``organism:<spec>#part`` -> that built organism's config.json (built on first use);
    other sources are read by the model loaders' estimator."""
    from md_framework.runtime import ModelSpec

    source = model_info.source if isinstance(model_info, ModelSpec) else model_info
    if isinstance(source, str) and source.startswith("organism:"):
        from builtin_plugins.organisms.build import build_organism
        from builtin_plugins.organisms.plugin import parse_reference

        ref, part = parse_reference(source)
        built = build_organism(ref, (cache_dir or default_cache_dir()) / "organisms", log=None)
        return str(built.model_dir(part))
    if isinstance(source, str) and not isinstance(model_info, ModelSpec) and "/" not in source \
            and not Path(source).exists():
        return ModelSpec(source=source)
    return model_info


def check_memory_requirements(model_info: Any, batch_size: int = 8, *,
                              seq_len: int = DEFAULT_SEQ_LEN, dtype: str = "float32",
                              quantization: str = "none", device: str = "cpu",
                              n_models: int = 2, cache_dir: str | os.PathLike[str] | None = None
                              ) -> dict[str, Any]:
    """Memory needed to run an analysis of ``n_models`` models, before loading any.

    ``model_info``: a Hugging Face config dict, a model directory or config.json path, a
    :class:`~md_framework.runtime.ModelSpec`, ``toy``, ``smollm2-135m-instruct`` or an
    ``organism:<spec>#base|#intervention`` reference. Returns the model loaders' estimate
    (``required_gb``: weights x ``n_models`` x 1.5 margin, ``available_gb``, ``fits``) plus

    * ``weights_gb`` = parameters x bytes per parameter x ``n_models``;
    * ``activations_gb`` = ``batch_size`` x ``seq_len`` x layers x (4 x hidden +
      intermediate) x bytes, per model in flight (the residual stream, attention output and
      MLP input/output plus the MLP hidden state of every layer: what attribution keeps);
    * ``total_inference_gb`` = ``weights_gb`` + ``activations_gb`` x ``n_models``.

    An estimate, not a measurement: allocator slack and attribution graphs come on top.
    """
    from builtin_plugins.models.loaders import _BYTES, _config_of, check_memory_requirements as base
    from md_framework.runtime import ModelLoadOptions

    if batch_size < 1 or seq_len < 1:
        raise ValueError("batch_size and seq_len must be >= 1")
    options = ModelLoadOptions(device=device, dtype=dtype, quantization=quantization)
    info = _model_config(model_info, Path(cache_dir) if cache_dir is not None else None)
    estimate = base(info, options, n_models=n_models)
    cfg = _config_of(info)
    hidden, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    inter = int(cfg.get("intermediate_size", 4 * hidden))
    act_bytes = _BYTES[dtype] if dtype in _BYTES else 4
    weights = estimate["n_parameters"] * estimate["bytes_per_parameter"] * n_models
    activations = batch_size * seq_len * layers * (4 * hidden + inter) * act_bytes
    gb = 2 ** 30
    estimate.update(
        batch_size=batch_size, seq_len=seq_len, weights_gb=round(weights / gb, 3),
        activations_gb=round(activations / gb, 3),
        total_inference_gb=round((weights + activations * n_models) / gb, 3),
    )
    return estimate
