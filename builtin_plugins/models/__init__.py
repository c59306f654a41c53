"""Builtin model loading: hub ids, local HF dirs, GGUF files, the embedded SmolLM2, the toy
model and PEFT/LoRA adapters. See :mod:`builtin_plugins.models.loaders`."""

from builtin_plugins.models.loaders import (  # noqa: F401
    check_compatibility,
    check_memory_requirements,
    load_model,
)
