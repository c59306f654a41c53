"""Builtin feature interpreters (``md_interpret_features``); entry point ``feature-interpreters``.

Four interpreters contribute side by side, each skipping (``[]``) when its inputs are absent
from the hook's ``context``:

=========================== ============================================================
source                      needs (context keys)
=========================== ============================================================
``max-activating-contexts`` ``feature_activation_fn`` (or a ``tracer`` with
                            ``feature_activations(model, prompts)`` + ``models``) and
                            ``corpus`` (family -> prompts) or ``config.universe.families``
``logit-lens``              ``decoder_directions`` and ``unembed`` (+ ``vocab``) or
                            ``models["base"]``
``user`` / ``user:neuronpedia`` ``user_interpretations`` (alias ``feature_interpretations``):
                            ``{"layer:feature": description}``, Neuronpedia JSON, or a path
``autointerp``              ``autointerp_model`` (LoadedModel or ``prompt -> text``)
=========================== ============================================================

See ``docs/discovery.md`` for the full context protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework import hookimpl
from md_framework.runtime import InterpretationContext
from md_framework.types import FeatureInterpretation, FeatureRef

from builtin_plugins.interpreters import autointerp, contexts, logit_lens, user


@hookimpl
def md_interpret_features(features: Sequence[FeatureRef],
                          context: InterpretationContext | Mapping[str, Any]) -> list[FeatureInterpretation]:
    context = context or {}
    features = list(features)
    found = contexts.interpret(features, context)
    found += logit_lens.interpret(features, context)
    found += user.interpret(features, context)
    found += autointerp.interpret(features, context, earlier=found)
    return found
