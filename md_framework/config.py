"""Analysis configuration: a pydantic model, YAML/TOML loading, and driver resolution.

Loading a file validates its shape (``extra="forbid"``: a misspelt key is an error that
names it). :func:`resolve_config` then checks every named driver against the installed
entry points and validates each driver's own options model — before any model is loaded.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator

from md_framework.drivers import DRIVER_GROUPS, discover_drivers, load_driver_class, validate_options
from md_framework.errors import ConfigError, UnknownComponentError, did_you_mean
from md_framework.runtime import ModelSpec
from md_framework.types import StrictModel


class StatisticsConfig(StrictModel):
    """How hypotheses are tested. ``method`` is accepted for ``procedure`` (the design
    document's ``TestingProcedure(alpha=..., method='saffron', min_effect_size=...)``)."""

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    procedure: str = Field(default="saffron", validation_alias=AliasChoices("procedure", "method"))
    procedure_options: dict[str, Any] = Field(default_factory=dict)
    paired_test: str = "wilcoxon"
    paired_test_options: dict[str, Any] = Field(default_factory=dict)
    #: optional floor on |d_z|, applied as p := 1 before FDR; 0 = off (relevance is tested
    #: against each metric's min_change instead; docs/validation.md)
    min_effect_size: float = Field(default=0.0, ge=0.0)

    @property
    def method(self) -> str:
        """The online FDR procedure's name (the design document calls it ``method``)."""
        return self.procedure


#: The design document's name for the statistical settings (``statistical_config=``).
TestingProcedure = StatisticsConfig


class ExplorationConfig(StrictModel):
    method: str = "ucb"
    method_options: dict[str, Any] = Field(default_factory=dict)
    exploration_weight: float = Field(default=1.0, ge=0.0)
    diversity_weight: float = Field(default=0.1, ge=0.0)
    batch_size: int = Field(default=4, ge=1)
    query_budget: int = Field(default=2000, ge=1)
    #: test cases drawn for an arm each time the bandit pulls it
    cases_per_pull: int = Field(default=5, ge=1)
    #: what a pull is credited with: the change in log-evidence, the information gained
    #: about the decision, or the remaining uncertainty (docs/validation.md)
    reward: Literal["evidence", "information_gain", "uncertainty"] = "evidence"
    #: explore around validated hypotheses: split multi-family ones by family and retrace
    #: their families with more discovery prompts (docs/validation.md, "Refinement")
    refine: bool = True
    max_new_hypotheses: int = Field(default=6, ge=0)
    refine_prompts_per_family: int = Field(default=4, ge=0)


#: The design document's name for the exploration settings
#: (``ExplorationStrategy(method='ucb', exploration_weight=0.3, ...)``).
ExplorationStrategy = ExplorationConfig


#: Focus areas and the hypothesis types each one puts first (docs/api.md). The design
#: document's areas ("safety", "capabilities", "reasoning", "harmful_content") are here;
#: a plugin's hypothesis type is also an area of its own (e.g. "medical_advice").
FOCUS_AREAS: dict[str, tuple[str, ...]] = {
    "safety": ("safety_degradation", "safety_enhancement"),
    "harmful_content": ("safety_degradation", "safety_enhancement"),
    "capabilities": ("capability_gain", "capability_loss", "knowledge_update"),
    "capability": ("capability_gain", "capability_loss"),
    "reasoning": ("reasoning_change",),
    "knowledge": ("knowledge_update",),
    "style": ("style_change",),
    "bias": ("bias_shift",),
    "rerouting": ("computation_rerouting",),
}


def focus_types(focus_areas: Any) -> set[str]:
    """The hypothesis types the focus areas put first (an area that is not in
    :data:`FOCUS_AREAS` names a hypothesis type itself)."""
    out: set[str] = set()
    for area in focus_areas or ():
        key = str(area).strip().lower()
        out.update(FOCUS_AREAS.get(key, (key,)))
    return out


_FEATURE_KEY = re.compile(r"\s*[Ll]?(\d+)\s*[:/_-]\s*[Ff]?(\d+)\s*")


def normalise_feature_key(key: Any) -> str:
    """``"L10_F234"`` (the design document's labels), ``"10:234"``, ``"10/234"`` ->
    ``"10:234"``; anything else is an error naming the accepted forms."""
    match = _FEATURE_KEY.fullmatch(str(key))
    if match is None:
        raise ValueError(
            f"feature key {key!r} is not a feature: use \"L<layer>_F<feature>\" (e.g. \"L10_F234\")"
            " or \"<layer>:<feature>\" (e.g. \"10:234\")")
    return f"{int(match.group(1))}:{int(match.group(2))}"


class UniverseConfig(StrictModel):
    """The prompt families an analysis may trace and test (its "universe").

    Families come inline (``families``), from named generators contributed through
    ``md_prompt_family_generators`` (``generators``: family -> generator name), or from an
    organism spec's universe (``organism``: path to the spec). Planted ground truth in an
    organism spec is never read from here.
    """

    families: dict[str, list[str]] = Field(default_factory=dict)
    generators: dict[str, str] = Field(default_factory=dict)
    organism: str | None = None
    n_per_family: int = Field(default=24, ge=1)
    #: filled by the analyzer when no universe was given: which documented default it used
    #: (shown in the report's summary; see md_framework/pipeline/defaults.py, ``default_universe``)
    default_used: str | None = None

    @field_validator("families")
    @classmethod
    def _no_empty_family(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # caught here, before any model loads (build_universe would only see it after)
        empty = sorted(name for name, prompts in value.items() if not prompts)
        if empty:
            raise ValueError(f"families with no prompts: {', '.join(empty)}")
        return value


class PluginsConfig(StrictModel):
    enable: list[str] | None = None
    disable: list[str] = Field(default_factory=list)
    on_hook_error: Literal["stop", "skip"] = "stop"


class ActivationDifferenceLensConfig(StrictModel):
    """The activation-difference lens stage (ADL; Minder et al. 2025, "Narrow fine-tuning
    leaves clearly readable traces in activation differences"); off by default. Run by the
    builtin ``activation-difference-lens`` plugin during pattern detection (docs/tracing.md)."""

    enabled: bool = False
    #: generic prompts (at most 32, fixed whatever the universe holds)
    n_prompts: int = Field(default=32, ge=1, le=32)
    #: first k token positions of each generic prompt
    k_tokens: int = Field(default=5, ge=1)
    #: residual stream after these layers; None = the middle layer
    layers: list[int] | None = None
    lens_tokens: int = Field(default=20, ge=1)
    steer_prompts: int = Field(default=4, ge=0)
    steer_tokens: int = Field(default=12, ge=1)
    #: steering vector norm as a multiple of the mean residual norm at the layer
    steer_strength: float = Field(default=1.0, gt=0)
    max_families: int = Field(default=1, ge=1)
    min_z: float = 1.0
    #: None: the analysis seed
    seed: int | None = None
    #: how the direction is mapped onto the families, base model only (docs/tracing.md):
    #: "projection" (mean projection of the base residual onto the direction), "steering"
    #: (KL of the base model's next-token distributions on the family's prompts when the
    #: direction is added), "steering-control" (that KL over the KL of a random direction)
    mapping: Literal["projection", "steering", "steering-control"] = "projection"
    #: steering-based mappings: vector norm as a multiple of the mean residual norm (4: the
    #: value frozen on the development organisms, benchmarks/README.md)
    mapping_strength: float = Field(default=4.0, gt=0)


class AnalysisConfig(StrictModel):
    """Everything one analysis needs. Construct in Python or load with :func:`load_config`."""

    base_model: ModelSpec = Field(validation_alias=AliasChoices("base_model", "base_model_name"))
    intervention_model: ModelSpec = Field(
        validation_alias=AliasChoices("intervention_model", "intervention_model_name")
    )
    transcoder_set: str | None = None
    universe: UniverseConfig = Field(default_factory=UniverseConfig)
    #: user labels for features: {"L10_F234" or "10:234": "description"} or a path to a
    #: JSON file (that dict, or a Neuronpedia-style export)
    feature_interpretations: dict[str, str] | str | None = None
    #: give the interpreters the tracer's feature readings during discovery: max-activating
    #: contexts over the explore split (one forward pass per prompt) and the logit lens of
    #: each feature's decoder direction. Off by default: on the toy organisms their family
    #: and refusal/harm tags merge unrelated features into broad hypotheses (measured: the
    #: demo then misses the planted telephone_fact change). Feature-driven *test* prompts
    #: use the tracer's readings either way (docs/validation.md).
    interpret_activations: bool = False
    #: share of each family's prompts used for discovery; the rest confirms hypotheses
    explore_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    #: after validation, patch each validated hypothesis' features back to the base
    #: model's values and report the share of the effect they carry (docs/causal.md)
    causal_confirmation: bool = True
    #: answer-aware tracing: trace each seed prompt with both models' own greedy answers,
    #: teacher-forced through both models, and diff the answer positions too, when the
    #: tracer offers it (docs/discovery.md). Costs generated and teacher-forced tokens,
    #: counted in the report's costs.
    trace_answers: bool = True
    #: which patterns may form hypotheses: ``all``; ``output`` (output evidence only: top-token
    #: flips and answer edits, the ablation of the internal evidence); ``internal`` (feature
    #: changes only: what the circuits say without looking at the outputs)
    discovery_evidence: Literal["all", "output", "internal"] = "all"
    #: two-stage tracing for dictionary tracers: screen every seed prompt with the cheap
    #: ``screen_tracer`` and the answer traces, then build attribution graphs only for the
    #: prompts of families the screen flags plus ``screen_check_prompts`` unflagged ones
    #: (docs/discovery.md, "Two-stage tracing")
    two_stage_tracing: bool = False
    screen_tracer: str = "activation-diff"
    screen_check_prompts: int = Field(default=4, ge=0)
    #: flag at most this many families, those the most distinct pattern types name (ties: the
    #: strongest pattern); None flags every family a pattern names
    screen_max_families: int | None = Field(default=None, ge=1)
    #: attribution graphs for at most this many seed prompts of each flagged family (the first
    #: in seed order, itself a random draw); None traces all of them
    screen_prompts_per_family: int | None = Field(default=None, ge=1)
    #: the activation-difference lens stage (off by default; see its class)
    activation_difference_lens: ActivationDifferenceLensConfig = Field(
        default_factory=ActivationDifferenceLensConfig)
    tracer: str = "circuit-tracer"
    tracer_options: dict[str, Any] = Field(default_factory=dict)
    n_seed_prompts: int = Field(default=50, ge=1)
    n_test_prompts_per_hypothesis: int = Field(default=30, ge=2)
    max_hypotheses_to_test: int = Field(default=10, ge=1)
    focus_areas: list[str] = Field(default_factory=list)
    device: str = "cpu"
    #: torch CPU threads for this process; default: half the cores, at most 8. On a busy
    #: 2-core machine two threads can be 20x slower than one, so this is always set.
    threads: int | None = Field(default=None, ge=1)
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    batch_size: int = Field(default=8, ge=1)
    #: artefact cache root: $MD_CACHE_DIR if set, else this value, else the platform's user
    #: cache directory (md_framework.cache.default_cache_dir); never the working directory
    cache_dir: Path = Field(default_factory=lambda: _cache_root(None))
    #: size limit of the artefact cache; least recently used entries are evicted past it
    cache_max_bytes: int | None = Field(default=None, ge=1)
    quantization: Literal["none", "8bit", "4bit"] = "none"
    seed: int = 0
    executor: str = "serial"
    executor_options: dict[str, Any] = Field(default_factory=dict)
    statistics: StatisticsConfig = Field(
        default_factory=StatisticsConfig,
        validation_alias=AliasChoices("statistics", "statistical_config"))
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)

    @field_validator("base_model", "intervention_model", mode="before")
    @classmethod
    def _model_from_string(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, (str, Path)) else value

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir(cls, value: Path) -> Path:
        return _cache_root(value)

    @field_validator("feature_interpretations")
    @classmethod
    def _feature_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):  # "L10_F234" -> "10:234"; a key that names no feature is an error
            return {normalise_feature_key(k): v for k, v in value.items()}
        return value

    @field_validator("focus_areas")
    @classmethod
    def _focus_areas(cls, value: list[str]) -> list[str]:
        out = [str(a).strip().lower() for a in value]
        for area in out:
            if area not in FOCUS_AREAS and not _known_hypothesis_type(area):
                raise ValueError(
                    f'unknown focus area "{area}".{did_you_mean(area, FOCUS_AREAS)} Known areas:'
                    f" {', '.join(sorted(FOCUS_AREAS))}, or the name of an installed plugin's"
                    " hypothesis type")
        return out

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in {"cpu", "cuda", "mps", "auto"} and not value.startswith("cuda:"):
            raise ValueError("device must be cpu, cuda, cuda:N, mps or auto")
        return value

    @model_validator(mode="after")
    def _quantization_needs_cuda(self) -> AnalysisConfig:
        if self.quantization != "none" and self.device in {"cpu", "mps"}:
            raise ValueError(
                f"quantization {self.quantization} uses bitsandbytes, which needs a CUDA device;"
                f" device is {self.device}. Use quantization: none on CPU"
            )
        return self

    @model_validator(mode="after")
    def _screen_options_need_two_stage(self) -> AnalysisConfig:
        # the screen's options do nothing without two-stage tracing; say so, not ignore them
        # (values, not model_fields_set: a dumped and reloaded config sets every field)
        fields = type(self).model_fields
        given = sorted(f for f in ("screen_tracer", "screen_check_prompts", "screen_max_families",
                                   "screen_prompts_per_family")
                       if getattr(self, f) != fields[f].default)
        if given and not self.two_stage_tracing:
            raise ValueError(f"{', '.join(given)} only apply with two_stage_tracing: true; "
                             "set it, or remove them")
        return self

    #: which config fields name a driver of which group, and where its options live
    def driver_choices(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            "tracer": (self.tracer, self.tracer_options),
            "fdr_procedure": (self.statistics.procedure, self.statistics.procedure_options),
            "paired_test": (self.statistics.paired_test, self.statistics.paired_test_options),
            "bandit_strategy": (self.exploration.method, self._bandit_options()),
            "executor": (self.executor, self.executor_options),
        }

    def _bandit_options(self) -> dict[str, Any]:
        # exploration_weight / diversity_weight are first-class config keys; drivers whose
        # options model lacks one of them simply do not receive it (see resolve_config).
        return {
            "exploration_weight": self.exploration.exploration_weight,
            "diversity_weight": self.exploration.diversity_weight,
            **self.exploration.method_options,
        }


def _cache_root(configured: Path | None) -> Path:
    from md_framework.cache import default_cache_dir

    return default_cache_dir(configured)


def _known_hypothesis_type(name: str) -> bool:
    """Whether ``name`` is a builtin hypothesis type or one an installed plugin declares."""
    from md_framework.types import HypothesisType

    if name in {t.value for t in HypothesisType}:
        return True
    try:
        from md_framework.plugins import Hooks, get_plugin_manager

        declared = Hooks(get_plugin_manager()).collect("md_hypothesis_types")
        return any(getattr(c.value, "name", None) == name for c in declared)
    except Exception:  # noqa: BLE001 - a broken plugin must not hide the real error
        return False


CONFIG_FIELD_OF_GROUP = {
    "tracer": "tracer",
    "fdr_procedure": "statistics.procedure",
    "paired_test": "statistics.paired_test",
    "bandit_strategy": "exploration.method",
    "executor": "executor",
}


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``), if any."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the pydantic model that ``loc`` (minus its last part) points into."""
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list field: same model
            continue
        fields = getattr(model, "model_fields", None)
        if fields is not None and part not in fields:  # an alias ("statistical_config")
            part = next((name for name, f in fields.items()
                         if part in getattr(f.validation_alias, "choices", ())), part)
        if fields is None or part not in fields:
            return []
        model = _model_in(fields[part].annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", None) or {})


def format_validation_error(exc: ValidationError, source: str = "config",
                            model: Any = None) -> str:
    """One line per problem, each naming the dotted field path; unknown fields get a
    did-you-mean against the fields valid at that place (when ``model`` is given)."""
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = ""
            if model is not None and err["loc"]:
                hint = did_you_mean(str(err["loc"][-1]), _fields_at(model, tuple(err["loc"])))
            lines.append(f"  {loc}: unknown field.{hint}" if hint else f"  {loc}: unknown field")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: field required")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["loc"]:
                lines.append(f"  {loc}: {msg} (got {_brief_input(err.get('input'))})")
            else:  # a check across fields: the input is the whole config
                lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _brief_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def describe_yaml_error(exc: Exception) -> str:
    """A YAML error as one line: line/column, then what went wrong (PyYAML's own text
    spans several lines and names an internal "<unicode string>")."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if problem and "could not determine a constructor for the tag" in problem:
        quoted = problem.split("'")
        tag = (quoted[1] if len(quoted) > 2 else problem).replace("tag:yaml.org,2002:", "!!")
        return (f"malformed YAML{where}: the tag {tag} is refused (files are read with a safe"
                " loader and cannot build Python objects or run code)")
    text = f"{context}, {problem}" if context else problem
    return f"malformed YAML{where}: {text}"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (safe loader) or TOML file into a mapping; syntax errors name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    elif suffix in {".yaml", ".yml", ".json"}:
        import yaml

        try:
            data = yaml.safe_load(text)  # safe loader: no tags that build Python objects
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {describe_yaml_error(exc)}") from None
        except RecursionError:
            raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    else:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml, .json or .toml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> AnalysisConfig:
    data = read_config_file(path)
    if overrides:
        data = {**data, **overrides}
    return config_from_mapping(data, source=str(path))


def config_from_mapping(data: Mapping[str, Any], source: str = "config") -> AnalysisConfig:
    try:
        return AnalysisConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, AnalysisConfig)) from None


class ResolvedDriver(StrictModel):
    group: str
    config_field: str
    name: str
    distribution: str | None
    version: str | None
    options: dict[str, Any]
    available: list[str]


class ResolvedConfig(StrictModel):
    config: AnalysisConfig
    drivers: dict[str, ResolvedDriver]

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "drivers": {k: v.model_dump(mode="json") for k, v in self.drivers.items()},
        }


def _known_plugin_names() -> set[str]:
    import importlib.metadata as metadata

    from md_framework.plugins import ENTRY_POINT_GROUP

    names = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for group in DRIVER_GROUPS.values():
        names |= {ep.name for ep in metadata.entry_points(group=group.namespace)}
    return names


def resolve_config(config: AnalysisConfig) -> ResolvedConfig:
    """Check every driver name and option against what is installed. Loads no model.

    Raises :class:`ConfigError` naming the config field, the bad value, the available
    names and the closest match.
    """
    known = _known_plugin_names()
    for field_name, names in (("plugins.enable", config.plugins.enable or []),
                              ("plugins.disable", config.plugins.disable)):
        for name in names:
            if name not in known:
                error = UnknownComponentError("plugin", name, known)
                hint = ""
                if any(ch in name for ch in ".:/\\"):
                    hint = (" (plugins are named by their installed entry point; a module path"
                            " in a config is never imported)")
                raise ConfigError(f"{field_name}: {error}{hint}")
    blocked = set(config.plugins.disable)
    choices = config.driver_choices()
    # Every name is checked before any driver is imported: a typo is reported as a typo,
    # even when another chosen driver would fail to import.
    discovered = {group: discover_drivers(group, blocked=blocked) for group in choices}
    for group, (name, _options) in choices.items():
        if name not in discovered[group]:
            error = UnknownComponentError(group.replace("_", " "), name, discovered[group])
            raise ConfigError(f"{CONFIG_FIELD_OF_GROUP[group]}: {error}")
    resolved: dict[str, ResolvedDriver] = {}
    for group, (name, options) in choices.items():
        field_name = CONFIG_FIELD_OF_GROUP[group]
        available = discovered[group]
        driver_cls = load_driver_class(group, name, blocked=blocked)
        if group == "bandit_strategy":
            accepted = set(driver_cls.Options.model_fields)
            options = {
                k: v for k, v in options.items()
                if k in accepted or k in config.exploration.method_options
            }
        try:
            validated = validate_options(driver_cls, options)
        except ConfigError as exc:
            raise ConfigError(f"{field_name}: {exc}") from None
        entry = available[name]
        resolved[group] = ResolvedDriver(
            group=group, config_field=field_name, name=name, distribution=entry.distribution,
            version=entry.version, options=validated.model_dump(mode="json"),
            available=sorted(available),
        )
    return ResolvedConfig(config=config, drivers=resolved)
