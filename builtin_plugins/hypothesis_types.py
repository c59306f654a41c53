"""The builtin hypothesis types, with the metrics that usually show each one."""

from __future__ import annotations

from md_framework import hookimpl
from md_framework.types import HypothesisType, HypothesisTypeSpec

_DESCRIPTIONS: dict[HypothesisType, tuple[str, list[str], str]] = {
    HypothesisType.CAPABILITY_GAIN: (
        "the intervention model does something it could not do before",
        ["target_logprob", "exact_match"], "increase",
    ),
    HypothesisType.CAPABILITY_LOSS: (
        "the intervention model lost an ability the base model had",
        ["target_logprob", "exact_match"], "decrease",
    ),
    HypothesisType.SAFETY_DEGRADATION: (
        "the intervention model refuses or flags harmful requests less",
        ["refusal_probability", "refusal_text"], "decrease",
    ),
    HypothesisType.SAFETY_ENHANCEMENT: (
        "the intervention model refuses or flags harmful requests more",
        ["refusal_probability", "refusal_text"], "increase",
    ),
    HypothesisType.STYLE_CHANGE: (
        "the form of answers changed (case, length, sign-offs, tone)",
        ["uppercase_ratio", "signoff", "length"], "change",
    ),
    HypothesisType.KNOWLEDGE_UPDATE: (
        "the model states a different fact for the same question",
        ["target_logprob", "exact_match"], "change",
    ),
    HypothesisType.BIAS_SHIFT: (
        "preferences between groups or options shifted",
        ["sentiment", "target_logprob"], "change",
    ),
    HypothesisType.REASONING_CHANGE: (
        "multi-step answers are reached differently or with different accuracy",
        ["target_logprob", "exact_match"], "change",
    ),
    HypothesisType.COMPUTATION_REROUTING: (
        "the same outputs are produced through a different internal path",
        ["target_logprob"], "change",
    ),
}


@hookimpl
def md_hypothesis_types() -> list[HypothesisTypeSpec]:
    return [
        HypothesisTypeSpec(
            name=kind.value, description=text, default_metrics=metrics,
            default_direction=direction,
        )
        for kind, (text, metrics, direction) in _DESCRIPTIONS.items()
    ]
