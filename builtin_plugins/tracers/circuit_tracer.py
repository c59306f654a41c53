"""``circuit-tracer`` tracer: transcoder attribution graphs through circuit-tracer's
ReplacementModel (nnsight backend), pruned before they leave the tracer.

What a graph keeps (see docs/tracing.md): every *active* feature as a node with its
activation (``influence`` filled for the features attribution selected), the nodes that
survive ``prune_graph(node_threshold, edge_threshold)`` (features, error nodes, tokens,
logits) and the edges among those kept nodes (at most ``max_edges``, largest |weight|
first), the logit targets and the faithfulness scores. Dense adjacency matrices are dropped.

Cost (the benchmark's token currency, :mod:`md_framework.costs`): attribution runs on the
ReplacementModel's own module (a second copy of the weights for models loaded from a
directory), so :func:`count_attribution_work` attaches a counter to it; its forward passes
(the prompt, then the prompt repeated ``batch_size`` times) are counted by the counter's
hooks, and each ``compute_batch`` — one backward pass over the whole batched sequence,
started at a residual stream, which the hooks cannot see — is recorded as
``batch_size × positions`` backward tokens (circuit-tracer 0.5, ``attribution/attribute.py``
phases 1, 3 and 4; a partly filled batch still back-propagates every row).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from md_framework.errors import ConfigError, MDError
from md_framework.runtime import LoadedModel
from md_framework.tracing_api import Tracer
from md_framework.types import (
    CircuitGraph,
    Faithfulness,
    FeatureRef,
    GraphEdge,
    GraphNode,
    LogitTarget,
    StrictModel,
    error_node_id,
    feature_node_id,
    logit_node_id,
    token_node_id,
)

from builtin_plugins.models._util import require
from builtin_plugins.tracers._common import families_for, tracing_text


class CircuitTracerOptions(StrictModel):
    #: "toy", a transcoder directory (``layer_<i>.safetensors`` + config.yaml), or a
    #: circuit-tracer hub name such as "gemma" / "llama" (needs network or its cache).
    transcoders: str = "toy"
    cache_dir: str = ".md-cache"
    batch_size: int = Field(default=32, ge=1)
    max_feature_nodes: int | None = Field(default=1000, ge=1)
    max_n_logits: int = Field(default=5, ge=1)
    desired_logit_prob: float = Field(default=0.95, gt=0.0, le=1.0)
    #: chat models: trace the prompt through the chat template as the metrics send it
    #: (``auto``) or the raw text (``never``: shorter, but its last position predicts the
    #: end of the user turn, not the answer)
    chat_template: Literal["auto", "never"] = "auto"
    node_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    edge_threshold: float = Field(default=0.98, gt=0.0, le=1.0)
    max_edges: int = Field(default=5000, ge=0)
    store_all_active_features: bool = True
    #: cap on stored active features (selected ones always kept, the rest by activation);
    #: None keeps all (a 37-token SmolLM2 chat prompt has ~35k: ~5 MB of JSON)
    max_stored_features: int | None = Field(default=None, ge=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    backend: Literal["nnsight"] = "nnsight"


def resolve_transcoders(spec: str, cache_dir: str | Path, device: str, dtype: str) -> tuple[Any, str]:
    """(TranscoderSet, dictionary id) for ``spec``."""
    path = Path(spec).expanduser()
    if spec == "toy":
        from builtin_plugins.toy import build_toy_transcoders

        path = build_toy_transcoders(Path(cache_dir).expanduser())
    if path.is_dir():
        from builtin_plugins.tracers.transcoders import dictionary_id_of, load_transcoder_dir

        return load_transcoder_dir(path, device=device, dtype=dtype), dictionary_id_of(path)
    if Path(spec).suffix or spec.startswith((".", "/", "~")):
        raise ConfigError(f"transcoder directory {spec!r} does not exist")
    torch = require("torch", "circuit-tracer")
    from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

    try:
        transcoders, _cfg = load_transcoder_from_hub(spec, device=torch.device(device),
                                                     dtype=getattr(torch, dtype))
    except Exception as exc:  # noqa: BLE001 - hub/network failures come in many types
        raise MDError(f"could not load transcoders {spec!r} from the hub (offline, or not a "
                      f"known name): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}. "
                      "Use a local directory or train some with `md transcoders train`.") from exc
    return transcoders, f"hub:{spec}"


def _layers_of(transcoders: Any) -> list[Any]:
    """The per-layer transcoders of a circuit-tracer TranscoderSet (or a plain sequence)."""
    layers = getattr(transcoders, "transcoders", transcoders)
    return list(layers.values()) if isinstance(layers, dict) else list(layers)


def count_attribution_work(rm: Any, label: str) -> Any:
    """Count a ReplacementModel's attribution work in the token currency (module docstring):
    a counter on its torch module for the forward passes, and each attribution batch's
    backward pass recorded by wrapping the attribution context's ``compute_batch``."""
    from builtin_plugins.models.cost_counting import attach

    counter = attach(rm._model, label)
    setup = rm.setup_attribution

    def counted_setup(*args: Any, **kwargs: Any) -> Any:
        ctx = setup(*args, **kwargs)
        compute = ctx.compute_batch

        def counted_compute(*c_args: Any, **c_kwargs: Any) -> Any:
            resid = ctx._resid_activations[0]  # (batch_size, positions, d_model)
            rows = compute(*c_args, **c_kwargs)
            counter.add(backward_passes=1, backward_tokens=int(resid.shape[0]) * int(resid.shape[1]))
            return rows

        ctx.compute_batch = counted_compute
        return ctx

    rm.setup_attribution = counted_setup
    return counter


class CircuitTracerTracer(Tracer):
    Options = CircuitTracerOptions
    description = "transcoder attribution graphs through circuit-tracer (nnsight backend)"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._transcoders: Any = None
        self._dictionary_id: str | None = None
        self._replacement: dict[tuple[str, str], Any] = {}
        #: wall time per traced prompt (graphs stay deterministic, so timing is not in them)
        self.last_seconds: list[float] = []

    def __getstate__(self) -> dict[str, Any]:
        """Pickle options only (executors that leave the process rebuild the heavy parts)."""
        state = dict(self.__dict__)
        state.update(_transcoders=None, _replacement={}, last_seconds=[])
        return state

    # ------------------------------------------------------------------ identity
    @property
    def dictionary_id(self) -> str:
        self._load_transcoders()
        assert self._dictionary_id is not None
        return self._dictionary_id

    def identity(self) -> str:
        return f"{self.name or 'circuit-tracer'}:{self.dictionary_id}:{self.options.model_dump_json()}"

    def _load_transcoders(self) -> Any:
        if self._transcoders is None:
            require("circuit_tracer", "the circuit-tracer tracer")
            o = self.options
            self._transcoders, self._dictionary_id = resolve_transcoders(
                o.transcoders, o.cache_dir, o.device, o.dtype)
        return self._transcoders

    def replacement_model(self, model: LoadedModel) -> Any:
        """The ReplacementModel of ``model`` with this tracer's transcoders (cached)."""
        torch = require("torch", "circuit-tracer")
        transcoders = self._load_transcoders()
        key = (model.model_id, self.dictionary_id)
        if key not in self._replacement:
            from circuit_tracer import ReplacementModel

            o = self.options
            n_layers = model.model.config.num_hidden_layers
            if len(transcoders) != n_layers:
                raise ConfigError(f"transcoder set has {len(transcoders)} layers but the model has "
                                  f"{n_layers}; circuit-tracer needs one per layer")
            hidden = model.model.config.hidden_size
            widths = {int(tc.d_model) for tc in _layers_of(transcoders)}
            if widths != {hidden}:
                raise ConfigError(
                    f"transcoders have d_model {', '.join(map(str, sorted(widths)))} but the model's"
                    f" hidden_size is {hidden}; they were trained for another model")
            if model.local_path is not None:
                rm = ReplacementModel.from_pretrained_and_transcoders(
                    str(model.local_path), transcoders, backend="nnsight",
                    device=torch.device(o.device), dtype=getattr(torch, o.dtype))
            else:  # in-memory model (e.g. an unmerged adapter): wrap it directly
                from circuit_tracer.replacement_model.replacement_model_nnsight import (
                    NNSightReplacementModel,
                )

                hf = model.model
                if hasattr(hf, "merge_and_unload"):
                    raise ConfigError("circuit-tracer cannot wrap an unmerged PEFT model; "
                                      "load it with merge_adapter: true")
                hf.config._attn_implementation = "eager"  # attention hooks need eager attention
                rm = NNSightReplacementModel(hf, tokenizer=model.tokenizer, dispatch=True)
                rm._hf_config = hf.config
                rm._configure_replacement_model(transcoders)
            count_attribution_work(rm, f"{model.model_id} (circuit-tracer)")
            self._replacement[key] = rm
        return self._replacement[key]

    # ------------------------------------------------------------------ tracing
    def trace(self, model: LoadedModel, prompts: Sequence[str],
              families: Sequence[str | None] | None = None) -> list[CircuitGraph]:
        from circuit_tracer import attribute

        rm = self.replacement_model(model)
        o = self.options
        graphs = []
        for prompt, family in zip(prompts, families_for(prompts, families)):
            t0 = time.time()
            ids = rm.ensure_tokenized(tracing_text(model.tokenizer, prompt, o.chat_template))
            raw = attribute(ids, rm, batch_size=o.batch_size, max_feature_nodes=o.max_feature_nodes,
                            max_n_logits=o.max_n_logits, desired_logit_prob=o.desired_logit_prob,
                            verbose=False)
            graph = self.to_circuit_graph(raw, model, prompt, family)
            self.last_seconds.append(round(time.time() - t0, 3))  # kept out of the graph
            graphs.append(graph)
        return graphs

    @contextlib.contextmanager
    def intervened_model(self, model: LoadedModel, features: Sequence[FeatureRef],
                         mode: str = "zero", scale: float = 0.0,
                         base: LoadedModel | None = None) -> Iterator[LoadedModel]:
        """``FeatureIntervener``: ``model`` with transcoder features ``(layer, feature)``
        ablated through forward hooks on the plain HF model (not through ReplacementModel, so
        every metric works unchanged, generation included): at every position but a sequence's
        first (which the transcoders never saw in training) the MLP output gets
        ``(new - a) * W_dec[f]`` added, ``a = encode(mlp_input)[f]``; ``zero`` removes the
        feature's decoder contribution, ``scale`` multiplies it, ``base`` sets ``a`` to the base
        model's activation on the same input. Unlike ``ReplacementModel.feature_intervention``,
        attention is not frozen and the effect propagates through the real MLPs of later layers
        (docs/causal.md)."""
        from builtin_plugins.tracers._intervene import intervened

        sites = self._sites(model, features)
        with intervened(model, sites, mode, scale, base, f"transcoder:{self.dictionary_id}",
                        features) as patched:
            yield patched

    def trace_answers(self, base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
                      families: Sequence[str | None] | None = None, *,
                      max_new_tokens: int = 24) -> list[Any]:
        """Answer-aware trace (:mod:`builtin_plugins.tracers.answers`): divergences and token
        shifts at every answer position (plain forward passes; no attribution graph and no
        transcoder features there, which keeps the screen cheap)."""
        from builtin_plugins.tracers.answers import trace_answers

        return trace_answers(base, intervention, prompts, families, max_new_tokens=max_new_tokens)

    def _sites(self, model: LoadedModel, features: Sequence[FeatureRef]) -> list[Any]:
        from builtin_plugins.tracers._intervene import TranscoderSite, by_layer

        transcoders = _layers_of(self._load_transcoders())
        sites = []
        for layer, ids in by_layer(features).items():
            if not 0 <= layer < len(transcoders):
                raise ConfigError(f"feature layer {layer} out of range ({len(transcoders)} transcoders)")
            sites.append(TranscoderSite(model.model, layer, ids, transcoders[layer]))
        return sites

    def feature_activations(self, model: LoadedModel, prompts: Sequence[str],
                            features: Sequence[FeatureRef]) -> list[dict[str, tuple[float, int]]]:
        """Per prompt, each transcoder feature's peak activation on the MLP input and its
        position: plain forward passes, no attribution (max-activating contexts)."""
        from builtin_plugins.tracers._intervene import site_activations

        return site_activations(model, self._sites(model, features), prompts, absolute=False)

    def decoder_directions(self, model: LoadedModel,
                           features: Sequence[FeatureRef]) -> dict[str, list[float]]:
        """Each transcoder feature's decoder vector ``W_dec[f]`` (logit lens)."""
        from builtin_plugins.tracers._intervene import site_directions

        return site_directions(self._sites(model, features))

    def to_circuit_graph(self, g: Any, model: LoadedModel, prompt: str,
                         family: str | None) -> CircuitGraph:
        """Prune a circuit-tracer ``Graph`` into a :class:`CircuitGraph`."""
        import torch
        from circuit_tracer.graph import compute_graph_scores, compute_node_influence, prune_graph

        o = self.options
        tok = model.tokenizer
        ids = [int(i) for i in g.input_tokens.tolist()]
        n_pos = len(ids)
        nf = len(g.selected_features)
        n_layers = g.cfg.n_layers
        ne, nt, nl = n_layers * n_pos, n_pos, len(g.logit_targets)
        A = g.adjacency_matrix.float()
        weights = torch.zeros(A.shape[0])
        weights[-nl:] = g.logit_probabilities.float()
        influence = compute_node_influence(A, weights)
        total = influence[: nf + ne + nt].sum().clamp_min(1e-12)
        error_share = float(influence[nf:nf + ne].sum() / total)
        replacement, completeness = compute_graph_scores(g)
        pruned = prune_graph(g, node_threshold=o.node_threshold, edge_threshold=o.edge_threshold)
        keep = pruned.node_mask.clone()
        keep[-nl:] = True

        def node_id(i: int) -> str:
            if i < nf:
                layer, pos, feat = (int(v) for v in g.active_features[g.selected_features[i]].tolist())
                return feature_node_id(layer, pos, feat)
            if i < nf + ne:
                layer, pos = divmod(i - nf, n_pos)
                return error_node_id(layer, pos)
            if i < nf + ne + nt:
                pos = i - nf - ne
                return token_node_id(pos, ids[pos])
            return logit_node_id(int(g.logit_targets[i - nf - ne - nt].vocab_idx))

        nodes: dict[str, GraphNode] = {}
        selected = {int(s): j for j, s in enumerate(g.selected_features.tolist())}
        feats = g.active_features.tolist()
        acts = g.activation_values.float().tolist()
        extra_ok: set[int] | None = None
        if o.max_stored_features is not None:
            rest = sorted((i for i in range(len(feats)) if i not in selected),
                          key=lambda i: (-abs(acts[i]), i))
            extra_ok = set(rest[: max(0, o.max_stored_features - len(selected))])
        for a_idx, ((layer, pos, feat), act) in enumerate(zip(feats, acts)):
            j = selected.get(a_idx)
            if j is None and (not o.store_all_active_features
                              or (extra_ok is not None and a_idx not in extra_ok)):
                continue
            nid = feature_node_id(int(layer), int(pos), int(feat))
            nodes[nid] = GraphNode(node_id=nid, kind="feature", layer=int(layer), position=int(pos),
                                   feature=int(feat), activation=float(act),
                                   influence=float(influence[j]) if j is not None else None)
        kept_ids = []
        for i in keep.nonzero().flatten().tolist():
            nid = node_id(i)
            kept_ids.append(nid)
            if i < nf:
                continue
            if i < nf + ne:
                layer, pos = divmod(i - nf, n_pos)
                nodes[nid] = GraphNode(node_id=nid, kind="error", layer=layer, position=pos,
                                       influence=float(influence[i]))
            elif i < nf + ne + nt:
                pos = i - nf - ne
                nodes[nid] = GraphNode(node_id=nid, kind="token", position=pos, token_id=ids[pos],
                                       token=tok.decode([ids[pos]]), influence=float(influence[i]))
            else:
                t = g.logit_targets[i - nf - ne - nt]
                nodes[nid] = GraphNode(node_id=nid, kind="logit", token_id=int(t.vocab_idx),
                                       token=t.token_str, position=n_pos - 1)
        emask = pruned.edge_mask & keep[:, None] & keep[None, :]
        tgt, src = emask.nonzero(as_tuple=True)
        w = A[tgt, src]
        if o.max_edges and w.numel() > o.max_edges:
            top = w.abs().topk(o.max_edges).indices
            tgt, src, w = tgt[top], src[top], w[top]
        order = sorted(range(w.numel()), key=lambda k: (-abs(float(w[k])), int(tgt[k]), int(src[k])))
        edges = [GraphEdge(source=node_id(int(src[k])), target=node_id(int(tgt[k])),
                           weight=float(w[k])) for k in order]
        logits = [LogitTarget(token_id=int(t.vocab_idx), token=t.token_str,
                              probability=float(min(max(p, 0.0), 1.0)))
                  for t, p in zip(g.logit_targets, g.logit_probabilities.float().tolist())]
        return CircuitGraph(
            prompt=prompt, family=family, model_id=model.model_id, dictionary_id=self.dictionary_id,
            tracer=self.name or "circuit-tracer", input_tokens=[tok.decode([i]) for i in ids],
            input_token_ids=ids, nodes=list(nodes.values()), edges=edges, logit_targets=logits,
            faithfulness=Faithfulness(replacement_score=float(replacement),
                                      completeness_score=float(completeness),
                                      error_node_share=error_share),
            metadata={"n_active_features": len(feats), "n_selected_features": nf,
                      "kept_node_ids": kept_ids, "n_kept_nodes": len(kept_ids),
                      "scan": str(getattr(g, "scan", "")), "node_threshold": o.node_threshold,
                      "edge_threshold": o.edge_threshold, "n_layers": n_layers},
        )
