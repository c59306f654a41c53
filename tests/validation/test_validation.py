"""Validator: paired tests with the right alternative, effect sizes, early stopping only for
anytime-valid tests, one FDR decision per hypothesis, and the null check."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from md_framework import hookimpl
from md_framework.drivers import create_driver, load_driver_class
from builtin_plugins.pipeline.validation import (
    ValidationError, Validator, alternative_for, paired_effect_size, p_to_e,
)
from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.types import TestCase
from toy import HashMetric, fake_model, hypotheses, test_source

BASE, INTER = fake_model("base"), fake_model("intervention")


@functools.lru_cache(maxsize=None)
def _cls(group, name):
    return load_driver_class(group, name)


def _validator(metric, procedure="saffron", test="wilcoxon", alpha=0.1, **kw):
    fdr = _cls("fdr_procedure", procedure)(alpha)
    if isinstance(test, str) and test not in ("betting-e",):
        test = _cls("paired_test", test)()
    return Validator(BASE, INTER, [metric], fdr=fdr, paired_test=test, **kw)


def test_alternative_mapping():
    assert alternative_for("increase") == "greater"
    assert alternative_for("decrease") == "less"
    assert alternative_for("change") == "two-sided"


def test_model_paired_with_itself_validates_nothing():
    metric = HashMetric(mode="identical", shift=5.0, shifted_families=["fam0", "fam1"])
    v = Validator(BASE, BASE, [metric], fdr=create_driver("fdr_procedure", "saffron", {}, alpha=0.1),
                  paired_test="wilcoxon")
    hs = hypotheses(5)
    results = v.validate_many(hs, test_source(30))
    assert [r.decision for r in results] == [False] * 5
    assert all(r.p_value == 1.0 and r.effect_size.estimate == 0.0 for r in results)
    assert v.queries == 5 * 30 * 2


@pytest.mark.parametrize("test,outcome,procedure", [
    ("wilcoxon", "continuous", "saffron"),
    ("betting-e", "bounded", "lord++"),
    ("beta-binomial-e", "binary", "e-lond"),
])
def test_null_simulation_false_discoveries_controlled(test, outcome, procedure):
    """Noise-only pairs (different model ids, same distribution): 15 replicate runs of 25
    hypotheses each. Under the global null FDR = P(any false discovery) <= alpha."""
    alpha, reps, m = 0.1, 15, 25
    runs_with_fd = total_fd = 0
    for rep in range(reps):
        metric = HashMetric(outcome=outcome, mode="noise")
        v = _validator(metric, procedure, test, alpha=alpha, min_effect_size=0.0)
        hs = hypotheses(m)
        src = test_source(30)
        cases = {h.id: [c.model_copy(update={"prompt": f"r{rep} {c.prompt}"}) for c in src(h)]
                 for h in hs}
        results = v.validate_many(hs, cases, batch_size=5)
        fd = sum(r.decision for r in results)
        total_fd += fd
        runs_with_fd += fd > 0
    assert runs_with_fd <= 4, (runs_with_fd, total_fd)  # expected <= 1.5 at alpha = 0.1


def test_planted_shift_detected_with_effect_size_examples_and_trace():
    metric = HashMetric(shift=1.5, shifted_families=["fam1", "fam3"])
    v = _validator(metric, "saffron", "wilcoxon")
    hs = hypotheses(5, planted=(1, 3))
    results = v.validate_many(hs, test_source(40), batch_size=10)
    assert {r.hypothesis.id for r in results if r.decision} == {"h001", "h003"}
    r1 = results[1]
    assert r1.effect_size.name == "cohens_dz" and r1.effect_size.ci_low > 0.5
    assert r1.n == 40 and not r1.stopped_early  # fixed-n test: never stops early
    diffs = [abs(o.difference) for o in r1.examples]
    assert diffs == sorted(diffs, reverse=True) and len(r1.examples) == 5
    assert r1.examples[0].base_output and r1.examples[0].intervention_output
    assert [d.index for d in v.fdr_trace] == [1, 2, 3, 4, 5]
    assert [r.fdr_index for r in results] == [1, 2, 3, 4, 5]
    assert all(r.fdr_procedure == "saffron" for r in results)


def test_anytime_test_stops_early_and_fixed_n_does_not():
    metric = HashMetric(outcome="bounded", shift=3.0, shifted_families=["fam0"])
    v = _validator(metric, "saffron", "betting-e")
    h = hypotheses(1)[0]
    r = v.validate(h, test_source(200)(h), batch_size=5)
    assert r.decision and r.stopped_early and r.n < 200 and r.e_value >= 1 / r.test_level
    assert v.queries == 2 * r.n
    v2 = _validator(HashMetric(shift=3.0, shifted_families=["fam0"]), "saffron", "wilcoxon")
    r2 = v2.validate(h, test_source(60)(h), batch_size=5)
    assert r2.n == 60 and not r2.stopped_early


def test_incomplete_fixed_n_is_no_claim():
    metric = HashMetric(shift=3.0, shifted_families=["fam0"])
    v = _validator(metric, "saffron", "wilcoxon")
    h = hypotheses(1)[0]
    v.begin(h, 40)
    v.add_batch(h.id, test_source(40)(h)[:20])
    v.finalize(h.id)
    r = v.decide(h.id)
    assert not r.decision and v.fdr_trace[0].value == 1.0
    assert "budget spent after 20 of 40" in v.evidence[h.id].note


def test_direction_and_min_effect_size_gate():
    metric = HashMetric(shift=1.5, shifted_families=["fam0"])
    h = hypotheses(1, direction="decrease")[0]  # the planted change is an increase
    v = _validator(metric, "saffron", "wilcoxon")
    assert not v.validate(h, test_source(40)(h)).decision
    big_gate = _validator(HashMetric(shift=1.5, shifted_families=["fam0"]), "saffron", "wilcoxon",
                          min_effect_size=50.0)
    h2 = hypotheses(1)[0]
    r = big_gate.validate(h2, test_source(40)(h2))
    assert r.p_value < 1e-4 and not r.decision and big_gate.fdr_trace[0].value == 1.0


def test_binary_metric_risk_difference_and_e_lond_calibration():
    metric = HashMetric(outcome="binary", shift=2.5, shifted_families=["fam0"])
    v = _validator(metric, "e-lond", "mcnemar")
    h = hypotheses(1)[0]
    r = v.validate(h, test_source(60)(h))
    assert r.effect_size.name == "risk_difference" and 0 < r.effect_size.estimate <= 1
    assert v.fdr_trace[0].value_kind == "e"
    assert math.isclose(v.fdr_trace[0].value, p_to_e(r.p_value))


def test_effect_size_formulas():
    es = paired_effect_size([0, 0, 0, 0], [1, 1, 1, 0], "binary")
    assert es.estimate == 0.75 and es.ci_low < 0.75 < es.ci_high
    rng = np.random.default_rng(0)
    d = rng.normal(0.5, 1.0, 400)
    es = paired_effect_size(np.zeros(400), d, "continuous")
    assert es.ci_low < 0.5 < es.ci_high and abs(es.estimate - d.mean() / d.std(ddof=1)) < 1e-12
    # a constant difference has no finite d_z: the mean difference is reported instead
    es = paired_effect_size([1, 1], [2, 2], "continuous")
    assert (es.name, es.estimate, es.ci_low, es.ci_high) == ("mean_difference", 1.0, 1.0, 1.0)
    es = paired_effect_size(np.zeros(12), 0.9 + 1e-4 * rng.normal(size=12), "continuous")
    assert es.name == "mean_difference" and es.ci_low < es.estimate < es.ci_high
    assert abs(es.estimate - 0.9) < 1e-3
    # below the cap, d_z as before
    assert paired_effect_size(np.zeros(12), 0.9 + 0.1 * rng.normal(size=12), "continuous").name == "cohens_dz"


def test_hooks_called_in_decision_order():
    seen = []

    class Recorder:
        @hookimpl
        def md_hypothesis_decided(self, result):
            seen.append(("decided", result.hypothesis.id, result.fdr_index))

        @hookimpl
        def md_phase_finished(self, phase, summary):
            seen.append(("phase", phase, summary["hypotheses_decided"]))

    hooks = Hooks(get_plugin_manager(autoload=False, extra_plugins=[("rec", Recorder())]))
    v = _validator(HashMetric(), hooks=hooks)
    v.validate_many(hypotheses(3), test_source(10))
    v.finish()
    assert seen == [("decided", "h000", 1), ("decided", "h001", 2), ("decided", "h002", 3),
                    ("phase", "validate", 3)]


def test_clear_errors():
    v = _validator(HashMetric())
    h = hypotheses(1, metric="toy_metrik")[0]
    with pytest.raises(ValidationError, match='Did you mean "toy_metric"'):
        v.begin(h, 5)
    with pytest.raises(ValidationError, match="batch procedure"):
        _validator(HashMetric(), procedure="bh")
    with pytest.raises(ValidationError, match="binary"):
        _validator(HashMetric(outcome="continuous"), test="mcnemar").begin(hypotheses(1)[0], 3)
    with pytest.raises(ValidationError, match="declares no bounds"):
        _validator(HashMetric(outcome="continuous"), test="betting-e").begin(hypotheses(1)[0], 3)
    v2 = _validator(HashMetric())
    h2 = hypotheses(1)[0]
    v2.begin(h2, 10)
    with pytest.raises(ValidationError, match="before its evidence is final"):
        v2.decide(h2.id)

    class Short(HashMetric):
        def measure(self, model, cases):
            return super().measure(model, cases)[:-1]

    v3 = _validator(Short())
    with pytest.raises(ValidationError, match="returned 4 readings for 5"):
        v3.validate(h2, test_source(5)(h2))
    assert isinstance(TestCase, type)


def test_per_family_split_narrows_the_claim_to_its_family():
    from builtin_plugins.pipeline.explorer import per_family
    from md_framework.types import Hypothesis

    parent = Hypothesis(
        id="h1", hypothesis_type="knowledge_update", metric="target_logprob",
        families=["colors", "greetings"],
        description="The intervention model states different facts on 'colors', 'greetings'"
                    " prompts (target_logprob should change), because 1 feature(s) less active"
                    " on colors, greetings prompts.")
    kids = per_family(parent)
    assert [k.families for k in kids] == [["colors"], ["greetings"]]
    text = kids[1].description
    assert text.startswith("The intervention model states different facts on 'greetings' prompts")
    assert "'colors', 'greetings'" not in text and "on colors, greetings prompts" in text  # evidence kept
    assert "tested on 'greetings' alone" in text
    odd = per_family(parent.model_copy(update={"description": "Something changed."}))
    assert odd[0].description.startswith("On 'colors' prompts: Something changed.")
