"""The design document's stage objects: thin, documented views over the pipeline.

``MechanisticBehavioralAnalyzer`` exposes the five stages the design document names
(docs/api.md)::

    analyzer.circuit_analyzer.analyze_prompt(prompt)            -> CircuitDiff
    analyzer.circuit_analyzer.analyze_prompts(prompts)          -> CircuitDiff (pooled)
    analyzer.circuit_analyzer.analyze_prompts_parallel(prompts, n_workers=4) -> [CircuitDiff]
    analyzer.pattern_recognizer.identify_patterns(diff)         -> [Pattern]
    analyzer.hypothesis_generator.generate_hypotheses(patterns, feature_interpretations=...)
    analyzer.hypothesis_generator.generate_focused_hypotheses(diff, focus_areas=[...])
    analyzer.test_generator.generate_tests(hypothesis, n_tests=50) -> [TestCase]
    analyzer.behavioral_validator.validate_hypothesis(hypothesis, tests) -> ValidationResult

The analyzer gets each view from the ``md_stage_views`` hook; this module is the essential
``design-stages`` plugin implementing it. None of the views is a second implementation:
each calls what ``analyze()`` calls (the analyzer's plugin manager and hooks, its tracer
driver and artefact cache, the discovery functions, the test pool's generator sampling and
one :class:`Validator` with the configured online FDR procedure). Decisions made through
``behavioral_validator`` join that validator's online FDR stream: after ``analyze()`` they
continue the analysis' stream (its alpha-wealth), so alpha is never spent twice, and a
hypothesis is decided at most once.

Statistical honesty holds for the views as for ``analyze()``: prompts a view traced (the
prompts a hypothesis was formed on) and the universe's explore split are never handed out
as test prompts; tests come from the held-out confirmation split, the hypothesis'
features' held-out contexts and the test-generator plugins.

Stage calls are not written to the run ledger (they are interactive and not resumable).

Nothing here imports torch at import time.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from md_framework.config import AnalysisConfig, normalise_feature_key
from md_framework.errors import ConfigError
from md_framework.hookspecs import hookimpl
from md_framework.pipeline.defaults import answer_examples, apply_default_universe
from md_framework.types import CircuitDiff, CircuitGraph, Hypothesis, Pattern, TestCase, ValidationResult

__all__ = [
    "ActiveCircuitExplorer", "BehavioralValidator", "CircuitAnalyzer", "HypothesisGenerator",
    "PatternRecognizer", "TestGeneratorStage",
]


def _merge_diffs(diffs: Sequence[CircuitDiff]) -> list[str]:
    return [d.prompt for diff in diffs for d in diff.prompt_diffs]


# --------------------------------------------------------------------------- session


class _Session:
    """What the stage views share with the analyzer: config, hooks, models, universe split,
    graphs traced by the views, and the validator with its online FDR state."""

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer
        self.hooks: Any = None
        self.graphs: dict[tuple[str, str | None], tuple[CircuitGraph, CircuitGraph]] = {}
        self.formed_from: set[str] = set()
        self._validator: Any = None
        self._finder: Any = None
        self.split: tuple[dict[str, list[str]], dict[str, list[str]]] | None = None

    # -- set-up, in the order analyze() does it -------------------------------------------
    def config(self) -> AnalysisConfig:
        from md_framework.config import resolve_config

        a = self.analyzer
        if a.resolved is None:
            a.resolved = resolve_config(a.config)
            a.config = apply_default_universe(a.config)
        return a.config

    def get_hooks(self) -> Any:
        self.config()
        if self.hooks is None:
            self.hooks = self.analyzer._hooks()
        return self.hooks

    def universe(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        from md_framework.pipeline.analyzer import build_universe

        a = self.analyzer
        config = self.config()
        if not a.universe:
            a.universe = build_universe(config, self.get_hooks())
        if self.split is None:
            self.split = self.get_hooks().stage(
                "md_stage_split_universe", universe=a.universe,
                explore_fraction=config.explore_fraction, seed=config.seed)
        return self.split

    def models(self) -> dict[str, Any]:
        a = self.analyzer
        if not a.models:
            a.load_models(self.get_hooks())
        return a.models

    def family_of(self, prompt: str) -> str | None:
        explore, confirm = self.universe()
        for split in (explore, confirm):
            for family, prompts in split.items():
                if prompt in prompts:
                    return family
        return None

    # -- tracing ---------------------------------------------------------------------------
    def trace(self, prompts: Sequence[str], executor: Any = None
              ) -> list[tuple[CircuitGraph, CircuitGraph]]:
        """Both models' graphs for ``prompts`` through the analyzer's tracer, options and
        artefact cache; ``executor`` (a driver) overrides the config's."""
        a = self.analyzer
        self.models()
        pairs = [(p, self.family_of(p)) for p in prompts]
        todo = [pf for pf in dict.fromkeys(pairs) if pf not in self.graphs]
        if todo:
            if executor is None:
                base, inter = a.trace(todo, keep=False)
            else:
                base, inter = self._trace_with(todo, executor)
            for pf, b, i in zip(todo, base, inter):
                self.graphs[pf] = (b, i)
        self.formed_from.update(prompts)
        return [self.graphs[pf] for pf in pairs]

    def _trace_with(self, prompts: Sequence[tuple[str, str | None]], executor: Any
                    ) -> tuple[list[CircuitGraph], list[CircuitGraph]]:
        import functools

        from md_framework.cache import ArtifactCache
        from md_framework.plugins import get_plugin_manager
        from md_framework.tracing import trace_pair

        a, config = self.analyzer, self.config()
        pm_factory = functools.partial(get_plugin_manager, blocked=tuple(config.plugins.disable),
                                       enabled=config.plugins.enable)
        pair = trace_pair(
            config.tracer, a._tracer_options(), config.base_model, config.intervention_model,
            a._load_options(), [p for p, _ in prompts], [f for _, f in prompts],
            cache=ArtifactCache(config.cache_dir, max_bytes=config.cache_max_bytes),
            executor=executor, base_model=a.models["base"],
            intervention_model=a.models["intervention"], plugin_manager_factory=pm_factory)
        return list(pair.base), list(pair.intervention)

    def diff(self, graphs: Sequence[tuple[CircuitGraph, CircuitGraph]]) -> CircuitDiff:
        models = self.models()
        base = [b for b, _ in graphs]
        inter = [i for _, i in graphs]
        return self.get_hooks().stage(
            "md_stage_diff", base_graphs=base, intervention_graphs=inter,
            base_model_id=models["base"].model_id,
            intervention_model_id=models["intervention"].model_id,
            dictionary_id=base[0].dictionary_id if base else None, answers=None)

    def pooled(self, diffs: CircuitDiff | Sequence[CircuitDiff]) -> CircuitDiff:
        """One diff over the prompts of ``diffs`` (systematic changes need several prompts):
        the graphs the views traced for them, diffed together."""
        if isinstance(diffs, CircuitDiff):
            return diffs
        diffs = list(diffs)
        if len(diffs) == 1:
            return diffs[0]
        prompts = _merge_diffs(diffs)
        return self.diff(self.trace(prompts))

    def interpretation_context(self) -> dict[str, Any]:
        explore, _ = self.universe()
        self.models()
        return self.analyzer.interpretation_context(explore)

    # -- validation ------------------------------------------------------------------------
    def validator(self) -> Any:
        """The analysis' validator when ``analyze()`` ran (its FDR stream continues), else
        one built exactly as ``analyze()`` builds it."""
        a = self.analyzer
        ran = getattr(a, "_causal_inputs", None)
        if ran is not None and self._validator is None:
            self._validator = ran[0]
            self._validator.ledger = None  # closed with the analysis; stage calls are not ledgered
        if self._validator is None:
            from md_framework.drivers import create_driver
            from builtin_plugins.pipeline.validation import Validator

            config, hooks = self.config(), self.get_hooks()
            models = self.models()
            stats = config.statistics
            metrics = {c.value.name: c.value for c in hooks.collect("md_behaviour_metrics")}
            fdr = create_driver("fdr_procedure", stats.procedure, stats.procedure_options,
                                alpha=stats.alpha)
            self._validator = Validator(
                models["base"], models["intervention"], metrics, fdr=fdr,
                paired_test=stats.paired_test, paired_test_options=stats.paired_test_options,
                min_effect_size=stats.min_effect_size, hooks=hooks, ledger=None)
        return self._validator

    def test_context(self, hypothesis: Hypothesis) -> Any:
        """The context ``analyze()`` gives test generators: the confirmation split, the
        features' held-out contexts, and every prompt a hypothesis may have been formed on
        excluded."""
        from builtin_plugins.pipeline.testgen import FeatureContextFinder
        from md_framework.runtime import TestGenerationContext

        explore, confirm = self.universe()
        models = self.models()
        if self._finder is None:
            self.interpretation_context()  # builds the analyzer's tracer driver once
            self._finder = FeatureContextFinder(self.analyzer._context_tracer,
                                                models["intervention"], confirm)
        held_out = self._finder.contexts_for(hypothesis)
        excluded = frozenset({p for ps in explore.values() for p in ps} | self.formed_from)
        return TestGenerationContext(
            universe={f: list(p) for f, p in confirm.items()},
            feature_contexts={k: [p for p in v if p not in excluded] for k, v in held_out.items()},
            excluded_prompts=excluded, seed=self.config().seed)


# --------------------------------------------------------------------------- views


class _View:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._s.analyzer!r}>"


class CircuitAnalyzer(_View):
    """Phase 1 of the design document: trace prompts on both models and diff the graphs by
    node identity (the analyzer's tracer driver, options and artefact cache)."""

    def analyze_prompt(self, prompt: str) -> CircuitDiff:
        """The diff of one prompt: ``prompt_diffs[0]`` holds its feature activation changes,
        edge (connection weight) changes and changed top paths."""
        return self._s.diff(self._s.trace([prompt]))

    def analyze_prompts(self, prompts: Sequence[str]) -> CircuitDiff:
        """One diff over ``prompts``: per-prompt diffs plus the systematic changes across
        them (what patterns are found in)."""
        if not prompts:
            raise ValueError("analyze_prompts needs at least one prompt")
        return self._s.diff(self._s.trace(list(prompts)))

    def analyze_prompts_parallel(self, prompts: Sequence[str], n_workers: int = 4
                                 ) -> list[CircuitDiff]:
        """One diff per prompt, traced by ``n_workers`` worker processes (the ``process``
        executor driver). Workers are started with ``fork`` where the platform has it, so a
        script without an ``if __name__ == "__main__":`` guard works; elsewhere (``spawn``)
        the guard is needed, as for any multiprocessing code. ``n_workers=1`` traces in
        this process."""
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        prompts = list(prompts)
        if n_workers == 1 or len(prompts) <= 1:
            graphs = self._s.trace(prompts)
        else:
            import multiprocessing

            from md_framework.drivers import create_driver

            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with create_driver("executor", "process",
                               {"n_workers": n_workers, "start_method": method,
                                "progress": False}) as executor:
                graphs = self._s.trace(prompts, executor=executor)
        return [self._s.diff([pair]) for pair in graphs]


class PatternRecognizer(_View):
    """Phase 2a: interpret the changed features and run every ``md_detect_patterns`` plugin
    (what ``analyze()`` does through :func:`builtin_plugins.pipeline.discovery.discover`)."""

    def identify_patterns(self, circuit_diff: CircuitDiff | Sequence[CircuitDiff],
                          interpretations: Mapping[str, Any] | None = None) -> list[Pattern]:
        """Patterns in ``circuit_diff`` (a diff, or several, pooled). Systematic patterns
        need changes across prompts: a one-prompt diff yields only what its single prompt
        shows (often nothing)."""
        from builtin_plugins.pipeline.discovery import (
            detect_patterns, features_to_interpret, interpret_features, normalise_interpretations,
        )

        s = self._s
        diff = s.pooled(circuit_diff)
        hooks = s.get_hooks()
        found = interpret_features(hooks, features_to_interpret(diff), s.interpretation_context())
        for key, items in normalise_interpretations(_normalised_labels(interpretations)).items():
            found.setdefault(key, []).extend(items)
        s.last_interpretations = found
        return detect_patterns(hooks, diff, found, s.config())


def _normalised_labels(labels: Any) -> Any:
    """``{"L10_F234": "..."}`` -> ``{"10:234": "..."}``; other forms unchanged."""
    if isinstance(labels, Mapping) and labels and all(isinstance(k, str) for k in labels):
        try:
            return {normalise_feature_key(k): v for k, v in labels.items()}
        except ValueError as exc:
            raise ConfigError(f"feature_interpretations: {exc}") from None
    return labels


class HypothesisGenerator(_View):
    """Phase 2b: every ``md_hypotheses_from_patterns`` template, then merge, rank (focus
    areas first), priority floor and cap, as in ``analyze()``
    (:func:`builtin_plugins.pipeline.discovery.hypotheses_to_test`)."""

    def generate_hypotheses(self, patterns: Sequence[Pattern],
                            feature_interpretations: Mapping[str, Any] | str | None = None
                            ) -> list[Hypothesis]:
        """Hypotheses from ``patterns``. ``feature_interpretations`` are your labels
        (``{"L10_F234": "refusal/safety features"}``, ``{"10:234": ...}``, a Neuronpedia
        export or a JSON path): they join the interpreters' readings, steer each template's
        choice of area (a "refusal" label makes a safety hypothesis) and are quoted in the
        description. A label for a feature no pattern contains cannot act and is reported
        with a warning."""
        from builtin_plugins.pipeline.discovery import (
            MIN_PRIORITY, hypotheses_to_test, normalise_interpretations,
        )

        s = self._s
        labels = normalise_interpretations(_normalised_labels(feature_interpretations))
        interpretations = {k: list(v) for k, v in getattr(s, "last_interpretations", {}).items()}
        for key, items in labels.items():
            interpretations[key] = [*items, *interpretations.get(key, [])]
        in_patterns = {f.key for p in patterns for f in p.features}
        unused = sorted(set(labels) - in_patterns)
        if unused:
            warnings.warn(
                f"feature_interpretations: {len(unused)} label(s) name features that no"
                f" pattern contains, so they cannot shape a hypothesis: {', '.join(unused[:8])}"
                f"{' ...' if len(unused) > 8 else ''} (pattern features:"
                f" {', '.join(sorted(in_patterns)[:8]) or 'none'})", stacklevel=2)
        hypotheses = hypotheses_to_test(patterns, interpretations, s.get_hooks(), s.config(),
                                        MIN_PRIORITY)
        return [_quote_labels(h, labels) for h in hypotheses]

    def generate_focused_hypotheses(self, circuit_differences: CircuitDiff | Sequence[CircuitDiff],
                                    focus_areas: Sequence[str] = (),
                                    feature_interpretations: Any = None) -> list[Hypothesis]:
        """Patterns of ``circuit_differences`` -> hypotheses with ``focus_areas`` first
        (and templates steered to them). Areas: config.FOCUS_AREAS, or a plugin's
        hypothesis type; an unknown area is an error with a did-you-mean."""
        from md_framework.config import config_from_mapping
        from builtin_plugins.pipeline.discovery import generate_focused_hypotheses

        s = self._s
        config = s.config()
        # validated like the config's own focus_areas (unknown areas are errors)
        checked = config_from_mapping({**config.model_dump(mode="json", by_alias=False),
                                       "focus_areas": list(focus_areas)}).focus_areas
        labels = _normalised_labels(feature_interpretations)
        return generate_focused_hypotheses(
            s.pooled(circuit_differences), checked, hooks=s.get_hooks(), config=config,
            feature_interpretations=labels, context=s.interpretation_context())


def _quote_labels(h: Hypothesis, labels: Mapping[str, Any]) -> Hypothesis:
    quoted = [f'{f.key} "{labels[f.key][0].description}"' for f in h.source_features
              if f.key in labels and labels[f.key] and labels[f.key][0].description]
    if not quoted:
        return h
    return h.model_copy(update={"description": f"{h.description} (labelled features: {'; '.join(quoted[:3])})",
                                "provenance": [*h.provenance, "user-labels"]})


class TestGeneratorStage(_View):
    """Phase 3a: test prompts from every ``md_generate_tests`` plugin, sampled across
    generators exactly as the analysis' test pool does, from held-out prompts only."""

    __test__ = False

    def generate_tests(self, hypothesis: Hypothesis, n_tests: int = 30) -> list[TestCase]:
        """``n_tests`` test cases for ``hypothesis``. When the sources hold fewer distinct
        held-out prompts, the ones there are are returned with a warning saying how many
        were wanted and where they came from."""
        from builtin_plugins.pipeline.testgen import NotEnoughTests, generate_tests

        s = self._s
        context = s.test_context(hypothesis)
        try:
            return generate_tests(hypothesis, n_tests, hooks=s.get_hooks(), context=context)
        except NotEnoughTests as exc:
            warnings.warn(str(exc), stacklevel=2)
            return generate_tests(hypothesis, n_tests, hooks=s.get_hooks(), context=context,
                                  allow_fewer=True)


class BehavioralValidator(_View):
    """Phase 3b: paired measurement on both models, the configured paired test, effect
    size with its interval, and one decision of the online FDR procedure."""

    @property
    def validator(self) -> Any:
        """The underlying :class:`~builtin_plugins.pipeline.validation.Validator`."""
        return self._s.validator()

    def validate_hypothesis(self, hypothesis: Hypothesis, test_cases: Sequence[TestCase]
                            ) -> ValidationResult:
        """Measure ``test_cases`` (their number is the pre-registered n), test, decide.
        A prompt the hypothesis was formed on is refused: its evidence would be circular."""
        from builtin_plugins.pipeline.testgen import normalise_prompt

        s = self._s
        formed = {normalise_prompt(p) for p in s.formed_from}
        explore, _ = s.universe()
        formed |= {normalise_prompt(p) for ps in explore.values() for p in ps}
        reused = [c.prompt for c in test_cases if normalise_prompt(c.prompt) in formed]
        if reused:
            raise ConfigError(
                f"{len(reused)} test prompt(s) were used to form hypotheses (traced or in the"
                f" explore split), e.g. {reused[0]!r}: confirm on held-out prompts"
                " (test_generator.generate_tests gives them)")
        v = s.validator()
        if any(r.hypothesis.id == hypothesis.id for r in v.results):
            raise ConfigError(
                f'hypothesis "{hypothesis.id}" was already decided in this online FDR stream;'
                " each hypothesis gets exactly one decision")
        result = v.validate(hypothesis, list(test_cases))
        (shown,) = answer_examples([result], v.metrics, s.models())
        return shown


def session_of(analyzer: Any) -> _Session:
    """The stage views' shared state for ``analyzer`` (one per analyzer)."""
    session = analyzer.__dict__.get("_md_design_session")
    if session is None:
        session = analyzer.__dict__["_md_design_session"] = _Session(analyzer)
    return session


_VIEWS: dict[str, type[_View]] = {
    "circuit_analyzer": CircuitAnalyzer, "pattern_recognizer": PatternRecognizer,
    "hypothesis_generator": HypothesisGenerator, "test_generator": TestGeneratorStage,
    "behavioral_validator": BehavioralValidator,
}


@hookimpl
def md_stage_views(run: Any, hooks: Any, view: str) -> _View | None:
    cls = _VIEWS.get(view)
    if cls is None:
        return None
    session = session_of(run)
    if session.hooks is None:  # the analyzer's runner: no second plugin manager for the views
        session.hooks = hooks
    return cls(session)


# --------------------------------------------------------------------------- explorer


class ActiveCircuitExplorer:
    """The design document's explorer: ``ActiveCircuitExplorer(analyzer, validator,
    strategy=ExplorationStrategy(method='ucb', exploration_weight=0.3)).explore(prompts,
    max_iterations=10)``.

    ``explore`` traces ``initial_prompts`` on both models, runs discovery on them (the
    analysis' interpreters, detectors and templates), then lets the strategy's bandit
    driver spend the config's query budget on the hypotheses for at most
    ``max_iterations`` rounds (:class:`builtin_plugins.pipeline.explorer.BudgetedExplorer`,
    one online FDR decision per hypothesis in a pre-registered order, in ``validator``'s
    FDR stream). Returns the validated results; all results are in :attr:`last_result`.
    """

    def __init__(self, analyzer: Any, validator: Any = None, strategy: Any = None) -> None:
        from md_framework.config import ExplorationStrategy

        self.analyzer = analyzer
        self.validator = validator if validator is not None else analyzer.behavioral_validator
        self.strategy = strategy if strategy is not None else ExplorationStrategy(
            **analyzer.config.exploration.model_dump())
        self.last_result: Any = None

    def explore(self, initial_prompts: Sequence[str], max_iterations: int = 10
                ) -> list[ValidationResult]:
        from md_framework.drivers import create_driver
        from builtin_plugins.pipeline.discovery import discover
        from builtin_plugins.pipeline.explorer import BudgetedExplorer
        from builtin_plugins.pipeline.testgen import TestPool

        if max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        prompts = list(initial_prompts)
        if not prompts:
            raise ValueError("explore needs initial prompts")
        s = session_of(self.analyzer)
        config = s.config()
        diff = self.analyzer.circuit_analyzer.analyze_prompts(prompts)
        _, _, hypotheses = discover(diff, s.get_hooks(), config, s.interpretation_context())
        v = self.validator.validator if hasattr(self.validator, "validate_hypothesis") else self.validator
        decided = {r.hypothesis.id for r in v.results}
        hypotheses = [h for h in hypotheses if h.id not in decided]
        strategy = self.strategy
        bandit = create_driver("bandit_strategy", strategy.method, {
            k: val for k, val in {"exploration_weight": strategy.exploration_weight,
                                  "diversity_weight": strategy.diversity_weight,
                                  **strategy.method_options}.items()
            if k in _bandit_fields(strategy.method) or k in strategy.method_options})
        pool = TestPool(s.get_hooks(), s.test_context, config.n_test_prompts_per_hypothesis)

        class Bounded(BudgetedExplorer):
            def _round(self, index: int) -> bool:
                if index >= max_iterations:
                    self.hit_limit = True
                    return False
                return super()._round(index)

        explorer = Bounded(hypotheses, v, bandit, pool, budget=v.queries + strategy.query_budget,
                           batch_size=strategy.batch_size, cases_per_pull=strategy.cases_per_pull,
                           reward=strategy.reward,
                           n_per_hypothesis=config.n_test_prompts_per_hypothesis)
        explorer.hit_limit = False
        first = len(v.results)
        result = explorer.run()
        result.results = result.results[first:]
        if explorer.hit_limit:
            result.stopped = f"max_iterations ({max_iterations}) reached"
        for r in result.results:
            note = result.notes.get(r.hypothesis.id)
            if note:
                note = note.replace("no active arms", result.stopped)
                r.notes = [*r.notes, note]
        self.last_result = result
        return [r for r in result.results if r.decision]


def _bandit_fields(method: str) -> set[str]:
    from md_framework.drivers import load_driver_class

    return set(getattr(load_driver_class("bandit_strategy", method).Options, "model_fields", {}))
