"""Runtime objects that carry live models or callables between the kernel and plugins.

These hold torch objects at run time but never import torch: annotations are ``Any``.
Objects that go to disk live in :mod:`md_framework.types`; these do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from md_framework.types import StrictModel, TestCase


class ModelSpec(StrictModel):
    """Where a model comes from. Config accepts a bare string as ``source``.

    ``source`` forms understood by the builtin loaders: a hub id (``org/name``), a local
    Hugging Face directory, a ``.gguf`` file, the embedded ``smollm2-135m-instruct`` and
    ``toy`` organisms. ``adapter`` names a PEFT/LoRA adapter directory applied on top.
    """

    source: str = Field(min_length=1)
    adapter: str | None = None
    merge_adapter: bool = True
    revision: str | None = None
    gguf_file: str | None = None

    @field_validator("source")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model source must not be empty")
        return value


class ModelLoadOptions(StrictModel):
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    cache_dir: Path = Field(default_factory=lambda: _default_cache_dir())
    offline: bool = False


def _default_cache_dir() -> Path:
    from md_framework.cache import default_cache_dir  # kernel, torch-free

    return default_cache_dir()


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer and a stable identity for cache keys.

    ``model_id`` must change whenever the weights change (a weights hash or a pinned hub
    revision), because cached graphs and observations are keyed by it.
    """

    model: Any
    tokenizer: Any
    model_id: str
    spec: ModelSpec
    local_path: Path | None = None
    architecture: Mapping[str, Any] = field(default_factory=dict)
    loader: str = ""


class MetricReading(StrictModel):
    """One metric value for one test case on one model, with the text behind it if any."""

    value: float
    output: str | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"metric value must be finite, got {value!r}")
        return value


@runtime_checkable
class BehaviourMetric(Protocol):
    """A behaviour metric contributed through ``md_behaviour_metrics``.

    ``measure`` returns one :class:`MetricReading` per test case, in order, for one model;
    the pipeline calls it for the base and the intervention model on the same cases.
    ``kind`` is ``scored`` (forward passes only: cheap, deterministic) or ``generated``
    (needs decoding). ``outcome`` tells the paired test what the numbers are: ``binary``
    (0/1), ``bounded`` (within ``bounds``) or ``continuous``. ``serves`` lists the
    hypothesis types it can confirm.

    Optional: ``min_change`` (float, the metric's units): the smallest mean difference that
    counts as a behaviour change; the validator gates smaller effects to "no claim" before
    the FDR procedure (so tiny but consistent shifts are never reported as discoveries).

    Optional: ``measure_pair(base, intervention, cases) -> (base_readings,
    intervention_readings)`` (see :class:`PairedBehaviourMetric`). A metric that has it is
    measured on both models at once by the validator, which lets a reading of one model
    depend on the other (e.g. a base-anchored reference answer). It is not part of this
    protocol: metrics without it are measured with ``measure`` once per model.
    """

    name: str
    description: str
    serves: frozenset[str]
    kind: Literal["scored", "generated"]
    outcome: Literal["continuous", "binary", "bounded"]
    bounds: tuple[float, float] | None

    def measure(self, model: LoadedModel, cases: Sequence[TestCase]) -> list[MetricReading]: ...


@runtime_checkable
class PairedBehaviourMetric(BehaviourMetric, Protocol):
    """A :class:`BehaviourMetric` that can also measure a model pair at once (optional).

    ``measure_pair(base, intervention, cases)`` returns ``(base_readings,
    intervention_readings)``, one :class:`MetricReading` per case each, in order. The
    validator prefers it over two ``measure`` calls and still counts two behavioural
    queries per case; each side's reading is recorded in the run ledger under that model's
    ``model_id``, and a resumed run measures a pair again only when either side is missing.
    It must be deterministic given the two models and the cases, and each side's
    ``output`` should be that model's own text. Example: the builtin ``target_logprob`` and
    ``exact_match`` use the base model's greedy answer as the reference for cases that
    carry no ``TestCase.target``.
    """

    def measure_pair(self, base: LoadedModel, intervention: LoadedModel,
                     cases: Sequence[TestCase]) -> tuple[list[MetricReading], list[MetricReading]]: ...


@runtime_checkable
class PromptFamilyGenerator(Protocol):
    """A named source of prompts for one family (used by organism specs and generators)."""

    name: str
    description: str

    def generate(self, n: int, seed: int) -> list[str]: ...


@dataclass
class TestGenerationContext:
    """What test generators may look at: never the planted ground truth of an organism."""

    __test__ = False

    universe: Mapping[str, Sequence[str]] = field(default_factory=dict)
    feature_contexts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    excluded_prompts: frozenset[str] = frozenset()
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


def check_pair_compatible(base: LoadedModel, intervention: LoadedModel) -> None:
    """Refuse pairs whose features and positions could not be compared by identity.

    Compares the architecture facts the loaders record (type, widths, depth, vocabulary),
    the tokenizers' vocabularies and their special tokens. Raises :class:`ConfigError`
    naming what differs. The analyzer calls it before tracing; loaders and tracers reuse it.
    """
    from md_framework.errors import ConfigError

    problems = []
    for key in sorted(set(base.architecture) | set(intervention.architecture)):
        a, b = base.architecture.get(key), intervention.architecture.get(key)
        if a is not None and b is not None and a != b:
            problems.append(f"{key}: {a!r} vs {b!r}")
    vocab_a = _vocab(base.tokenizer)
    vocab_b = _vocab(intervention.tokenizer)
    if vocab_a is not None and vocab_b is not None and len(vocab_a) != len(vocab_b):
        problems.append(f"tokenizer size: base {len(vocab_a)} vs intervention {len(vocab_b)}")
    if vocab_a is not None and vocab_b is not None and vocab_a != vocab_b:
        only_a = len(set(vocab_a) - set(vocab_b))
        only_b = len(set(vocab_b) - set(vocab_a))
        changed = sum(1 for t in set(vocab_a) & set(vocab_b) if vocab_a[t] != vocab_b[t])
        problems.append(
            f"tokenizer vocabularies differ ({only_a} tokens only in base, {only_b} only in"
            f" intervention, {changed} with different ids)"
        )
    for attr in ("bos_token", "eos_token", "pad_token"):
        token_a = getattr(base.tokenizer, attr, None)
        token_b = getattr(intervention.tokenizer, attr, None)
        if token_a != token_b:
            problems.append(f"{attr}: base {token_a!r} vs intervention {token_b!r}")
    if problems:
        raise ConfigError(
            f"incompatible model pair {base.spec.source} / {intervention.spec.source}: "
            + "; ".join(problems)
            + ". Both models must share architecture, dimensions and tokenizer so their"
            " circuits can be compared node by node."
        )


def _vocab(tokenizer: Any) -> dict[str, int] | None:
    get_vocab = getattr(tokenizer, "get_vocab", None)
    return dict(get_vocab()) if callable(get_vocab) else None


class InterpretationContext(BaseModel):
    """What feature interpreters (``md_interpret_features``) and the discovery stage get.

    A typed model instead of a mapping with magic keys: every key is a field, and an unknown
    key is an error naming the fields (``extra="forbid"``). Interpreters may read it as an
    object (``context.corpus``) or, for code written against the old mapping,
    ``context.get("corpus")`` / ``context["corpus"]`` (``None`` fields count as missing).
    Plugin-specific values go in ``plugin_options`` (name -> value).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    #: the run's AnalysisConfig (``None`` outside an analysis)
    config: Any = None
    #: role (``base`` / ``intervention``) -> LoadedModel
    models: dict[str, Any] = Field(default_factory=dict)
    #: family -> explore-split prompts to read activations on (never confirmation prompts)
    corpus: dict[str, list[str]] | None = None
    #: the run's tracer driver, when interpreters may compute feature activations with it
    tracer: Any = None
    #: which model's activations are read (a feature new in the intervention model is
    #: silent on the base model)
    activation_role: Literal["base", "intervention"] = "base"
    #: ``features -> {FeatureRef.key: decoder vector}`` (logit lens)
    decoder_directions: Callable[..., Any] | None = None
    #: ``prompts -> [{feature key: activation}]`` (max-activating contexts without a tracer)
    feature_activation_fn: Callable[..., Any] | None = None
    #: user labels in any form ``builtin_plugins.interpreters.user`` accepts (alias
    #: ``feature_interpretations``)
    user_interpretations: Any = None
    feature_interpretations: Any = None
    #: a model that writes feature descriptions (off when ``None``)
    autointerp_model: Any = None
    #: logit lens: an unembedding matrix or ``vector -> logits``, its vocabulary, top-k
    unembed: Any = None
    vocab: list[str] | None = None
    logit_lens_k: int | None = None
    #: max-activating contexts kept per feature, corpus prompts read at most
    max_contexts: int | None = None
    max_corpus_prompts: int | None = None
    #: discovery: features interpreted besides the screened ones; the priority floor
    max_features_to_interpret: int | None = None
    min_hypothesis_priority: float | None = None
    plugin_options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, context: InterpretationContext | Mapping[str, Any] | None,
           **updates: Any) -> InterpretationContext:
        """``context`` as an InterpretationContext (a mapping's keys become fields; an
        unknown key is a :class:`~md_framework.errors.ConfigError` with a did-you-mean),
        with ``updates`` applied."""
        if isinstance(context, InterpretationContext):
            return context.model_copy(update=updates) if updates else context
        data = {**dict(context or {}), **updates}
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            from md_framework.errors import ConfigError, did_you_mean

            raise ConfigError(
                f"interpretation context: unknown key(s) {', '.join(map(repr, unknown))}."
                f"{did_you_mean(unknown[0], list(cls.model_fields))} Plugin-specific values go in"
                " plugin_options.")
        return cls(**data)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in type(self).model_fields else None
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

