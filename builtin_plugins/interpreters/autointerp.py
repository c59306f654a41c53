"""Optional local-LM autointerp: a one-line description written from a feature's contexts.

Off unless ``context["autointerp_model"]`` is given: either a
:class:`~md_framework.runtime.LoadedModel` (greedy decoding with its tokenizer) or a
callable ``prompt -> text``. Contexts come from the max-activating-context interpretations
made in the same call, or ``context["feature_contexts"]`` (``FeatureRef.key`` -> texts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework.types import FeatureInterpretation, FeatureRef

from builtin_plugins.interpreters.tags import text_tags

SOURCE = "autointerp"
MAX_NEW_TOKENS = 20


def _prompt(texts: Sequence[str]) -> str:
    lines = "\n".join(f"- {t.strip()[:200]}" for t in texts[:5])
    return ("Below are texts on which one internal feature of a language model is most active."
            f"\n{lines}\nIn one short line, the feature detects:")


def _generate(model: Any, prompt: str) -> str:
    if callable(model) and not hasattr(model, "tokenizer"):
        return str(model(prompt))
    import torch  # only when a local model is actually used

    tok, lm = model.tokenizer, model.model
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = lm.generate(**ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                          pad_token_id=getattr(tok, "eos_token_id", None))
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def interpret(features: Sequence[FeatureRef], context: Mapping[str, Any],
              earlier: Sequence[FeatureInterpretation] = ()) -> list[FeatureInterpretation]:
    model = context.get("autointerp_model")
    if model is None:
        return []
    given = context.get("feature_contexts") or {}
    out = []
    for ref in features:
        texts = [e.text for i in earlier if i.feature.key == ref.key for e in i.top_contexts]
        texts = texts or [str(t) for t in given.get(ref.key, [])]
        if not texts:
            continue
        line = _generate(model, _prompt(texts)).strip().splitlines()
        desc = line[0].strip() if line else ""
        if desc:
            out.append(FeatureInterpretation(feature=ref, description=desc, tags=text_tags(desc),
                                             source=SOURCE))
    return out
