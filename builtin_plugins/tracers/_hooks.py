"""Plain-torch hook points on Hugging Face decoder models (no TransformerLens)."""

from __future__ import annotations

import re
from typing import Any

from md_framework.errors import ConfigError

_TL = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|resid_mid)$")


def decoder_layers(model: Any) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ConfigError(f"{type(model).__name__} has no model.layers; only decoder-only "
                          "Llama-style models are supported by this tracer")
    return layers


def register(model: Any, hook_name: str, store: list[Any]) -> Any:
    """Register a hook that appends the activation named by a TransformerLens-style
    ``hook_name`` (``blocks.L.hook_resid_post|resid_pre|mlp_out``) to ``store``."""
    match = _TL.match(hook_name)
    if not match:
        raise ConfigError(f"unsupported SAE hook {hook_name!r}: expected blocks.<L>.hook_resid_post,"
                          " hook_resid_pre or hook_mlp_out")
    layer, site = int(match.group(1)), match.group(2)
    block = decoder_layers(model)[layer]
    if site == "resid_post":
        return block.register_forward_hook(
            lambda m, a, o: store.append((o[0] if isinstance(o, tuple) else o).detach()))
    if site == "resid_pre":
        return block.register_forward_pre_hook(
            lambda m, args, kwargs: store.append(
                (args[0] if args else kwargs["hidden_states"]).detach()), with_kwargs=True)
    if site == "resid_mid":
        return block.post_attention_layernorm.register_forward_pre_hook(
            lambda m, args: store.append(args[0].detach()))
    return block.mlp.register_forward_hook(lambda m, a, o: store.append(o.detach()))


def layer_of(hook_name: str) -> int:
    match = _TL.match(hook_name)
    if not match:
        raise ConfigError(f"unsupported SAE hook {hook_name!r}")
    return int(match.group(1))
