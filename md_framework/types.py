"""Core data types passed between pipeline stages.

Every object that crosses a module boundary or goes to disk is a pydantic model with
``extra="forbid"`` and round-trips through JSON (``model_dump_json`` / ``model_validate_json``).
Nothing here imports torch: tensors stay inside the plugins that make them, and only plain
numbers, strings and ids cross stages.

Node identity is the one rule later stages rely on: two graphs are compared by node id,
never by matrix position (see :func:`feature_node_id` and friends).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: Bumped whenever a stored JSON shape changes incompatibly.
SCHEMA_VERSION = 1

JSONValue = Any  # pydantic validates it is JSON-serialisable when dumping


class StrictModel(BaseModel):
    """Base of all kernel models: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _finite(value: float | None, field: str | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    return value


# --------------------------------------------------------------------------- hypothesis types


class HypothesisType(str, Enum):
    """Builtin hypothesis types. Plugins add more through ``md_hypothesis_types``.

    Fields typed as a hypothesis type accept any string, so plugin-defined types need no
    change here; :func:`md_framework.plugins.registered_hypothesis_types` lists what is known.
    """

    CAPABILITY_GAIN = "capability_gain"
    CAPABILITY_LOSS = "capability_loss"
    SAFETY_DEGRADATION = "safety_degradation"
    SAFETY_ENHANCEMENT = "safety_enhancement"
    STYLE_CHANGE = "style_change"
    KNOWLEDGE_UPDATE = "knowledge_update"
    BIAS_SHIFT = "bias_shift"
    REASONING_CHANGE = "reasoning_change"
    COMPUTATION_REROUTING = "computation_rerouting"

    def __str__(self) -> str:  # so f-strings show "safety_degradation", not the class path
        return self.value


class HypothesisTypeSpec(StrictModel):
    """A hypothesis type contributed by a plugin."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    default_metrics: list[str] = Field(default_factory=list)
    default_direction: Literal["increase", "decrease", "change"] = "change"


#: what a pattern type reads: ``output`` — the models' outputs (token flips, answer edits);
#: ``circuit`` — per-prompt graphs judged on family contrasts or paths (family-level);
#: ``feature`` — pooled per-feature screening tests (feature-level, the weakest evidence)
PatternLevel = Literal["output", "circuit", "feature"]


class PatternType(StrictModel):
    """A pattern type a detector emits, registered through ``md_pattern_types``.

    The hypothesis templates read it to turn a pattern into hypotheses: ``hypothesis_type``
    (a registered hypothesis type, hence the focus area) says what the pattern suggests,
    ``None`` leaves the area to the features' interpretations and the families; the sign
    of the change comes from ``sign`` when the type fixes it, else from the pattern's
    ``evidence[sign_key]`` (positive: the behaviour increases). Priority of the
    hypothesis = pattern strength x ``weight`` x the template's factors (CONTRIBUTING.md).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    level: PatternLevel
    hypothesis_type: str | None = None
    sign_key: str | None = None
    sign: Literal[-1, 1] | None = None
    weight: float = Field(gt=0.0, le=1.0)


# --------------------------------------------------------------------------- graphs

NodeKind = Literal["feature", "error", "token", "logit"]


def feature_node_id(layer: int, position: int, feature: int) -> str:
    return f"F:{layer}:{position}:{feature}"


def error_node_id(layer: int, position: int) -> str:
    return f"E:{layer}:{position}"


def token_node_id(position: int, token_id: int) -> str:
    return f"T:{position}:{token_id}"


def logit_node_id(token_id: int) -> str:
    return f"L:{token_id}"


class FeatureRef(StrictModel):
    """A dictionary feature independent of position: what interpretations are keyed by."""

    layer: int = Field(ge=0)
    feature: int = Field(ge=0)
    dictionary_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.layer}:{self.feature}"


class GraphNode(StrictModel):
    """One node of an attribution graph. ``node_id`` is its identity across models."""

    node_id: str
    kind: NodeKind
    layer: int | None = None
    position: int | None = None
    feature: int | None = None
    token_id: int | None = None
    token: str | None = None
    activation: float | None = None
    influence: float | None = None

    @field_validator("activation", "influence")
    @classmethod
    def _check_finite(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _finite(value, info.field_name)


class GraphEdge(StrictModel):
    """A directed, signed attribution from ``source`` to ``target`` (node ids)."""

    source: str
    target: str
    weight: float

    @field_validator("weight")
    @classmethod
    def _check_finite(cls, value: float, info: ValidationInfo) -> float | None:
        return _finite(value, info.field_name)


class LogitTarget(StrictModel):
    token_id: int
    token: str
    probability: float = Field(ge=0.0, le=1.0)


class Faithfulness(StrictModel):
    """How well the replacement model explains the real one on this prompt.

    ``replacement_score`` and ``completeness_score`` follow circuit-tracer's
    ``compute_graph_scores``; ``error_node_share`` is the fraction of the logit-directed
    influence that flows through error nodes. Tracers without a replacement (activation
    differences) leave the scores ``None``.
    """

    replacement_score: float | None = None
    completeness_score: float | None = None
    error_node_share: float | None = None


class CircuitGraph(StrictModel):
    """A per-prompt graph of one model, produced by any tracer driver."""

    schema_version: int = SCHEMA_VERSION
    prompt: str
    family: str | None = None
    model_id: str
    dictionary_id: str | None = None
    tracer: str
    input_tokens: list[str] = Field(default_factory=list)
    input_token_ids: list[int] = Field(default_factory=list)
    nodes: list[GraphNode] = Field(default_factory=list)
    edges: list[GraphEdge] = Field(default_factory=list)
    logit_targets: list[LogitTarget] = Field(default_factory=list)
    faithfulness: Faithfulness = Field(default_factory=Faithfulness)
    metadata: dict[str, JSONValue] = Field(default_factory=dict)

    def node_map(self) -> dict[str, GraphNode]:
        return {node.node_id: node for node in self.nodes}

    def feature_nodes(self) -> list[GraphNode]:
        return [node for node in self.nodes if node.kind == "feature"]


# --------------------------------------------------------------------------- diffs


class FeatureChange(StrictModel):
    node_id: str
    layer: int
    position: int
    feature: int
    base_activation: float
    intervention_activation: float
    status: Literal["shared", "base_only", "intervention_only"]

    @property
    def delta(self) -> float:
        return self.intervention_activation - self.base_activation


class EdgeChange(StrictModel):
    source: str
    target: str
    base_weight: float
    intervention_weight: float
    status: Literal["new", "removed", "reweighted", "unchanged"]


class TokenShift(StrictModel):
    """A token whose next-token probability moved between the two models at one position."""

    token: str
    base_probability: float = Field(ge=0.0, le=1.0)
    intervention_probability: float = Field(ge=0.0, le=1.0)


class AnswerPosition(StrictModel):
    """One teacher-forced answer position: both models predict ``token`` from the same prefix."""

    index: int = Field(ge=0)  # position in the answer (0 = first answer token)
    token: str
    #: Jensen-Shannon divergence (nats) between the two models' next-token distributions
    divergence: float = Field(ge=0.0)
    base_logprob: float
    intervention_logprob: float
    base_top: str = ""
    intervention_top: str = ""
    moved: list[TokenShift] = Field(default_factory=list)
    #: ``layer:feature`` keys whose activation changed most at the predicting position
    features: list[str] = Field(default_factory=list)


class AnswerDiff(StrictModel):
    """One answer (the base's or the intervention's own greedy answer) teacher-forced
    through both models."""

    source: Literal["base", "intervention"]
    tokens: list[str] = Field(default_factory=list)
    positions: list[AnswerPosition] = Field(default_factory=list)


class AnswerTrace(StrictModel):
    """Answer-aware trace of one prompt (docs/discovery.md, "Answer-aware tracing")."""

    prompt: str
    family: str | None = None
    base_answer: str = ""
    intervention_answer: str = ""
    #: the answers' tokens; the end-of-sequence token is the last one when the answer ended
    base_tokens: list[str] = Field(default_factory=list)
    intervention_tokens: list[str] = Field(default_factory=list)
    answers: list[AnswerDiff] = Field(default_factory=list)
    #: per ``layer:feature``: the largest activation over the answer positions, per model
    base_features: dict[str, float] = Field(default_factory=dict)
    intervention_features: dict[str, float] = Field(default_factory=dict)
    dictionary_id: str | None = None
    generated_tokens: int = Field(default=0, ge=0)
    teacher_forced_tokens: int = Field(default=0, ge=0)


class PromptDiff(StrictModel):
    """The diff of one prompt's base and intervention graphs, matched by node id."""

    prompt: str
    family: str | None = None
    feature_changes: list[FeatureChange] = Field(default_factory=list)
    edge_changes: list[EdgeChange] = Field(default_factory=list)
    base_top_paths: list[list[str]] = Field(default_factory=list)
    intervention_top_paths: list[list[str]] = Field(default_factory=list)
    base_logit_targets: list[LogitTarget] = Field(default_factory=list)
    intervention_logit_targets: list[LogitTarget] = Field(default_factory=list)
    #: In [0, 1]; 1 for fully faithful graph pairs, lower to discount unfaithful ones.
    faithfulness_weight: float = Field(default=1.0, ge=0.0, le=1.0)
    notes: list[str] = Field(default_factory=list)
    #: answer-aware trace of this prompt, when the tracer offers one
    answer: AnswerTrace | None = None


class SystematicChange(StrictModel):
    """A feature whose activation changes consistently across seed prompts.

    ``p_value`` is exploratory (used for ranking); confirmatory error control happens only
    in validation.
    """

    feature: FeatureRef
    mean_delta: float
    n_prompts: int = Field(ge=0)
    statistic: float | None = None
    p_value: float | None = Field(default=None, ge=0.0, le=1.0)
    q_value: float | None = Field(default=None, ge=0.0, le=1.0)
    families: dict[str, float] = Field(default_factory=dict)


class CircuitDiff(StrictModel):
    schema_version: int = SCHEMA_VERSION
    base_model_id: str
    intervention_model_id: str
    dictionary_id: str | None = None
    prompt_diffs: list[PromptDiff] = Field(default_factory=list)
    systematic_changes: list[SystematicChange] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- interpretation


class ContextExample(StrictModel):
    text: str
    activation: float
    family: str | None = None
    token_position: int | None = None


class FeatureInterpretation(StrictModel):
    """What a feature appears to do; several interpreters may describe the same feature."""

    feature: FeatureRef
    description: str = ""
    top_contexts: list[ContextExample] = Field(default_factory=list)
    promoted_tokens: list[str] = Field(default_factory=list)
    suppressed_tokens: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    source: str = ""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


# --------------------------------------------------------------------------- patterns & hypotheses


class Pattern(StrictModel):
    id: str
    pattern_type: str
    description: str
    detector: str = ""  # filled by the kernel with the plugin name that produced it
    features: list[FeatureRef] = Field(default_factory=list)
    families: list[str] = Field(default_factory=list)
    strength: float = 0.0
    evidence: dict[str, JSONValue] = Field(default_factory=dict)


class Hypothesis(StrictModel):
    id: str
    hypothesis_type: str
    description: str
    metric: str
    direction: Literal["increase", "decrease", "change"] = "change"
    families: list[str] = Field(default_factory=list)
    feature_contexts: list[str] = Field(default_factory=list)
    source_patterns: list[str] = Field(default_factory=list)
    source_features: list[FeatureRef] = Field(default_factory=list)
    priority: float = 0.0
    provenance: list[str] = Field(default_factory=list)

    @field_validator("hypothesis_type", mode="before")
    @classmethod
    def _type_value(cls, value: Any) -> Any:
        return value.value if isinstance(value, HypothesisType) else value


class DroppedHypothesis(StrictModel):
    """A hypothesis discovery formed but did not test: its priority was under the floor
    (``below_floor``, ``limit`` = the floor) or the cap ``max_hypotheses_to_test`` was
    full (``over_cap``, ``limit`` = the cap). The report lists every one."""

    hypothesis: Hypothesis
    reason: Literal["below_floor", "over_cap"]
    limit: float
    detail: str = ""


# --------------------------------------------------------------------------- tests & evidence


class TestCase(StrictModel):
    __test__ = False  # not a pytest class

    id: str
    hypothesis_id: str
    prompt: str
    family: str | None = None
    source: str = ""  # filled by the kernel with the generator plugin's name
    target: str | None = None
    split: Literal["explore", "confirm"] = "confirm"
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class Observation(StrictModel):
    """Paired evidence: one metric measured on both models for one test prompt."""

    test_case_id: str
    hypothesis_id: str
    metric: str
    prompt: str = ""
    base_value: float
    intervention_value: float
    base_output: str | None = None
    intervention_output: str | None = None

    @field_validator("base_value", "intervention_value")
    @classmethod
    def _check_finite(cls, value: float, info: ValidationInfo) -> float | None:
        return _finite(value, info.field_name)

    @property
    def difference(self) -> float:
        return self.intervention_value - self.base_value


class EffectSize(StrictModel):
    name: str
    estimate: float
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    #: how the interval was built: a fixed-n Wald interval or an anytime-valid confidence
    #: sequence (docs/validation.md); None for intervals from elsewhere
    method: str | None = None

    # Formats and converts like its estimate (f"{result.effect_size:.3f}", float(...)), so
    # the design document's code works; str() keeps the name and the interval.
    def __float__(self) -> float:
        return float(self.estimate)

    def __format__(self, spec: str) -> str:
        return format(self.estimate, spec) if spec else str(self)

    def __str__(self) -> str:
        ci = (f" [{self.ci_low:.3g}, {self.ci_high:.3g}]"
              if self.ci_low is not None and self.ci_high is not None else "")
        return f"{self.name}={self.estimate:.3g}{ci}"


class ValidationResult(StrictModel):
    hypothesis: Hypothesis
    test_name: str
    p_value: float | None = Field(default=None, ge=0.0, le=1.0)
    e_value: float | None = Field(default=None, ge=0.0)
    decision: bool
    test_level: float | None = None
    fdr_index: int | None = None
    fdr_procedure: str | None = None
    effect_size: EffectSize | None = None
    n: int = Field(ge=0)
    stopped_early: bool = False
    examples: list[Observation] = Field(default_factory=list)
    causal_share: EffectSize | None = None
    #: the same estimate for as many randomly drawn features of the same layers (features
    #: that also changed on the traced prompts): what patching *some* features does
    causal_control_share: EffectSize | None = None
    notes: list[str] = Field(default_factory=list)  # e.g. "fixed n not reached", "effect below minimum"
    #: why a result is not validated (None when it is): the evidence did not reach the test
    #: level, the effect was not shown to exceed the relevance floor, there were too few
    #: held-out prompts, or the budget ended first (docs/validation.md)
    reason: Literal["level not reached", "effect below relevance", "not enough tests",
                    "budget"] | None = None
    #: the relevance floor the test used: H0 "effect <= min_change" (the metric's min_change)
    min_change: float | None = None
    #: the decision unit "families|metric|direction": one discovery per unit
    unit: str | None = None
    #: the hypothesis this one refines (a split or retrace child), if any
    refines: str | None = None

    def is_validated(self) -> bool:
        return self.decision


# --------------------------------------------------------------------------- report


class DecisionRecord(StrictModel):
    """One online FDR decision, in decision order (what the wealth/level plot shows)."""

    index: int = Field(ge=1)
    hypothesis_id: str
    value: float
    value_kind: Literal["p", "e"] = "p"
    level: float
    rejected: bool
    wealth: float | None = None  # the procedure's alpha-wealth after this decision, if it has one


class BanditRound(StrictModel):
    """One exploration round: which arms were pulled and what each was credited."""

    round: int = Field(ge=0)
    pulled: list[str]
    rewards: dict[str, float] = Field(default_factory=dict)
    queries: int = 0


class Costs(StrictModel):
    behaviour_queries: int = 0
    traced_prompts: int = 0
    #: forward passes spent choosing feature-driven test prompts (base model activations)
    selection_forward_passes: int = 0
    #: answer-aware tracing: greedy tokens generated, tokens teacher-forced (all model passes)
    answer_generated_tokens: int = 0
    answer_teacher_forced_tokens: int = 0
    wall_time_s: float = 0.0
    #: forward-token equivalents (md_framework.costs) per stage: load, trace (answers, the
    #: screen and attribution graphs), discover (feature reading), validate (with
    #: refinement's traces), causal, examples (answers shown with findings, not evidence)
    tokens_by_stage: dict[str, int] = Field(default_factory=dict)


class AnalysisReport(StrictModel):
    schema_version: int = SCHEMA_VERSION
    config: dict[str, JSONValue] = Field(default_factory=dict)
    base_model_id: str = ""
    intervention_model_id: str = ""
    circuit_statistics: dict[str, JSONValue] = Field(default_factory=dict)
    patterns: list[Pattern] = Field(default_factory=list)
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    #: hypotheses formed but not tested (priority floor or cap), each with its reason
    dropped_hypotheses: list[DroppedHypothesis] = Field(default_factory=list)
    #: pattern types detectors emitted that no plugin declared (md_pattern_types)
    unregistered_pattern_types: list[str] = Field(default_factory=list)
    validation_results: list[ValidationResult] = Field(default_factory=list)
    costs: Costs = Field(default_factory=Costs)
    circuit_diff: CircuitDiff | None = None
    fdr_trace: list[DecisionRecord] = Field(default_factory=list)
    bandit_rounds: list[BanditRound] = Field(default_factory=list)
    interpretations: dict[str, list[FeatureInterpretation]] = Field(default_factory=dict)
    artefacts: dict[str, str] = Field(default_factory=dict)  # name -> path relative to the report
    #: stage hook -> the plugin that ran it (``md_stage_diff`` -> ``graph-diff``, or the
    #: third-party plugin that replaced it)
    stage_providers: dict[str, str] = Field(default_factory=dict)

    def validated(self) -> list[ValidationResult]:
        return [r for r in self.validation_results if r.is_validated()]

    def _model_label(self, role: str) -> str:
        """The model's source as configured, with a short model id (the hash is what
        identifies it; the source is what a reader recognises)."""
        model_id = (self.base_model_id if role == "base" else self.intervention_model_id) or "?"
        source = (self.config or {}).get(f"{role}_model")
        if isinstance(source, dict):
            source = source.get("source")
        short = model_id.split(":", 1)[-1][:12] if ":" in model_id else model_id[:12]
        return f"{source} ({short})" if source else model_id

    def summary_text(self) -> str:
        lines = [
            f"Analysis: {self._model_label('base')} -> {self._model_label('intervention')}",
            f"hypotheses tested: {len(self.validation_results)}, "
            f"validated: {len(self.validated())}, discoveries (distinct family|metric|direction"
            f" units): {self.discoveries()}",
            f"behaviour queries: {self.costs.behaviour_queries}, traced prompts: "
            f"{self.costs.traced_prompts}, test-selection forward passes: "
            f"{self.costs.selection_forward_passes}, wall time: {self.costs.wall_time_s:.1f} s",
        ]
        universe = (self.config or {}).get("universe")
        if isinstance(universe, dict) and universe.get("default_used"):
            lines.append(f"prompt universe: none given, used the default: {universe['default_used']}")
        for result in self.validation_results:
            mark = "VALIDATED" if result.is_validated() else "not validated"
            stat = (
                f"p={result.p_value:.3g}" if result.p_value is not None else
                f"e={result.e_value:.3g}" if result.e_value is not None else "no test"
            )
            effect = ""
            if result.effect_size is not None:
                es = result.effect_size
                ci = (
                    f" [{es.ci_low:.2f}, {es.ci_high:.2f}]"
                    if es.ci_low is not None and es.ci_high is not None else ""
                )
                effect = f", {es.name}={es.estimate:.2f}{ci}"
            causal = ""
            if result.causal_share is not None:
                cs = result.causal_share
                ci = (f" [{cs.ci_low:.2f}, {cs.ci_high:.2f}]"
                      if cs.ci_low is not None and cs.ci_high is not None else "")
                causal = f"; share carried by its features {cs.estimate:.2f}{ci}"
                ctrl = result.causal_control_share
                if ctrl is not None:
                    causal += f", by random features {ctrl.estimate:.2f}"
            why = f"; {result.reason}" if result.reason else ""
            lines.append(
                f"  [{mark}] {result.hypothesis.hypothesis_type}: "
                f"{result.hypothesis.description} ({stat}{effect}, n={result.n}{causal}{why})"
            )
        lines.extend(self.dropped_text())
        return "\n".join(lines)

    def dropped_text(self) -> list[str]:
        """Lines naming every hypothesis left untested, with its reason and provenance."""
        lines = []
        if self.dropped_hypotheses:
            lines.append(f"hypotheses not tested: {len(self.dropped_hypotheses)}")
        for d in self.dropped_hypotheses:
            h = d.hypothesis
            why = "below floor" if d.reason == "below_floor" else "over cap"
            lines.append(f"  [{why}] {h.hypothesis_type}: {h.description} ({d.detail};"
                         f" from {', '.join(h.provenance) or 'unknown'})")
        if self.unregistered_pattern_types:
            lines.append("pattern types no plugin declares (generic reading only): "
                         + ", ".join(self.unregistered_pattern_types))
        return lines

    def discoveries(self) -> int:
        """Validated results counted once per (families, metric, direction) unit; a refinement
        inside a validated parent's unit is not a second discovery."""
        validated = {r.hypothesis.id: r.hypothesis for r in self.validated()}
        units = set()
        for r in self.validated():
            h = r.hypothesis
            parent = validated.get(r.refines) if r.refines else None
            if (parent is not None and parent.metric == h.metric
                    and parent.direction == h.direction
                    and set(h.families) <= set(parent.families)):
                continue  # where the parent's change lives: the same discovery, localised
            units.add(r.unit or f"{','.join(sorted(h.families))}|{h.metric}|{h.direction}")
        return len(units)

    def print_summary(self) -> None:
        print(self.summary_text())


class ScreenSummary(StrictModel):
    """Two-stage tracing's screen (``md_stage_screen``): flagged families, the (prompt,
    family) pairs traced with the attribution tracer and the unflagged check prompts among
    them; ``patterns`` are the screen patterns' ids (or why the screen was skipped)."""

    flagged: list[str] = Field(default_factory=list)
    chosen: list[tuple[str, str]] = Field(default_factory=list)
    checks: list[tuple[str, str]] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    def summary(self, n_seeds: int) -> dict[str, Any]:
        return {"flagged_families": self.flagged, "seed_prompts": n_seeds,
                "attribution_prompts": len(self.chosen), "check_prompts": len(self.checks),
                "screen_patterns": self.patterns, "screen_seconds": round(self.seconds, 3)}


class DiscoveryResult(NamedTuple):
    """What the discovery stage (``md_stage_discover``) hands to validation, and what it
    left out: hypotheses dropped by the priority floor or the cap, with the reason, and
    pattern types no plugin registered."""

    interpretations: dict[str, list[FeatureInterpretation]]
    patterns: list[Pattern]
    hypotheses: list[Hypothesis]
    dropped: list[DroppedHypothesis]
    unregistered_pattern_types: list[str]

