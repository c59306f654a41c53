"""Max-activating contexts from a corpus, by cheap forward passes (no attribution).

Needs a way to compute per-prompt feature activations, looked up in this order:

1. ``context["feature_activation_fn"](prompts) -> list[dict[str, float | (float, int)]]``:
   one dict per prompt mapping ``FeatureRef.key`` (``"layer:feature"``) to the feature's
   largest activation on that prompt (optionally with the token position where it peaks);
   features not listed are inactive (0);
2. a ``context["tracer"]`` exposing ``feature_activations(model, prompts, features)``
   (:class:`~md_framework.tracing_api.FeatureReader`) with the same return shape, run on
   ``context["models"][role]`` (role ``context.get("activation_role", "base")``).

and a corpus: ``context["corpus"]`` (family -> prompts; the universe prompts plus any
shipped/generated text), falling back to ``context["config"].universe.families``. Each
context records the family it came from. Without both, the interpreter returns ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from builtin_plugins.pipeline.testgen import interleave_families
from md_framework.tracing_api import can_read_features
from md_framework.types import ContextExample, FeatureInterpretation, FeatureRef

from builtin_plugins.interpreters.tags import family_area, text_tags

SOURCE = "max-activating-contexts"
DEFAULT_TOP = 5
DEFAULT_MAX_CORPUS = 400


def _corpus(context: Mapping[str, Any]) -> dict[str, list[str]]:
    corpus = context.get("corpus")
    if not corpus:
        config = context.get("config")
        universe = getattr(config, "universe", None)
        corpus = getattr(universe, "families", None) or {}
    if isinstance(corpus, Mapping):
        return {str(f): [str(p) for p in prompts] for f, prompts in corpus.items()}
    if isinstance(corpus, Sequence):
        return {"corpus": [str(p) for p in corpus]}
    return {}


def activation_fn(context: Mapping[str, Any], features: Sequence[FeatureRef]
                  ) -> Callable[[Sequence[str]], list[Mapping[str, Any]]] | None:
    fn = context.get("feature_activation_fn")
    if callable(fn):
        return fn
    tracer = context.get("tracer")
    models = context.get("models") or {}
    model = models.get(context.get("activation_role", "base")) if isinstance(models, Mapping) else None
    if tracer is not None and model is not None and can_read_features(tracer):
        return lambda prompts: tracer.feature_activations(model, prompts, list(features))
    return None


def interpret(features: Sequence[FeatureRef], context: Mapping[str, Any]) -> list[FeatureInterpretation]:
    fn = activation_fn(context, features)
    corpus = _corpus(context)
    if fn is None or not corpus or not features:
        return []
    top_n = int(context.get("max_contexts", DEFAULT_TOP))
    limit = int(context.get("max_corpus_prompts", DEFAULT_MAX_CORPUS))
    texts = interleave_families(corpus, limit)
    acts = fn([t for _, t in texts])
    wanted = {f.key: f for f in features}
    found: dict[str, list[ContextExample]] = {k: [] for k in wanted}
    for (family, text), row in zip(texts, acts):
        for key, value in row.items():
            if key not in wanted:
                continue
            act, pos = (value if isinstance(value, (tuple, list)) else (value, None))
            if act is not None and float(act) > 0:
                found[key].append(ContextExample(text=text, activation=float(act), family=family,
                                                 token_position=None if pos is None else int(pos)))
    out = []
    for key, examples in found.items():
        if not examples:
            continue
        examples.sort(key=lambda e: -e.activation)
        top = examples[:top_n]
        fam_mass: dict[str, float] = {}
        for e in examples:
            fam_mass[e.family or ""] = fam_mass.get(e.family or "", 0.0) + e.activation
        dominant = max(fam_mass, key=fam_mass.get)
        share = fam_mass[dominant] / sum(fam_mass.values())
        tags = [f"family:{dominant}"] if dominant else []
        area = family_area(dominant) if dominant else None
        if area and share > 0.5:
            tags.append(f"area:{area}")
        tags += [t for t in text_tags(" ".join(e.text for e in top)) if t in {"refusal", "harm"}]
        out.append(FeatureInterpretation(
            feature=wanted[key], top_contexts=top, tags=sorted(set(tags), key=tags.index),
            description=f"most active on '{dominant}' prompts ({share:.0%} of activation mass"
                        f" over {len(examples)} active contexts)",
            source=SOURCE,
        ))
    return out
