"""Targeted validation: paired evidence -> paired test / e-process -> effect size -> one
online FDR decision per hypothesis.

Protocol (details and the reasons in ``docs/validation.md``):

1. The hypothesis' metric is measured on both models for each test case (one behavioural
   query per case per model). Readings go to the run ledger before they are used; a resumed
   run takes recorded readings from the ledger instead of querying again. A metric with the
   optional ``measure_pair(base, intervention, cases)`` (``PairedBehaviourMetric``: e.g. a
   base-anchored reference answer) is measured on both models at once; it still counts two
   queries per case, both readings are recorded under their model ids before use, and a
   pair is measured again only when either side is missing from the ledger.
2. Evidence arrives in batches. After each batch the paired test is run on all pairs so
   far, with the alternative given by the hypothesis' direction (``increase`` -> ``greater``
   for intervention - base, ``decrease`` -> ``less``, ``change`` -> ``two-sided``). Practical
   relevance is part of the null: the test is of H0 "the effect is at most the metric's
   ``min_change`` in the hypothesised direction" (:class:`~builtin_plugins.pipeline.evidence.RelevanceTest`:
   the test on D - min_change), so a rejection says the change is both real and relevant.
   Binary metrics use exact McNemar (fixed n) or the beta-binomial e-process (anytime)
   whatever continuous test is configured: a normal approximation with many ties is
   anti-conservative on 0/1 data.
3. Only *anytime-valid* tests (``PairedTest.anytime_valid``: e-processes) may stop early, as
   soon as E_t >= 1 / level. A fixed-n test's p-value is valid only at the sample size fixed in
   advance (``n_planned``): checking it after every batch and stopping when it looks small is
   optional stopping and inflates the error rate, so fixed-n tests always run to
   ``n_planned``; if the budget ends first, their p-value is replaced by 1 (no claim).
4. The effect size: fixed-n tests report paired Cohen's d_z (or the paired risk difference
   for binary metrics) with a Wald interval; anytime tests, whose n is data-dependent,
   report the mean difference with a confidence sequence (valid at every n; Waudby-Smith &
   Ramdas 2024). No gate is applied to the point estimate by default; an explicit
   ``min_effect_size`` > 0 is applied as p := 1 (e := 0) *before* the FDR procedure (a valid,
   conservative p-value). Every result that is not validated carries a ``reason``.
5. Exactly one value per hypothesis goes to the online FDR procedure (a p-value, or an
   e-value for e-value procedures such as e-LOND); its decision is final. For p-procedures an
   anytime-valid test contributes p = min(1, 1 / max_t E_t) (valid by Ville's inequality); for
   e-procedures a fixed-n p-value is calibrated to e = kappa * p^(kappa - 1) (Vovk & Wang 2021).

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError as PydanticValidationError

from md_framework.errors import MDError
from builtin_plugins.pipeline.evidence import (
    RelevanceTest,
    mean_difference_cs,
    not_validated_reason,
)
from md_framework.runtime import BehaviourMetric, LoadedModel, MetricReading
from md_framework.stats_api import Alternative, FDRProcedure, PairedTest, PairedTestResult
from md_framework.types import (
    DecisionRecord,
    EffectSize,
    Hypothesis,
    Observation,
    TestCase,
    ValidationResult,
)

__all__ = [
    "HypothesisEvidence",
    "ValidationError",
    "Validator",
    "alternative_for",
    "has_measure_pair",
    "paired_effect_size",
    "p_to_e",
    "unit_of",
]

#: |d_z| is reported up to this value (a constant non-zero difference has d_z = inf).
DZ_CAP = 100.0


@contextlib.contextmanager
def _metric_errors(metric: BehaviourMetric, where: str) -> Iterator[None]:
    """Invalid readings (NaN, inf, wrong types) become one error naming the metric."""
    try:
        yield
    except PydanticValidationError as exc:
        problems = "; ".join(err["msg"] for err in exc.errors())
        raise ValidationError(
            f'metric "{metric.name}" returned an invalid reading on {where}: {problems}') from None


class ValidationError(MDError):
    """Validation cannot proceed (unknown metric, metric returned the wrong number of
    readings, a test that does not fit the metric, a decision out of order...)."""


def unit_of(hypothesis: Hypothesis) -> str:
    """The decision unit ``families|metric|direction``: one decision, one discovery per unit."""
    return f"{','.join(sorted(set(hypothesis.families)))}|{hypothesis.metric}|{hypothesis.direction}"


def alternative_for(direction: str) -> Alternative:
    """The paired test's alternative for ``intervention - base`` given a hypothesis direction."""
    return {"increase": "greater", "decrease": "less", "change": "two-sided"}[direction]


def p_to_e(p: float, kappa: float = 0.5) -> float:
    """Calibrate a p-value into an e-value: e = kappa * p^(kappa - 1), kappa in (0, 1)
    (Vovk & Wang 2021, "E-values: calibration, combination and applications", Ann. Statist.)."""
    if not 0.0 < kappa < 1.0:
        raise ValueError("kappa must lie in (0, 1)")
    return math.inf if p <= 0.0 else kappa * p ** (kappa - 1.0)


def has_measure_pair(metric: Any) -> bool:
    """Whether ``metric`` offers the optional ``measure_pair`` (``PairedBehaviourMetric``)."""
    return callable(getattr(metric, "measure_pair", None))


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def cohens_dz(differences: np.ndarray) -> float:
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return 0.0
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(DZ_CAP, mean)
    return max(-DZ_CAP, min(DZ_CAP, mean / sd))


def paired_effect_size(base: Sequence[float], intervention: Sequence[float], outcome: str,
                       confidence: float = 0.95) -> EffectSize:
    """Effect size of ``intervention - base`` with a normal-approximation CI.

    * continuous / bounded: paired Cohen's d_z = mean(D) / sd(D), SE = sqrt(1/n + d_z^2 / (2n))
      (large-sample variance of a standardised mean difference; Hedges & Olkin 1985,
      Lakens 2013 "Calculating and reporting effect sizes", Front. Psychol.). When
      |d_z| reaches :data:`DZ_CAP` (a near-constant difference, sd ~ 0) the mean difference
      with its Student t-interval is reported instead (``name="mean_difference"``).
    * binary: paired risk difference RD = (c - b) / n with b = #(base 1, intervention 0),
      c = #(base 0, intervention 1) and the Agresti-Min (2005, Statist. Med.) adjusted Wald
      interval (0.5 added to every cell of the paired 2x2 table).
    """
    x = np.asarray(base, dtype=float)
    y = np.asarray(intervention, dtype=float)
    n = int(x.size)
    z = _z(confidence)
    if outcome == "binary":
        xb, yb = x >= 0.5, y >= 0.5
        b = float(np.sum(xb & ~yb))
        c = float(np.sum(~xb & yb))
        rd = (c - b) / n if n else 0.0
        if n == 0:
            return EffectSize(name="risk_difference", estimate=0.0, confidence=confidence)
        na, ba, ca = n + 2.0, b + 0.5, c + 0.5
        rda = (ca - ba) / na
        var = max(0.0, ((ba + ca) - (ca - ba) ** 2 / na) / na**2)
        half = z * math.sqrt(var)
        return EffectSize(name="risk_difference", estimate=rd, ci_low=max(-1.0, rda - half),
                          ci_high=min(1.0, rda + half), confidence=confidence)
    d = y - x
    dz = cohens_dz(d)
    if n < 2:
        return EffectSize(name="cohens_dz", estimate=dz, confidence=confidence)
    if dz != 0.0 and abs(dz) >= DZ_CAP:
        # a (near-)constant difference: d_z is unbounded and says nothing a reader can use,
        # so report the mean difference in the metric's units with its t-interval (Student)
        from scipy.stats import t as student_t

        mean, sd = float(d.mean()), float(d.std(ddof=1))
        half = float(student_t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
        return EffectSize(name="mean_difference", estimate=mean, ci_low=mean - half,
                          ci_high=mean + half, confidence=confidence)
    se = math.sqrt(1.0 / n + dz * dz / (2.0 * n))
    return EffectSize(name="cohens_dz", estimate=dz, ci_low=dz - z * se, ci_high=dz + z * se,
                      confidence=confidence)


@dataclass
class HypothesisEvidence:
    """Evidence gathered so far for one hypothesis."""

    hypothesis: Hypothesis
    metric: BehaviourMetric
    test: PairedTest
    alternative: Alternative
    n_planned: int
    observations: list[Observation] = field(default_factory=list)
    result: PairedTestResult | None = None
    steps: int = 0
    final: bool = False
    stopped_early: bool = False
    note: str = ""
    history: list[float] = field(default_factory=list)  # log-evidence after each batch
    relevance: RelevanceTest | None = None  # the test actually run (H0: effect <= min_change)
    short: bool = False  # fewer held-out prompts than the run asked for

    def run_test(self) -> PairedTestResult:
        base = [o.base_value for o in self.observations]
        inter = [o.intervention_value for o in self.observations]
        if self.relevance is not None:
            return self.relevance.test_pairs(base, inter, self.alternative)
        return self.test.test(base, inter, self.alternative)

    @property
    def n(self) -> int:
        return len(self.observations)

    @property
    def anytime_valid(self) -> bool:
        return bool(type(self.test).anytime_valid)

    @property
    def log_evidence(self) -> float:
        """log E (anytime tests) or -log p (fixed-n, interim: for rewards only)."""
        return self.history[-1] if self.history else 0.0


class Validator:
    """Measures, tests and decides hypotheses (see the module docstring for the protocol).

    Parameters: ``base`` / ``intervention`` – the loaded models; ``metrics`` – the behaviour
    metrics by name (or a sequence of them); ``fdr`` – an *online* FDR procedure
    (``create_driver("fdr_procedure", name, options, alpha=...)``); ``paired_test`` – a driver
    name, a :class:`PairedTest`, or a callable ``metric -> PairedTest``
    (``paired_test_options`` go to the named driver; ``betting-e`` gets ``lo``/``hi`` from the
    metric's bounds); ``hooks`` – a :class:`md_framework.plugins.Hooks` (``md_hypothesis_decided``
    and ``md_phase_finished`` are called through it); ``ledger`` – a
    :class:`~md_framework.pipeline.ledger.Ledger` (query cache, write-ahead evidence, resume);
    ``stop_threshold`` – E value at which anytime tests stop (default: 1 / the level the FDR
    procedure would give its next hypothesis).
    """

    def __init__(
        self,
        base: LoadedModel,
        intervention: LoadedModel,
        metrics: Mapping[str, BehaviourMetric] | Sequence[BehaviourMetric],
        *,
        fdr: FDRProcedure,
        paired_test: str | PairedTest | Callable[[BehaviourMetric], PairedTest] = "wilcoxon",
        paired_test_options: Mapping[str, Any] | None = None,
        min_effect_size: float = 0.0,
        hooks: Any = None,
        ledger: Any = None,
        max_examples: int = 5,
        early_stopping: bool = True,
        stop_threshold: float | None = None,
        e_calibration_kappa: float = 0.5,
        confidence: float = 0.95,
    ) -> None:
        if not getattr(type(fdr), "online", True):
            raise ValidationError(
                f'FDR procedure "{getattr(fdr, "name", type(fdr).__name__)}" is a batch procedure'
                " (offline re-analysis only); validation needs an online procedure such as"
                " saffron, lord++, lond or e-lond")
        self.base = base
        self.intervention = intervention
        if not isinstance(metrics, Mapping):
            metrics = {m.name: m for m in metrics}
        self.metrics: dict[str, BehaviourMetric] = dict(metrics)
        self.fdr = fdr
        self._paired_test = paired_test
        self._paired_test_options = dict(paired_test_options or {})
        self._tests: dict[str, PairedTest] = {}
        self._relevance: dict[str, RelevanceTest] = {}
        self.min_effect_size = min_effect_size
        self.hooks = hooks
        self.ledger = ledger
        self.max_examples = max_examples
        self.early_stopping = early_stopping
        self.stop_threshold = stop_threshold
        self.kappa = e_calibration_kappa
        self.confidence = confidence
        self.evidence: dict[str, HypothesisEvidence] = {}
        self.results: list[ValidationResult] = []
        self.fdr_trace: list[DecisionRecord] = []
        self.queries = 0  # behavioural queries the run accounts for (recorded ones included)
        self.fresh_queries = 0  # queries actually sent to a model by this process
        self._peeked: tuple[tuple[int, int, int], float] | None = None

    # ------------------------------------------------------------------ setup
    @property
    def procedure_name(self) -> str:
        return (getattr(self.fdr, "name", "") or getattr(self.fdr, "procedure_name", "")
                or type(self.fdr).__name__)

    def test_for(self, metric: BehaviourMetric) -> PairedTest:
        if metric.name in self._tests:
            return self._tests[metric.name]
        spec = self._paired_test
        replaced = False
        if isinstance(spec, str) and metric.outcome == "binary":
            replaced = self._binary_spec(spec) != spec
            spec = self._binary_spec(spec)
        if isinstance(spec, PairedTest):
            test = spec
        elif isinstance(spec, str):
            from md_framework.drivers import create_driver, load_driver_class

            # the configured options belong to the configured (continuous) test
            options = {} if replaced else dict(self._paired_test_options)
            cls = load_driver_class("paired_test", spec)
            fields = getattr(cls.Options, "model_fields", {})
            if "lo" in fields and "hi" in fields and "lo" not in options and "hi" not in options:
                if metric.bounds is None:
                    raise ValidationError(
                        f'paired test "{spec}" needs bounded metrics, but metric "{metric.name}"'
                        f" ({metric.outcome}) declares no bounds; choose wilcoxon or permutation")
                options["lo"], options["hi"] = metric.bounds
            test = create_driver("paired_test", spec, options)
        else:
            test = spec(metric)
        if type(test).outcome == "binary" and metric.outcome != "binary":
            raise ValidationError(
                f'paired test "{getattr(test, "name", type(test).__name__)}" needs a binary'
                f' metric, but "{metric.name}" is {metric.outcome}')
        self._tests[metric.name] = test
        return test

    def _binary_spec(self, spec: str) -> str:
        """Binary metrics: a configured binary test is kept; any other test is replaced by
        exact McNemar (fixed n) or the beta-binomial e-process (when the configured test is
        anytime-valid), so 0/1 data never meet a normal approximation with ties."""
        from md_framework.drivers import load_driver_class

        cls = load_driver_class("paired_test", spec)
        if getattr(cls, "outcome", "continuous") == "binary":
            return spec
        return "beta-binomial-e" if getattr(cls, "anytime_valid", False) else "mcnemar"

    def relevance_for(self, metric: BehaviourMetric) -> RelevanceTest:
        """The test of H0 "effect <= metric.min_change" built on :meth:`test_for`."""
        if metric.name in self._relevance:
            return self._relevance[metric.name]
        test = self.test_for(metric)
        delta = max(0.0, float(getattr(metric, "min_change", 0.0) or 0.0))
        bounded = None
        # only anytime tests use the widened betting e-process (fixed-n binary tests take the
        # exact margin test, fixed-n others the shifted test itself)
        needs_bounded = type(test).anytime_valid and (
            type(test).outcome == "binary" or "lo" in getattr(type(test).Options, "model_fields", {}))
        if delta > 0 and needs_bounded:
            from md_framework.drivers import create_driver

            lo, hi = metric.bounds if metric.bounds is not None else (0.0, 1.0)
            # the shifted base reading lies in [lo - delta, hi + delta]
            bounded = create_driver("paired_test", "betting-e",
                                    {"lo": float(lo) - delta, "hi": float(hi) + delta})
        relevance = RelevanceTest(test, delta, bounded=bounded)
        self._relevance[metric.name] = relevance
        return relevance

    def begin(self, hypothesis: Hypothesis, n_planned: int,
              wanted: int | None = None) -> HypothesisEvidence:
        """Start collecting evidence for ``hypothesis``; ``n_planned`` is the pre-registered
        sample size (the fixed n of fixed-n tests, the cap of anytime tests); ``wanted`` the
        n the run asked for (when the held-out prompts gave fewer, the result's reason is
        "not enough tests" unless it is validated anyway)."""
        if hypothesis.id in self.evidence:
            return self.evidence[hypothesis.id]
        if hypothesis.metric not in self.metrics:
            from md_framework.errors import did_you_mean

            raise ValidationError(
                f'hypothesis "{hypothesis.id}" uses metric "{hypothesis.metric}", which no'
                f" installed plugin provides.{did_you_mean(hypothesis.metric, self.metrics)}"
                f" Available: {', '.join(sorted(self.metrics)) or '(none)'}")
        metric = self.metrics[hypothesis.metric]
        ev = HypothesisEvidence(hypothesis, metric, self.test_for(metric),
                                alternative_for(hypothesis.direction), max(0, int(n_planned)))
        ev.relevance = self.relevance_for(metric)
        ev.short = wanted is not None and int(n_planned) < int(wanted)
        self.evidence[hypothesis.id] = ev
        return ev

    # ------------------------------------------------------------------ measuring
    def _readings(self, model: LoadedModel, metric: BehaviourMetric,
                  cases: Sequence[TestCase]) -> list[MetricReading]:
        ids = [c.id for c in cases]
        cached = self.ledger.cached_readings(model.model_id, metric.name, ids) if self.ledger else {}
        missing = [c for c in cases if c.id not in cached]
        if missing:
            with _metric_errors(metric, model.model_id):
                readings = self._checked(metric, model, metric.measure(model, missing), len(missing))
            self.fresh_queries += len(missing)
            if self.ledger is not None:  # write-ahead: recorded before it is used
                self.ledger.record_readings(
                    model.model_id, metric.name,
                    [(c.id, c.prompt, r) for c, r in zip(missing, readings)])
            cached.update({c.id: r for c, r in zip(missing, readings)})
        self.queries += len(cases)
        return [cached[i] for i in ids]

    @staticmethod
    def _checked(metric: BehaviourMetric, model: LoadedModel, readings: Sequence[Any],
                 n: int) -> list[MetricReading]:
        if len(readings) != n:
            raise ValidationError(
                f'metric "{metric.name}" returned {len(readings)} readings for'
                f" {n} test cases on {model.model_id}")
        with _metric_errors(metric, model.model_id):
            return [r if isinstance(r, MetricReading) else MetricReading.model_validate(r)
                    for r in readings]

    def _pair_readings(self, metric: BehaviourMetric, cases: Sequence[TestCase]
                       ) -> tuple[list[MetricReading], list[MetricReading]]:
        """Both models' readings through ``metric.measure_pair``. Recorded readings come from
        the ledger; a pair is measured when either side is missing, and a side that was
        recorded keeps its recorded reading (the ledger ignores the re-measured one)."""
        ids = [c.id for c in cases]
        b_id, i_id = self.base.model_id, self.intervention.model_id
        if self.ledger is not None:
            cached_b = self.ledger.cached_readings(b_id, metric.name, ids)
            cached_i = self.ledger.cached_readings(i_id, metric.name, ids)
        else:
            cached_b, cached_i = {}, {}
        missing = [c for c in cases if c.id not in cached_b or c.id not in cached_i]
        if missing:
            with _metric_errors(metric, f"{self.base.model_id} / {self.intervention.model_id}"):
                got = metric.measure_pair(self.base, self.intervention, missing)  # type: ignore[attr-defined]
            try:
                got_b, got_i = got
            except (TypeError, ValueError):
                raise ValidationError(
                    f'metric "{metric.name}".measure_pair must return (base readings,'
                    f" intervention readings), got {type(got).__name__}") from None
            got_b = self._checked(metric, self.base, got_b, len(missing))
            got_i = self._checked(metric, self.intervention, got_i, len(missing))
            self.fresh_queries += 2 * len(missing)
            if self.ledger is not None:  # write-ahead: both sides recorded before use
                self.ledger.record_readings(
                    b_id, metric.name, [(c.id, c.prompt, r) for c, r in zip(missing, got_b)])
                self.ledger.record_readings(
                    i_id, metric.name, [(c.id, c.prompt, r) for c, r in zip(missing, got_i)])
            for c, rb, ri in zip(missing, got_b, got_i):
                cached_b.setdefault(c.id, rb)
                # one model_id on both sides: the ledger keeps one reading, so use it for both
                cached_i.setdefault(c.id, cached_b[c.id] if i_id == b_id else ri)
        self.queries += 2 * len(cases)
        return [cached_b[i] for i in ids], [cached_i[i] for i in ids]

    def measure(self, hypothesis: Hypothesis, cases: Sequence[TestCase]) -> list[Observation]:
        """Observations of ``hypothesis``' metric on both models (2 queries per case);
        through ``metric.measure_pair`` when the metric has it."""
        metric = self.metrics[hypothesis.metric]
        if has_measure_pair(metric):
            base, inter = self._pair_readings(metric, cases)
        else:
            base = self._readings(self.base, metric, cases)
            inter = self._readings(self.intervention, metric, cases)
        return [
            Observation(test_case_id=c.id, hypothesis_id=hypothesis.id, metric=metric.name,
                        prompt=c.prompt, base_value=b.value, intervention_value=i.value,
                        base_output=b.output, intervention_output=i.output)
            for c, b, i in zip(cases, base, inter)
        ]

    # ------------------------------------------------------------------ evidence
    def peek_level(self, ahead: int = 0) -> float:
        """The test level the FDR procedure would give the hypothesis ``ahead`` places after
        its next one, assuming those in between are not rejected (computed on a copy; the
        procedure itself is untouched; cached until the procedure decides again)."""
        key = (id(self.fdr), self.fdr.num_tested, ahead)
        if self._peeked is not None and self._peeked[0] == key:
            return self._peeked[1]
        try:
            copy = type(self.fdr).from_state(self.fdr.state())
            probe = 0.0 if getattr(self.fdr, "input_kind", "p") == "e" else 1.0
            for _ in range(ahead):
                copy.test(probe)
            level = float(copy.test(probe).level)
        except Exception:  # a third-party procedure that cannot be copied: use alpha
            level = float(self.fdr.alpha)
        level = level if level > 0 else float(self.fdr.alpha)
        self._peeked = (key, level)
        return level

    def _threshold(self, ahead: int = 0) -> float:
        if self.stop_threshold is not None:
            return self.stop_threshold
        return 1.0 / self.peek_level(ahead)

    def add_batch(self, hypothesis_id: str, cases: Sequence[TestCase], *,
                  ahead: int = 0, interim: bool = True) -> HypothesisEvidence:
        """Measure ``cases``, update the test on all evidence so far, stop if allowed.

        ``ahead``: how many undecided hypotheses will be decided before this one (the
        explorer's pre-registered order); the early-stopping threshold is 1 / the level this
        hypothesis would get then (a heuristic for power only: validity never depends on it).
        ``interim=False`` skips a fixed-n test until its evidence is final (interim values
        only feed the explorer's rewards; they are never used for a decision).
        """
        ev = self.evidence[hypothesis_id]
        if ev.final:
            raise ValidationError(f'hypothesis "{hypothesis_id}" already has its final evidence')
        room = ev.n_planned - ev.n
        cases = list(cases)[:max(0, room)]
        if cases:
            new = self.measure(ev.hypothesis, cases)
            ev.observations.extend(new)
        else:
            new = []
        base = [o.base_value for o in ev.observations]
        inter = [o.intervention_value for o in ev.observations]
        if ev.n >= ev.n_planned:
            ev.final = True
        if ev.observations and (interim or ev.anytime_valid or ev.final):
            ev.result = ev.run_test()
        ev.steps += 1
        if ev.result is None:
            ev.history.append(0.0)
        elif ev.anytime_valid:
            e_max = float(ev.result.details.get("max_e_value", ev.result.e_value or 1.0))
            ev.history.append(math.log(max(e_max, 1e-300)))
            if self.early_stopping and e_max >= self._threshold(ahead):
                ev.final, ev.stopped_early = True, ev.n < ev.n_planned
        else:
            ev.history.append(-math.log(max(ev.result.p_value, 1e-300)))
        if self.ledger is not None and (new or ev.steps == 1):
            r = ev.result
            self.ledger.record_evidence(
                hypothesis_id, ev.steps, ev.n, new, r.test if r else "none",
                r.p_value if r else None,
                r.e_value if r and r.e_value is not None and math.isfinite(r.e_value) else None,
                {"final": ev.final, "stopped_early": ev.stopped_early,
                 "log_evidence": ev.log_evidence})
        return ev

    def finalize(self, hypothesis_id: str, reason: str = "budget spent") -> HypothesisEvidence:
        """Mark the evidence final before ``n_planned`` (the query budget ran out)."""
        ev = self.evidence[hypothesis_id]
        if not ev.final:
            ev.final = True
            if ev.n < ev.n_planned:
                ev.note = f"{reason} after {ev.n} of {ev.n_planned} planned pairs"
            if ev.observations and (ev.result is None or ev.result.n != ev.n):
                ev.result = ev.run_test()
        return ev

    # ------------------------------------------------------------------ deciding
    def _fdr_value(self, ev: HypothesisEvidence, effect: EffectSize) -> tuple[float, float | None, float, str]:
        """(p, e, value fed to the FDR procedure, its kind)."""
        r = ev.result
        kind = "e" if getattr(self.fdr, "input_kind", "p") == "e" else "p"
        if r is None:
            p, e = 1.0, (1.0 if ev.anytime_valid else None)
        elif ev.anytime_valid:
            e = float(r.e_value if r.e_value is not None else 1.0)
            p = float(r.details.get("anytime_p_value", r.p_value))
        else:
            e = None
            p = float(r.p_value) if ev.n >= ev.n_planned else 1.0  # incomplete fixed n: no claim
        gated = not self._effect_ok(ev, effect)
        if kind == "p":
            value = 1.0 if gated else p
        else:
            value = 0.0 if gated else (e if e is not None else p_to_e(p, self.kappa))
            if not math.isfinite(value):
                value = 1e300
        return p, e, value, kind

    def _effect_ok(self, ev: HypothesisEvidence, effect: EffectSize) -> bool:
        """The optional, explicit floor on the standardised effect (``min_effect_size`` > 0,
        default 0: off), applied as p := 1 before the FDR procedure. The metric's
        ``min_change`` is not gated here: it is part of the tested null."""
        if self.min_effect_size <= 0:
            return True
        differences = np.array([o.difference for o in ev.observations])
        return abs(cohens_dz(differences)) >= self.min_effect_size

    def _effect_size(self, ev: HypothesisEvidence) -> EffectSize:
        """Anytime tests (data-dependent n): the mean difference with a confidence sequence
        when the metric is bounded; otherwise the fixed-n Wald interval."""
        base = [o.base_value for o in ev.observations]
        inter = [o.intervention_value for o in ev.observations]
        if ev.anytime_valid and ev.metric.bounds is not None:
            return mean_difference_cs(base, inter, ev.metric.bounds, self.confidence)
        effect = paired_effect_size(base, inter, ev.metric.outcome, self.confidence)
        return effect.model_copy(update={"method": "wald (fixed n)"})

    def _reason(self, ev: HypothesisEvidence, effect: EffectSize, level: float) -> str:
        """Why a result is not validated (docs/validation.md, "Reasons")."""
        return not_validated_reason(ev, level, floor_ok=self._effect_ok(ev, effect))

    def decide(self, hypothesis_id: str) -> ValidationResult:
        """The one online FDR decision for a hypothesis whose evidence is final.

        With a ledger that already holds this hypothesis' decision (a resumed run), the
        recorded decision is returned and the FDR procedure is restored from the recorded
        state: alpha is never spent twice."""
        ev = self.evidence[hypothesis_id]
        if not ev.final:
            raise ValidationError(f'hypothesis "{hypothesis_id}" is decided before its evidence'
                                  " is final; call finalize() first")
        if any(r.hypothesis.id == hypothesis_id for r in self.results):
            raise ValidationError(f'hypothesis "{hypothesis_id}" was already decided')
        effect = self._effect_size(ev)
        p, e, value, kind = self._fdr_value(ev, effect)
        recorded = self.ledger.decision_for(hypothesis_id) if self.ledger is not None else None
        if recorded is not None:
            record, result, state = recorded
            if record.index != self.fdr.num_tested + 1 or not math.isclose(
                    record.value, value, rel_tol=1e-9, abs_tol=1e-12):
                from md_framework.pipeline.ledger import LedgerMismatchError

                raise LedgerMismatchError(
                    f'resumed run disagrees with the ledger on "{hypothesis_id}": recorded'
                    f" decision #{record.index} with value {record.value}, replay gives"
                    f" #{self.fdr.num_tested + 1} with {value} (a non-deterministic metric or"
                    " a changed config?)")
            self.fdr = type(self.fdr).from_state(state)
        else:
            decision = self.fdr.test(value)
            record = DecisionRecord(index=decision.index, hypothesis_id=hypothesis_id,
                                    value=decision.value, value_kind=kind, level=decision.level,
                                    rejected=decision.rejected)
            examples = sorted(ev.observations, key=lambda o: -abs(o.difference))
            result = ValidationResult(
                hypothesis=ev.hypothesis, test_name=ev.result.test if ev.result else ev.test.name,
                p_value=min(1.0, max(0.0, p)),
                e_value=e if e is not None and math.isfinite(e) else None,
                decision=decision.rejected, test_level=decision.level,
                fdr_index=decision.index, fdr_procedure=self.procedure_name,
                effect_size=effect, n=ev.n, stopped_early=ev.stopped_early,
                examples=examples[:self.max_examples],
                reason=None if decision.rejected else self._reason(ev, effect, decision.level),
                min_change=ev.relevance.delta if ev.relevance is not None else None,
                unit=unit_of(ev.hypothesis),
            )
            if self.ledger is not None:  # write-ahead: recorded before anyone sees it
                self.ledger.record_decision(record, result, self.fdr.state())
        self.results.append(result)
        self.fdr_trace.append(record)
        if self.hooks is not None:
            self.hooks.call("md_hypothesis_decided", result=result)
        return result

    # ------------------------------------------------------------------ convenience
    def validate(self, hypothesis: Hypothesis, cases: Sequence[TestCase], *,
                 batch_size: int | None = None) -> ValidationResult:
        """Validate one hypothesis on ``cases`` (its pre-registered n = len(cases)), in
        batches of ``batch_size`` with early stopping for anytime-valid tests, then decide."""
        ev = self.begin(hypothesis, len(cases))
        step = batch_size or max(1, len(cases))
        i = ev.n
        while not ev.final and i < len(cases):
            self.add_batch(hypothesis.id, cases[i:i + step], interim=False)
            i += step
        if not ev.final:
            if ev.steps == 0:
                self.add_batch(hypothesis.id, [])
            self.finalize(hypothesis.id, "ran out of test cases")
        return self.decide(hypothesis.id)

    def validate_many(self, hypotheses: Sequence[Hypothesis], tests: Any, *,
                      batch_size: int | None = None) -> list[ValidationResult]:
        """Validate ``hypotheses`` one after the other, decided in the order given.
        ``tests``: a :class:`~builtin_plugins.pipeline.testgen.TestPool`, a mapping
        hypothesis id -> cases, or a callable hypothesis -> cases."""
        from md_framework.pipeline.ledger import RunInterrupted

        out = []
        try:
            for h in hypotheses:
                if hasattr(tests, "tests_for"):
                    cases = tests.tests_for(h)
                elif isinstance(tests, Mapping):
                    cases = tests[h.id]
                else:
                    cases = tests(h)
                out.append(self.validate(h, cases, batch_size=batch_size))
        except KeyboardInterrupt:
            raise RunInterrupted(self.ledger.run_dir if self.ledger is not None else None) from None
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "hypotheses_decided": len(self.results),
            "validated": sum(r.decision for r in self.results),
            "behaviour_queries": self.queries,
            "fresh_queries": self.fresh_queries,
            "fdr_procedure": self.procedure_name,
            "alpha": float(self.fdr.alpha),
        }

    def finish(self, phase: str = "validate", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call ``md_phase_finished`` with the summary of this phase; returns the summary."""
        summary = {**self.summary(), **dict(extra or {})}
        if self.hooks is not None:
            self.hooks.call("md_phase_finished", phase=phase, summary=summary)
        return summary
