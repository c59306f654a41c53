"""The causal-share estimator on synthetic numbers (no torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from builtin_plugins.pipeline.causal import causal_share, confirm_causally
from md_framework.types import EffectSize, FeatureRef, Hypothesis, TestCase, ValidationResult


def test_share_is_the_ratio_of_prompt_averaged_effects() -> None:
    base = [0.0, 0.1, 0.2, 0.0]
    inter = [1.0, 0.9, 0.8, 1.0]
    ablated = [0.5, 0.6, 0.3, 0.4]
    est = causal_share(base, inter, ablated, n_bootstrap=500, seed=3)
    expected = np.mean(np.subtract(inter, ablated)) / np.mean(np.subtract(inter, base))
    assert est.effect is not None and math.isclose(est.effect.estimate, expected)
    assert est.effect.name == "causal_share" and est.n == 4
    assert est.effect.ci_low <= est.effect.estimate <= est.effect.ci_high


def test_full_and_null_shares_and_a_seeded_ci() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.1, 40)
    inter = base + 1.0 + rng.normal(0.0, 0.1, 40)
    full = causal_share(base, inter, base)  # features restore the base value exactly
    none = causal_share(base, inter, inter)  # features change nothing
    assert full.effect.estimate == pytest.approx(1.0) and none.effect.estimate == 0.0
    half = inter - 0.5 * (inter - base) + rng.normal(0.0, 0.05, 40)
    a = causal_share(base, inter, half, seed=7)
    b = causal_share(base, inter, half, seed=7)
    assert a.effect == b.effect  # seeded: reproducible
    assert a.effect.ci_low < 0.5 < a.effect.ci_high and a.effect.ci_high - a.effect.ci_low < 0.2


def test_near_zero_denominator_gives_no_share() -> None:
    base = [0.2, 0.3, 0.4]
    inter = [0.2001, 0.2999, 0.4001]
    est = causal_share(base, inter, [0.0, 0.0, 0.0], min_denominator=0.05)
    assert est.effect is None and "below" in est.reason
    assert causal_share([], [], []).effect is None


def test_replicates_with_tiny_denominators_are_dropped() -> None:
    # one prompt carries the whole effect: most resamples miss it and have no denominator
    base = [0.0] * 10
    inter = [0.0] * 9 + [1.0]
    est = causal_share(base, inter, [0.0] * 9 + [0.5], min_denominator=0.05, n_bootstrap=400)
    assert est.effect.estimate == pytest.approx(0.5)
    assert est.dropped_replicates > 0


class FakeMetric:
    name = "m"
    min_change = 0.0

    def measure(self, model, cases):
        from md_framework.runtime import MetricReading

        return [MetricReading(value=model.model["value"]) for _ in cases]


class FakeTracer:
    """Features move the intervention model's metric 40% of the way back to base."""

    def __init__(self) -> None:
        self.calls = []

    def intervened_model(self, model, features, mode="zero", scale=0.0, base=None):
        import contextlib
        import dataclasses

        self.calls.append((mode, tuple(features)))

        @contextlib.contextmanager
        def cm():
            v = model.model["value"]
            yield dataclasses.replace(model, model={"value": v - 0.4 * (v - base.model["value"])},
                                      model_id=model.model_id + "~x")
        return cm()


def _models():
    from md_framework.runtime import LoadedModel, ModelSpec

    return {"base": LoadedModel({"value": 0.0}, None, "b", ModelSpec(source="b")),
            "intervention": LoadedModel({"value": 1.0}, None, "i", ModelSpec(source="i"))}


def _result(hid: str, decision: bool, features: list[FeatureRef]) -> ValidationResult:
    h = Hypothesis(id=hid, hypothesis_type="t", description="d", metric="m",
                   source_features=features)
    return ValidationResult(hypothesis=h, test_name="x", decision=decision, n=3,
                            effect_size=EffectSize(name="cohens_dz", estimate=1.0))


def test_confirm_causally_fills_only_validated_feature_hypotheses() -> None:
    f = [FeatureRef(layer=0, feature=1)]
    results = [_result("a", True, f), _result("b", False, f), _result("c", True, [])]
    cases = [TestCase(id=str(i), hypothesis_id="a", prompt=f"p{i}") for i in range(10)]
    tracer = FakeTracer()
    spent = []
    out = confirm_causally(results, tracer, _models(), {"m": FakeMetric()},
                           lambda h: (cases, "fresh"), on_measured=spent.append)
    assert out[0].causal_share.estimate == pytest.approx(0.4)
    assert out[1].causal_share is None and out[2].causal_share is None
    assert tracer.calls == [("base", tuple(f))] and spent == [30]
    assert "causal share 0.40" in out[0].notes[-1]


def test_tracer_without_the_capability_is_skipped() -> None:
    results = [_result("a", True, [FeatureRef(layer=0, feature=1)])]
    assert confirm_causally(results, object(), _models(), {"m": FakeMetric()}, lambda h: []) == results


class SelectiveTracer(FakeTracer):
    """Only feature (0, 1) carries the effect: patching any other feature changes nothing."""

    def intervened_model(self, model, features, mode="zero", scale=0.0, base=None):
        import contextlib
        import dataclasses

        self.calls.append((mode, tuple(features)))
        share = 0.4 if any(f.feature == 1 for f in features) else 0.0

        @contextlib.contextmanager
        def cm():
            v = model.model["value"]
            yield dataclasses.replace(model, model={"value": v - share * (v - base.model["value"])},
                                      model_id=model.model_id + "~x")
        return cm()


class CountingMetric(FakeMetric):
    def __init__(self) -> None:
        self.measured = 0

    def measure(self, model, cases):
        self.measured += len(cases)
        return super().measure(model, cases)


def test_random_feature_control_draws_other_changed_features_of_the_same_layers() -> None:
    from builtin_plugins.pipeline.causal import control_features

    f = [FeatureRef(layer=0, feature=1)]
    pool = {0: [FeatureRef(layer=0, feature=i) for i in (1, 2, 3)],
            5: [FeatureRef(layer=5, feature=9)]}
    cases = [TestCase(id=str(i), hypothesis_id="a", prompt=f"p{i}") for i in range(10)]
    tracer, spent = SelectiveTracer(), []
    out = confirm_causally([_result("a", True, f)], tracer, _models(), {"m": FakeMetric()},
                           lambda h: (cases, "fresh"), on_measured=spent.append, control_pool=pool)
    assert out[0].causal_share.estimate == pytest.approx(0.4)
    assert out[0].causal_control_share.estimate == pytest.approx(0.0)
    (_, patched), (_, control) = tracer.calls
    assert patched == tuple(f) and len(control) == 1 and control[0].feature in (2, 3)
    assert spent == [40] and "random-feature control" in out[0].notes[-2]
    assert "share - control share (paired): 0.40" in out[0].notes[-1]
    # seeded: the same draw every time; never the hypothesis' own features
    h = out[0].hypothesis
    assert control_features(h, pool, 0) == control_features(h, pool, 0)
    assert all(c.feature != 1 for s in range(20) for c in control_features(h, pool, s))


def test_causal_readings_are_recorded_and_served_from_the_ledger(tmp_path) -> None:
    from md_framework.pipeline.ledger import Ledger

    f = [FeatureRef(layer=0, feature=1)]
    cases = [TestCase(id=str(i), hypothesis_id="a", prompt=f"p{i}") for i in range(10)]
    pool = {0: [FeatureRef(layer=0, feature=i) for i in (1, 2)]}
    runs = []
    for _ in range(2):
        metric, tracer = CountingMetric(), SelectiveTracer()
        with Ledger(tmp_path, {"seed": 0}) as ledger:
            out = confirm_causally([_result("a", True, f)], tracer, _models(), {"m": metric},
                                   lambda h: (cases, "fresh"), control_pool=pool, store=ledger)
        runs.append((metric.measured, len(tracer.calls), out[0]))
    (first_n, first_calls, first), (second_n, second_calls, second) = runs
    assert first_n == 40 and first_calls == 2          # base, intervention, patched, control
    assert second_n == 0 and second_calls == 0         # everything came from the ledger
    assert second.causal_share == first.causal_share
    assert second.causal_control_share == first.causal_control_share


def test_share_minus_control_is_paired_and_needs_an_effect() -> None:
    from builtin_plugins.pipeline.causal import share_difference

    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 0.1, 30)
    inter = base + 1.0 + rng.normal(0.0, 0.2, 30)
    ablated = inter - 0.7 * (inter - base)
    control = inter - 0.1 * (inter - base) + rng.normal(0.0, 0.01, 30)
    d = share_difference(base, inter, ablated, control, seed=2)
    a = causal_share(base, inter, ablated).effect.estimate
    c = causal_share(base, inter, control).effect.estimate
    assert d.estimate == pytest.approx(a - c) and d.name == "causal_share_minus_control"
    assert d.ci_low < d.estimate < d.ci_high and d.ci_low > 0.4
    assert share_difference(base, base + 1e-6, ablated, control, min_denominator=0.01) is None


def test_fewer_than_ten_prompts_give_no_share() -> None:
    f = [FeatureRef(layer=0, feature=1)]
    cases = [TestCase(id=str(i), hypothesis_id="a", prompt=f"p{i}") for i in range(9)]
    out = confirm_causally([_result("a", True, f)], FakeTracer(), _models(), {"m": FakeMetric()},
                           lambda h: (cases, "fresh"))
    assert out[0].causal_share is None and "at least 10 needed" in out[0].notes[-1]


class DirectionTracer(SelectiveTracer):
    """A searched set (feature 1) carries the effect; a hypothesis' own feature 7 does not."""

    def __init__(self) -> None:
        super().__init__()
        self.searched = []

    def search(self, h):
        self.searched.append(h.id)
        return {"features": [FeatureRef(layer=0, feature=1)], "search_share": 0.9, "cap": 2,
                "n_prompts": 6, "kind": "test set", "sweep": [{"set": "top 1", "share": 0.9}],
                "controls": [FeatureRef(layer=0, feature=5)], "queries": 7}


def test_a_searched_feature_set_replaces_the_named_features_with_its_own_control() -> None:
    cases = [TestCase(id=str(i), hypothesis_id="a", prompt=f"p{i}") for i in range(10)]
    tracer = DirectionTracer()
    own = [FeatureRef(layer=0, feature=7)]
    spent: list[int] = []
    out = confirm_causally([_result("a", True, own), _result("b", True, [])], tracer, _models(),
                           {"m": FakeMetric()}, lambda h: (cases, "fresh"), on_measured=spent.append,
                           control_pool={0: [FeatureRef(layer=0, feature=9)]}, search=tracer.search)
    assert tracer.searched == ["a", "b"]  # a hypothesis without named features is searched too
    assert spent == [7, 40, 7, 40]  # the search's own metric readings are counted
    for r in out:
        assert r.causal_share.estimate == pytest.approx(0.4)
        assert r.causal_control_share.estimate == pytest.approx(0.0)
        assert any("feature set searched (test set)" in n for n in r.notes)
    patched = [c[1] for c in tracer.calls]
    assert (FeatureRef(layer=0, feature=5),) in patched  # the search's own control
    assert all(FeatureRef(layer=0, feature=7) not in p for p in patched)


def test_a_failed_search_falls_back_to_the_named_features() -> None:
    cases = [TestCase(id=str(i), hypothesis_id="a", prompt=f"p{i}") for i in range(10)]
    f = [FeatureRef(layer=0, feature=1)]

    def broken(h):
        raise RuntimeError("no answers differ")

    out = confirm_causally([_result("a", True, f), _result("b", True, [])], SelectiveTracer(),
                           _models(), {"m": FakeMetric()}, lambda h: (cases, "fresh"), search=broken)
    assert out[0].causal_share.estimate == pytest.approx(0.4)
    assert any("found nothing" in n for n in out[0].notes)
    assert out[1].causal_share is None and "found nothing" in out[1].notes[-1]
