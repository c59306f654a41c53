"""``activation-diff`` tracer: dictionary-free graphs from MLP neurons and the residual stream.

Nodes are, per layer and position, the ``top_k`` MLP neurons by |activation| (the input of
``down_proj``: ``act(gate) * up``); the feature id is the neuron index, so two fine-tuned
models that share a basis align by identity. No edges. The residual-stream norm per layer and
position goes into ``metadata``.

:func:`activation_differences` compares a base and an intervention model directly: per layer,
the mean residual-stream difference direction and the neurons whose activations changed most,
each with its top-activating contexts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import Field

from md_framework.runtime import LoadedModel
from md_framework.tracing_api import Tracer
from md_framework.types import (
    CircuitGraph,
    FeatureRef,
    GraphNode,
    StrictModel,
    feature_node_id,
    token_node_id,
)

from builtin_plugins.tracers import _hooks
from builtin_plugins.tracers._common import encode_prompt, families_for, top_logits, tracing_text


class ActivationDiffOptions(StrictModel):
    top_k: int = Field(default=8, ge=1)
    layers: list[int] | None = None
    skip_first_position: bool = True
    max_n_logits: int = Field(default=5, ge=1)
    #: chat models: trace the prompt through the chat template as the metrics send it
    #: (``auto``) or the raw text (``never``: shorter, but its last position predicts the
    #: end of the user turn, not the answer)
    chat_template: Literal["auto", "never"] = "auto"


def run_with_activations(model: LoadedModel, ids: Sequence[int], layers: Sequence[int] | None = None
                         ) -> tuple[Any, dict[int, Any], dict[int, Any]]:
    """One forward pass; returns (last-position logits, {layer: neurons [pos, d_mlp]},
    {layer: residual after the layer [pos, d_model]})."""
    import torch

    hf = model.model
    blocks = _hooks.decoder_layers(hf)
    layers = list(range(len(blocks))) if layers is None else list(layers)
    neurons: dict[int, Any] = {}
    resid: dict[int, Any] = {}
    handles = []
    for i in layers:
        handles.append(blocks[i].mlp.down_proj.register_forward_pre_hook(
            lambda m, args, i=i: neurons.__setitem__(i, args[0][0].detach().float())))
        handles.append(blocks[i].register_forward_hook(
            lambda m, a, o, i=i: resid.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0].detach().float())))
    try:
        device = next(hf.parameters()).device
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([list(ids)], device=device)).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits, neurons, resid


class ActivationDiffTracer(Tracer):
    Options = ActivationDiffOptions
    description = "dictionary-free: top MLP neurons per layer and position (aligned by neuron index)"
    needs_dictionary = False

    @property
    def dictionary_id(self) -> str:
        return "neurons"

    def trace(self, model: LoadedModel, prompts: Sequence[str],
              families: Sequence[str | None] | None = None) -> list[CircuitGraph]:
        o = self.options
        tok = model.tokenizer
        graphs = []
        for prompt, family in zip(prompts, families_for(prompts, families)):
            ids = encode_prompt(tok, tracing_text(tok, prompt, o.chat_template))
            logits, neurons, resid = run_with_activations(model, ids, o.layers)
            nodes = [GraphNode(node_id=token_node_id(p, i), kind="token", position=p, token_id=i,
                               token=tok.decode([i])) for p, i in enumerate(ids)]
            for layer in sorted(neurons):
                acts = neurons[layer]
                for pos in range(acts.shape[0]):
                    if o.skip_first_position and pos == 0:
                        continue
                    _, idx = acts[pos].abs().topk(min(o.top_k, acts.shape[1]))
                    for f in idx.tolist():
                        nodes.append(GraphNode(
                            node_id=feature_node_id(layer, pos, int(f)), kind="feature",
                            layer=layer, position=pos, feature=int(f),
                            activation=float(acts[pos, f])))
            graphs.append(CircuitGraph(
                prompt=prompt, family=family, model_id=model.model_id, dictionary_id="neurons",
                tracer=self.name or "activation-diff", input_tokens=[tok.decode([i]) for i in ids],
                input_token_ids=ids, nodes=nodes,
                logit_targets=top_logits(tok, logits, o.max_n_logits),
                metadata={"residual_norm": {str(k): [round(float(v), 5) for v in r.norm(dim=-1)]
                                            for k, r in sorted(resid.items())},
                          "top_k": o.top_k}))
        return graphs

    def feature_activations(self, model: LoadedModel, prompts: Sequence[str],
                            features: Sequence[FeatureRef]) -> list[dict[str, tuple[float, int]]]:
        """Per prompt, each neuron's peak |activation| and its position (the
        max-activating-contexts interpreter and feature-driven tests use it)."""
        from builtin_plugins.tracers._intervene import NeuronSite, by_layer, site_activations

        sites = [NeuronSite(model.model, layer, ids) for layer, ids in by_layer(features).items()]
        return site_activations(model, sites, prompts, absolute=True)

    def decoder_directions(self, model: LoadedModel,
                           features: Sequence[FeatureRef]) -> dict[str, list[float]]:
        """Each neuron's output direction: its column of ``down_proj`` (logit lens)."""
        from builtin_plugins.tracers._intervene import NeuronSite, by_layer, site_directions

        return site_directions([NeuronSite(model.model, layer, ids)
                                for layer, ids in by_layer(features).items()])

    def trace_answers(self, base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
                      families: Sequence[str | None] | None = None, *,
                      max_new_tokens: int = 24) -> list[Any]:
        """Answer-aware trace (:mod:`builtin_plugins.tracers.answers`) with this tracer's
        features: the MLP neurons at every answer position."""
        from builtin_plugins.tracers.answers import neuron_reader, trace_answers

        return trace_answers(base, intervention, prompts, families, max_new_tokens=max_new_tokens,
                             feature_top_k=self.options.top_k,
                             feature_reader=neuron_reader(self.options.layers),
                             dictionary_id="neurons")

    def search_feature_set(self, base: LoadedModel, intervention: LoadedModel,
                           prompts: Sequence[str], max_share: float = 0.05,
                           metric: Any = None) -> dict[str, Any]:
        """A small neuron set (at most ``max_share`` of the neurons in the layers used), or one
        difference direction per layer, whose patching back to the base moves the answers
        most: attribution patching, then an activation-patching sweep; the better of the two
        on the search prompts (:mod:`builtin_plugins.tracers.feature_search`). With
        ``metric`` the sweep measures that behaviour metric itself on the search prompts
        (at most 12 of them)."""
        from builtin_plugins.tracers.feature_search import search_feature_set

        behaviour = None
        if metric is not None:
            from builtin_plugins.pipeline.causal import causal_share, measure_triplet
            from md_framework.types import TestCase

            cases = [TestCase(id=f"search-{i}", hypothesis_id="search", prompt=p)
                     for i, p in enumerate(dict.fromkeys(prompts))][:12]
            floor = float(getattr(metric, "min_change", 0.0) or 1e-9)
            readings: dict[str, list[float]] = {}
            spent = [0]

            def behaviour(features: Sequence[FeatureRef]) -> float | None:
                # base and intervention once; each candidate costs one patched reading per prompt
                def patched() -> Any:
                    return self.intervened_model(intervention, features, "base", base=base)

                if not readings:
                    vb, vi, va = measure_triplet(metric, base, intervention, patched, cases)
                    readings.update(base=vb, intervention=vi)
                    spent[0] += 3 * len(cases)
                else:
                    with patched() as model:
                        if callable(getattr(metric, "measure_pair", None)):
                            got = metric.measure_pair(base, model, cases)[1]
                        else:
                            got = metric.measure(model, cases)
                    va = [float(r.value) for r in got]
                    spent[0] += len(cases)
                est = causal_share(readings["base"], readings["intervention"], va,
                                   min_denominator=floor, n_bootstrap=0)
                return est.effect.estimate if est.effect is not None else None

        found = search_feature_set(base, intervention, prompts, layers=self.options.layers,
                                   max_share=max_share, behaviour=behaviour)
        if behaviour is not None:
            found["queries"] = spent[0]
        return found

    @contextlib.contextmanager
    def intervened_model(self, model: LoadedModel, features: Sequence[FeatureRef],
                         mode: str = "zero", scale: float = 0.0,
                         base: LoadedModel | None = None) -> Iterator[LoadedModel]:
        """``FeatureIntervener``: ``model`` with the MLP neurons ``(layer, feature)`` zeroed
        (``zero``), multiplied by ``scale`` (``scale``) or set to ``base``'s activation on the
        same input (``base``: base-patching), at every position, inside the block.
        See :mod:`builtin_plugins.tracers._intervene`."""
        from builtin_plugins.tracers._intervene import NeuronSite, by_layer, intervened
        from builtin_plugins.tracers.feature_search import direction_sites, is_direction

        neurons = [f for f in features if not is_direction(f)]
        sites: list[Any] = [NeuronSite(model.model, layer, ids)
                            for layer, ids in by_layer(neurons).items()]
        sites += direction_sites(model, [f for f in features if is_direction(f)])
        # directions are all "layer:0": their dictionary ids keep intervened models apart
        site_name = "+".join(["neurons", *sorted({str(f.dictionary_id) for f in features
                                                  if is_direction(f)})])
        with intervened(model, sites, mode, scale, base, site_name, features) as patched:
            yield patched


def activation_differences(base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
                           top_n: int = 10, n_contexts: int = 5,
                           layers: Sequence[int] | None = None) -> dict[str, Any]:
    """Rank what changed between two models on ``prompts`` without any dictionary.

    Returns JSON-ready data::

        {"directions": [{"layer", "norm", "mean_cosine", "direction" (list), "top_contexts"}],
         "neurons": [{"layer", "neuron", "mean_abs_delta", "mean_delta", "top_contexts"}]}

    ``directions`` has one entry per layer, sorted by the norm of the mean residual
    difference (intervention - base over all positions > 0); ``top_contexts`` are the
    (prompt, position, token) where the difference projects most onto that direction.
    ``neurons`` are the ``top_n`` MLP neurons with the largest mean |delta|, with the contexts
    of their largest |delta|.
    """
    import torch

    from builtin_plugins.models.loaders import check_compatibility

    check_compatibility(base, intervention)
    tok = base.tokenizer
    records = []  # (prompt_idx, ids, d_neurons, d_resid)
    for p_idx, prompt in enumerate(prompts):
        ids = encode_prompt(tok, prompt)
        _, nb, rb = run_with_activations(base, ids, layers)
        _, ni, ri = run_with_activations(intervention, ids, layers)
        records.append((p_idx, ids, {k: ni[k] - nb[k] for k in nb}, {k: ri[k] - rb[k] for k in rb}))
    layer_ids = sorted(records[0][2]) if records else []

    def ctx(p_idx: int, ids: Sequence[int], pos: int, value: float) -> dict[str, Any]:
        return {"prompt": prompts[p_idx], "position": pos, "token": tok.decode([ids[pos]]),
                "value": round(value, 6)}

    directions = []
    neurons = []
    for layer in layer_ids:
        dr = torch.cat([r[3][layer][1:] for r in records])
        mean = dr.mean(0)
        norm = float(mean.norm())
        unit = mean / max(norm, 1e-12)
        cos = torch.nn.functional.cosine_similarity(dr, unit[None], dim=-1)
        proj = []
        for p_idx, ids, _, d in records:
            for pos in range(1, len(ids)):
                proj.append((float(d[layer][pos] @ unit), p_idx, ids, pos))
        proj.sort(key=lambda t: -t[0])
        directions.append({"layer": layer, "norm": round(norm, 6),
                           "mean_cosine": round(float(cos.mean()), 4),
                           "direction": [round(float(v), 6) for v in unit],
                           "top_contexts": [ctx(p, i, pos, v) for v, p, i, pos in proj[:n_contexts]]})
        dn = torch.cat([r[2][layer][1:] for r in records])
        mad = dn.abs().mean(0)
        md = dn.mean(0)
        for f in mad.topk(min(top_n, mad.numel())).indices.tolist():
            vals = []
            for p_idx, ids, d, _ in records:
                for pos in range(1, len(ids)):
                    vals.append((float(d[layer][pos, f]), p_idx, ids, pos))
            vals.sort(key=lambda t: -abs(t[0]))
            neurons.append({"layer": layer, "neuron": int(f), "node_feature": int(f),
                            "mean_abs_delta": round(float(mad[f]), 6),
                            "mean_delta": round(float(md[f]), 6),
                            "top_contexts": [ctx(p, i, pos, v) for v, p, i, pos in vals[:n_contexts]]})
    directions.sort(key=lambda d: -d["norm"])
    neurons.sort(key=lambda n: -n["mean_abs_delta"])
    return {"base_model_id": base.model_id, "intervention_model_id": intervention.model_id,
            "n_prompts": len(prompts), "directions": directions, "neurons": neurons[:top_n]}
