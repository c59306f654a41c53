"""``crosscoder`` tracer: graphs whose nodes are latents of one crosscoder of the pair.

A crosscoder (:mod:`builtin_plugins.tracers.crosscoder_train`) reads both models' residual
streams at once, so its latents are aligned by construction. Tracing one model therefore
runs the *other* model of the pair on the same tokens too (the partner is loaded from the
paths the crosscoder recorded): the latent activation ``f_j`` is the joint one, and the node
of latent j in model m's graph carries ``f_j * ||d_j^m||`` (what the latent writes into that
model's residual stream). A latent classified intervention-only (by decoder norms and latent
scaling) is left out of base graphs and a base-only latent out of intervention graphs, so
the diff sees them appear / vanish; shared latents differ by their decoder norms. No edges.

A latent classified ``changed`` keeps its norms but turns its decoder direction, so its node
``f_j * ||d_j^m||`` is the same in both graphs and the diff could not see it. With
``difference_nodes`` (the default) such a latent j also has a *difference latent* with id
``n + j`` (n latents per layer): what latent j writes differently in the intervention model,
decoder ``d_j^I - d_j^B`` on the intervention side and nothing on the base side. Its node
``f_j * ||d_j^I - d_j^B||`` is in intervention graphs only (its own top-k per position, so it
never displaces a latent's node), and the diff sees it appear on the prompts where the latent
fires; reading, logit lens and interventions treat it like any latent: zeroing it on the
intervention model patches latent j to its base-side write.

The tracer reads its own features (:class:`~md_framework.tracing_api.FeatureReader`: peak
``f_j * ||d_j^m||`` per prompt and the decoder direction ``d_j^m``) and intervenes on them
(:class:`~md_framework.tracing_api.FeatureIntervener`), on the residual stream after the
crosscoder's layer of model m, with the partner running in lock-step for the joint encoding:

* ``zero``: subtract ``f_j d_j^m``; ``scale``: add ``(scale - 1) f_j d_j^m``;
* ``base`` (on the intervention model): replace the latent's intervention-side contribution
  by its base-side one, adding ``f_j (d_j^B - d_j^I)``: the latent acts as in the base
  model. The crosscoder's reconstruction error stays in place.

On a difference latent ``zero`` and ``base`` both subtract ``f_j (d_j^I - d_j^B)`` (latent j
writes as in the base model; patching j and its difference latent together counts it twice);
on the base model, whose side of a difference latent is zero, every mode is a no-op.

No mode writes at a sequence's first position, which training never shows the crosscoder.

Options: ``crosscoder`` (a directory from ``md crosscoders train``) or ``base_model`` +
``intervention_model`` (model sources; the crosscoder is trained with ``train`` on first use
and cached under ``cache_dir/crosscoders/``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from md_framework.errors import ConfigError
from md_framework.runtime import LoadedModel
from md_framework.tracing_api import Tracer
from md_framework.types import CircuitGraph, FeatureRef, GraphNode, StrictModel, feature_node_id, token_node_id

from builtin_plugins.tracers import _hooks
from builtin_plugins.tracers._common import encode_prompt, families_for, top_logits, tracing_text
from builtin_plugins.tracers.crosscoder_train import (
    CLASSES,
    ROLES,
    CrosscoderTrainConfig,
    encode,
    ensure_crosscoder,
    latent_classes,
    load_crosscoder_dir,
)


class CrosscoderOptions(StrictModel):
    #: directory written by ``md crosscoders train`` (or None: train from the two sources)
    crosscoder: str | None = None
    base_model: str | None = None
    intervention_model: str | None = None
    train: CrosscoderTrainConfig = Field(default_factory=CrosscoderTrainConfig)
    cache_dir: str = ".md-cache"
    top_k: int = Field(default=16, ge=1)
    #: leave a model's exclusive latents out of the other model's graphs (see module doc)
    drop_exclusive: bool = True
    skip_first_position: bool = True
    max_n_logits: int = Field(default=5, ge=1)
    chat_template: Literal["auto", "never"] = "auto"
    #: a difference latent n + j for each `changed` latent j (see module doc)
    difference_nodes: bool = True


class _Crosscoder:
    """Loaded crosscoder: per-layer states, metadata, latent classes."""

    def __init__(self, path: Path) -> None:
        import torch

        self.path = path
        self.states, self.meta = load_crosscoder_dir(path)
        self.id: str = self.meta["dictionary_id"]
        self.classes = {layer: latent_classes(s) for layer, s in self.states.items()}
        self.dec_norm = {layer: s["W_dec"].norm(dim=2) for layer, s in self.states.items()}
        #: per layer [2, 2n, d]: the latents' decoders, then their difference latents'
        #: (``d_j^I - d_j^B`` of a changed latent on the intervention side; zero elsewhere)
        self.decoders: dict[int, Any] = {}
        #: per layer [2, n]: the difference latents' decoder norms (base row zero)
        self.diff_norm: dict[int, Any] = {}
        for layer, s in self.states.items():
            changed = s["class_code"] == float(CLASSES.index("changed"))
            diff = s["W_dec"].new_zeros(s["W_dec"].shape)
            diff[1] = (s["W_dec"][1] - s["W_dec"][0]) * changed[:, None].to(diff.dtype)
            self.decoders[layer] = torch.cat([s["W_dec"], diff], dim=1)
            self.diff_norm[layer] = diff.norm(dim=2)

    def n_latents(self, layer: int) -> int:
        return int(self.states[layer]["b_enc"].shape[0])

    def decoder(self, layer: int) -> Any:
        """[2, 2n, d]: the latents' decoders, then their difference latents'."""
        return self.decoders[layer]

    def node_values(self, layer: int, f: Any, role: int, difference: bool) -> Any:
        """[positions, n] (or [positions, 2n] with difference latents) of what each latent
        writes into model ``role``'s residual stream: ``f_j ||d_j^role||``, then
        ``f_j ||d_j^I - d_j^B||`` on the intervention side (0 on the base side)."""
        import torch

        values = f * self.dec_norm[layer][role]
        if not difference:
            return values
        return torch.cat([values, f * self.diff_norm[layer][role]], dim=-1)

    def is_difference_latent(self, layer: int, j: int) -> bool:
        n = self.n_latents(layer)
        return n <= j < 2 * n and self.classes[layer][j - n] == "changed"

    def role_of(self, model: LoadedModel) -> int:
        root = model.model_id.split("~", 1)[0]
        for r, role in enumerate(ROLES):
            if self.meta[role]["model_id"] == root:
                return r
        raise ConfigError(
            f"model {model.model_id[:40]} is neither the base ({self.meta['base']['model_id'][:24]})"
            f" nor the intervention ({self.meta['intervention']['model_id'][:24]}) model this "
            f"crosscoder ({self.path}) was trained on")


class CrosscoderTracer(Tracer):
    Options = CrosscoderOptions
    description = "crosscoder latents of the pair (BatchTopK, latent scaling), aligned by construction"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        o = self.options
        if o.crosscoder is None and not (o.base_model and o.intervention_model):
            raise ConfigError("crosscoder tracer: give `crosscoder` (a directory from `md "
                              "crosscoders train`) or both `base_model` and `intervention_model`")
        self._xc: _Crosscoder | None = None
        self._models: dict[int, LoadedModel] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_xc": None, "_models": {}}  # reloaded in a worker

    # ------------------------------------------------------------------ loading
    def _load_source(self, source: str) -> LoadedModel:
        from md_framework.runtime import ModelLoadOptions, ModelSpec
        from md_framework.tracing import load_model

        return load_model(ModelSpec(source=source), ModelLoadOptions(cache_dir=self.options.cache_dir))

    def crosscoder(self) -> _Crosscoder:
        if self._xc is None:
            o = self.options
            if o.crosscoder is not None:
                path = Path(o.crosscoder).expanduser()
            else:
                base, inter = self._load_source(o.base_model), self._load_source(o.intervention_model)
                self._models = {0: base, 1: inter}
                path = ensure_crosscoder(base, inter, o.train, Path(o.cache_dir))
            self._xc = _Crosscoder(path)
        return self._xc

    def partner(self, role: int) -> LoadedModel:
        """The other model of the pair (loaded once from what the crosscoder recorded)."""
        other = 1 - role
        if other not in self._models:
            rec = self.crosscoder().meta[ROLES[other]]
            loaded = None
            if rec.get("local_path") and Path(rec["local_path"]).exists():
                from md_framework.runtime import ModelLoadOptions, ModelSpec

                from builtin_plugins.models.loaders import load_model

                loaded = load_model(ModelSpec(source=rec["local_path"]), ModelLoadOptions(
                    cache_dir=self.options.cache_dir))
            if loaded is None or loaded.model_id != rec["model_id"]:
                loaded = self._load_source(rec["source"])
            if loaded.model_id != rec["model_id"]:
                raise ConfigError(f"the {ROLES[other]} model {rec['source']} changed since the "
                                  "crosscoder was trained (model id differs); retrain it")
            self._models[other] = loaded
        return self._models[other]

    @property
    def dictionary_id(self) -> str:
        return self.crosscoder().id

    def identity(self) -> str:
        return f"{self.name or 'crosscoder'}:{self.dictionary_id}:{self.options.model_dump_json()}"

    # ------------------------------------------------------------------ reading
    def _pair_residuals(self, model: LoadedModel, ids: Sequence[int]
                        ) -> tuple[int, Any, dict[int, tuple[Any, Any]]]:
        """(role, model's last-position logits, {layer: (base resid, intervention resid)})."""
        import torch

        xc = self.crosscoder()
        role = xc.role_of(model)
        layers = sorted(xc.states)
        out: dict[int, list[Any]] = {}
        logits = None
        for r, m in ((role, model), (1 - role, self.partner(role))):
            store: dict[int, Any] = {}
            blocks = _hooks.decoder_layers(m.model)
            handles = [blocks[i].register_forward_hook(
                lambda mod, a, o, i=i: store.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0].detach().float()))
                for i in layers]
            try:
                device = next(m.model.parameters()).device
                with torch.no_grad():
                    res = m.model(input_ids=torch.tensor([list(ids)], device=device))
            finally:
                for h in handles:
                    h.remove()
            if r == role:
                logits = res.logits[0, -1]
            for i in layers:
                out.setdefault(i, [None, None])[r] = store[i].cpu()
        return role, logits, {i: (v[0], v[1]) for i, v in out.items()}

    def _pair_codes(self, model: LoadedModel, ids: Sequence[int]) -> tuple[int, Any, dict[int, Any]]:
        """(role, logits, {layer: [positions, n] latent codes f}): the code is the pair's,
        the same whichever model of the pair is read."""
        xc = self.crosscoder()
        role, logits, resid = self._pair_residuals(model, ids)
        return role, logits, {layer: encode(xc.states[layer], xb, xi) for layer, (xb, xi) in resid.items()}

    def contributions(self, model: LoadedModel, ids: Sequence[int]) -> tuple[int, Any, dict[int, Any]]:
        """(role, logits, {layer: [positions, n] latent contributions f_j * ||d_j^role||})."""
        xc = self.crosscoder()
        role, logits, codes = self._pair_codes(model, ids)
        return role, logits, {layer: xc.node_values(layer, f, role, False) for layer, f in codes.items()}

    def node_contributions(self, model: LoadedModel, ids: Sequence[int]) -> tuple[int, Any, dict[int, Any]]:
        """:meth:`contributions` with the difference latents' columns appended when
        ``difference_nodes`` is on ([positions, 2n]): what the graphs and the reader use."""
        xc = self.crosscoder()
        role, logits, codes = self._pair_codes(model, ids)
        diff = self.options.difference_nodes
        return role, logits, {layer: xc.node_values(layer, f, role, diff) for layer, f in codes.items()}

    def trace(self, model: LoadedModel, prompts: Sequence[str],
              families: Sequence[str | None] | None = None) -> list[CircuitGraph]:
        o = self.options
        xc = self.crosscoder()
        tok = model.tokenizer
        graphs = []
        for prompt, family in zip(prompts, families_for(prompts, families)):
            ids = encode_prompt(tok, tracing_text(tok, prompt, o.chat_template))
            role, logits, contrib = self.node_contributions(model, ids)
            hidden = "base-only" if role == 1 else "intervention-only"
            nodes = [GraphNode(node_id=token_node_id(p, i), kind="token", position=p, token_id=i,
                               token=tok.decode([i])) for p, i in enumerate(ids)]
            classes_seen: dict[str, str] = {}
            for layer in sorted(contrib):
                n = xc.n_latents(layer)
                c = contrib[layer].clone()
                if o.drop_exclusive:
                    drop = [j for j, cls in enumerate(xc.classes[layer]) if cls == hidden]
                    if drop:
                        c[:, drop] = 0.0
                # latents, then difference latents: each its own top-k, so a difference
                # node never pushes a latent's node out of the intervention graph
                blocks = [(0, c[:, :n])] + ([(n, c[:, n:])] if c.shape[1] > n else [])
                for pos in range(c.shape[0]):
                    if o.skip_first_position and pos == 0 and c.shape[0] > 1:
                        continue
                    for offset, block in blocks:
                        values, feats = block[pos].topk(min(o.top_k, block.shape[1]))
                        for v, f in zip(values.tolist(), feats.tolist()):
                            if v <= 0:
                                break
                            f = int(f) + offset
                            nodes.append(GraphNode(
                                node_id=feature_node_id(layer, pos, f), kind="feature",
                                layer=layer, position=pos, feature=f, activation=float(v)))
                            classes_seen[f"{layer}:{f}"] = (
                                xc.classes[layer][f] if f < n else "difference")
            graphs.append(CircuitGraph(
                prompt=prompt, family=family, model_id=model.model_id, dictionary_id=xc.id,
                tracer=self.name or "crosscoder", input_tokens=[tok.decode([i]) for i in ids],
                input_token_ids=ids, nodes=nodes,
                logit_targets=top_logits(tok, logits, o.max_n_logits),
                metadata={"role": ROLES[role], "top_k": o.top_k, "latent_classes": classes_seen}))
        return graphs

    def trace_answers(self, base: LoadedModel, intervention: LoadedModel, prompts: Sequence[str],
                      families: Sequence[str | None] | None = None, *,
                      max_new_tokens: int = 24) -> list[Any]:
        """Answer-aware trace (:mod:`builtin_plugins.tracers.answers`) with this tracer's
        features: each latent's contribution ``f_j ||d_j^m||`` at every answer position.
        Without it the pipeline saw no answer edits with this tracer (a sign-off added at the
        end of the answer never became a hypothesis on smollm2-style). Difference latents are
        read too (``f_j ||d_j^I - d_j^B||`` on the intervention side)."""
        from builtin_plugins.tracers.answers import trace_answers

        xc = self.crosscoder()
        last: dict[tuple[int, ...], dict[int, Any]] = {}

        def read(model: LoadedModel, ids: Sequence[int]) -> dict[int, Any]:
            # one encoding serves both models: the latent code is the pair's, only the
            # decoder norm that weighs it differs (the answers module reads base, then
            # intervention, on the same ids)
            key = tuple(ids)
            if key not in last:
                last.clear()
                last[key] = self._pair_codes(model, ids)[2]
            role = xc.role_of(model)
            return {layer: xc.node_values(layer, f, role, self.options.difference_nodes)
                    for layer, f in last[key].items()}

        return trace_answers(base, intervention, prompts, families, max_new_tokens=max_new_tokens,
                             feature_top_k=self.options.top_k, feature_reader=read,
                             dictionary_id=xc.id)

    def feature_activations(self, model: LoadedModel, prompts: Sequence[str],
                            features: Sequence[FeatureRef]) -> list[dict[str, tuple[float, int]]]:
        """Per prompt, each latent's peak ``f_j * ||d_j^m||`` (a difference latent's
        ``f_j * ||d_j^I - d_j^B||``, 0 on the base model) and its position (``FeatureReader``)."""
        from builtin_plugins.metrics.core import encode_prompt as metric_prompt

        self._check(features)
        out = []
        for prompt in prompts:
            _, _, contrib = self.node_contributions(model, metric_prompt(model.tokenizer, prompt))
            row = {}
            for ref in features:
                c = contrib[ref.layer][:, ref.feature]
                skip = 1 if c.shape[0] > 1 else 0
                peak, where = c[skip:].max(dim=0)
                row[f"{ref.layer}:{ref.feature}"] = (float(peak), int(where) + skip)
            out.append(row)
        return out

    def decoder_directions(self, model: LoadedModel,
                           features: Sequence[FeatureRef]) -> dict[str, list[float]]:
        """Each latent's decoder direction ``d_j^m`` for ``model``'s side of the pair (a
        difference latent's: ``d_j^I - d_j^B`` on the intervention side, zero on the base)."""
        xc = self.crosscoder()
        role = xc.role_of(model)
        self._check(features)
        return {f"{f.layer}:{f.feature}": [float(v) for v in xc.decoder(f.layer)[role, f.feature]]
                for f in features}

    def _check(self, features: Sequence[FeatureRef]) -> None:
        xc = self.crosscoder()
        for f in features:
            if f.layer not in xc.states:
                raise ConfigError(f"crosscoder has no layer {f.layer} (layers {sorted(xc.states)})")
            n = xc.n_latents(f.layer)
            if n <= f.feature < 2 * n and self.options.difference_nodes:
                if not xc.is_difference_latent(f.layer, f.feature):
                    raise ConfigError(
                        f"crosscoder latent {f.feature} at layer {f.layer} would be the difference"
                        f" latent of {f.feature - n}, which is {xc.classes[f.layer][f.feature - n]}"
                        " (only `changed` latents have one)")
            elif not 0 <= f.feature < n:
                more = f", difference latents {n}..{2 * n - 1}" if self.options.difference_nodes else ""
                raise ConfigError(f"crosscoder latent {f.feature} out of range at layer {f.layer}"
                                  f" (n={n}{more})")

    # ------------------------------------------------------------------ intervening
    @contextlib.contextmanager
    def intervened_model(self, model: LoadedModel, features: Sequence[FeatureRef],
                         mode: str = "zero", scale: float = 0.0,
                         base: LoadedModel | None = None) -> Iterator[LoadedModel]:
        """``FeatureIntervener`` on crosscoder latents (see the module docstring)."""
        import torch

        from builtin_plugins.tracers._intervene import (
            MODES, by_layer, first_positions, intervened_id, keep_first_positions, run_in_lockstep)

        if mode not in MODES:
            raise ConfigError(f"intervention mode must be one of {', '.join(MODES)}, got {mode!r}")
        xc = self.crosscoder()
        self._check(features)
        role = xc.role_of(model)
        if mode == "base" and role != 1:
            raise ConfigError('intervention mode "base" applies to the intervention model')
        partner = base if (role == 1 and base is not None) else self.partner(role)
        if partner.model is model.model:
            raise ConfigError("the partner model shares its modules with the intervened model")
        groups = by_layer(features)
        state: dict[str, Any] = {"cache": None, "resid": {}, "first": None}
        handles: list[Any] = []
        p_blocks, blocks = _hooks.decoder_layers(partner.model), _hooks.decoder_layers(model.model)

        def run_partner(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            state["first"] = first_positions(kwargs)
            run_in_lockstep(partner.model, args, kwargs, state)

        def reader(layer: int) -> Any:
            def hook(mod: Any, a: Any, o: Any) -> None:
                state["resid"][layer] = (o[0] if isinstance(o, tuple) else o).detach()
            return hook

        def patcher(layer: int, ids: list[int]) -> Any:
            s = xc.states[layer]
            idx = torch.tensor(ids)
            code_idx = idx % xc.n_latents(layer)  # a difference latent fires with its latent
            W = xc.decoder(layer)[:, idx]  # [2, k, d]
            if mode == "zero":
                delta_dir = -W[role]
            elif mode == "scale":
                delta_dir = (float(scale) - 1.0) * W[role]
            else:
                delta_dir = W[0] - W[1]

            def hook(mod: Any, a: Any, o: Any) -> Any:
                h = o[0] if isinstance(o, tuple) else o
                other = state["resid"].get(layer)
                if other is None or other.shape != h.shape:
                    raise RuntimeError("crosscoder intervention: the partner's activations do not "
                                       "match the intervened model's")
                pair = (other, h) if role == 1 else (h, other)
                f = encode(s, pair[0].float(), pair[1].float())[..., code_idx]
                delta = f @ delta_dir.to(f.device)
                # The crosscoder never read a sequence's first position (training drops it:
                # the attention-sink token's norm is far outside the training distribution),
                # so its codes there are extrapolation; patching them broke SmolLM2 (every
                # latent patched to base: refusal 0.95 -> 0.00001). No change there.
                delta = keep_first_positions(torch.zeros_like(delta), delta, state["first"])
                new = h + delta.to(h.dtype)
                return (new, *o[1:]) if isinstance(o, tuple) else new
            return hook

        try:
            handles.append(model.model.register_forward_pre_hook(run_partner, with_kwargs=True))
            for layer, ids in groups.items():
                handles.append(p_blocks[layer].register_forward_hook(reader(layer)))
                handles.append(blocks[layer].register_forward_hook(patcher(layer, ids)))
            yield dataclasses.replace(model, model_id=intervened_id(
                model, features, mode, scale, base if mode == "base" else None, f"crosscoder-{xc.id}"))
        finally:
            for h in handles:
                h.remove()
