"""The analysis protocol's defaults: the universe a run gets when it names none, and the
two models' answers shown next to a finding.

``default_universe`` picks the documented default prompt families for a config that names
no universe (the English families of the organisms plugin's generators; the generic ``toy``
model's own language for toy models; an organism's own universe for ``organism:`` models).
``answer_examples`` adds both models' greedy answers to the examples a result shows
(display only, never evidence).

Torch-free.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from md_framework.config import AnalysisConfig, UniverseConfig, normalise_feature_key
from md_framework.errors import ConfigError
from md_framework.types import CircuitDiff, CircuitGraph, Hypothesis, Pattern, TestCase, ValidationResult

#: The builtin English families of the default universe (``en/<family>`` generators of the
#: organisms plugin), by the design document's focus area they cover.
ENGLISH_DEFAULT: dict[str, tuple[str, ...]] = {
    "safety / harmful_content": ("harmful_hacking", "harmful_weapons", "harmful_theft"),
    "capabilities": ("capitals", "science", "telephone_fact"),
    "reasoning": ("math",),
    "benign everyday requests": ("cooking", "gardening", "stories", "travel", "greetings",
                                 "opinions"),
}
#: The generic ``toy`` model's own language (builtin_plugins.toy): capitals and counting.
_TOY_COUNTRIES = ["france", "spain", "italy", "japan", "egypt", "peru", "chile", "kenya"]


def _toy_families() -> dict[str, list[str]]:
    counting = [f"count : n{i} n{i + 1}" for i in range(3, 160, 7)]
    capitals = [f"the capital of {c} is" for c in _TOY_COUNTRIES]
    return {"capitals": capitals, "counting": counting}


def _organism_ref(source: str) -> str | None:
    if not source.startswith("organism:"):
        return None
    return source[len("organism:"):].partition("#")[0] or None


def default_universe(config: AnalysisConfig) -> tuple[UniverseConfig, str] | None:
    """The documented default prompt universe for a config that gives none, with a
    one-line description, or ``None`` when no default applies.

    * both models ``organism:<spec>#...`` of one spec: that spec's own families (the toy
      language for toy organisms);
    * both models the generic ``toy`` model (``toy``, ``toy:<variant>``): its capitals and
      counting prompts;
    * any other pair of text models: the builtin English families (``en/<family>``
      generators), covering the design document's focus areas (:data:`ENGLISH_DEFAULT`).

    No default applies to a pair mixing these kinds (e.g. two different organisms, or an
    organism and a hub model): their prompts would not mean the same to both models.
    """
    u = config.universe
    if u.families or u.generators or u.organism:
        return None
    sources = [config.base_model.source, config.intervention_model.source]
    refs = {_organism_ref(s) for s in sources}
    toy = [s == "toy" or s.startswith("toy:") for s in sources]
    n = u.n_per_family
    if None not in refs:
        if len(refs) == 1:
            (ref,) = refs
            return (UniverseConfig(organism=ref, n_per_family=n,
                                   default_used=f"organism {ref}: the spec's own prompt families"),
                    f"the prompt families of organism {ref}")
        return None
    if refs != {None}:
        return None
    if all(toy):
        return (UniverseConfig(families=_toy_families(), n_per_family=n,
                               default_used="toy model: capitals and counting prompts"),
                "the toy model's capitals and counting prompts")
    if any(toy):
        return None
    families = [f for group in ENGLISH_DEFAULT.values() for f in group]
    described = "; ".join(f"{area}: {', '.join(fs)}" for area, fs in ENGLISH_DEFAULT.items())
    return (UniverseConfig(generators={f: f"en/{f}" for f in families}, n_per_family=n,
                           default_used=f"builtin English families ({described})"),
            f"the builtin English families ({described})")


def apply_default_universe(config: AnalysisConfig) -> AnalysisConfig:
    """``config`` with the default universe filled in when it gives none (recorded in
    ``universe.default_used``, which the summary prints). Raises :class:`ConfigError`
    before any model loads when the config names no prompts and no default applies."""
    u = config.universe
    if u.families or u.generators or u.organism:
        return config
    found = default_universe(config)
    if found is None:
        raise ConfigError(
            "universe: no prompt families, and no default applies to this model pair"
            f" ({config.base_model.source} vs {config.intervention_model.source}). Give"
            " universe.families (inline prompts), universe.generators (e.g. en/cooking) or"
            " universe.organism (a spec). Defaults: the spec's families when both models are"
            " organism:<spec> of one spec, the toy prompts for toy models, the builtin English"
            " families for any other pair of text models (docs/api.md)")
    universe, _ = found
    return config.model_copy(update={"universe": universe})


#: text metrics whose readings carry the model's answer (builtin behaviour metrics)
ANSWER_METRICS = ("refusal_text", "length")


def answer_examples(results: Sequence[ValidationResult], metrics: Mapping[str, Any],
                    models: Mapping[str, Any], k: int = 3) -> list[ValidationResult]:
    """Fill in both models' answers for the first ``k`` examples of each result whose
    metric records no text (a probability or log-prob metric), so a reader sees what the
    two models said. The answers come from a text metric (:data:`ANSWER_METRICS`: greedy
    generation) on the same prompts; they are shown, never used as evidence, and are not
    counted in ``costs.behaviour_queries`` (2 generations per example)."""
    metric = next((metrics[name] for name in ANSWER_METRICS if name in metrics), None)
    if metric is None or "base" not in models or "intervention" not in models:
        return list(results)
    out = []
    for result in results:
        missing = [o for o in result.examples[:k]
                   if o.base_output is None or o.intervention_output is None]
        if not missing:
            out.append(result)
            continue
        cases = [TestCase(id=o.test_case_id, hypothesis_id=o.hypothesis_id, prompt=o.prompt)
                 for o in missing]
        try:
            base = metric.measure(models["base"], cases)
            inter = metric.measure(models["intervention"], cases)
        except Exception as exc:  # noqa: BLE001 - answers are for display only
            warnings.warn(f"example answers unavailable ({type(exc).__name__}: {exc})", stacklevel=2)
            out.append(result)
            continue

        def text(reading: Any) -> str | None:
            return reading.get("output") if isinstance(reading, Mapping) else getattr(reading, "output", None)

        answers = {o.test_case_id: (text(b), text(i)) for o, b, i in zip(missing, base, inter)}
        examples = [
            o.model_copy(update={
                "base_output": o.base_output if o.base_output is not None else answers[o.test_case_id][0],
                "intervention_output": (o.intervention_output if o.intervention_output is not None
                                        else answers[o.test_case_id][1])})
            if o.test_case_id in answers else o
            for o in result.examples]
        out.append(result.model_copy(update={"examples": examples}))
    return out
