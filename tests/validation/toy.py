"""Fake models, metrics and a toy validation/exploration run (no real model).

Used by the tests in this directory and by ``benchmarks/crash_resume.py``. Run as a script
(``python tests/validation/toy.py RUN_DIR --seed S [--crash-after K]``) it performs one toy
exploration with a ledger in RUN_DIR and prints the decisions as JSON; with ``--crash-after K``
it SIGKILLs itself right before (``--crash-phase before_commit``) or right after
(``after_commit``) its K-th row-changing ledger commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from md_framework.runtime import LoadedModel, MetricReading, ModelSpec
from md_framework.types import Hypothesis, TestCase


def fake_model(model_id: str) -> LoadedModel:
    return LoadedModel(model=None, tokenizer=None, model_id=model_id, spec=ModelSpec(source="toy"))


def _u(*parts: object) -> float:
    """A uniform(0, 1) number from a hash of ``parts`` (deterministic across processes)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return (int.from_bytes(h[:8], "big") + 0.5) / 2.0**64


def _normal(*parts: object) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(_u(*parts))


class HashMetric:
    """A BehaviourMetric whose value is a hash of (model, prompt) plus a planted shift.

    ``mode="identical"``: the value depends on the prompt only (a model paired with itself).
    ``mode="noise"``: i.i.d. per (model_id, prompt) noise around a prompt effect (a null).
    The intervention model (``shift_model``) gets ``+shift`` on cases whose family is in
    ``shifted_families``. ``outcome`` continuous / bounded ([0, 1] through a logistic) /
    binary (value > 0.5). Every query can be appended to ``log_path`` (crash tests).
    """

    description = "toy hashed metric"
    kind = "scored"

    def __init__(self, name: str = "toy_metric", *, outcome: str = "continuous",
                 mode: str = "noise", shift: float = 0.0, shifted_families: Sequence[str] = (),
                 shift_model: str = "intervention", log_path: str | None = None) -> None:
        self.name = name
        self.outcome = outcome
        self.bounds = (0.0, 1.0) if outcome in ("bounded", "binary") else None
        self.serves = frozenset({"style_change", "safety_degradation", "capability_loss"})
        self.mode = mode
        self.shift = shift
        self.shifted_families = set(shifted_families)
        self.shift_model = shift_model
        self.log_path = log_path
        self.calls = 0

    def value(self, model_id: str, case: TestCase) -> float:
        prompt_effect = _normal("prompt", case.prompt)
        noise = 0.0 if self.mode == "identical" else _normal("noise", model_id, case.prompt)
        x = 0.5 * prompt_effect + noise
        if model_id == self.shift_model and case.family in self.shifted_families:
            x += self.shift
        if self.outcome == "bounded":
            return 1.0 / (1.0 + math.exp(-x))
        if self.outcome == "binary":
            return 1.0 if x > 0.0 else 0.0
        return x

    def measure(self, model: LoadedModel, cases: Sequence[TestCase]) -> list[MetricReading]:
        self.calls += len(cases)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                for c in cases:
                    fh.write(f"{model.model_id}\t{self.name}\t{c.id}\n")
        return [MetricReading(value=self.value(model.model_id, c), output=f"out:{c.prompt[:20]}")
                for c in cases]


class PairHashMetric(HashMetric):
    """:class:`HashMetric` with the optional ``measure_pair``: both models at once, in one
    call (``pair_calls`` counts them); ``measure`` must then never be called. Each query is
    logged (``log_path``) like HashMetric's, base lines first."""

    def measure(self, model: LoadedModel, cases: Sequence[TestCase]) -> list[MetricReading]:
        raise AssertionError("the validator must use measure_pair")

    def measure_pair(self, base: LoadedModel, intervention: LoadedModel,
                     cases: Sequence[TestCase]) -> tuple[list[MetricReading], list[MetricReading]]:
        self.pair_calls = getattr(self, "pair_calls", 0) + 1
        return (HashMetric.measure(self, base, cases), HashMetric.measure(self, intervention, cases))


def hypotheses(n: int, *, metric: str = "toy_metric", planted: Sequence[int] = (),
               direction: str = "change") -> list[Hypothesis]:
    """``n`` hypotheses, hypothesis i naming family ``fam<i>``."""
    return [Hypothesis(id=f"h{i:03d}", hypothesis_type="style_change",
                       description=f"toy hypothesis {i}" + (" (planted)" if i in planted else ""),
                       metric=metric, direction=direction, families=[f"fam{i}"])
            for i in range(n)]


def test_source(n_per: int):
    def tests_for(h: Hypothesis) -> list[TestCase]:
        fam = h.families[0] if h.families else None
        return [TestCase(id=f"{h.id}/t/{k}", hypothesis_id=h.id, prompt=f"{fam} prompt {k}",
                         family=fam) for k in range(n_per)]
    return tests_for


test_source.__test__ = False  # type: ignore[attr-defined]


def run_toy(run_dir: str | Path | None, *, seed: int = 0, n_hypotheses: int = 10,
            planted: Sequence[int] = (1, 4, 7), shift: float = 2.0, n_per: int = 40,
            budget: int = 1200, batch_size: int = 3, cases_per_pull: int = 4,
            paired_test: str = "betting-e", procedure: str = "saffron", outcome: str = "bounded",
            fault_hook=None, log_path: str | None = None, on_validated=None,
            pair: bool = False):
    from md_framework.drivers import create_driver
    from builtin_plugins.pipeline.explorer import BudgetedExplorer
    from md_framework.pipeline.ledger import Ledger
    from builtin_plugins.pipeline.validation import Validator

    metric = (PairHashMetric if pair else HashMetric)(
        outcome=outcome, shift=shift, shifted_families=[f"fam{i}" for i in planted],
        log_path=log_path)
    ledger = None
    if run_dir is not None:
        fingerprint: dict = {"seed": seed, "toy": [n_hypotheses, list(planted), shift, n_per,
                                                   budget, paired_test, procedure]}
        if pair:
            fingerprint["pair"] = True
        ledger = Ledger(run_dir, fingerprint, fault_hook=fault_hook)
    fdr = create_driver("fdr_procedure", procedure, {}, alpha=0.1)
    validator = Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                          paired_test=paired_test, ledger=ledger, min_effect_size=0.2)
    explorer = BudgetedExplorer(
        hypotheses(n_hypotheses, planted=planted), validator, None, test_source(n_per),
        budget=budget, batch_size=batch_size, cases_per_pull=cases_per_pull,
        on_validated=on_validated)
    result = explorer.run()
    return result, ledger


def killer(after: int, phase: str = "before_commit"):
    """A ledger fault hook that SIGKILLs this process at its ``after``-th row-changing
    commit, right before (``before_commit``: the transaction is lost) or right after it."""
    count = {"n": 0}

    def hook(where: str) -> None:
        if where != phase:
            return
        count["n"] += 1
        if count["n"] >= after:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--crash-phase", default="before_commit")
    parser.add_argument("--n-hypotheses", type=int, default=10)
    parser.add_argument("--n-per", type=int, default=40)
    parser.add_argument("--budget", type=int, default=1200)
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    hook = killer(args.crash_after, args.crash_phase) if args.crash_after else None
    result, ledger = run_toy(args.run_dir, seed=args.seed, n_hypotheses=args.n_hypotheses,
                             n_per=args.n_per, budget=args.budget, fault_hook=hook,
                             log_path=args.log)
    print(json.dumps({"decisions": result.decisions(), "queries": result.queries,
                      "fresh_queries": result.fresh_queries}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
