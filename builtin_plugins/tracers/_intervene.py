"""Feature interventions through plain forward hooks (the tracers' ``intervened_model``).

A *site* says, per layer, how to read the chosen features' activations from a forward pass
and how to overwrite them:

* :class:`NeuronSite` (activation-diff): MLP neurons = the input of ``down_proj``
  (``act(gate(x)) * up(x)``); a forward pre-hook on ``down_proj`` replaces the chosen columns.
* :class:`TranscoderSite` (circuit-tracer): transcoder features read the MLP input; a forward
  hook on the MLP adds ``(new - a) * W_dec[f]`` to the MLP output at every position but a
  sequence's first, where ``a = encode(mlp_input)[f]`` (zeroing subtracts the feature's
  decoder contribution ``a * W_dec[f]``). The transcoder's reconstruction error is left in
  place, so only the feature's own contribution changes.

Modes: ``zero`` (new = 0), ``scale`` (new = scale * a) and ``base`` (new = the base model's
activation of that feature on the same input: the base model runs alongside in lock-step on
the same ``input_ids`` / ``attention_mask`` / positions, with its own KV cache during
generation). Interventions apply at every position, prompt and generated tokens alike,
except that sites whose dictionary never saw a sequence's first position
(``skips_first_position``: transcoders, like the crosscoder's latents) leave it alone
(:func:`first_positions`): its activations (the attention sink's, hundreds of times the
median norm in SmolLM2) are far outside the training data, so the codes there are
extrapolation. Neurons and difference directions are read there exactly, and are written
there too.

Hooks live only inside the context manager; the returned :class:`LoadedModel` shares the
weights of the original and has its own ``model_id`` (so no generation cache or ledger
confuses it with the unmodified model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from md_framework.errors import ConfigError
from md_framework.runtime import LoadedModel
from md_framework.types import FeatureRef

from builtin_plugins.tracers import _hooks

MODES = ("zero", "scale", "base")


def by_layer(features: Sequence[FeatureRef]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for f in features:
        if f.feature not in out.setdefault(f.layer, []):
            out[f.layer].append(int(f.feature))
    return {layer: sorted(ids) for layer, ids in sorted(out.items())}


def intervened_id(model: LoadedModel, features: Sequence[FeatureRef], mode: str, scale: float,
                  base: LoadedModel | None, site: str) -> str:
    spec = ";".join(f"{layer}:{','.join(map(str, ids))}" for layer, ids in by_layer(features).items())
    extra = f"{scale!r}" if mode == "scale" else (base.model_id if base is not None and mode == "base" else "")
    digest = hashlib.sha256(f"{site}|{mode}|{extra}|{spec}".encode()).hexdigest()[:16]
    return f"{model.model_id}~{site}-{mode}:{digest}"


class NeuronSite:
    """MLP neurons (the input of ``down_proj``)."""

    name = "neurons"
    skips_first_position = False

    def __init__(self, hf: Any, layer: int, ids: Sequence[int]) -> None:
        blocks = _hooks.decoder_layers(hf)
        if not 0 <= layer < len(blocks):
            raise ConfigError(f"feature layer {layer} out of range (model has {len(blocks)} layers)")
        self.layer = layer
        self.module = blocks[layer].mlp.down_proj
        width = int(self.module.in_features)
        bad = [i for i in ids if not 0 <= i < width]
        if bad:
            raise ConfigError(f"neuron ids {bad} out of range at layer {layer} (d_mlp={width})")
        self.ids = list(ids)

    def read_hook(self, store: dict[str, Any]) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            if store["state"]["in_base"]:
                store["value"] = args[0][..., self.ids].detach()
        return self.module.register_forward_pre_hook(hook)

    def decoder_vectors(self) -> Any:
        """[k, d_model]: what one unit of each neuron adds to the residual stream."""
        return self.module.weight[:, self.ids].detach().T.float()

    def patch_hook(self, new_value: Any) -> Any:
        """``new_value(current [.., k]) -> tensor [.., k]`` or None (leave untouched)."""
        def hook(module: Any, args: tuple[Any, ...]) -> Any:
            h = args[0]
            new = new_value(h[..., self.ids])
            if new is None:
                return None
            h = h.clone()
            h[..., self.ids] = new.to(h.dtype)
            return (h, *args[1:])
        return self.module.register_forward_pre_hook(hook)


class TranscoderSite:
    """Transcoder features of one layer: read from the MLP input, written to the MLP output."""

    name = "transcoder"
    skips_first_position = True  # trained without it (builtin_plugins.tracers.transcoders)

    def __init__(self, hf: Any, layer: int, ids: Sequence[int], transcoder: Any) -> None:
        blocks = _hooks.decoder_layers(hf)
        if not 0 <= layer < len(blocks):
            raise ConfigError(f"feature layer {layer} out of range (model has {len(blocks)} layers)")
        self.layer = layer
        self.module = blocks[layer].mlp
        self.tc = transcoder
        width = int(transcoder.d_transcoder)
        bad = [i for i in ids if not 0 <= i < width]
        if bad:
            raise ConfigError(f"transcoder feature ids {bad} out of range at layer {layer} "
                              f"(d_transcoder={width})")
        self.ids = list(ids)

    def _acts(self, x: Any) -> Any:
        return self.tc.encode(x)[..., self.ids]

    def decoder_vectors(self) -> Any:
        import torch

        ids = torch.tensor(self.ids, device=next(self.tc.parameters()).device)
        return self.tc._get_decoder_vectors(ids).detach().float()

    def read_hook(self, store: dict[str, Any]) -> Any:
        def hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
            if store["state"]["in_base"]:
                store["value"] = self._acts(args[0]).detach()
        return self.module.register_forward_hook(hook)

    def patch_hook(self, new_value: Any) -> Any:
        import torch

        def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            acts = self._acts(args[0])
            new = new_value(acts)
            if new is None:
                return None
            ids = torch.tensor(self.ids, device=acts.device)
            w_dec = self.tc._get_decoder_vectors(ids).to(output.dtype)  # [k, d_model]
            return output + (new.to(output.dtype) - acts.to(output.dtype)) @ w_dec
        return self.module.register_forward_hook(hook)


def _hidden(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: Any, hidden: Any) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class DirectionSite:
    """One direction ``u`` (unit, d_model) in the residual stream after one decoder layer:
    the feature is the projection ``a = resid @ u``; writing it adds ``(new - a) * u`` to the
    layer's output (the rest of the residual stream is untouched). Used for per-layer
    difference directions (:mod:`builtin_plugins.tracers.feature_search`)."""

    name = "direction"
    skips_first_position = False

    def __init__(self, hf: Any, layer: int, vector: Any) -> None:
        import torch

        blocks = _hooks.decoder_layers(hf)
        if not 0 <= layer < len(blocks):
            raise ConfigError(f"direction layer {layer} out of range (model has {len(blocks)} layers)")
        self.layer = layer
        self.module = blocks[layer]
        v = torch.as_tensor(vector, dtype=torch.float32).flatten()
        self.vector = v / v.norm().clamp(min=1e-12)
        self.ids = [0]

    def _acts(self, output: Any) -> Any:
        return (output.float() @ self.vector.to(output.device))[..., None]

    def decoder_vectors(self) -> Any:
        return self.vector[None]

    def read_hook(self, store: dict[str, Any]) -> Any:
        def hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
            if store["state"]["in_base"]:
                store["value"] = self._acts(_hidden(output)).detach()
        return self.module.register_forward_hook(hook)

    def patch_hook(self, new_value: Any) -> Any:
        def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            hidden = _hidden(output)
            acts = self._acts(hidden)
            new = new_value(acts)
            if new is None:
                return None
            u = self.vector.to(hidden.device, hidden.dtype)
            return _with_hidden(output, hidden + (new.to(hidden.dtype) - acts.to(hidden.dtype)) * u)
        return self.module.register_forward_hook(hook)


def _base_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    inputs = dict(kwargs)
    if args:
        inputs.setdefault("input_ids", args[0])
    keep = ("input_ids", "inputs_embeds", "attention_mask", "position_ids", "cache_position")
    return {k: inputs[k] for k in keep if inputs.get(k) is not None}


def starts_sequence(kwargs: Mapping[str, Any]) -> bool:
    """Whether the forward call whose keyword arguments are ``kwargs`` starts a sequence
    (no KV cache, or an empty one) rather than continuing one during generation."""
    past = kwargs.get("past_key_values")
    return past is None or (hasattr(past, "get_seq_length") and past.get_seq_length() == 0)


def first_positions(kwargs: Mapping[str, Any]) -> Any:
    """Each row's first real position (the first unmasked one, so left padding is skipped)
    when the forward call whose keyword arguments are ``kwargs`` starts a sequence, else
    None: a call that continues a sequence has no first position."""
    import torch

    if not starts_sequence(kwargs):
        return None
    mask = kwargs.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return torch.zeros(1, dtype=torch.long)
    return mask.long().argmax(dim=1)


def keep_first_positions(current: Any, new: Any, first: Any) -> Any:
    """``new`` with each row's first position (``first``, from :func:`first_positions`)
    reset to ``current``: [batch, positions, k] activations; anything else is returned as is."""
    import torch

    if first is None or new.dim() != 3 or new.shape[1] == 0:
        return new
    new = new.clone()
    batch = torch.arange(new.shape[0], device=new.device)
    at = first.to(new.device).expand(new.shape[0])
    new[batch, at] = current[batch, at].to(new.dtype)
    return new


def run_in_lockstep(partner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                    state: dict[str, Any]) -> None:
    """Run the HF model ``partner`` on the inputs of the forward call a ``with_kwargs``
    pre-hook sees, keeping the partner's own KV cache in ``state["cache"]`` (a new one at
    each new sequence, so generation works)."""
    import torch

    use_cache = kwargs.get("past_key_values") is not None
    if starts_sequence(kwargs):
        state["cache"] = None
        if use_cache:
            from transformers import DynamicCache

            state["cache"] = DynamicCache()
    with torch.no_grad():
        partner(**_base_inputs(args, kwargs), past_key_values=state["cache"], use_cache=use_cache)


@contextlib.contextmanager
def intervened(model: LoadedModel, sites: Sequence[Any], mode: str, scale: float = 0.0,
               base: LoadedModel | None = None, site_name: str = "features",
               features: Sequence[FeatureRef] = ()) -> Iterator[LoadedModel]:
    """Hooks ``sites`` on ``model.model`` for the duration of the block (see module docstring)."""
    import torch

    if mode not in MODES:
        raise ConfigError(f"intervention mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "base" and base is None:
        raise ConfigError('intervention mode "base" needs the base model (base=...)')
    hf = model.model
    handles: list[Any] = []
    state: dict[str, Any] = {"in_base": False, "cache": None, "first": None}
    stores: list[dict[str, Any]] = [{"state": state} for _ in sites]  # read only in base runs

    def maker(i: int) -> Any:
        def new_value(current: Any) -> Any:
            if state["in_base"]:  # the base run of a model paired with itself: leave it alone
                return None
            if mode == "zero":
                value = torch.zeros_like(current)
            elif mode == "scale":
                value = current * float(scale)
            else:
                value = stores[i].get("value")
                if value is None or value.shape != current.shape:
                    raise RuntimeError(
                        "base-patching: the base model's activations do not match the "
                        f"intervention's ({None if value is None else tuple(value.shape)} vs "
                        f"{tuple(current.shape)})")
            if sites[i].skips_first_position:
                value = keep_first_positions(current, value, state["first"])
            return value
        return new_value

    def note_first(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not state["in_base"]:
            state["first"] = first_positions(kwargs)

    if mode == "base":
        assert base is not None
        base_sites = [type(s)(base.model, *_site_args(s, model)) for s in sites]
        base_handles = [s.read_hook(store) for s, store in zip(base_sites, stores)]
        handles.extend(base_handles)

        def run_base(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if state["in_base"]:
                return
            state["in_base"] = True
            try:
                run_in_lockstep(base.model, args, kwargs, state)
            finally:
                state["in_base"] = False

        handles.append(hf.register_forward_pre_hook(run_base, with_kwargs=True))
    try:
        handles.append(hf.register_forward_pre_hook(note_first, with_kwargs=True))
        for i, s in enumerate(sites):
            handles.append(s.patch_hook(maker(i)))
        yield dataclasses.replace(
            model, model_id=intervened_id(model, features, mode, scale, base, site_name))
    finally:
        for h in handles:
            h.remove()


def _site_args(site: Any, model: LoadedModel) -> tuple[Any, ...]:
    layer = next(i for i, b in enumerate(_hooks.decoder_layers(model.model))
                 if site.module is b or site.module is b.mlp or site.module is b.mlp.down_proj)
    if isinstance(site, DirectionSite):
        return layer, site.vector
    if isinstance(site, TranscoderSite):
        return layer, site.ids, site.tc
    return layer, site.ids


def site_activations(model: LoadedModel, sites: Sequence[Any], prompts: Sequence[str],
                     *, absolute: bool) -> list[dict[str, tuple[float, int]]]:
    """Per prompt, ``{"layer:feature": (peak activation, position)}`` for every site's
    features, from one plain forward pass of the formatted prompt (the tracers'
    ``feature_activations``). Position 0 (BOS / template start) is skipped when the prompt
    is longer; ``absolute`` ranks by |activation| (MLP neurons are signed) and reports it."""
    import torch

    from builtin_plugins.metrics.core import encode_prompt

    hf = model.model
    device = next(hf.parameters()).device
    state = {"in_base": True}  # read_hook only records in "base" runs
    out: list[dict[str, tuple[float, int]]] = []
    for prompt in prompts:
        ids = encode_prompt(model.tokenizer, prompt)
        stores: list[dict[str, Any]] = [{"state": state} for _ in sites]
        handles = [s.read_hook(store) for s, store in zip(sites, stores)]
        try:
            with torch.no_grad():
                hf(input_ids=torch.tensor([ids], device=device))
        finally:
            for h in handles:
                h.remove()
        row: dict[str, tuple[float, int]] = {}
        for site, store in zip(sites, stores):
            acts = store["value"][0].float()  # [positions, k]
            skip = 1 if acts.shape[0] > 1 else 0
            acts = acts[skip:].abs() if absolute else acts[skip:]
            peak, where = acts.max(dim=0)
            for j, f in enumerate(site.ids):
                row[f"{site.layer}:{f}"] = (float(peak[j]), int(where[j]) + skip)
        out.append(row)
    return out


def site_directions(sites: Sequence[Any]) -> dict[str, list[float]]:
    """``{"layer:feature": decoder/output direction}`` (the logit-lens interpreter's input)."""
    out: dict[str, list[float]] = {}
    for site in sites:
        for f, vec in zip(site.ids, site.decoder_vectors().cpu()):
            out[f"{site.layer}:{f}"] = [float(v) for v in vec]
    return out
