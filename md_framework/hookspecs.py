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
    from md_framework.runtime import (
        BehaviourMetric,
        LoadedModel,
        ModelLoadOptions,
        ModelSpec,
        PromptFamilyGenerator,
        TestGenerationContext,
    )
    from md_framework.types import (
        AnalysisReport,
        CircuitDiff,
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
    features: Sequence[FeatureRef], context: Mapping[str, Any]
) -> list[FeatureInterpretation]:
    """Describe what each feature does (max-activating contexts, logit lens, labels...).

    Called after the circuit diff, with the features the diff found worth explaining and a
    context mapping (``models``, ``tracer``, ``corpus``, ``config`` and whatever else the
    pipeline documents). All implementations contribute; several interpretations of the
    same feature are kept side by side, each with its ``source``. Not firstresult.
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
