"""Hook specifications: the contribute-all extension points of md-framework.

Every plugin may implement any of these hooks (``@md_framework.hookimpl``); the kernel calls
all implementations and merges their results. Single-choice components (tracer, FDR
procedure, paired test, bandit strategy, executor) are stevedore drivers instead, see
:mod:`md_framework.drivers`.

The kernel calls each implementation separately (through :class:`md_framework.plugins.Hooks`)
so that every contributed object records which plugin made it, a failing plugin is named in
the error, and ``plugins.on_hook_error: skip`` can skip it. Hook *wrappers* are therefore
not supported on ``md_`` hooks and are rejected when a plugin registers.

Hook arguments are keyword-only in practice (pluggy passes by name); an implementation may
accept any subset of the arguments listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

PROJECT_NAME = "md_framework"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

if TYPE_CHECKING:  # imported for annotations only; keeps the kernel import light
    import click

    from md_framework.config import AnalysisConfig
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer
    from md_framework.plugins import Hooks
    from md_framework.runtime import (
        BehaviourMetric,
        InterpretationContext,
        LoadedModel,
        ModelLoadOptions,
        ModelSpec,
        PromptFamilyGenerator,
        TestGenerationContext,
    )
    from md_framework.types import (
        AnalysisReport,
        CircuitDiff,
        CircuitGraph,
        DiscoveryResult,
        FeatureInterpretation,
        FeatureRef,
        Hypothesis,
        HypothesisTypeSpec,
        Pattern,
        PatternType,
        TestCase,
        ValidationResult,
    )


# --------------------------------------------------------------------------- registration


@hookspec
def md_hypothesis_types() -> list[HypothesisTypeSpec]:
    """Declare hypothesis types this plugin understands.

    Called once per plugin manager when the set of known types is needed (config
    validation, ``md plugins list``, hypothesis validation). Returns a list of
    :class:`~md_framework.types.HypothesisTypeSpec`; all implementations contribute and
    names must be unique across plugins. Not firstresult.
    """


@hookspec
def md_pattern_types() -> list[PatternType]:
    """Declare the pattern types this plugin's detectors emit.

    Called when the discovery stage detects patterns and forms hypotheses, to build the
    pattern-type registry the hypothesis templates read. Returns a list of
    :class:`~md_framework.types.PatternType` (level, hypothesis type, sign key, weight);
    all implementations contribute and names must be unique across plugins. A pattern
    whose type no plugin declares gets a warning with a did-you-mean and only the generic,
    down-weighted template reading. Not firstresult.
    """


@hookspec
def md_behaviour_metrics() -> list[BehaviourMetric]:
    """Contribute behaviour metrics (objects following :class:`md_framework.runtime.BehaviourMetric`).

    Called when the pipeline builds its metric registry. Each metric has a unique ``name``
    (what hypotheses and config refer to), declares the hypothesis types it serves and
    whether it is scored or generated. All implementations contribute. Not firstresult.
    """


@hookspec(firstresult=True)
def md_metric_from_name(name: str) -> BehaviourMetric | None:
    """Build a behaviour metric that no plugin lists, from its name, or return ``None``.

    Called by the pipeline for each hypothesis whose metric is not among the registered
    ones (``md_behaviour_metrics``), e.g. a metric discovery made from what the diff saw:
    ``signoff:<phrase>`` or ``exact_match:<phrase>``. **firstresult**: the first plugin that
    returns a metric (whose ``name`` equals ``name``) wins; plugins that do not recognise
    the name return ``None`` quickly.
    """


@hookspec
def md_prompt_family_generators() -> list[PromptFamilyGenerator]:
    """Contribute named prompt-family generators (:class:`md_framework.runtime.PromptFamilyGenerator`).

    Called when an organism spec or a test generator names a generator. All
    implementations contribute; names must be unique. Not firstresult.
    """


@hookspec(firstresult=True)
def md_load_universe(source: str, n_per_family: int, seed: int) -> dict[str, list[str]] | None:
    """Return the prompt families ("universe") that ``source`` names, or ``None``.

    Called when config's ``universe.organism`` names a source (an organism spec path or a
    builtin organism name). Returns family name -> prompts, at most ``n_per_family`` each,
    chosen deterministically from ``seed``. Must never reveal planted ground truth.
    **firstresult**: the first plugin that recognises ``source`` wins.
    """


@hookspec
def md_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``md`` command line.

    Called once when the CLI starts, with the root click group. Returns nothing. A plugin
    that fails here is reported by ``md plugins list`` and does not stop the CLI.
    """


# --------------------------------------------------------------------------- models


@hookspec(firstresult=True)
def md_load_model(spec: ModelSpec, options: ModelLoadOptions) -> LoadedModel | None:
    """Load the model that ``spec`` refers to, or return ``None`` if this loader cannot.

    Called once per model of the pair before any tracing. **firstresult**: the first
    loader that returns a :class:`~md_framework.runtime.LoadedModel` wins; loaders that do
    not recognise the reference must return ``None`` quickly, without heavy imports.
    """


# --------------------------------------------------------------------------- discovery


@hookspec
def md_interpret_features(
    features: Sequence[FeatureRef], context: InterpretationContext
) -> list[FeatureInterpretation]:
    """Describe what each feature does (max-activating contexts, logit lens, labels...).

    Called after the circuit diff, with the features the diff found worth explaining and an
    :class:`~md_framework.runtime.InterpretationContext` (``models``, ``tracer``,
    ``corpus``, ``config``, ... every key a typed field). All implementations contribute;
    several interpretations of the same feature are kept side by side, each with its
    ``source``. Not firstresult.
    """


@hookspec
def md_detect_patterns(
    diff: CircuitDiff,
    interpretations: Mapping[str, list[FeatureInterpretation]],
    config: AnalysisConfig,
) -> list[Pattern]:
    """Recognise patterns in a circuit diff (suppression, emergence, rerouting...).

    Called once per analysis after interpretation. ``interpretations`` maps
    ``FeatureRef.key`` to its interpretations. Returns :class:`~md_framework.types.Pattern`
    objects with their evidence; the kernel fills ``detector`` with the plugin's name and
    warns about a ``pattern_type`` no plugin declares (``md_pattern_types``). All
    implementations contribute. Not firstresult.
    """


@hookspec
def md_hypotheses_from_patterns(
    patterns: Sequence[Pattern],
    interpretations: Mapping[str, list[FeatureInterpretation]],
    config: AnalysisConfig,
    pattern_types: Mapping[str, PatternType],
    hypothesis_types: Mapping[str, HypothesisTypeSpec],
) -> list[Hypothesis]:
    """Turn patterns into typed, testable hypotheses (the hypothesis templates).

    Called once per analysis after pattern detection, with the registries of pattern types
    (``md_pattern_types``) and hypothesis types (``md_hypothesis_types``) by name. Returns
    :class:`~md_framework.types.Hypothesis` objects; the kernel appends the plugin's name
    to ``provenance``, then merges and ranks them; the priority floor and
    ``max_hypotheses_to_test`` pick those tested and the report lists every other one with
    its reason. All implementations contribute. Not firstresult.
    """


# --------------------------------------------------------------------------- validation


@hookspec
def md_generate_tests(
    hypothesis: Hypothesis, n_tests: int, context: TestGenerationContext
) -> list[TestCase]:
    """Propose test prompts for one hypothesis.

    Called for each hypothesis chosen for validation (and again when the explorer asks for
    more). Return up to ``n_tests`` :class:`~md_framework.types.TestCase` objects, or an
    empty list when the hypothesis is outside this generator's domain; the kernel fills
    ``source`` with the plugin's name, removes prompts that formed the hypothesis and
    samples across generators. For a hypothesis naming families only held-out prompts of
    those families count; other contributions are dropped (docs/validation.md). All
    implementations contribute. Not firstresult.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def md_run_started(config: AnalysisConfig, run_dir: Path | None) -> None:
    """Called once when an analysis starts, after config validation and before models load."""


@hookspec
def md_phase_finished(phase: str, summary: Mapping[str, Any]) -> None:
    """Called when a pipeline phase ends (``trace``, ``diff``, ``interpret``, ``patterns``,
    ``hypotheses``, ``validate``) with a JSON-serialisable summary of what it did."""


@hookspec
def md_hypothesis_decided(result: ValidationResult) -> None:
    """Called each time the online FDR procedure decides a hypothesis, in decision order."""


@hookspec
def md_report_ready(report: AnalysisReport, out_dir: Path | None) -> None:
    """Called once with the finished report, after it is written to ``out_dir`` (if any).

    Report plugins write extra artefacts (pages, plots, exports) into ``out_dir`` here.
    """


# --------------------------------------------------------------------------- stages
# The analysis protocol (md_framework.pipeline.analyzer) calls one implementation of each
# stage hook: all are firstresult. md-framework's own implementations are essential builtin
# plugins (builtin_plugins.pipeline; md_framework.plugins.ESSENTIAL_PLUGINS): a run cannot
# work without them, so they cannot be blocked. To replace a stage, implement its hook with
# ``@hookimpl(tryfirst=True)``: the first implementation that returns something wins, and
# its plugin's name is recorded in ``Hooks.stage_providers``. Exceptions of a stage
# implementation propagate unchanged (the stage is the run: there is nothing to skip to).


@hookspec(firstresult=True)
def md_stage_split_universe(universe: Mapping[str, Sequence[str]], explore_fraction: float,
                            seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]] | None:
    """Split each family's prompts into (explore, confirm) before anything is traced.

    Called once per analysis (and once by the design-document stage views). Returns
    ``(explore, confirm)``: hypotheses are formed on explore prompts only and confirmed on
    confirm prompts only. Firstresult; builtin: ``test-selection``.
    """


@hookspec(firstresult=True)
def md_stage_diff(base_graphs: Sequence[CircuitGraph], intervention_graphs: Sequence[CircuitGraph],
                  base_model_id: str, intervention_model_id: str, dictionary_id: str | None,
                  answers: Sequence[Any] | None) -> CircuitDiff | None:
    """Diff paired graphs (same prompts, same order) by node identity.

    Called after tracing, for the screen, for refinement and by the stage views. Returns a
    :class:`~md_framework.types.CircuitDiff` with per-prompt diffs and the systematic changes
    across prompts; ``answers`` are the answer-aware traces when the run made them.
    Firstresult; builtin: ``graph-diff``.
    """


@hookspec(firstresult=True)
def md_stage_patterns(hooks: Hooks, diff: CircuitDiff,
                      interpretations: Mapping[str, list[FeatureInterpretation]],
                      config: AnalysisConfig | None) -> list[Pattern] | None:
    """Every detector's patterns in ``diff`` (the contribute-all ``md_detect_patterns``
    hook, called through ``hooks``), each stamped with its detector.

    Called by two-stage tracing's screen and the pattern-recognizer view. Firstresult;
    builtin: ``discovery``.
    """


@hookspec(firstresult=True)
def md_stage_discover(hooks: Hooks, diff: CircuitDiff, config: AnalysisConfig,
                      context: InterpretationContext) -> DiscoveryResult | None:
    """The discovery stage: interpret the screened features, detect patterns, form, merge,
    rank and cap hypotheses (priority floor ``context.min_hypothesis_priority``).

    Called once per analysis and once per refinement round. Returns a
    :class:`~md_framework.types.DiscoveryResult`: interpretations by feature key, patterns,
    hypotheses to test, hypotheses dropped by the floor or the cap (with the reason) and
    pattern types no plugin registered. Firstresult; builtin: ``discovery``.
    """


@hookspec(firstresult=True)
def md_stage_screen(seeds: Sequence[tuple[str, str]], patterns: Sequence[Pattern],
                    check_prompts: int, seed: int, max_families: int | None,
                    prompts_per_family: int | None) -> tuple[list[str], list[tuple[str, str]],
                                                             list[tuple[str, str]]] | None:
    """Two-stage tracing: which seed prompts get attribution graphs, from the patterns the
    cheap screen tracer's diff showed.

    Called once per analysis with ``two_stage_tracing`` on, with the config's
    ``screen_check_prompts``, ``screen_max_families`` and ``screen_prompts_per_family`` (None:
    no cap). Returns ``(flagged families, chosen (prompt, family) pairs in seed order, the
    unflagged check prompts among them)``. Firstresult; builtin: ``screen``.
    """


@hookspec(firstresult=True)
def md_stage_validate(run: MechanisticBehavioralAnalyzer, hooks: Hooks,
                      hypotheses: Sequence[Hypothesis],
                      explore: Mapping[str, Sequence[str]], confirm: Mapping[str, Sequence[str]],
                      interpretations: Mapping[str, list[FeatureInterpretation]],
                      refiner: Any) -> Any:
    """The validation stage: held-out test pooling, paired measurement, one online FDR
    decision per unit, the bandit choosing what to sample next.

    Called once per analysis, after discovery. ``run`` gives the config, resolved drivers,
    loaded models, run directory and ledger fingerprint; ``refiner`` (or ``None``) is called
    on each validated hypothesis. Returns the exploration result (``results``,
    ``hypotheses``, ``queries``, ``fdr_trace``, ``rounds``, ``notes``) and leaves
    ``run._causal_inputs = (validator, test pool)`` for causal confirmation. Firstresult;
    builtin: ``validation``.
    """


@hookspec(firstresult=True)
def md_stage_refiner(run: MechanisticBehavioralAnalyzer, hooks: Hooks,
                     explore: Mapping[str, Sequence[str]],
                     seeds: Sequence[tuple[str, str]]) -> Any:
    """Build the refiner: called with each validated hypothesis, it traces more explore
    prompts around it and returns sharper hypotheses to test.

    Called once per analysis with ``exploration.refine`` on. Returns a callable with
    ``parents`` (refinement id -> parent id) and ``traced_prompts`` (prompts traced).
    Firstresult; builtin: ``refinement``.
    """


@hookspec(firstresult=True)
def md_stage_causal(run: MechanisticBehavioralAnalyzer, hooks: Hooks, exploration: Any) -> bool | None:
    """Causal confirmation: intervene on the features of validated hypotheses and fill
    ``ValidationResult.causal_share`` (queries counted in ``exploration.queries``).

    Called once per analysis with ``causal_confirmation`` on, after validation. Returns
    whether interventions ran (``False`` when the tracer cannot intervene). Firstresult;
    builtin: ``causal``.
    """


@hookspec(firstresult=True)
def md_stage_views(run: MechanisticBehavioralAnalyzer, hooks: Hooks, view: str) -> Any:
    """The design document's stage object ``view`` (``circuit_analyzer``,
    ``pattern_recognizer``, ``hypothesis_generator``, ``test_generator``,
    ``behavioral_validator``) over ``run``; the views call plugins through ``hooks`` (the
    runner the analyzer asked with, so one plugin manager serves the analyzer and its views).

    Called on first access of ``analyzer.<view>``; the analyzer keeps the object. Returns
    the view, or ``None`` for a view this plugin does not provide. Firstresult; builtin:
    ``design-stages``.
    """
