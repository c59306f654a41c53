"""Search a small set of MLP neurons that carries a behaviour change (activation-diff tracer).

The literature's recipe, not "the most changed features":

1. **Attribution patching** (Nanda 2023, "Attribution patching: activation patching at
   industrial scale"; Syed, Rager and Conmy 2023, "Attribution patching outperforms automated
   circuit discovery"): a first-order estimate of what patching neuron ``f`` of layer ``l``
   back to the base model's value does to a behaviour metric ``m`` of the intervention model,
   ``Δm ≈ Σ_pos (a_base - a_int)[pos, f] · ∂m/∂a_int[pos, f]``, for every neuron of every
   layer at once from one forward and one backward pass per sequence.
2. **Activation-patching sweep** over the ranking: actually patch the top ``n`` neurons
   (``n`` = 1, 2, 4, ... up to the size cap), and each layer's top neurons alone, and keep the
   smallest set that reaches 90 % of the best share seen (greedy in the sense of Conmy et al.
   2023, "Towards automated circuit discovery", with the metric measured, not estimated).

The behaviour metric is differentiable and read from the answers themselves: on a search
prompt whose greedy answers differ, ``m = mean log P(intervention's answer) - mean log
P(base's answer)`` (per-token means, each answer teacher-forced after the prompt, the
end-of-sequence token included when the answer ended). Patching moves ``m`` from the
intervention's value towards the base's; the *search share* of a set is
``(m_I - m_patched) / (m_I - m_B)`` averaged over prompts (ratio of means). Prompts whose
answers agree carry no signal and are skipped.

The set size is capped at ``max_share`` (default 5 %) of the neurons in the layers used. The
search uses only the prompts it is given (the discovery split); the causal share is then
measured with the hypothesis' own metric on fresh held-out prompts
(:mod:`md_framework.pipeline.causal`), so the search cannot overfit what is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from md_framework.runtime import LoadedModel
from md_framework.types import FeatureRef

from builtin_plugins.tracers import _hooks

SWEEP_KEEP = 0.9


def _sequences(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
               max_new_tokens: int) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt ids, base answer ids, intervention answer ids) where the answers differ."""
    from builtin_plugins.metrics.core import encode_prompt, generate_answer_ids

    tok = base.tokenizer
    eos = tok.eos_token_id
    ans_b = generate_answer_ids(base, prompts, max_new_tokens, 8)
    ans_i = generate_answer_ids(intervention, prompts, max_new_tokens, 8)
    out = []
    for prompt, (_, ib), (_, ii) in zip(prompts, ans_b, ans_i):
        if list(ib) == list(ii):
            continue
        end = [eos] if eos is not None else []
        ib = list(ib) + (end if len(ib) < max_new_tokens else [])
        ii = list(ii) + (end if len(ii) < max_new_tokens else [])
        if ib and ii:
            out.append((encode_prompt(tok, prompt), ib, ii))
    return out


def _mean_logprob(logits: Any, n_prompt: int, answer: Sequence[int]) -> Any:
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    rows = torch.arange(n_prompt - 1, n_prompt - 1 + len(answer))
    return logp[rows, torch.tensor(list(answer))].mean()


class _Acts:
    """Forward hooks recording (or overwriting) every layer's down_proj input."""

    def __init__(self, model: LoadedModel, layers: Sequence[int]) -> None:
        self.blocks = _hooks.decoder_layers(model.model)
        self.layers = list(layers)
        self.values: dict[int, Any] = {}
        self.patch: dict[int, tuple[list[int], Any]] = {}
        self.grad = False

    def __enter__(self) -> _Acts:
        self.handles = []
        for layer in self.layers:
            def hook(module: Any, args: tuple[Any, ...], layer: int = layer) -> Any:
                h = args[0]
                if layer in self.patch:
                    ids, value = self.patch[layer]
                    h = h.clone()
                    h[..., ids] = value[..., ids].to(h.dtype)
                if self.grad:
                    h = h if h.requires_grad else h.detach().requires_grad_(True)
                    h.retain_grad()
                self.values[layer] = h
                return (h, *args[1:])
            self.handles.append(self.blocks[layer].mlp.down_proj.register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


def _run(model: LoadedModel, ids: Sequence[int], acts: _Acts, grad: bool = False) -> Any:
    import torch

    device = next(model.model.parameters()).device
    x = torch.tensor([list(ids)], device=device)
    if grad:
        return model.model(input_ids=x).logits[0]
    with torch.no_grad():
        return model.model(input_ids=x).logits[0]


def search_neurons(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str], *,
                   layers: Sequence[int] | None = None, max_share: float = 0.05,
                   max_new_tokens: int = 24, max_prompts: int = 12) -> dict[str, Any]:
    """Attribution patching + activation-patching sweep (module docstring).

    Returns ``{"features": [FeatureRef], "search_share", "cap", "n_prompts", "sweep":
    [{"set", "size", "share"}], "passes": {"forward", "backward"}, "reason"}``;
    ``features`` is empty (with a ``reason``) when no search prompt's answers differ."""
    import torch

    n_layers = len(_hooks.decoder_layers(intervention.model))
    layers = list(range(n_layers)) if layers is None else list(layers)
    width = int(_hooks.decoder_layers(intervention.model)[layers[0]].mlp.down_proj.in_features)
    cap = max(1, int(math.floor(max_share * width * len(layers))))
    seqs = _sequences(base, intervention, list(prompts)[: max(1, max_prompts) * 3],
                      max_new_tokens)[:max_prompts]
    passes = {"forward": 0, "backward": 0}
    if not seqs:
        return {"features": [], "search_share": None, "cap": cap, "n_prompts": 0, "sweep": [],
                "passes": passes, "reason": "the two models' greedy answers agree on every"
                                            " search prompt"}
    attribution = torch.zeros(len(layers), width)
    cached_base: list[tuple[dict[int, Any], dict[int, Any]]] = []
    m_base, m_int = [], []
    for p_ids, a_b, a_i in seqs:
        seq_b, seq_i = p_ids + a_b, p_ids + a_i
        with _Acts(base, layers) as rec:
            lb_b = _run(base, seq_b, rec)
            base_b = {k: v.detach() for k, v in rec.values.items()}
            lb_i = _run(base, seq_i, rec)
            base_i = {k: v.detach() for k, v in rec.values.items()}
        passes["forward"] += 2
        m_base.append(float(_mean_logprob(lb_i, len(p_ids), a_i) - _mean_logprob(lb_b, len(p_ids), a_b)))
        cached_base.append((base_b, base_i))
        # m = mean log P(a_i) - mean log P(a_b) on the intervention model, with gradients
        total = 0.0
        for seq, answer, sign, base_acts in ((seq_i, a_i, 1.0, base_i), (seq_b, a_b, -1.0, base_b)):
            intervention.model.zero_grad(set_to_none=True)
            with _Acts(intervention, layers) as rec:
                rec.grad = True
                logits = _run(intervention, seq, rec, grad=True)
                value = _mean_logprob(logits, len(p_ids), answer)
                value.backward()
                for j, layer in enumerate(layers):
                    h = rec.values[layer]
                    delta = base_acts[layer][0].float() - h.detach()[0].float()
                    attribution[j] += sign * (delta * h.grad[0].float()).sum(0)
            total += sign * float(value)
            passes["forward"] += 1
            passes["backward"] += 1
        intervention.model.zero_grad(set_to_none=True)
        m_int.append(total)
    effect = sum(m_int) / len(m_int) - sum(m_base) / len(m_base)

    def patched_share(chosen: list[tuple[int, int]]) -> float:
        by_layer: dict[int, list[int]] = {}
        for layer, f in chosen:
            by_layer.setdefault(layer, []).append(f)
        values = []
        for (p_ids, a_b, a_i), (base_b, base_i) in zip(seqs, cached_base):
            m = 0.0
            for seq, answer, sign, base_acts in ((p_ids + a_i, a_i, 1.0, base_i),
                                                 (p_ids + a_b, a_b, -1.0, base_b)):
                with _Acts(intervention, layers) as rec:
                    rec.patch = {layer: (ids, base_acts[layer]) for layer, ids in by_layer.items()}
                    logits = _run(intervention, seq, rec)
                m += sign * float(_mean_logprob(logits, len(p_ids), answer))
                passes["forward"] += 1
            values.append(m)
        patched = sum(values) / len(values)
        return (sum(m_int) / len(m_int) - patched) / effect if abs(effect) > 1e-9 else 0.0

    # most negative estimated change of m first: patching those moves m towards the base
    flat = attribution.flatten()
    order = torch.argsort(flat).tolist()
    ranked = [(layers[i // width], i % width) for i in order[:cap] if flat[i] < 0]
    sweep = []
    sizes = sorted({n for n in (1, 2, 4, 8, 16, 32, 64, cap) if n <= min(cap, len(ranked))})
    for n in sizes:
        sweep.append({"set": f"top {n}", "size": n, "share": patched_share(ranked[:n]),
                      "features": ranked[:n]})
    for layer in layers:
        own = [(lay, f) for lay, f in ranked if lay == layer]
        if own and len(own) < len(ranked):
            sweep.append({"set": f"layer {layer} top {len(own)}", "size": len(own),
                          "share": patched_share(own), "features": own})
    best = max((s["share"] for s in sweep), default=0.0)
    chosen = min((s for s in sweep if s["share"] >= SWEEP_KEEP * best),
                 key=lambda s: (s["size"], -s["share"]), default=None) if best > 0 else None
    features = [FeatureRef(layer=lay, feature=f, dictionary_id="neurons")
                for lay, f in (chosen["features"] if chosen else [])]
    return {"features": features, "search_share": chosen["share"] if chosen else None,
            "cap": cap, "n_prompts": len(seqs), "effect": effect,
            "sweep": [{k: v for k, v in s.items() if k != "features"} for s in sweep],
            "passes": passes,
            "reason": "" if chosen else "no set of neurons moved the answers towards the base"}
