"""One decision per (family, metric, direction) unit, and a reason for every result that is
not validated."""

from __future__ import annotations

from toy import HashMetric, fake_model, test_source

from md_framework.drivers import create_driver
from builtin_plugins.pipeline.explorer import BudgetedExplorer, per_family
from builtin_plugins.pipeline.validation import Validator, unit_of
from md_framework.types import AnalysisReport, Hypothesis, ValidationResult


def _h(id_, families, metric="toy_metric", direction="increase", **kw):
    return Hypothesis(id=id_, hypothesis_type="style_change", description=id_, metric=metric,
                      direction=direction, families=families, **kw)


def _validator(metric, **kw):
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    return Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr, **kw)


def test_multi_family_hypotheses_become_one_decision_per_family_and_units_are_deduplicated():
    metric = HashMetric(shift=3.0, shifted_families=["fam1"])
    metric.min_change = 0.5
    hyps = [_h("a", ["fam0", "fam1"]), _h("b", ["fam1"]),  # b repeats unit a@fam1
            _h("c", ["fam2"], direction="decrease")]
    assert [h.id for h in per_family(hyps[0])] == ["a@fam0", "a@fam1"]
    v = _validator(metric, paired_test="wilcoxon")
    explorer = BudgetedExplorer(hyps, v, None, test_source(20), budget=400,
                                     n_per_hypothesis=20)
    result = explorer.run()
    ids = [r.hypothesis.id for r in result.results]
    assert ids == ["a@fam0", "a@fam1", "c"]
    assert explorer.merged == {"b": "a@fam1"} and "b" in result.notes["a@fam1"]
    by_id = {r.hypothesis.id: r for r in result.results}
    assert by_id["a@fam1"].decision and by_id["a@fam1"].reason is None
    assert by_id["a@fam1"].unit == unit_of(hyps[1]) == "fam1|toy_metric|increase"
    assert by_id["a@fam0"].reason == "level not reached"
    assert by_id["a@fam0"].min_change == 0.5
    report = AnalysisReport(validation_results=result.results)
    assert report.discoveries() == 1 and "level not reached" in report.summary_text()


def test_reasons_budget_relevance_and_not_enough_tests():
    # a real change of +0.3 on fam1, below the floor of 1.0: "no change" is rejected, the
    # relevance null is not
    metric = HashMetric(mode="identical", shift=0.3, shifted_families=["fam1"])
    metric.min_change = 1.0
    v = _validator(metric, paired_test="wilcoxon")
    rel = v.validate(_h("small", ["fam1"]), test_source(30)(_h("small", ["fam1"])))
    assert not rel.decision and rel.reason == "effect below relevance"
    # the budget ends before a fixed-n test reaches its n
    v = _validator(HashMetric(shift=3.0, shifted_families=["fam1"]), paired_test="wilcoxon")
    explorer = BudgetedExplorer([_h("x", ["fam1"])], v, None, test_source(30), budget=20)
    (res,) = explorer.run().results
    assert not res.decision and res.reason == "budget"
    # no held-out prompts at all
    v = _validator(HashMetric(), paired_test="wilcoxon")
    explorer = BudgetedExplorer([_h("y", ["fam1"])], v, None, lambda h: [], budget=100)
    (res,) = explorer.run().results
    assert res.reason == "not enough tests" and res.n == 0


def test_refinement_inside_a_validated_parent_is_not_a_second_discovery():
    parent = _h("p", ["fam1", "fam2"])
    child = _h("p/split:fam1", ["fam1"])
    other = _h("q", ["fam3"], metric="other")

    def result(h, refines=None):
        return ValidationResult(hypothesis=h, test_name="t", decision=True, n=10,
                                unit=unit_of(h), refines=refines)

    report = AnalysisReport(validation_results=[result(parent), result(child, "p"),
                                                result(other)])
    assert report.discoveries() == 2
