"""Active exploration: a bandit spends the behavioural query budget on the hypotheses whose
evidence is forming, and decisions go to the online FDR procedure in a pre-registered order.

Loop (one *round*):

1. the bandit strategy selects up to ``batch_size`` active arms (arms are hypotheses; each
   arm's embedding is a hashed one-hot of its prompt families, so diversity-aware strategies
   spread pulls across families);
2. each pulled hypothesis gets its next ``cases_per_pull`` test cases (prefixes of the fixed,
   seeded list from the test source), measured on both models by the :class:`Validator`
   (2 queries per case, counted against ``budget``);
3. the reward credited to the pulled arm is derived from the change in its evidence
   (``reward``: ``evidence`` = the gain in log E (or -log p) relative to log(1 / alpha);
   ``information_gain`` = the change of pi = sigmoid(log E - log threshold), a proxy for the
   probability the hypothesis will be rejected; ``uncertainty`` = 1 - |2 pi - 1|, largest
   when the decision is still open);
4. arms whose evidence is final (an anytime test crossed its threshold, or the planned n was
   reached) are deactivated;
5. the round, the rewards and the bandit's state are written to the ledger;
6. decisions: hypotheses are decided in the **pre-registered order** (the order given to the
   constructor, then hypotheses added by ``on_validated`` in the order they were added). A
   hypothesis whose evidence is final waits until every hypothesis before it is decided.
   So hypothesis i always gets FDR index i, whatever the bandit did: the order of the online
   FDR stream is fixed before any data is seen, each hypothesis is decided exactly once, when
   its evidence is final, and the test level of hypothesis i depends only on the decisions
   of hypotheses 1..i-1 -- the setting in which online FDR procedures are proved valid.
   The bandit changes only *how many* pairs anytime-valid tests get (which their validity
   allows) and *when* fixed-n tests reach their fixed n; a fixed-n test that the budget
   leaves short of its n is fed as p = 1.

One decision per unit (family, metric, direction): a hypothesis naming several families is
entered as one hypothesis per family (:func:`per_family`; a claim "changed on F and G" tested
on a mix of F and G prompts says neither where the change is nor that it holds on each, and a
changed family would lend its effect to an unchanged one), and a hypothesis whose unit (see
:func:`~builtin_plugins.pipeline.validation.unit_of`) is already in the decision order is not
added (the same claim tested on the same prompts twice would spend alpha twice and count one
finding as two); the note of the kept hypothesis names it.

When the budget is spent every undecided hypothesis is finalised and decided, in order.
``on_validated(result, explorer)`` may return new hypotheses (refinements or splits in the
validated one's family); they join the arms and the end of the decision order, within the
same total budget.

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from md_framework.stats_api import ArmState, BanditStrategy
from md_framework.types import BanditRound, DecisionRecord, Hypothesis, TestCase, ValidationResult

__all__ = ["BudgetedExplorer", "ExplorationResult", "RoundRobinBandit", "family_embedding",
           "per_family"]

RewardKind = Literal["evidence", "information_gain", "uncertainty"]


def per_family(hypothesis: Hypothesis) -> list[Hypothesis]:
    """One hypothesis per family of ``hypothesis`` (itself when it names at most one); ids
    ``<id>@<family>``, in the order the families are named."""
    families = list(dict.fromkeys(hypothesis.families))
    if len(families) < 2:
        return [hypothesis]
    return [
        hypothesis.model_copy(update={
            "id": f"{hypothesis.id}@{family}",
            "families": [family],
            "description": _one_family_description(hypothesis.description, families, family),
            "provenance": [*hypothesis.provenance, f"unit:{hypothesis.id}"],
        })
        for family in families
    ]


def _one_family_description(description: str, families: Sequence[str], family: str) -> str:
    """The parent's description with its claim narrowed to ``family`` (the templates name the
    families as ``'a', 'b' prompts``), so a per-family decision never reads as a claim about
    the parent's families; the evidence ("because ...") is kept as the parent saw it."""
    quoted = ", ".join(f"'{f}'" for f in families)
    narrowed = description.replace(f"{quoted} prompts", f"'{family}' prompts", 1)
    if narrowed == description:
        narrowed = f"On '{family}' prompts: {description}"
    return (f"{narrowed} [tested on '{family}' alone: one decision per family of a"
            f" {len(families)}-family hypothesis]")


def family_embedding(families: Sequence[str], dim: int = 16) -> list[float]:
    """A hashed one-hot of the families (process-independent), unit length."""
    vec = [0.0] * dim
    for family in families or ["(none)"]:
        vec[int(hashlib.sha1(family.encode()).hexdigest(), 16) % dim] = 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class RoundRobinBandit(BanditStrategy):
    """Deterministic fallback strategy: pulls the active arms with the fewest pulls first
    (ties in registration order). No randomness; used when no strategy is given."""

    description = "round robin over active arms (fallback, deterministic)"
    name = "round-robin"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._arms: dict[str, ArmState] = {}

    def add_arm(self, arm_id: str, embedding: Sequence[float] | None = None) -> None:
        if arm_id in self._arms:
            raise ValueError(f"arm {arm_id!r} already registered")
        self._arms[arm_id] = ArmState(arm_id=arm_id, embedding=list(embedding or []))

    def deactivate_arm(self, arm_id: str) -> None:
        self._arms[arm_id].active = False

    def arms(self) -> list[ArmState]:
        return list(self._arms.values())

    def select(self, k: int = 1) -> list[str]:
        active = [(a.pulls, i, a.arm_id) for i, a in enumerate(self._arms.values()) if a.active]
        return [arm for _, _, arm in sorted(active)[:k]]

    def update(self, arm_id: str, reward: float) -> None:
        arm = self._arms[arm_id]
        arm.pulls += 1
        arm.reward_sum += reward
        arm.reward_sq_sum += reward * reward

    def state(self) -> dict[str, Any]:
        return {"strategy": "round-robin", "arms": [a.model_dump() for a in self._arms.values()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RoundRobinBandit:
        bandit = cls()
        for arm in state["arms"]:
            bandit._arms[arm["arm_id"]] = ArmState.model_validate(arm)
        return bandit


@dataclass
class ExplorationResult:
    results: list[ValidationResult]
    fdr_trace: list[DecisionRecord]
    rounds: list[BanditRound]
    hypotheses: list[Hypothesis]
    queries: int
    fresh_queries: int
    stopped: str
    notes: dict[str, str] = field(default_factory=dict)

    def decisions(self) -> dict[str, bool]:
        return {r.hypothesis.id: r.decision for r in self.results}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


class BudgetedExplorer:
    """Bandit-driven validation of ``hypotheses`` within a query ``budget``.

    ``validator`` – a :class:`~builtin_plugins.pipeline.validation.Validator` (holds the models,
    metrics, paired test, FDR procedure, hooks and ledger); ``bandit`` – a
    :class:`BanditStrategy` (``create_driver("bandit_strategy", name, options)``; default
    :class:`RoundRobinBandit`); ``test_source`` – a
    :class:`~builtin_plugins.pipeline.testgen.TestPool` (``tests_for(h)``) or a callable
    ``h -> list[TestCase]``; ``budget`` – total behavioural queries (2 per test case);
    ``batch_size`` – arms pulled per round; ``cases_per_pull`` – test cases per pull;
    ``n_per_hypothesis`` – pre-registered n (cap) per hypothesis; ``reward`` – see the module
    docstring; ``on_validated`` – ``(result, explorer) -> list[Hypothesis] | None``;
    ``max_new_hypotheses`` – cap on hypotheses added by ``on_validated``; ``progress`` –
    ``(round, queries, budget) -> None``.
    """

    def __init__(
        self,
        hypotheses: Sequence[Hypothesis],
        validator: Any,
        bandit: BanditStrategy | None = None,
        test_source: Any = None,
        *,
        budget: int,
        batch_size: int = 4,
        cases_per_pull: int = 5,
        n_per_hypothesis: int | None = None,
        reward: RewardKind = "evidence",
        on_validated: Callable[[ValidationResult, BudgetedExplorer],
                               Sequence[Hypothesis] | None] | None = None,
        max_new_hypotheses: int = 10,
        progress: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if test_source is None:
            raise ValueError("test_source is required (a TestPool or a callable)")
        if reward not in ("evidence", "information_gain", "uncertainty"):
            raise ValueError(f"unknown reward {reward!r}")
        if budget < 0 or batch_size < 1 or cases_per_pull < 1:
            raise ValueError("budget >= 0, batch_size >= 1 and cases_per_pull >= 1 required")
        self.validator = validator
        self.bandit = bandit if bandit is not None else RoundRobinBandit()
        self.test_source = test_source
        self.budget = int(budget)
        self.batch_size = batch_size
        self.cases_per_pull = cases_per_pull
        self.n_per_hypothesis = n_per_hypothesis
        self.reward = reward
        self.on_validated = on_validated
        self.max_new_hypotheses = max_new_hypotheses
        self.progress = progress
        self.order: list[Hypothesis] = []
        self._tests: dict[str, list[TestCase]] = {}
        self._next_decision = 0
        self._new_count = 0
        self.rounds: list[BanditRound] = []
        self.notes: dict[str, str] = {}
        self.units: dict[str, str] = {}  # unit -> id of the hypothesis deciding it
        self.merged: dict[str, str] = {}  # hypothesis id -> id of the one deciding its unit
        self.parents: dict[str, str] = {}  # refinement id -> the validated parent's id
        for h in hypotheses:
            self.add_hypothesis(h)

    # ------------------------------------------------------------------ arms
    def _tests_for(self, h: Hypothesis) -> list[TestCase]:
        src = self.test_source
        tests = src.tests_for(h) if hasattr(src, "tests_for") else list(src(h))
        if self.n_per_hypothesis is not None:
            tests = tests[:self.n_per_hypothesis]
        return list(tests)

    def add_hypothesis(self, hypothesis: Hypothesis) -> None:
        """Add an arm per family of ``hypothesis`` and append them to the decision order."""
        for unit_hypothesis in per_family(hypothesis):
            self._add_unit(unit_hypothesis)

    def _add_unit(self, hypothesis: Hypothesis) -> None:
        if hypothesis.id in self._tests:
            raise ValueError(f"hypothesis {hypothesis.id!r} is already being explored")
        from builtin_plugins.pipeline.validation import unit_of

        unit = unit_of(hypothesis)
        if unit in self.units:
            kept = self.units[unit]
            self.merged[hypothesis.id] = kept
            self.notes[f"{kept}#merged"] = ", ".join(
                k for k, v in self.merged.items() if v == kept)
            return
        self.units[unit] = hypothesis.id
        tests = self._tests_for(hypothesis)
        self._tests[hypothesis.id] = tests
        self.validator.begin(hypothesis, len(tests), wanted=self.n_per_hypothesis)
        self.order.append(hypothesis)
        self.bandit.add_arm(hypothesis.id, family_embedding(hypothesis.families))
        if not tests:
            self.validator.add_batch(hypothesis.id, [])  # n = 0: final at once (p = 1)
            self.bandit.deactivate_arm(hypothesis.id)

    @property
    def remaining_budget(self) -> int:
        return self.budget - self.validator.queries

    def _threshold_log(self) -> float:
        v = self.validator
        threshold = v.stop_threshold if v.stop_threshold is not None else 1.0 / float(v.fdr.alpha)
        return math.log(max(threshold, 1.0 + 1e-9))

    def _reward(self, before: float, after: float) -> float:
        t = self._threshold_log()
        if self.reward == "evidence":
            return max(0.0, min(1.0, (after - before) / t))
        pi_before, pi_after = _sigmoid(before - t), _sigmoid(after - t)
        if self.reward == "information_gain":
            return abs(pi_after - pi_before)
        return 1.0 - abs(2.0 * pi_after - 1.0)

    # ------------------------------------------------------------------ decisions
    def _decide_ready(self) -> None:
        v = self.validator
        while self._next_decision < len(self.order):
            h = self.order[self._next_decision]
            if not v.evidence[h.id].final:
                return
            result = v.decide(h.id)
            self._next_decision += 1
            if result.decision and self.on_validated is not None:
                for new in self.on_validated(result, self) or []:
                    if self._new_count >= self.max_new_hypotheses:
                        self.notes["on_validated"] = (
                            f"cap of {self.max_new_hypotheses} new hypotheses reached")
                        break
                    if new.id in self._tests or new.id in self.merged:
                        continue
                    self._new_count += 1
                    for unit_hypothesis in per_family(new):
                        self.parents.setdefault(unit_hypothesis.id, result.hypothesis.id)
                    self.add_hypothesis(new)

    # ------------------------------------------------------------------ loop
    def _round(self, index: int) -> bool:
        v = self.validator
        ledger = v.ledger
        pulled = self.bandit.select(self.batch_size)
        if not pulled:
            return False
        rewards: dict[str, float] = {}
        start = v.queries
        actually = []
        for arm in pulled:
            ev = v.evidence[arm]
            room = min(self.cases_per_pull, ev.n_planned - ev.n, self.remaining_budget // 2)
            if room <= 0:
                if ev.n < ev.n_planned and not ev.final:
                    v.finalize(arm)
                    self.bandit.deactivate_arm(arm)
                continue
            before = ev.log_evidence
            cases = self._tests[arm][ev.n:ev.n + room]
            position = next(i for i, h in enumerate(self.order) if h.id == arm)
            v.add_batch(arm, cases, ahead=max(0, position - self._next_decision))
            rewards[arm] = self._reward(before, ev.log_evidence)
            self.bandit.update(arm, rewards[arm])
            actually.append(arm)
            if ev.final:
                self.bandit.deactivate_arm(arm)
        record = BanditRound(round=index, pulled=actually, rewards=rewards,
                             queries=v.queries - start)
        if ledger is not None:
            recorded = ledger.bandit_round(index)
            if recorded is not None:
                info, state = recorded
                if info["pulled"] != actually:
                    from md_framework.pipeline.ledger import LedgerMismatchError

                    raise LedgerMismatchError(
                        f"resumed run pulled {actually} in round {index}, the ledger recorded"
                        f" {info['pulled']} (changed config, seed or plugins?)")
                self.bandit = type(self.bandit).from_state(state)
            else:
                ledger.record_bandit_round(index, actually, rewards, record.queries,
                                           self.bandit.state())
        self.rounds.append(record)
        if self.progress is not None:
            self.progress(index, v.queries, self.budget)
        return bool(actually)

    def run(self) -> ExplorationResult:
        """Explore until every hypothesis is decided or the budget is spent."""
        from md_framework.pipeline.ledger import RunInterrupted

        v = self.validator
        stopped = "all decided"
        try:
            self._decide_ready()
            index = len(self.rounds)
            while self._next_decision < len(self.order):
                if self.remaining_budget < 2:
                    stopped = "query budget spent"
                    break
                if not self._round(index):
                    stopped = "no active arms"
                    break
                index += 1
                self._decide_ready()
            for h in self.order[self._next_decision:]:
                v.finalize(h.id, stopped)
            self._decide_ready()  # may add hypotheses via on_validated: they are decided too
            while self._next_decision < len(self.order):
                for h in self.order[self._next_decision:]:
                    v.finalize(h.id, stopped)
                self._decide_ready()
        except KeyboardInterrupt:
            raise RunInterrupted(v.ledger.run_dir if v.ledger is not None else None) from None
        for h in self.order:
            note = v.evidence[h.id].note
            merged = self.notes.pop(f"{h.id}#merged", "")
            if merged:
                note = "; ".join(x for x in (note, "also decides the same unit for: " + merged) if x)
            if note:
                self.notes[h.id] = note
        results = [r.model_copy(update={"refines": self.parents[r.hypothesis.id]})
                   if r.hypothesis.id in self.parents else r for r in v.results]
        return ExplorationResult(
            results=results, fdr_trace=list(v.fdr_trace), rounds=list(self.rounds),
            hypotheses=list(self.order), queries=v.queries, fresh_queries=v.fresh_queries,
            stopped=stopped, notes=dict(self.notes),
        )
