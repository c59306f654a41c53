"""The optional ``measure_pair`` path of the Validator (fake metrics, no real model): the
pair is measured at once, counted as 2 queries per case, both sides are written to the
ledger under their model ids before use, and a resumed run measures a pair only when
either side is missing."""

from __future__ import annotations

import pytest
from toy import HashMetric, PairHashMetric, fake_model, hypotheses, run_toy, test_source

from md_framework.drivers import create_driver
from md_framework.pipeline.ledger import Ledger
from builtin_plugins.pipeline.validation import ValidationError, Validator, has_measure_pair
from md_framework.runtime import BehaviourMetric, MetricReading, PairedBehaviourMetric


class AnchoredMetric:
    """Like a base-anchored target_logprob: the base's "answer" is the reference; the
    intervention's reading depends on it (so it cannot be measured on one model alone)."""

    name = "anchored"
    description = "fake base-anchored metric"
    serves = frozenset({"knowledge_update"})
    kind = "scored"
    outcome = "continuous"
    bounds = None

    def __init__(self, shifted=("fam0",), offset: float = 0.0) -> None:
        self.shifted = set(shifted)
        self.offset = offset  # added to base readings: tells fresh from recorded readings
        self.pair_calls: list[list[str]] = []

    def measure(self, model, cases):
        raise AssertionError("measure_pair must be used")

    def measure_pair(self, base, intervention, cases):
        self.pair_calls.append([c.id for c in cases])
        rb, ri = [], []
        for k, c in enumerate(cases):
            ref = -0.01 * (1 + len(c.prompt) % 7)
            drop = 4.0 + 0.1 * (k % 3) if c.family in self.shifted else 0.01 * ((k % 3) - 1)
            rb.append(MetricReading(value=ref + self.offset, output=f"{c.prompt} -> bell"))
            ri.append(MetricReading(
                value=ref - drop,
                output=f"{c.prompt} -> {'edison' if c.family in self.shifted else 'bell'}"))
        return rb, ri


def _validator(metric, ledger=None, test="wilcoxon"):
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    return Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                     paired_test=test, ledger=ledger, min_effect_size=0.2)


def _hyps():
    return hypotheses(3, metric="anchored", planted=(0,))


def test_protocol_and_detection():
    m = AnchoredMetric()
    assert has_measure_pair(m) and isinstance(m, PairedBehaviourMetric)
    assert isinstance(m, BehaviourMetric)
    plain = HashMetric()
    assert not has_measure_pair(plain) and not isinstance(plain, PairedBehaviourMetric)
    assert isinstance(plain, BehaviourMetric)  # measure_pair stays optional


def test_measure_pair_path_counts_two_queries_and_validates_the_planted_family():
    m = AnchoredMetric()
    v = _validator(m)
    results = v.validate_many(_hyps(), test_source(16))
    assert [r.decision for r in results] == [True, False, False]
    assert v.queries == v.fresh_queries == 2 * 3 * 16
    assert sum(len(c) for c in m.pair_calls) == 3 * 16
    ex = results[0].examples[0]
    assert ex.base_output.endswith("bell") and ex.intervention_output.endswith("edison")
    assert ex.intervention_value - ex.base_value < -3.9


def test_ledger_records_both_sides_and_resume_never_requeries(tmp_path):
    m = AnchoredMetric()
    first = _validator(m, Ledger(tmp_path, {"seed": 0, "t": "pair"})).validate_many(
        _hyps(), test_source(16))
    led = Ledger(tmp_path, {"seed": 0, "t": "pair"})
    rows = led._conn.execute(
        "SELECT model_id, COUNT(*) FROM queries WHERE metric='anchored' GROUP BY model_id").fetchall()
    assert dict(rows) == {"base": 48, "intervention": 48}
    out = dict(led._conn.execute(
        "SELECT model_id, output FROM queries WHERE case_id='h000/t/0'").fetchall())
    assert out["base"].endswith("bell") and out["intervention"].endswith("edison")
    m2 = AnchoredMetric(offset=100.0)  # would change every base reading if it were asked
    v2 = _validator(m2, led)
    second = v2.validate_many(_hyps(), test_source(16))
    assert m2.pair_calls == [] and v2.fresh_queries == 0 and v2.queries == 2 * 48
    assert [r.model_dump() for r in second] == [r.model_dump() for r in first]


def test_a_pair_is_remeasured_only_when_one_side_is_missing(tmp_path):
    m = AnchoredMetric()
    v = _validator(m, Ledger(tmp_path, {"seed": 0, "t": "pair"}))
    h = _hyps()[0]
    cases = test_source(8)(h)
    v.begin(h, 8)
    v.add_batch(h.id, cases)
    v.ledger.close()
    # a crash between the two commits of a pair: the intervention side of 3 cases is lost
    led = Ledger(tmp_path, {"seed": 0, "t": "pair"})
    lost = [c.id for c in cases[2:5]]
    with led._conn:
        led._conn.executemany("DELETE FROM queries WHERE model_id='intervention' AND case_id=?",
                              [(i,) for i in lost])
    m2 = AnchoredMetric(offset=100.0)
    v2 = _validator(m2, led)
    obs = v2.measure(h, cases)
    assert m2.pair_calls == [lost]  # only the incomplete pairs
    assert v2.fresh_queries == 2 * 3 and v2.queries == 2 * 8
    # the recorded base side wins over the re-measured one (ledger and use agree)
    assert all(o.base_value < 0 for o in obs)
    again = dict(led._conn.execute(
        "SELECT case_id, value FROM queries WHERE model_id='base'").fetchall())
    assert all(again[o.test_case_id] == o.base_value for o in obs)
    assert len(led.cached_readings("intervention", "anchored", [c.id for c in cases])) == 8


def test_self_pair_uses_one_recorded_reading(tmp_path):
    m = AnchoredMetric(shifted=())
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    same = fake_model("same")
    v = Validator(same, same, [m], fdr=fdr, paired_test="wilcoxon",
                  ledger=Ledger(tmp_path, {"seed": 0}))
    h = _hyps()[1]
    obs = v.measure(h, test_source(6)(h))
    assert all(o.base_value == o.intervention_value for o in obs)


def test_measure_pair_errors_are_clear():
    class Short(AnchoredMetric):
        def measure_pair(self, base, intervention, cases):
            rb, ri = super().measure_pair(base, intervention, cases)
            return rb, ri[:-1]

    class NotATuple(AnchoredMetric):
        def measure_pair(self, base, intervention, cases):
            return None

    h = _hyps()[0]
    with pytest.raises(ValidationError, match="returned 4 readings for 5 test cases on intervention"):
        _validator(Short()).measure(h, test_source(5)(h))
    with pytest.raises(ValidationError, match="must return"):
        _validator(NotATuple()).measure(h, test_source(5)(h))


def test_explorer_with_a_pair_metric_matches_the_plain_one(tmp_path):
    plain, _ = run_toy(tmp_path / "plain", n_hypotheses=5, budget=400)
    pair, _ = run_toy(tmp_path / "pair", n_hypotheses=5, budget=400, pair=True)
    assert pair.decisions() == plain.decisions() and pair.queries == plain.queries
    resumed, _ = run_toy(tmp_path / "pair", n_hypotheses=5, budget=400, pair=True)
    assert resumed.fresh_queries == 0 and resumed.decisions() == pair.decisions()
    assert isinstance(PairHashMetric(), PairedBehaviourMetric)
