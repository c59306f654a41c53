"""The end-to-end analysis: ``MechanisticBehavioralAnalyzer(config).analyze()``.

Stages (docs/architecture.md): resolve config → load and check the model pair → build the
prompt universe and split it (explore / confirm) → trace the explore prompts on both
models → diff by node identity → interpret, detect patterns, generate hypotheses → validate
hypotheses on held-out prompts with a bandit under online FDR → report.

Everything the run decides is written to a ledger in ``run_dir`` before it is acted on,
so ``resume=True`` continues a crashed run without re-querying models or re-spending α.
"""

from __future__ import annotations

import functools
import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from md_framework.cache_files import write_text_atomic
from md_framework.config import AnalysisConfig, ResolvedConfig, load_config, resolve_config
from md_framework.errors import ConfigError, did_you_mean
from md_framework.plugins import Hooks, MDPluginManager, get_plugin_manager
from md_framework.run_dir import holds_run_dir, save_graph_pair
from md_framework.stages import DesignStages, answer_examples, apply_default_universe
from md_framework.runtime import (  # check_pair_compatible: re-exported for callers
    LoadedModel,
    ModelLoadOptions,
    TestGenerationContext,
    check_pair_compatible,
)
from md_framework.types import (
    AnalysisReport,
    CircuitDiff,
    CircuitGraph,
    Costs,
    FeatureInterpretation,
    Hypothesis,
)

Progress = Callable[[str, str], None]


def _quiet(phase: str, message: str) -> None:
    return None


def set_torch_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (config ``threads``; default half the cores, at most 8).

    Imports torch only when it is installed; the kernel itself never needs it.
    """
    n = threads or max(1, min(8, (os.cpu_count() or 2) // 2))
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        import torch
    except ImportError:
        return n
    torch.set_num_threads(n)
    return n


def build_universe(config: AnalysisConfig, hooks: Hooks) -> dict[str, list[str]]:
    """Families from config: inline, named generators, and an organism's universe."""
    settings = config.universe
    families: dict[str, list[str]] = {k: list(v) for k, v in settings.families.items()}
    if settings.generators:
        generators = {c.value.name: c.value for c in hooks.collect("md_prompt_family_generators")}
        for family, name in settings.generators.items():
            if name not in generators:
                raise ConfigError(
                    f'universe.generators.{family}: unknown prompt-family generator "{name}".'
                    f"{did_you_mean(name, generators)} Available: {', '.join(sorted(generators)) or '(none)'}"
                )
            families[family] = list(generators[name].generate(settings.n_per_family, config.seed))
    if settings.organism:
        found = hooks.first("md_load_universe", source=settings.organism,
                            n_per_family=settings.n_per_family, seed=config.seed)
        if found is None:
            raise ConfigError(
                f'universe.organism: no plugin recognised "{settings.organism}"'
                " (is the organisms plugin installed and the path right?)"
            )
        for family, prompts in found.value.items():
            families.setdefault(family, list(prompts))
    if not families:
        raise ConfigError(
            "universe: no prompt families. Give universe.families (inline prompts),"
            " universe.generators (named generators) or universe.organism (a spec)."
        )
    empty = sorted(name for name, prompts in families.items() if not prompts)
    if empty:
        raise ConfigError(f"universe: families with no prompts: {', '.join(empty)}")
    return families


def seed_prompts(explore: Mapping[str, Sequence[str]], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (prompt, family) pairs drawn round-robin across families, deterministically."""
    rng = random.Random(f"seed-prompts:{seed}")
    queues = {f: rng.sample(list(p), len(p)) for f, p in sorted(explore.items()) if p}
    chosen: list[tuple[str, str]] = []
    while len(chosen) < n and any(queues.values()):
        for family in sorted(queues):
            if queues[family] and len(chosen) < n:
                chosen.append((queues[family].pop(), family))
    return chosen


def load_user_interpretations(value: dict[str, str] | str | None) -> Any:
    if value is None or isinstance(value, dict):
        return value
    path = Path(value)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"feature_interpretations: file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"feature_interpretations: {path} is not valid JSON: {exc}") from None


class MechanisticBehavioralAnalyzer(DesignStages):
    """Runs one analysis described by an :class:`AnalysisConfig` (or a config file path).

    ``run_dir`` holds the ledger and the report (``report.json``, ``summary.txt`` and what
    report plugins add); without it nothing is written and a crash cannot be resumed.
    ``resume`` continues the run recorded in ``run_dir``. ``plugin_manager`` injects a
    manager (tests); ``progress`` receives ``(phase, message)`` lines. The design document's
    stage objects (``circuit_analyzer``, ``pattern_recognizer``, ``hypothesis_generator``,
    ``test_generator``, ``behavioral_validator``) come from :mod:`md_framework.stages`.
    """

    def __init__(
        self,
        config: AnalysisConfig | str | Path,
        *,
        run_dir: str | Path | None = None,
        resume: bool = False,
        plugin_manager: MDPluginManager | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config if isinstance(config, AnalysisConfig) else load_config(config)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        if resume and self.run_dir is None:
            raise ConfigError("resume needs the run directory of the interrupted run")
        self._pm = plugin_manager
        self.progress = progress or _quiet
        self.resolved: ResolvedConfig | None = None
        self.models: dict[str, LoadedModel] = {}
        self.universe: dict[str, list[str]] = {}
        self.graphs: tuple[list[CircuitGraph], list[CircuitGraph]] = ([], [])
        self.diff: CircuitDiff | None = None
        self._context_tracer: Any = None

    # ------------------------------------------------------------------ set-up
    def _hooks(self) -> Hooks:
        config = self.config
        pm = self._pm or get_plugin_manager(blocked=config.plugins.disable,
                                            enabled=config.plugins.enable)
        return Hooks(pm, on_error=config.plugins.on_hook_error)

    def _load_options(self) -> ModelLoadOptions:
        c = self.config
        return ModelLoadOptions(device=c.device, dtype=c.dtype, quantization=c.quantization,
                                cache_dir=c.cache_dir)

    def _tracer_options(self) -> dict[str, Any]:
        options = dict(self.config.tracer_options)
        if self.config.transcoder_set and "transcoders" not in options:
            options["transcoders"] = self.config.transcoder_set
        return options

    def _fingerprint(self) -> dict[str, Any]:
        # with the default universe filled in, as analyze() records it: the run-dir check
        # runs before analyze() applies it, and a resumed run must match what was stored
        config = apply_default_universe(self.config)
        return {"seed": config.seed, "config": config.model_dump(mode="json")}

    # ------------------------------------------------------------------ stages
    def load_models(self, hooks: Hooks) -> tuple[LoadedModel, LoadedModel]:
        from md_framework.tracing import load_model

        set_torch_threads(self.config.threads)
        options = self._load_options()
        base = load_model(self.config.base_model, options, hooks.pm)
        intervention = load_model(self.config.intervention_model, options, hooks.pm)
        check_pair_compatible(base, intervention)
        self.models = {"base": base, "intervention": intervention}
        return base, intervention

    def trace(self, prompts: Sequence[tuple[str, str]], *, keep: bool = True,
              tracer: str | None = None, tracer_options: dict[str, Any] | None = None
              ) -> tuple[list[CircuitGraph], list[CircuitGraph]]:
        from md_framework.cache import ArtifactCache
        from md_framework.drivers import create_driver
        from md_framework.tracing import trace_pair

        config = self.config
        cache = ArtifactCache(config.cache_dir, max_bytes=config.cache_max_bytes)
        executor = create_driver("executor", config.executor, config.executor_options)
        # workers in other processes rebuild the plugin manager: give them this run's
        # enable/disable lists (a partial of a module-level function pickles)
        pm_factory = functools.partial(get_plugin_manager, blocked=tuple(config.plugins.disable),
                                       enabled=config.plugins.enable)
        try:
            pair = trace_pair(
                tracer or config.tracer,
                self._tracer_options() if tracer is None else dict(tracer_options or {}),
                config.base_model,
                config.intervention_model, self._load_options(),
                [p for p, _ in prompts], [f for _, f in prompts], cache=cache, executor=executor,
                base_model=self.models["base"], intervention_model=self.models["intervention"],
                plugin_manager_factory=pm_factory,
            )
        finally:
            executor.close()
        base_graphs, intervention_graphs = list(pair.base), list(pair.intervention)
        if keep:
            self.trace_stats = {"base": pair.base.stats.as_dict(),
                                "intervention": pair.intervention.stats.as_dict()}
            self.graphs = (base_graphs, intervention_graphs)
        return base_graphs, intervention_graphs

    def screen(self, seeds: Sequence[tuple[str, str]], answers: Sequence[Any] | None,
               hooks: Hooks) -> list[tuple[str, str]]:
        """Two-stage tracing's first stage (:mod:`md_framework.pipeline.screen`): the cheap
        screen tracer on every seed prompt, the builtin detectors over its diff (with the
        answer traces), and the seed prompts that get attribution graphs. A tracer without a
        dictionary is its own screen: every seed prompt is kept."""
        from md_framework.drivers import create_driver
        from md_framework.pipeline.diff import diff_graph_sets
        from md_framework.pipeline.discovery import detect_patterns
        from md_framework.pipeline.screen import ScreenResult, choose_prompts, flagged_families

        config = self.config
        main = create_driver("tracer", config.tracer, self._tracer_options())
        if not getattr(main, "needs_dictionary", True) or config.screen_tracer == config.tracer:
            why = f"tracer {config.tracer} has no dictionary: it is its own screen"
            self.progress("screen", f"two-stage tracing skipped ({why})")
            self.screen_result = ScreenResult([], list(seeds), [], [f"skipped: {why}"])
            return list(seeds)
        started = time.perf_counter()
        self.progress("screen", f"screening {len(seeds)} prompts with {config.screen_tracer}")
        sb, si = self.trace(seeds, keep=False, tracer=config.screen_tracer, tracer_options={})
        base, intervention = self.models["base"], self.models["intervention"]
        screen_diff = diff_graph_sets(sb, si, base.model_id, intervention.model_id,
                                      answers=answers)
        patterns = detect_patterns(hooks, screen_diff, {}, config)
        flagged = flagged_families(patterns)
        chosen, checks = choose_prompts(seeds, flagged, config.screen_check_prompts, config.seed)
        self.screen_result = ScreenResult(flagged, chosen, checks, [p.id for p in patterns],
                                          time.perf_counter() - started)
        self.progress("screen", f"flagged {', '.join(flagged) or 'no family'}: attribution graphs"
                                f" for {len(chosen)} of {len(seeds)} prompts ({len(checks)} checks)")
        return chosen

    def trace_answers(self, prompts: Sequence[tuple[str, str]]) -> list[Any] | None:
        """Answer-aware traces of ``prompts`` (both models' greedy answers teacher-forced
        through both), when the tracer has the ``trace_answers`` capability."""
        from md_framework.cache import ArtifactCache
        from md_framework.drivers import create_driver
        from md_framework.tracing import trace_answer_pairs

        if self._context_tracer is None:
            self._context_tracer = create_driver("tracer", self.config.tracer, self._tracer_options())
        cache = ArtifactCache(self.config.cache_dir, max_bytes=self.config.cache_max_bytes)
        self.progress("trace", f"tracing {len(prompts)} prompts with both models' answers")
        return trace_answer_pairs(
            self._context_tracer, self.models["base"], self.models["intervention"],
            [p for p, _ in prompts], [f for _, f in prompts], cache,
            max_new_tokens=int(os.environ.get("MD_METRIC_MAX_NEW_TOKENS", "24")))

    def interpretation_context(self, explore: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        from md_framework.drivers import create_driver

        context: dict[str, Any] = {
            "models": dict(self.models),
            "corpus": {f: list(p) for f, p in explore.items()},
            "config": self.config,
        }
        # the tracer driver was already built and used for tracing: its creation cannot fail
        # here, and interpreters use it to compute feature activations when it can. Built once:
        # refinement asks for this context again, and a tracer may hold a loaded dictionary.
        if self._context_tracer is None:
            self._context_tracer = create_driver("tracer", self.config.tracer, self._tracer_options())
        if self.config.interpret_activations:
            context["tracer"] = self._context_tracer
            # read on the intervention model: a feature that appeared with the fine-tuning
            # is silent on the base model, so it would get no contexts there
            context["activation_role"] = "intervention"
            if callable(getattr(self._context_tracer, "decoder_directions", None)):
                tracer, model = self._context_tracer, self.models["intervention"]
                context["decoder_directions"] = lambda features: tracer.decoder_directions(model, features)
        user = load_user_interpretations(self.config.feature_interpretations)
        if user:
            context["user_interpretations"] = user
        return context

    @holds_run_dir  # one writer per run directory, checked before any model loads
    def analyze(self) -> AnalysisReport:
        from md_framework.pipeline.diff import diff_graph_sets
        from md_framework.pipeline.discovery import discover_stage
        from md_framework.pipeline.testgen import split_universe

        started = time.perf_counter()
        config = self.config
        self.resolved = resolve_config(config)  # every name and option, before any model loads
        # no universe given: the documented default, or an error before any model loads
        config = self.config = apply_default_universe(config)
        hooks = self._hooks()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        hooks.call("md_run_started", config=config, run_dir=self.run_dir)

        self.progress("load", f"loading {config.base_model.source} and {config.intervention_model.source}")
        if config.universe.default_used:
            self.progress("universe", f"no universe given; using the default: {config.universe.default_used}")
        self.universe = build_universe(config, hooks)
        base, intervention = self.load_models(hooks)

        explore, confirm = split_universe(self.universe, config.explore_fraction, config.seed)
        seeds = seed_prompts(explore, config.n_seed_prompts, config.seed)
        self.progress("trace", f"tracing {len(seeds)} prompts from {len(explore)} families on both models")
        answers = self.trace_answers(seeds) if config.trace_answers else None
        traced = seeds
        self.screen_result = None
        if config.two_stage_tracing:
            traced = self.screen(seeds, answers, hooks)
        base_graphs, intervention_graphs = self.trace(traced)
        if len(traced) < len(seeds) and answers is not None:
            keep = set(traced)
            answers = [t for t, s in zip(answers, seeds) if s in keep]
        hooks.call("md_phase_finished", phase="trace",
                   summary={"prompts": len(seeds), "families": sorted({f for _, f in seeds})})

        self.progress("diff", "diffing graphs by node identity")
        diff = diff_graph_sets(base_graphs, intervention_graphs, base.model_id,
                               intervention.model_id,
                               dictionary_id=base_graphs[0].dictionary_id if base_graphs else None,
                               answers=answers)
        self.diff = diff
        hooks.call("md_phase_finished", phase="diff",
                   summary={"systematic_changes": len(diff.systematic_changes)})

        self.progress("discover", "interpreting features, detecting patterns, forming hypotheses")
        found = discover_stage(diff, hooks, config, self.interpretation_context(explore))
        interpretations, patterns, hypotheses = found.interpretations, found.patterns, found.hypotheses
        hooks.call("md_phase_finished", phase="hypotheses",
                   summary={"patterns": len(patterns), "hypotheses": len(hypotheses),
                            "dropped": len(found.dropped),
                            "unregistered_pattern_types": found.unregistered_pattern_types})

        self.progress("validate", f"validating {len(hypotheses)} hypotheses on held-out prompts")
        refiner = self.refiner(hooks, explore, traced) if config.exploration.refine else None
        exploration = self.validate(hypotheses, hooks, explore, confirm, interpretations, refiner)
        self.exploration = exploration

        # --- causal confirmation (docs/causal.md): only for tracers with the optional
        # FeatureIntervener capability; fills ValidationResult.causal_share -----------------
        if config.causal_confirmation:
            from md_framework.pipeline.causal import run_in_analyzer

            self.progress("causal", "intervening on the features of validated hypotheses")
            run_in_analyzer(self, exploration, hooks)
        # ------------------------------------------------------------------------------------
        # both models' answers on the examples shown (display only, not evidence)
        exploration.results = answer_examples(exploration.results, self._causal_inputs[0].metrics,
                                              self.models)

        report = AnalysisReport(
            config=config.model_dump(mode="json"),
            base_model_id=base.model_id,
            intervention_model_id=intervention.model_id,
            circuit_statistics={
                **self.circuit_statistics(diff, base_graphs, intervention_graphs),
                **({"two_stage": self.screen_result.summary(len(seeds))}
                   if self.screen_result is not None else {})},
            patterns=patterns,
            hypotheses=exploration.hypotheses,  # with the refinements, in decision order
            dropped_hypotheses=found.dropped,
            unregistered_pattern_types=found.unregistered_pattern_types,
            validation_results=exploration.results,
            costs=Costs(behaviour_queries=exploration.queries,
                        selection_forward_passes=self._selection_finder.forward_passes,
                        traced_prompts=2 * (len(traced) + (refiner.traced_prompts if refiner else 0)),
                        wall_time_s=time.perf_counter() - started,
                        answer_generated_tokens=sum(t.generated_tokens for t in answers or []),
                        answer_teacher_forced_tokens=sum(t.teacher_forced_tokens
                                                         for t in answers or [])),
            circuit_diff=diff,
            fdr_trace=exploration.fdr_trace,
            bandit_rounds=exploration.rounds,
            interpretations=interpretations,
        )
        self.write_report(report, hooks)
        return report

    def validate(
        self,
        hypotheses: Sequence[Hypothesis],
        hooks: Hooks,
        explore: Mapping[str, Sequence[str]],
        confirm: Mapping[str, Sequence[str]],
        interpretations: Mapping[str, list[FeatureInterpretation]],
        refiner: Any = None,
    ) -> Any:
        from md_framework.drivers import create_driver
        from md_framework.pipeline.explorer import ActiveCircuitExplorer
        from md_framework.pipeline.ledger import Ledger
        from md_framework.pipeline.testgen import FeatureContextFinder, TestPool
        from md_framework.pipeline.validation import Validator

        config, stats = self.config, self.config.statistics
        assert self.resolved is not None
        metrics = {c.value.name: c.value for c in hooks.collect("md_behaviour_metrics")}
        from md_framework.pipeline.discovery import add_derived_metrics

        add_derived_metrics(hooks, hypotheses, metrics)
        ledger = Ledger(self.run_dir, self._fingerprint()) if self.run_dir is not None else None
        if ledger is not None:  # readings of other weights are never reused
            ledger.bind_models(base=self.models["base"].model_id,
                               intervention=self.models["intervention"].model_id)
        fdr = create_driver("fdr_procedure", stats.procedure, stats.procedure_options,
                            alpha=stats.alpha)
        validator = Validator(
            self.models["base"], self.models["intervention"], metrics, fdr=fdr,
            paired_test=stats.paired_test, paired_test_options=stats.paired_test_options,
            min_effect_size=stats.min_effect_size, hooks=hooks, ledger=ledger,
        )
        formed_from = frozenset(p for prompts in explore.values() for p in prompts)
        # feature-driven tests (hypotheses naming no family only): confirmation-split prompts
        # where each feature fires most on the *base* model, a pre-treatment choice
        # (interpretation contexts were read on the intervention model: never test prompts)
        finder = FeatureContextFinder(self._context_tracer, self.models["base"], confirm)
        self._selection_finder = finder

        def context_for(hypothesis: Hypothesis) -> TestGenerationContext:
            feature_contexts = finder.contexts_for(hypothesis)
            excluded = formed_from
            parent_id = refiner.parents.get(hypothesis.id) if refiner is not None else None
            if parent_id is not None:  # a refinement is never confirmed on its parent's prompts
                parent = next(h for h in explorer.order if h.id == parent_id)
                excluded = excluded | {c.prompt for c in pool.tests_for(parent)}
            return TestGenerationContext(
                universe={f: list(p) for f, p in confirm.items()},
                feature_contexts=feature_contexts, excluded_prompts=excluded,
                seed=config.seed,
            )

        pool = TestPool(hooks, context_for, config.n_test_prompts_per_hypothesis)
        bandit = create_driver("bandit_strategy", config.exploration.method,
                               self.resolved.drivers["bandit_strategy"].options)
        explorer = ActiveCircuitExplorer(
            hypotheses, validator, bandit, pool, budget=config.exploration.query_budget,
            batch_size=config.exploration.batch_size,
            cases_per_pull=config.exploration.cases_per_pull, reward=config.exploration.reward,
            n_per_hypothesis=config.n_test_prompts_per_hypothesis,
            on_validated=refiner, max_new_hypotheses=config.exploration.max_new_hypotheses,
        )
        self._causal_inputs = (validator, pool)  # causal confirmation: metrics, used prompts
        try:
            result = explorer.run()
            validator.finish("validate", {"selection_forward_passes": finder.forward_passes})
            for shortfall_id, text in pool.shortfalls.items():
                result.notes.setdefault(shortfall_id, text)
            result.results = [
                r.model_copy(update={"notes": [*r.notes, result.notes[r.hypothesis.id]]})
                if r.hypothesis.id in result.notes else r
                for r in result.results
            ]
            return result
        finally:
            if ledger is not None:
                ledger.close()

    def refiner(self, hooks: Hooks, explore: Mapping[str, Sequence[str]],
                seeds: Sequence[tuple[str, str]]) -> Any:
        from md_framework.pipeline.diff import diff_graph_sets
        from md_framework.pipeline.discovery import add_derived_metrics, discover
        from md_framework.pipeline.refine import Refiner

        base, intervention = self.models["base"], self.models["intervention"]

        def rediscover(base_graphs: list[CircuitGraph], intervention_graphs: list[CircuitGraph]
                       ) -> list[Hypothesis]:
            diff = diff_graph_sets(base_graphs, intervention_graphs, base.model_id,
                                   intervention.model_id,
                                   dictionary_id=base_graphs[0].dictionary_id if base_graphs else None)
            found = discover(diff, hooks, self.config, self.interpretation_context(explore))[2]
            if getattr(self, "_causal_inputs", None):  # the validator of this run
                add_derived_metrics(hooks, found, self._causal_inputs[0].metrics)
            return found

        return Refiner(
            explore=explore, traced=seeds, graphs=self.graphs,
            trace=lambda prompts: self.trace(prompts, keep=False), rediscover=rediscover,
            prompts_per_family=self.config.exploration.refine_prompts_per_family,
        )

    @staticmethod
    def circuit_statistics(diff: CircuitDiff, base_graphs: Sequence[CircuitGraph],
                           intervention_graphs: Sequence[CircuitGraph]) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        def faith(graphs: Sequence[CircuitGraph], field: str) -> float | None:
            return mean([v for g in graphs if (v := getattr(g.faithfulness, field)) is not None])

        significant = [c for c in diff.systematic_changes
                       if c.q_value is not None and c.q_value <= 0.1]
        return {
            "traced_prompts": len(base_graphs),
            "mean_feature_nodes_base": mean([len(g.feature_nodes()) for g in base_graphs]),
            "mean_feature_nodes_intervention": mean([len(g.feature_nodes()) for g in intervention_graphs]),
            "mean_replacement_score_base": faith(base_graphs, "replacement_score"),
            "mean_replacement_score_intervention": faith(intervention_graphs, "replacement_score"),
            "mean_error_node_share_base": faith(base_graphs, "error_node_share"),
            "systematic_changes": len(diff.systematic_changes),
            "significant_changes_q10": len(significant),
            "increased": sum(1 for c in significant if c.mean_delta > 0),
            "decreased": sum(1 for c in significant if c.mean_delta < 0),
        }

    def save_example_graphs(self, report: AnalysisReport, limit: int = 6) -> list[str]:
        """Keep one traced prompt's base and intervention graphs per family a hypothesis
        names (validated ones first) as ``graphs/<family>.{base,intervention}.json``; report
        plugins export them for circuit-tracer's viewer."""
        assert self.run_dir is not None
        base_graphs, intervention_graphs = self.graphs
        by_family = {}
        for b, i in zip(base_graphs, intervention_graphs):
            by_family.setdefault(b.family, (b, i))
        ordered = sorted(report.validation_results, key=lambda r: not r.decision)
        families = [f for r in ordered for f in r.hypothesis.families]
        saved: list[str] = []
        for family in dict.fromkeys(families):
            if family in by_family and len(saved) < limit:
                save_graph_pair(*by_family[family], self.run_dir, family)
                saved.append(family)
        return saved

    def write_report(self, report: AnalysisReport, hooks: Hooks) -> None:
        if self.run_dir is not None:
            self.save_example_graphs(report)
            write_text_atomic(self.run_dir / "report.json", report.model_dump_json(indent=2))
            write_text_atomic(self.run_dir / "summary.txt", report.summary_text() + "\n")
        hooks.call("md_report_ready", report=report, out_dir=self.run_dir)
