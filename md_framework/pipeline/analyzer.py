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
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from md_framework.cache_files import write_text_atomic
from md_framework.config import AnalysisConfig, ResolvedConfig, load_config, resolve_config
from md_framework.costs import StageWork
from md_framework.errors import ConfigError, did_you_mean
from md_framework.plugins import Hooks, MDPluginManager, get_plugin_manager
from md_framework.run_dir import holds_run_dir, save_graph_pair
from md_framework.pipeline.defaults import answer_examples, apply_default_universe
from md_framework.runtime import (  # check_pair_compatible: re-exported for callers
    InterpretationContext,
    LoadedModel,
    ModelLoadOptions,
    check_pair_compatible,
)
from md_framework.types import (
    AnalysisReport,
    CircuitDiff,
    CircuitGraph,
    Costs,
    Hypothesis,
    ScreenSummary,
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


def thin_families(explore: Mapping[str, Sequence[str]], seeds: Sequence[tuple[str, str]]) -> list[str]:
    """Families with at least 2 exploration prompts of which fewer than 2 were drawn as
    seeds, sorted."""
    drawn = Counter(f for _, f in seeds)
    return sorted(f for f, p in explore.items() if len(p) >= 2 and drawn[f] < 2)


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


class MechanisticBehavioralAnalyzer:
    """Runs one analysis described by an :class:`AnalysisConfig` (or a config file path).

    ``run_dir`` holds the ledger and the report (``report.json``, ``summary.txt`` and what
    report plugins add); without it nothing is written and a crash cannot be resumed.
    ``resume`` continues the run recorded in ``run_dir``. ``plugin_manager`` injects a
    manager (tests); ``progress`` receives ``(phase, message)`` lines. The design document's
    stage objects (``circuit_analyzer``, ``pattern_recognizer``, ``hypothesis_generator``,
    ``test_generator``, ``behavioral_validator``) come from the ``md_stage_views`` hook
    (builtin: the ``design-stages`` plugin).

    This class is the analysis protocol: it orders the stages, calls hooks and drivers and
    writes the ledger and the report. Every algorithm is a plugin's ``md_stage_*`` hook
    implementation (docs/architecture.md).
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

    # ------------------------------------------------------------------ stage views
    def _stage_view(self, name: str) -> Any:
        views = self.__dict__.setdefault("_md_design_views", {})
        if name not in views:
            hooks = self.__dict__.get("_md_view_hooks")
            if hooks is None:
                hooks = self.__dict__["_md_view_hooks"] = self._hooks()
            views[name] = hooks.stage("md_stage_views", run=self, hooks=hooks, view=name)
        return views[name]

    @property
    def circuit_analyzer(self) -> Any:
        """Trace prompts on both models and diff them (design document, phase 1)."""
        return self._stage_view("circuit_analyzer")

    @property
    def pattern_recognizer(self) -> Any:
        """Interpret changed features and detect patterns (phase 2a)."""
        return self._stage_view("pattern_recognizer")

    @property
    def hypothesis_generator(self) -> Any:
        """Hypotheses from patterns, merged, ranked and capped (phase 2b)."""
        return self._stage_view("hypothesis_generator")

    @property
    def test_generator(self) -> Any:
        """Held-out test prompts for a hypothesis (phase 3a)."""
        return self._stage_view("test_generator")

    @property
    def behavioral_validator(self) -> Any:
        """Paired measurement, test and one online FDR decision (phase 3b)."""
        return self._stage_view("behavioral_validator")

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
        """Two-stage tracing's first stage (``md_stage_screen``; builtin: the ``screen``
        plugin): the cheap screen tracer on every seed prompt, the detectors over its diff
        (with the answer traces), and the seed prompts that get attribution graphs. A tracer
        without a dictionary is its own screen: every seed prompt is kept."""
        from md_framework.drivers import create_driver

        config = self.config
        main = create_driver("tracer", config.tracer, self._tracer_options())
        if not getattr(main, "needs_dictionary", True) or config.screen_tracer == config.tracer:
            why = f"tracer {config.tracer} has no dictionary: it is its own screen"
            self.progress("screen", f"two-stage tracing skipped ({why})")
            self.screen_result = ScreenSummary(chosen=list(seeds), patterns=[f"skipped: {why}"])
            return list(seeds)
        started = time.perf_counter()
        self.progress("screen", f"screening {len(seeds)} prompts with {config.screen_tracer}")
        sb, si = self.trace(seeds, keep=False, tracer=config.screen_tracer, tracer_options={})
        base, intervention = self.models["base"], self.models["intervention"]
        screen_diff = hooks.stage("md_stage_diff", base_graphs=sb, intervention_graphs=si,
                                  base_model_id=base.model_id,
                                  intervention_model_id=intervention.model_id,
                                  dictionary_id=None, answers=answers)
        patterns = hooks.stage("md_stage_patterns", hooks=hooks, diff=screen_diff,
                               interpretations={}, config=config)
        flagged, chosen, checks = hooks.stage("md_stage_screen", seeds=list(seeds),
                                              patterns=patterns,
                                              check_prompts=config.screen_check_prompts,
                                              seed=config.seed,
                                              max_families=config.screen_max_families,
                                              prompts_per_family=config.screen_prompts_per_family)
        self.screen_result = ScreenSummary(flagged=list(flagged), chosen=list(chosen),
                                           checks=list(checks), patterns=[p.id for p in patterns],
                                           seconds=time.perf_counter() - started)
        self.progress("screen", f"flagged {', '.join(flagged) or 'no family'}: attribution graphs"
                                f" for {len(chosen)} of {len(seeds)} prompts ({len(checks)} checks)")
        return list(chosen)

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

    def interpretation_context(self, explore: Mapping[str, Sequence[str]]) -> InterpretationContext:
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
        return InterpretationContext.of(context)

    @holds_run_dir  # one writer per run directory, checked before any model loads
    def analyze(self) -> AnalysisReport:
        started = time.perf_counter()
        config = self.config
        self.resolved = resolve_config(config)  # every name and option, before any model loads
        # no universe given: the documented default, or an error before any model loads
        config = self.config = apply_default_universe(config)
        hooks = self._hooks()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        hooks.call("md_run_started", config=config, run_dir=self.run_dir)

        stage_work = StageWork()
        stage_work.enter("load")
        self.progress("load", f"loading {config.base_model.source} and {config.intervention_model.source}")
        if config.universe.default_used:
            self.progress("universe", f"no universe given; using the default: {config.universe.default_used}")
        self.universe = build_universe(config, hooks)
        base, intervention = self.load_models(hooks)

        explore, confirm = hooks.stage("md_stage_split_universe", universe=self.universe,
                                       explore_fraction=config.explore_fraction, seed=config.seed)
        seeds = seed_prompts(explore, config.n_seed_prompts, config.seed)
        thin = thin_families(explore, seeds)
        if thin:
            # a family contrast needs >= 2 prompts per family (Welch's t in the graph diff);
            # at 192 families the default 96 seeds found nothing, without a word
            need = sum(min(2, len(p)) for p in explore.values())
            msg = (f"{len(thin)} of {len(explore)} families get fewer than 2 traced seed prompts "
                   f"(n_seed_prompts={config.n_seed_prompts}; e.g. {', '.join(thin[:3])}): a change "
                   f"confined to one of them cannot show as a family change. Raise n_seed_prompts "
                   f"to at least {need}.")
            warnings.warn(msg, stacklevel=2)
            self.progress("trace", msg)
        short = sorted(len(p) for p in confirm.values() if len(p) < config.n_test_prompts_per_hypothesis)
        if short:
            # a family claim is confirmed on its own held-out prompts only (smollm2-style's
            # sign-off went untested at 8 of 16 asked, reason "not enough tests")
            held = f"{short[0]}" if short[0] == short[-1] else f"{short[0]}-{short[-1]}"
            self.progress("universe", f"{len(short)} of {len(confirm)} families hold {held} "
                          f"held-out prompts, fewer than n_test_prompts_per_hypothesis="
                          f"{config.n_test_prompts_per_hypothesis}: their hypotheses are tested on "
                          "those alone (a larger universe, or a lower explore_fraction, gives more)")
        stage_work.enter("trace")
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
        diff = hooks.stage("md_stage_diff", base_graphs=base_graphs,
                           intervention_graphs=intervention_graphs, base_model_id=base.model_id,
                           intervention_model_id=intervention.model_id,
                           dictionary_id=base_graphs[0].dictionary_id if base_graphs else None,
                           answers=answers)
        self.diff = diff
        hooks.call("md_phase_finished", phase="diff",
                   summary={"systematic_changes": len(diff.systematic_changes)})

        stage_work.enter("discover")
        self.progress("discover", "interpreting features, detecting patterns, forming hypotheses")
        found = hooks.stage("md_stage_discover", hooks=hooks, diff=diff, config=config,
                            context=self.interpretation_context(explore))
        interpretations, patterns, hypotheses = found.interpretations, found.patterns, found.hypotheses
        hooks.call("md_phase_finished", phase="hypotheses",
                   summary={"patterns": len(patterns), "hypotheses": len(hypotheses),
                            "dropped": len(found.dropped),
                            "unregistered_pattern_types": found.unregistered_pattern_types})

        stage_work.enter("validate")
        self.progress("validate", f"validating {len(hypotheses)} hypotheses on held-out prompts")
        refiner = (hooks.stage("md_stage_refiner", run=self, hooks=hooks, explore=explore,
                               seeds=traced) if config.exploration.refine else None)
        exploration = hooks.stage("md_stage_validate", run=self, hooks=hooks,
                                  hypotheses=hypotheses, explore=explore, confirm=confirm,
                                  interpretations=interpretations, refiner=refiner)
        self.exploration = exploration

        # --- causal confirmation (docs/causal.md): only for tracers with the optional
        # FeatureIntervener capability; fills ValidationResult.causal_share -----------------
        if config.causal_confirmation:
            stage_work.enter("causal")
            self.progress("causal", "intervening on the features of validated hypotheses")
            hooks.stage("md_stage_causal", run=self, hooks=hooks, exploration=exploration)
        # ------------------------------------------------------------------------------------
        # both models' answers on the examples shown (display only, not evidence)
        stage_work.enter("examples")
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
                                                         for t in answers or []),
                        tokens_by_stage=stage_work.tokens()),
            circuit_diff=diff,
            fdr_trace=exploration.fdr_trace,
            bandit_rounds=exploration.rounds,
            interpretations=interpretations,
            stage_providers=dict(hooks.stage_providers),
        )
        self.write_report(report, hooks)
        return report

    def metrics(self, hooks: Hooks, hypotheses: Sequence[Hypothesis]) -> dict[str, Any]:
        """Every registered behaviour metric, plus those ``hypotheses`` name that
        ``md_metric_from_name`` builds (:meth:`add_derived_metrics`)."""
        metrics = {c.value.name: c.value for c in hooks.collect("md_behaviour_metrics")}
        self.add_derived_metrics(hooks, hypotheses, metrics)
        return metrics

    @staticmethod
    def add_derived_metrics(hooks: Hooks | None, hypotheses: Sequence[Hypothesis],
                            metrics: dict[str, Any]) -> list[str]:
        """Add to ``metrics`` the metrics hypotheses name that no plugin registered, built
        from their names through ``md_metric_from_name`` (``signoff:<phrase>``,
        ``exact_match:<phrase>``: metrics made from what the diff saw). Returns the names
        added; names no plugin builds stay missing (the validator reports them with a
        did-you-mean)."""
        if hooks is None:
            return []
        added = []
        for h in hypotheses:
            if h.metric in metrics:
                continue
            found = hooks.first("md_metric_from_name", name=h.metric)
            metric = found.value if found is not None else None
            if metric is not None and getattr(metric, "name", None) == h.metric:
                metrics[h.metric] = metric
                added.append(h.metric)
        return added

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
