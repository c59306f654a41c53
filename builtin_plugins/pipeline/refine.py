"""Explore around a validated hypothesis: split it by family, and retrace its families.

Called by :class:`~builtin_plugins.pipeline.explorer.BudgetedExplorer` each time a
hypothesis is validated (its ``on_validated`` callback), within the run's query budget and a
cap on new hypotheses. Two moves, both producing ordinary hypotheses that join the end of
the online FDR decision order (each is decided once, with its own test level):

* **split** – a hypothesis naming several families becomes one hypothesis per family, so the
  report says *where* the change lives rather than "somewhere in these families";
* **retrace** – more discovery prompts of its families (explore split, not yet traced) are
  traced on both models; the graph diff and discovery are rerun on the seed graphs plus these,
  and hypotheses about the same families that discovery had not proposed are added (e.g. a
  second behaviour the same features drive).

Children are confirmed on held-out prompts of their own families that their parent's test
did not use (the parent's decision was made on those, so reusing them would test a
hypothesis on the data that selected it); the analyzer excludes the parent's prompts. A
child is one more decision but not one more discovery when it lies inside its validated
parent's unit (:meth:`md_framework.types.AnalysisReport.discoveries`): it says where the
parent's change lives. A child whose unit (families, metric, direction) was already proposed
is not added: one decision per unit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from md_framework.hookspecs import hookimpl
from md_framework.types import CircuitGraph, Hypothesis, ValidationResult

Key = tuple[str, str, tuple[str, ...]]


def hypothesis_key(h: Hypothesis) -> Key:
    """The decision unit (metric, direction, families): the hypothesis type is a label, not
    a different claim, when metric, direction and prompts coincide."""
    return (h.metric, h.direction, tuple(sorted(set(h.families))))


class Refiner:
    """The ``on_validated`` callback of one analysis.

    ``trace`` maps (prompt, family) pairs to (base graphs, intervention graphs);
    ``rediscover`` maps those two graph lists to hypotheses; ``explore`` is the discovery
    split of the universe and ``traced`` the prompts already traced.
    """

    def __init__(
        self,
        *,
        explore: Mapping[str, Sequence[str]],
        traced: Sequence[tuple[str, str]],
        graphs: tuple[list[CircuitGraph], list[CircuitGraph]],
        trace: Callable[[Sequence[tuple[str, str]]], tuple[list[CircuitGraph], list[CircuitGraph]]],
        rediscover: Callable[[list[CircuitGraph], list[CircuitGraph]], list[Hypothesis]],
        prompts_per_family: int = 4,
    ) -> None:
        self.explore = explore
        self.traced = {prompt for prompt, _ in traced}
        self.base_graphs, self.intervention_graphs = list(graphs[0]), list(graphs[1])
        self._trace = trace
        self._rediscover = rediscover
        self.prompts_per_family = prompts_per_family
        self.parents: dict[str, str] = {}
        self.traced_prompts = 0  # extra prompts traced here (each on both models)
        self._seen: set[Key] = set()

    def __call__(self, result: ValidationResult, explorer: Any) -> list[Hypothesis]:
        parent = result.hypothesis
        self._seen |= {hypothesis_key(h) for h in explorer.order}
        children = self._split(parent) + self._retrace(parent)
        fresh = []
        for child in children:
            key = hypothesis_key(child)
            if key in self._seen:
                continue
            self._seen.add(key)
            self.parents[child.id] = parent.id
            fresh.append(child)
        return fresh

    def _split(self, parent: Hypothesis) -> list[Hypothesis]:
        if len(parent.families) < 2:
            return []
        return [
            parent.model_copy(update={
                "id": f"{parent.id}/split:{family}",
                "families": [family],
                "description": f"{parent.description} [split of {parent.id}: '{family}' alone]",
                "priority": parent.priority * 0.9,
                "provenance": [*parent.provenance, "refine:split"],
                "source_patterns": [*parent.source_patterns, parent.id],
            })
            for family in parent.families
        ]

    def _retrace(self, parent: Hypothesis) -> list[Hypothesis]:
        new_prompts = [
            (prompt, family)
            for family in parent.families
            for prompt in [p for p in self.explore.get(family, []) if p not in self.traced][
                : self.prompts_per_family]
        ]
        if not new_prompts:
            return []
        base, intervention = self._trace(new_prompts)
        self.traced |= {prompt for prompt, _ in new_prompts}
        self.traced_prompts += len(new_prompts)
        self.base_graphs += base
        self.intervention_graphs += intervention
        families = set(parent.families)
        found = []
        for h in self._rediscover(self.base_graphs, self.intervention_graphs):
            if h.families and set(h.families) <= families:
                found.append(h.model_copy(update={
                    "id": f"{parent.id}/retrace:{h.id}",
                    "provenance": [*h.provenance, "refine:retrace"],
                    "source_patterns": [*h.source_patterns, parent.id],
                }))
        return found


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_refiner(run: Any, hooks: Any, explore: Mapping[str, Sequence[str]],
                     seeds: Sequence[tuple[str, str]]) -> Refiner:
    """The refiner of ``run``: diff and discovery go through their stage hooks, so a
    replaced diff or discovery plugin refines too."""
    base, intervention = run.models["base"], run.models["intervention"]

    def rediscover(base_graphs: list[CircuitGraph], intervention_graphs: list[CircuitGraph]
                   ) -> list[Hypothesis]:
        diff = hooks.stage("md_stage_diff", base_graphs=base_graphs,
                           intervention_graphs=intervention_graphs, base_model_id=base.model_id,
                           intervention_model_id=intervention.model_id,
                           dictionary_id=base_graphs[0].dictionary_id if base_graphs else None,
                           answers=None)
        found = hooks.stage("md_stage_discover", hooks=hooks, diff=diff, config=run.config,
                            context=run.interpretation_context(explore))[2]
        if getattr(run, "_causal_inputs", None):  # the validator of this run
            run.add_derived_metrics(hooks, found, run._causal_inputs[0].metrics)
        return found

    return Refiner(
        explore=explore, traced=seeds, graphs=run.graphs,
        trace=lambda prompts: run.trace(prompts, keep=False), rediscover=rediscover,
        prompts_per_family=run.config.exploration.refine_prompts_per_family,
    )
