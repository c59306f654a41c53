"""Logit lens of each feature's decoder direction: the output tokens it promotes/suppresses.

Needs ``context["decoder_directions"](features) -> {FeatureRef.key: vector}`` (the
feature's decoder/output direction in the residual stream, as a list, numpy array or
tensor) and an unembedding, from (first match):

* ``context["unembed"]``: a ``(d_model, vocab)`` or ``(vocab, d_model)`` matrix, or a
  callable ``vector -> logits``; token strings from ``context["vocab"]`` (list) or the
  tokenizer of ``context["models"]["base"]``;
* ``context["models"]["base"]`` (a :class:`~md_framework.runtime.LoadedModel`): its output
  embedding (and final norm scale when the model has one at ``model.model.norm.weight``).

Without a decoder-direction source or an unembedding, the interpreter returns ``[]``.
Tags come from the promoted tokens (``refusal``, ``harm``, ``style:uppercase``, ``area:*``):
this is what tells a refusal feature from a style or fact feature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from md_framework.types import FeatureInterpretation, FeatureRef

from builtin_plugins.interpreters.tags import token_tags

SOURCE = "logit-lens"
DEFAULT_K = 10


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _unembed(context: Mapping[str, Any]) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[int], str]] | None:
    models = context.get("models") or {}
    loaded = models.get("base") if isinstance(models, Mapping) else None
    tokenizer = getattr(loaded, "tokenizer", None)
    vocab = context.get("vocab")

    def name_of(i: int) -> str:
        if vocab is not None:
            return str(vocab[i])
        if tokenizer is not None:
            return tokenizer.decode([i])
        return str(i)

    u = context.get("unembed")
    if u is not None:
        if callable(u):
            return (lambda v: _np(u(v))), name_of
        mat = _np(u)
        return (lambda v: (v @ mat) if mat.shape[0] == len(v) else (mat @ v)), name_of
    model = getattr(loaded, "model", None)
    if model is None or not hasattr(model, "get_output_embeddings"):
        return None
    weight = _np(model.get_output_embeddings().weight)  # (vocab, d_model)
    norm = getattr(getattr(model, "model", None), "norm", None)
    scale = _np(norm.weight) if getattr(norm, "weight", None) is not None else None
    return (lambda v: weight @ (v * scale if scale is not None else v)), name_of


def interpret(features: Sequence[FeatureRef], context: Mapping[str, Any]) -> list[FeatureInterpretation]:
    directions_fn = context.get("decoder_directions")
    if not callable(directions_fn) or not features:
        return []
    unembed = _unembed(context)
    if unembed is None:
        return []
    project, name_of = unembed
    k = int(context.get("logit_lens_k", DEFAULT_K))
    directions = directions_fn(list(features)) or {}
    out = []
    for ref in features:
        vec = directions.get(ref.key)
        if vec is None:
            continue
        logits = project(_np(vec).reshape(-1))
        order = np.argsort(logits)
        promoted = [name_of(int(i)) for i in order[::-1][:k]]
        suppressed = [name_of(int(i)) for i in order[:k]]
        out.append(FeatureInterpretation(
            feature=ref, promoted_tokens=promoted, suppressed_tokens=suppressed,
            tags=token_tags(promoted),
            description="promotes " + ", ".join(repr(t) for t in promoted[:5]),
            source=SOURCE,
        ))
    return out
