"""The validation stage (``md_stage_validate``): held-out test pooling, paired measurement
with one online FDR decision per unit, and the bandit choosing what to sample next.

Assembles :class:`~builtin_plugins.pipeline.validation.Validator` (paired tests, the
configured online FDR procedure: SAFFRON by default, Ramdas et al. 2018),
:class:`~builtin_plugins.pipeline.testgen.TestPool` (held-out prompts only) and
:class:`~builtin_plugins.pipeline.explorer.BudgetedExplorer` (pre-registered decision
order, the bandit driver spending the query budget). Registered as the essential
``validation`` plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from md_framework.drivers import create_driver
from md_framework.hookspecs import hookimpl
from md_framework.pipeline.ledger import Ledger
from md_framework.runtime import TestGenerationContext
from md_framework.types import FeatureInterpretation, Hypothesis


@hookimpl
def md_stage_validate(run: Any, hooks: Any, hypotheses: Sequence[Hypothesis],
                      explore: Mapping[str, Sequence[str]], confirm: Mapping[str, Sequence[str]],
                      interpretations: Mapping[str, list[FeatureInterpretation]],
                      refiner: Any) -> Any:
    from builtin_plugins.pipeline.explorer import BudgetedExplorer
    from builtin_plugins.pipeline.testgen import FeatureContextFinder, TestPool
    from builtin_plugins.pipeline.validation import Validator

    config, stats = run.config, run.config.statistics
    assert run.resolved is not None
    metrics = run.metrics(hooks, hypotheses)
    ledger = Ledger(run.run_dir, run._fingerprint()) if run.run_dir is not None else None
    if ledger is not None:  # readings of other weights are never reused
        ledger.bind_models(base=run.models["base"].model_id,
                           intervention=run.models["intervention"].model_id)
    fdr = create_driver("fdr_procedure", stats.procedure, stats.procedure_options, alpha=stats.alpha)
    validator = Validator(
        run.models["base"], run.models["intervention"], metrics, fdr=fdr,
        paired_test=stats.paired_test, paired_test_options=stats.paired_test_options,
        min_effect_size=stats.min_effect_size, hooks=hooks, ledger=ledger,
    )
    formed_from = frozenset(p for prompts in explore.values() for p in prompts)
    # feature-driven tests (hypotheses naming no family only): confirmation-split prompts
    # where each feature fires most on the *base* model, a pre-treatment choice
    # (interpretation contexts were read on the intervention model: never test prompts)
    finder = FeatureContextFinder(run._context_tracer, run.models["base"], confirm)
    run._selection_finder = finder

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
                           run.resolved.drivers["bandit_strategy"].options)
    explorer = BudgetedExplorer(
        hypotheses, validator, bandit, pool, budget=config.exploration.query_budget,
        batch_size=config.exploration.batch_size,
        cases_per_pull=config.exploration.cases_per_pull, reward=config.exploration.reward,
        n_per_hypothesis=config.n_test_prompts_per_hypothesis,
        on_validated=refiner, max_new_hypotheses=config.exploration.max_new_hypotheses,
    )
    run._causal_inputs = (validator, pool)  # causal confirmation: metrics, used prompts
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
