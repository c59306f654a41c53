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
prompt whose greedy answers differ, the logit difference at the decision point (the standard
patching metric, Wang et al. 2023 "Interpretability in the wild"): with the prompt and the
answers' common prefix teacher-forced, ``m = log P(intervention's next token) - log P(base's
next token)``. Patching moves ``m`` from the intervention's value towards the base's; the
*search share* of a set is ``(m_I - m_patched) / (m_I - m_B)`` averaged over prompts (ratio
of means). Prompts whose answers agree carry no signal and are skipped.

The set size is capped at ``max_share`` (default 5 %) of the neurons in the layers used. The
search uses only the prompts it is given (the discovery split); the causal share is then
measured with the hypothesis' own metric on fresh held-out prompts
(:mod:`builtin_plugins.pipeline.causal`), so the search cannot overfit what is reported.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from md_framework.runtime import LoadedModel
from md_framework.types import FeatureRef

from builtin_plugins.tracers import _hooks

SWEEP_KEEP = 0.9
#: difference directions found in this process: dictionary id -> {layer: unit vector}
_DIRECTIONS: dict[str, dict[int, list[float]]] = {}
RANDOM_PREFIX = "direction-random:"


def _sequences(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
               max_new_tokens: int) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt + common answer prefix ids, [base's next token], [intervention's next token])
    at the first answer position where the two greedy answers part (the decision point)."""
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
        k = next((j for j, (x, y) in enumerate(zip(ib, ii)) if x != y), min(len(ib), len(ii)))
        if k < len(ib) and k < len(ii):
            out.append((encode_prompt(tok, prompt) + ib[:k], [ib[k]], [ii[k]]))
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
            total += sign * float(value.detach())
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
            "ranked": [FeatureRef(layer=lay, feature=f, dictionary_id="neurons") for lay, f in ranked],
            "cap": cap, "n_prompts": len(seqs), "effect": effect,
            "sweep": [{k: v for k, v in s.items() if k != "features"} for s in sweep],
            "passes": passes,
            "reason": "" if chosen else "no set of neurons moved the answers towards the base"}


# --------------------------------------------------------------------------- directions


def is_direction(ref: FeatureRef) -> bool:
    """Whether ``ref`` names a per-layer direction (``dictionary_id`` ``direction...``)."""
    return bool(ref.dictionary_id) and str(ref.dictionary_id).startswith("direction")


def register_directions(vectors: dict[int, Any]) -> str:
    """Keep per-layer unit vectors under a content-derived dictionary id."""
    data = {int(k): [round(float(x), 7) for x in v] for k, v in sorted(vectors.items())}
    digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:16]
    key = f"direction:{digest}"
    _DIRECTIONS[key] = data
    return key


def random_directions(layers: Sequence[int], seed: int) -> list[FeatureRef]:
    """One seeded random unit direction per layer (the control of a direction set)."""
    return [FeatureRef(layer=int(layer), feature=0, dictionary_id=f"{RANDOM_PREFIX}{seed}")
            for layer in layers]


def direction_sites(model: LoadedModel, refs: Sequence[FeatureRef]) -> list[Any]:
    import torch

    from builtin_plugins.tracers._intervene import DirectionSite

    sites = []
    d_model = int(model.model.config.hidden_size)
    for ref in refs:
        did = str(ref.dictionary_id)
        if did.startswith(RANDOM_PREFIX):
            digest = hashlib.sha256(f"{did}:{ref.layer}".encode()).hexdigest()
            gen = torch.Generator().manual_seed(int(digest[:15], 16))
            vector = torch.randn(d_model, generator=gen)
        elif did in _DIRECTIONS and ref.layer in _DIRECTIONS[did]:
            vector = torch.tensor(_DIRECTIONS[did][ref.layer])
        else:
            from md_framework.errors import ConfigError

            raise ConfigError(f"unknown direction {did} at layer {ref.layer} (directions live in"
                              " the process that searched them)")
        sites.append(DirectionSite(model.model, ref.layer, vector))
    return sites


def _mlp_outputs(model: LoadedModel, ids: Sequence[int], layers: Sequence[int],
                 patch: dict[int, tuple[Any, Any]] | None = None) -> tuple[Any, dict[int, Any]]:
    """(logits, {layer: residual stream after the layer [pos, d_model]}); ``patch[layer] =
    (u, target projection [pos])`` sets the residual's projection on ``u`` to the target."""
    from builtin_plugins.tracers._intervene import _hidden, _with_hidden

    blocks = _hooks.decoder_layers(model.model)
    outs: dict[int, Any] = {}
    handles = []
    for layer in layers:
        def hook(module: Any, args: Any, output: Any, layer: int = layer) -> Any:
            hidden = _hidden(output)
            if patch and layer in patch:
                u, target = patch[layer]
                a = hidden[0] @ u
                hidden = hidden + ((target - a)[:, None] * u)[None]
                output = _with_hidden(output, hidden)
            outs[layer] = hidden[0].detach().float()
            return output
        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        logits = _run(model, ids, None)  # type: ignore[arg-type]
    finally:
        for h in handles:
            h.remove()
    return logits, outs


def search_directions(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str], *,
                      layers: Sequence[int] | None = None, max_new_tokens: int = 24,
                      max_prompts: int = 12) -> dict[str, Any]:
    """One difference direction per layer: the mean (intervention - base) residual stream after
    the layer at the decision position of the search prompts (difference-of-means, as in
    Marks and Tegmark 2023, "The geometry of truth"); patching sets each direction's
    projection back to the base's at every position. Sweep: each layer alone and all layers
    (the decision-point share of :func:`search_neurons`), smallest set within 90 % of the
    best."""
    n_layers = len(_hooks.decoder_layers(intervention.model))
    layers = list(range(n_layers)) if layers is None else list(layers)
    seqs = _sequences(base, intervention, list(prompts)[: max(1, max_prompts) * 3],
                      max_new_tokens)[:max_prompts]
    passes = {"forward": 0, "backward": 0}
    if not seqs:
        return {"features": [], "search_share": None, "cap": len(layers), "n_prompts": 0,
                "sweep": [], "passes": passes,
                "reason": "the two models' greedy answers agree on every search prompt"}
    runs = []  # per sequence: (ids, n_prompt, answer, sign, base outs, m_base, m_int)
    sums = {layer: None for layer in layers}  # type: dict[int, Any]
    count = 0
    for p_ids, a_b, a_i in seqs:
        for answer, sign in ((a_i, 1.0), (a_b, -1.0)):
            seq = p_ids + answer
            lb, ob = _mlp_outputs(base, seq, layers)
            li, oi = _mlp_outputs(intervention, seq, layers)
            passes["forward"] += 2
            start = len(p_ids) - 1
            for layer in layers:  # the decision position only: where the answers part
                d = (oi[layer] - ob[layer])[start]
                sums[layer] = d if sums[layer] is None else sums[layer] + d
            count += 1
            runs.append((seq, len(p_ids), answer, sign, ob,
                         float(_mean_logprob(lb, len(p_ids), answer)),
                         float(_mean_logprob(li, len(p_ids), answer))))
    units = {layer: sums[layer] / max(1, count) for layer in layers}
    units = {layer: u / u.norm().clamp(min=1e-12) for layer, u in units.items()}
    m_b = sum(r[3] * r[5] for r in runs) / len(seqs)
    m_i = sum(r[3] * r[6] for r in runs) / len(seqs)
    effect = m_i - m_b

    def share(chosen: list[int]) -> float:
        total = 0.0
        for seq, n_p, answer, sign, ob, _, _ in runs:
            patch = {layer: (units[layer], ob[layer] @ units[layer]) for layer in chosen}
            logits, _ = _mlp_outputs(intervention, seq, layers, patch)
            passes["forward"] += 1
            total += sign * float(_mean_logprob(logits, n_p, answer))
        return (m_i - total / len(seqs)) / effect if abs(effect) > 1e-9 else 0.0

    sweep = [{"set": f"layer {layer}", "size": 1, "share": share([layer]), "layers": [layer]}
             for layer in layers]
    if len(layers) > 1:
        sweep.append({"set": "all layers", "size": len(layers), "share": share(layers),
                      "layers": layers})
    best = max(r["share"] for r in sweep)
    chosen = min((r for r in sweep if r["share"] >= SWEEP_KEEP * best),
                 key=lambda r: (r["size"], -r["share"])) if best > 0 else None
    if chosen is None:
        return {"features": [], "search_share": None, "cap": len(layers), "n_prompts": len(seqs),
                "sweep": [{k: v for k, v in r.items() if k != "layers"} for r in sweep],
                "passes": passes, "reason": "no direction moved the answers towards the base"}
    did = register_directions({layer: units[layer] for layer in chosen["layers"]})
    all_id = register_directions(units)
    return {"features": [FeatureRef(layer=layer, feature=0, dictionary_id=did)
                         for layer in chosen["layers"]],
            "controls": random_directions(chosen["layers"], seed=0),
            "all_directions": [FeatureRef(layer=layer, feature=0, dictionary_id=all_id)
                               for layer in layers],
            "search_share": chosen["share"], "cap": len(layers), "n_prompts": len(seqs),
            "effect": effect, "kind": "difference directions (one per layer)",
            "sweep": [{k: v for k, v in r.items() if k != "layers"} for r in sweep],
            "passes": passes, "reason": ""}


def answer_directions(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
                      layers: Sequence[int], max_new_tokens: int = 24) -> dict[int, Any]:
    """Answer-wide difference-of-means directions: the mean (intervention - base) residual
    stream after each layer over every predicting position of both greedy answers
    (teacher-forced), for changes that span the answer (a style) rather than one token."""
    from builtin_plugins.metrics.core import encode_prompt, generate_answer_ids

    tok = base.tokenizer
    eos = tok.eos_token_id
    end = [eos] if eos is not None else []
    ans_b = generate_answer_ids(base, prompts, max_new_tokens, 8)
    ans_i = generate_answer_ids(intervention, prompts, max_new_tokens, 8)
    sums: dict[int, Any] = {}
    count = 0
    for prompt, (_, ib), (_, ii) in zip(prompts, ans_b, ans_i):
        if list(ib) == list(ii):
            continue
        p_ids = encode_prompt(tok, prompt)
        for answer in (list(ib) + end, list(ii) + end):
            seq = p_ids + answer
            _, ob = _mlp_outputs(base, seq, layers)
            _, oi = _mlp_outputs(intervention, seq, layers)
            for layer in layers:
                d = (oi[layer] - ob[layer])[len(p_ids) - 1:].sum(0)
                sums[layer] = d if layer not in sums else sums[layer] + d
            count += len(seq) - len(p_ids) + 1
    return {layer: (v / max(1, count)) / (v / max(1, count)).norm().clamp(min=1e-12)
            for layer, v in sums.items()}


def behaviour_sweep(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
                    neurons: dict[str, Any], directions: dict[str, Any],
                    layers: Sequence[int], behaviour: Any) -> dict[str, Any]:
    """Activation-patching sweep measured with the behaviour metric itself on the search
    prompts (``behaviour(features) -> share``): prefixes of the attribution ranking of
    neurons, each layer's decision-point direction and all of them, each layer's answer-wide
    direction and all of them. The smallest candidate within 90 % of the best share wins."""
    candidates: list[tuple[str, list[FeatureRef], str]] = []
    ranked = list(neurons.get("ranked") or [])
    for n in sorted({n for n in (1, 2, 4, 8, 16, 32, 64, len(ranked)) if 0 < n <= len(ranked)}):
        candidates.append((f"neurons top {n}", ranked[:n], "neurons"))
    decision = list(directions.get("all_directions") or [])
    for f in decision:
        candidates.append((f"decision direction layer {f.layer}", [f], "directions"))
    if len(decision) > 1:
        candidates.append(("decision directions all layers", decision, "directions"))
    wide = answer_directions(base, intervention, prompts, layers)
    if wide:
        wid = register_directions(wide)
        refs = [FeatureRef(layer=layer, feature=0, dictionary_id=wid) for layer in sorted(wide)]
        for f in refs:
            candidates.append((f"answer-wide direction layer {f.layer}", [f], "directions"))
        if len(refs) > 1:
            candidates.append(("answer-wide directions all layers", refs, "directions"))
    sweep = []
    for name, feats, kind in candidates:
        share = behaviour(feats)
        sweep.append({"set": name, "size": len(feats), "share": float(share) if share is not None
                      else float("nan"), "features": feats, "kind": kind})
    ok = [r for r in sweep if r["share"] == r["share"]]
    best = max((r["share"] for r in ok), default=0.0)
    chosen = min((r for r in ok if r["share"] >= SWEEP_KEEP * best),
                 key=lambda r: (r["size"], -r["share"])) if best > 0 else None
    summary = [{k: v for k, v in r.items() if k not in ("features",)} for r in sweep]
    if chosen is None:
        return {"features": [], "search_share": None, "sweep": summary,
                "reason": "no candidate set moved the behaviour towards the base"}
    out = {"features": chosen["features"], "search_share": chosen["share"], "sweep": summary,
           "kind": f"{chosen['set']} (behaviour-metric sweep)", "reason": ""}
    if chosen["kind"] == "directions":
        out["controls"] = random_directions([f.layer for f in chosen["features"]], seed=0)
    return out


def search_feature_set(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str], *,
                       layers: Sequence[int] | None = None, max_share: float = 0.05,
                       behaviour: Any = None) -> dict[str, Any]:
    """Both searches on the same (discovery) prompts. Without ``behaviour``, the set with
    the larger decision-point search share wins (neurons on a tie: they are the finer set;
    the loser's summary under ``alternative``). With ``behaviour(features) -> share`` (the
    hypothesis' metric measured on the search prompts), the candidates of both searches and
    the answer-wide directions are swept on it instead (:func:`behaviour_sweep`)."""
    neurons = search_neurons(base, intervention, prompts, layers=layers, max_share=max_share)
    neurons.setdefault("kind", f"MLP neurons (at most {max_share:.0%} of the layers' neurons)")
    directions = search_directions(base, intervention, prompts, layers=layers)
    if behaviour is not None and (neurons.get("ranked") or directions.get("all_directions")):
        n_layers = len(_hooks.decoder_layers(intervention.model))
        use = list(range(n_layers)) if layers is None else list(layers)
        swept = behaviour_sweep(base, intervention, prompts, neurons, directions, use, behaviour)
        swept.update(cap=neurons.get("cap"), n_prompts=neurons.get("n_prompts"),
                     passes=neurons.get("passes"))
        swept["alternative"] = {"kind": "decision-point proxy", "neurons": neurons.get("search_share"),
                                "directions": directions.get("search_share")}
        return swept
    pick, other = ((directions, neurons)
                   if (directions.get("search_share") or 0.0) > (neurons.get("search_share") or 0.0)
                   else (neurons, directions))
    out = dict(pick)
    out["alternative"] = {"kind": other.get("kind"), "search_share": other.get("search_share"),
                          "size": len(other.get("features", []))}
    return out
