"""Shared toy models for tracer tests (built once, cached under artefact_cache_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def toy_pair(artefact_cache_dir: Path):
    """(base, knowledge-edited intervention) toy LoadedModels."""
    import torch

    torch.set_num_threads(1)
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model

    options = ModelLoadOptions(cache_dir=artefact_cache_dir)
    return (load_model(ModelSpec(source="toy"), options),
            load_model(ModelSpec(source="toy:edited"), options))


@pytest.fixture(scope="session")
def toy_perturbed(toy_pair, artefact_cache_dir: Path):
    """The base toy model with only layer 1's attention output projection perturbed, saved as a
    local HF directory and loaded through the local-directory loader. Layer-0 activations
    are therefore identical to the base model's and layer-1 activations differ."""
    import copy

    import torch

    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model

    base = toy_pair[0]
    out = artefact_cache_dir / "toy-perturbed-attn1-v1"
    if not (out / "config.json").exists():
        model = copy.deepcopy(base.model)
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            w = model.model.layers[1].self_attn.o_proj.weight
            w.add_(torch.randn(w.shape, generator=g) * w.std() * 0.5)
        tmp = artefact_cache_dir / "toy-perturbed-attn1-v1.tmp"
        model.save_pretrained(tmp)
        base.tokenizer.save_pretrained(tmp)
        tmp.replace(out)
    return load_model(ModelSpec(source=str(out)), ModelLoadOptions(cache_dir=artefact_cache_dir))
