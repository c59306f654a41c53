"""Pattern types are first-class (md_pattern_types), undeclared ones are reported, and every
hypothesis the floor or the cap leaves out is named with its reason (issue #14)."""

from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError

from md_framework import hookimpl
from md_framework.config import AnalysisConfig
from builtin_plugins.pipeline.discovery import (
    detect_patterns,
    evidence_of,
    pattern_types,
    select_evidence,
    select_hypotheses,
)
from md_framework.plugins import Hooks
from md_framework.testing import make_change, plugin_hooks, synthetic_circuit_diff
from md_framework.types import (
    AnalysisReport,
    CircuitDiff,
    DroppedHypothesis,
    Hypothesis,
    Pattern,
    PatternType,
)


class NewTypeDetector:
    """Emits one pattern of a type it declares (or not), on the family 'math'."""

    def __init__(self, declare: bool = True, name: str = "steep_drop", level: str = "circuit",
                 hypothesis_type: str | None = None, strength: float = 0.7) -> None:
        self.declare, self.name, self.level = declare, name, level
        self.hypothesis_type, self.strength = hypothesis_type, strength

    @hookimpl
    def md_pattern_types(self) -> list[PatternType]:
        if not self.declare:
            return []
        return [PatternType(name=self.name, level=self.level, hypothesis_type=self.hypothesis_type,
                            sign_key="drop", weight=0.8)]

    @hookimpl
    def md_detect_patterns(self, diff: CircuitDiff) -> list[Pattern]:
        return [Pattern(id=f"{self.name}:math", pattern_type=self.name, description="math answers fell",
                        families=["math"], strength=self.strength, evidence={"drop": -0.4})]


def _hooks(*plugins) -> Hooks:
    return plugin_hooks(*plugins, builtins=True)


def test_builtin_detectors_declare_every_type_they_emit() -> None:
    registry = pattern_types(_hooks())
    assert {"output_shift", "answer_change", "family_specific_change", "computation_rerouting",
            "systematic_suppression", "capability_emergence", "safety_degradation",
            "safety_enhancement"} <= set(registry)
    assert {n for n, t in registry.items() if t.level == "output"} == {"output_shift", "answer_change"}
    diff = synthetic_circuit_diff()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no builtin pattern is undeclared
        patterns = detect_patterns(_hooks(), diff, {}, None)
    assert patterns and {p.pattern_type for p in patterns} <= set(registry)


def test_md_pattern_types_hook_records_the_declaring_plugin() -> None:
    hooks = plugin_hooks(("steep", NewTypeDetector()))
    found = hooks.collect("md_pattern_types")
    assert [(c.plugin, c.value.name, c.value.level) for c in found] == [("steep", "steep_drop", "circuit")]


def test_pattern_type_model_is_strict() -> None:
    with pytest.raises(ValidationError):
        PatternType(name="x", level="output", weight=0.5, colour="red")
    with pytest.raises(ValidationError):
        PatternType(name="x", level="neuron", weight=0.5)
    with pytest.raises(ValidationError):
        PatternType(name="x", level="output", weight=0.0)


def test_declared_pattern_type_becomes_its_own_hypothesis_above_the_floor() -> None:
    """A circuit-level third-party type at weight 0.8: priority 0.7 x 0.8 = 0.56, where the
    same pattern undeclared gets the generic reading 0.7 x 0.6 x 0.35 (feature level next
    to the builtins' family-level evidence) and is dropped under the floor."""
    diff = synthetic_circuit_diff(families=("harmful", "weather", "math", "code"))
    config = AnalysisConfig(base_model="b", intervention_model="i", max_hypotheses_to_test=20)
    hooks = _hooks(("steep", NewTypeDetector(hypothesis_type="capability_loss")))
    patterns = detect_patterns(hooks, diff, {}, config)
    kept, dropped = select_hypotheses(patterns, {}, hooks, config)
    ours = [h for h in kept if "steep_drop:math" in h.source_patterns]
    assert [(h.hypothesis_type, h.direction, h.families) for h in ours] == [("capability_loss", "decrease", ["math"])]
    assert ours[0].priority == pytest.approx(0.56)
    assert "steep" in ours[0].provenance

    undeclared = _hooks(("steep", NewTypeDetector(declare=False)))
    with pytest.warns(UserWarning, match='"steep_drop".*not declared.*Did you mean "steep_drop"|not declared'):
        patterns = detect_patterns(undeclared, diff, {}, config)
    kept, dropped = select_hypotheses(patterns, {}, undeclared, config)
    assert not [h for h in kept if "steep_drop:math" in h.source_patterns]
    (low,) = [d for d in dropped if "steep_drop:math" in d.hypothesis.source_patterns]
    assert low.reason == "below_floor" and low.limit == 0.3
    assert low.hypothesis.priority == pytest.approx(0.7 * 0.6 * 0.35)


def test_undeclared_type_warning_suggests_the_close_name() -> None:
    hooks = _hooks(("steep", NewTypeDetector(declare=False, name="output_shfit")))
    with pytest.warns(UserWarning, match='Did you mean "output_shift"'):
        detect_patterns(hooks, synthetic_circuit_diff(), {}, None)


def test_a_type_declared_twice_keeps_the_first_and_warns() -> None:
    hooks = plugin_hooks(("one", NewTypeDetector()), ("two", NewTypeDetector(level="output")))
    with pytest.warns(UserWarning, match="declared by both (one and two|two and one)") as caught:
        registry = pattern_types(hooks)
    kept = str(caught[0].message).split("; ")[1].split("'s declaration")[0]
    assert registry["steep_drop"].level == {"one": "circuit", "two": "output"}[kept]


def test_output_level_comes_from_the_registry() -> None:
    hooks = _hooks(("steep", NewTypeDetector(level="output")))
    registry = pattern_types(hooks)
    patterns = [Pattern(id="s", pattern_type="steep_drop", description=""),
                Pattern(id="f", pattern_type="family_specific_change", description="")]
    assert [p.id for p in select_evidence(patterns, "output", registry)] == ["s"]
    h = Hypothesis(id="h", hypothesis_type="style_change", description="", metric="length",
                   source_patterns=["s", "f"])
    assert evidence_of(h, patterns, registry) == "both"


def test_every_dropped_hypothesis_is_named_with_its_reason() -> None:
    diff = CircuitDiff(base_model_id="b", intervention_model_id="i", systematic_changes=[
        make_change(1, i, -1.0, 10 ** -(2 + i), {f"fam{i}": -1.0, "other": 0.0}) for i in range(6)])
    hooks = _hooks()
    config = AnalysisConfig(base_model="b", intervention_model="i", max_hypotheses_to_test=2)
    patterns = detect_patterns(hooks, diff, {}, config)
    kept, dropped = select_hypotheses(patterns, {}, hooks, config, floor=0.58)
    assert len(kept) == 2
    reasons = {d.reason for d in dropped}
    assert reasons == {"below_floor", "over_cap"}
    for d in dropped:
        if d.reason == "below_floor":
            assert d.hypothesis.priority < 0.58 and d.limit == 0.58 and "below the floor" in d.detail
        else:
            assert d.hypothesis.priority >= 0.58 and d.limit == 2 and "over the cap of 2" in d.detail
    # nothing is lost: tested + dropped = every merged hypothesis the templates formed
    everything = select_hypotheses(patterns, {}, hooks, config.model_copy(update={"max_hypotheses_to_test": 100}),
                                   floor=0.0)[0]
    assert sorted(h.id for h in everything) == sorted([h.id for h in kept] + [d.hypothesis.id for d in dropped])


def _report_with_dropped() -> AnalysisReport:
    h = Hypothesis(id="style_change:length:change:math", hypothesis_type="style_change",
                   description="answers on math got longer", metric="length", priority=0.21,
                   provenance=["hypothesis-templates", "steep"])
    return AnalysisReport(dropped_hypotheses=[
        DroppedHypothesis(hypothesis=h, reason="below_floor", limit=0.3, detail="priority 0.210 below the floor 0.30"),
        DroppedHypothesis(hypothesis=h.model_copy(update={"id": "x", "priority": 0.5}), reason="over_cap",
                          limit=8, detail="over the cap of 8 (max_hypotheses_to_test); priority 0.500")],
        unregistered_pattern_types=["steep_drop"])


def test_text_report_lists_dropped_hypotheses() -> None:
    text = _report_with_dropped().summary_text()
    assert "hypotheses not tested: 2" in text
    assert "[below floor] style_change: answers on math got longer (priority 0.210 below the floor 0.30;" \
           " from hypothesis-templates, steep)" in text
    assert "[over cap]" in text and "steep_drop" in text


def test_html_and_rich_reports_list_dropped_hypotheses() -> None:
    from io import StringIO

    from rich.console import Console

    from builtin_plugins.report.html import render_html
    from builtin_plugins.report.summary import print_rich_summary

    html = render_html(_report_with_dropped())
    assert 'id="dropped"' in html and "below floor" in html and "over cap" in html
    assert "style_change:length:change:math" in html and "steep_drop" in html
    assert 'id="dropped"' not in render_html(AnalysisReport())
    out = StringIO()
    print_rich_summary(_report_with_dropped(), Console(file=out, width=200))
    assert "below the floor 0.30" in out.getvalue()
