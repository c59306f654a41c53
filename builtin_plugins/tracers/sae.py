"""``sae`` tracer: sae-lens SAE feature activations on the residual stream.

Hooks are plain torch forward hooks on the Hugging Face model (TransformerLens-style hook
names ``blocks.L.hook_resid_post`` / ``hook_resid_pre`` / ``hook_mlp_out`` are mapped to the
HF modules). Per position, the ``top_k`` most active features become feature nodes; SAEs give
no edges. Logit targets come from the model's own output at the last position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from md_framework.errors import ConfigError, MDError
from md_framework.runtime import LoadedModel
from md_framework.tracing_api import Tracer
from md_framework.types import CircuitGraph, GraphNode, StrictModel, feature_node_id, token_node_id

from builtin_plugins.models._util import file_sha256, require
from builtin_plugins.tracers import _hooks
from builtin_plugins.tracers._common import encode_prompt, families_for, top_logits, tracing_text


class SAEOptions(StrictModel):
    #: SAE directories (sae-lens ``save_model`` layout), "toy", or "release/sae_id" hub refs
    #: (``release::sae_id`` also accepted). One per hooked layer.
    saes: list[str] = Field(default_factory=lambda: ["toy"])
    cache_dir: str = ".md-cache"
    top_k: int = Field(default=16, ge=1)
    min_activation: float = 0.0
    skip_first_position: bool = True
    max_n_logits: int = Field(default=5, ge=1)
    #: chat models: trace the prompt through the chat template as the metrics send it
    #: (``auto``) or the raw text (``never``: shorter, but its last position predicts the
    #: end of the user turn, not the answer)
    chat_template: Literal["auto", "never"] = "auto"
    device: str = "cpu"


def _load_sae(ref: str, cache_dir: str, device: str) -> tuple[Any, str]:
    require("sae_lens", "the sae tracer")
    from sae_lens import SAE

    path = Path(ref).expanduser()
    if ref == "toy":
        from builtin_plugins.toy import build_toy_sae

        path = build_toy_sae(Path(cache_dir).expanduser())
    if path.is_dir():
        sae = SAE.load_from_disk(path, device=device)
        files = sorted(path.glob("*.safetensors"))
        digest = hashlib.sha256("|".join(file_sha256(f) for f in files).encode()).hexdigest()[:32]
        return sae, f"sae:{digest}"
    release, sep, sae_id = ref.partition("::")
    if not sep:
        release, _, sae_id = ref.rpartition("/")
    if not release or not sae_id:
        raise ConfigError(f"SAE {ref!r} is neither a directory nor 'release/sae_id'")
    try:
        sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as exc:  # noqa: BLE001
        raise MDError(f"could not load SAE {ref!r} from the hub (offline?): "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    return sae, f"hub-sae:{release}/{sae_id}"


class SAETracer(Tracer):
    Options = SAEOptions
    description = "sae-lens SAE feature activations (top-k per position, no edges)"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._saes: list[tuple[Any, str, str]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_saes": None}  # SAEs are reloaded in the worker

    def _load(self) -> list[tuple[Any, str, str]]:
        if self._saes is None:
            loaded = []
            for ref in self.options.saes:
                sae, ident = _load_sae(ref, self.options.cache_dir, self.options.device)
                loaded.append((sae, ident, sae.cfg.metadata.hook_name))
            layers = [_hooks.layer_of(h) for _, _, h in loaded]
            if len(set(layers)) != len(layers):
                raise ConfigError("one SAE per layer: several SAEs hook the same layer")
            self._saes = loaded
        return self._saes

    @property
    def dictionary_id(self) -> str:
        return "+".join(ident for _, ident, _ in self._load())

    def identity(self) -> str:
        return f"{self.name or 'sae'}:{self.dictionary_id}:{self.options.model_dump_json()}"

    def trace(self, model: LoadedModel, prompts: Sequence[str],
              families: Sequence[str | None] | None = None) -> list[CircuitGraph]:
        import torch

        saes = self._load()
        hf, tok, o = model.model, model.tokenizer, self.options
        device = next(hf.parameters()).device
        graphs = []
        for prompt, family in zip(prompts, families_for(prompts, families)):
            ids = encode_prompt(tok, tracing_text(tok, prompt, o.chat_template))
            stores: list[list[Any]] = [[] for _ in saes]
            handles = [_hooks.register(hf, hook, store) for (_, _, hook), store in zip(saes, stores)]
            try:
                with torch.no_grad():
                    logits = hf(input_ids=torch.tensor([ids], device=device)).logits
            finally:
                for h in handles:
                    h.remove()
            nodes: list[GraphNode] = [
                GraphNode(node_id=token_node_id(p, i), kind="token", position=p, token_id=i,
                          token=tok.decode([i])) for p, i in enumerate(ids)]
            for (sae, _, hook), store in zip(saes, stores):
                layer = _hooks.layer_of(hook)
                with torch.no_grad():
                    acts = sae.encode(store[0][0].to(sae.W_enc.dtype))  # [pos, d_sae]
                for pos in range(acts.shape[0]):
                    if o.skip_first_position and pos == 0:
                        continue
                    values, feats = acts[pos].topk(min(o.top_k, acts.shape[1]))
                    for v, f in zip(values.tolist(), feats.tolist()):
                        if v > o.min_activation:
                            nodes.append(GraphNode(
                                node_id=feature_node_id(layer, pos, int(f)), kind="feature",
                                layer=layer, position=pos, feature=int(f), activation=float(v)))
            graphs.append(CircuitGraph(
                prompt=prompt, family=family, model_id=model.model_id,
                dictionary_id=self.dictionary_id, tracer=self.name or "sae",
                input_tokens=[tok.decode([i]) for i in ids], input_token_ids=ids, nodes=nodes,
                logit_targets=top_logits(tok, logits[0, -1], o.max_n_logits),
                metadata={"hooks": [h for _, _, h in saes], "top_k": o.top_k}))
        return graphs
