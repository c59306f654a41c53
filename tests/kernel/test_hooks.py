"""Each md_ hook is called through the kernel's Hooks runner with a fresh plugin manager."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from md_framework import hookimpl
from md_framework.errors import PluginError
from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.runtime import (
    BehaviourMetric,
    LoadedModel,
    MetricReading,
    ModelLoadOptions,
    ModelSpec,
    TestGenerationContext,
)
from md_framework.types import (
    AnalysisReport,
    CircuitDiff,
    FeatureInterpretation,
    FeatureRef,
    Hypothesis,
    HypothesisTypeSpec,
    Pattern,
    TestCase,
    ValidationResult,
)

DIFF = CircuitDiff(base_model_id="a", intervention_model_id="b")
HYP = Hypothesis(id="h1", hypothesis_type="style_change", description="shouts", metric="uppercase_ratio")


class Recorder:
    """A plugin implementing every hook, recording what it was given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    @hookimpl
    def md_hypothesis_types(self):
        return [HypothesisTypeSpec(name="tool_use_change", description="calls tools differently")]

    @hookimpl
    def md_behaviour_metrics(self):
        class Length:
            name = "length"
            description = "characters in the prompt"
            serves = frozenset({"style_change"})
            kind = "generated"
            outcome = "continuous"
            bounds = None

            def measure(self, model, cases):
                return [MetricReading(value=len(c.prompt), output=c.prompt) for c in cases]

        return [Length()]

    @hookimpl
    def md_prompt_family_generators(self):
        class Counting:
            name = "counting"
            description = "count to n"

            def generate(self, n, seed):
                return [f"Count to {i + seed}" for i in range(n)]

        return [Counting()]

    @hookimpl
    def md_load_universe(self, source, n_per_family, seed):
        if source != "counting-universe":
            return None
        return {"counting": [f"Count to {i + seed}" for i in range(n_per_family)]}

    @hookimpl
    def md_register_commands(self, cli):
        @cli.command("hello")
        def hello():
            click.echo("hello from plugin")

    @hookimpl
    def md_load_model(self, spec, options):
        if spec.source != "fake":
            return None
        return LoadedModel(model=object(), tokenizer=object(), model_id="fake:1", spec=spec)

    @hookimpl
    def md_interpret_features(self, features, context):
        return [FeatureInterpretation(feature=f, description=f"feature {f.key}") for f in features]

    @hookimpl
    def md_detect_patterns(self, diff, interpretations, config):
        return [Pattern(id="p1", pattern_type="test", description="seen " + diff.base_model_id)]

    @hookimpl
    def md_hypotheses_from_patterns(self, patterns, interpretations, config):
        return [HYP.model_copy(update={"source_patterns": [p.id for p in patterns]})]

    @hookimpl
    def md_generate_tests(self, hypothesis, n_tests, context):
        return [TestCase(id=f"t{i}", hypothesis_id=hypothesis.id, prompt=f"p{i}") for i in range(n_tests)]

    @hookimpl
    def md_run_started(self, config, run_dir):
        self.events.append(("run_started", run_dir))

    @hookimpl
    def md_phase_finished(self, phase, summary):
        self.events.append(("phase_finished", (phase, dict(summary))))

    @hookimpl
    def md_hypothesis_decided(self, result):
        self.events.append(("decided", result.hypothesis.id))

    @hookimpl
    def md_report_ready(self, report, out_dir):
        self.events.append(("report", out_dir))


@pytest.fixture()
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture()
def hooks(recorder: Recorder) -> Hooks:
    return Hooks(get_plugin_manager(autoload=False, extra_plugins=[("recorder", recorder)]))


def test_md_hypothesis_types_includes_builtins_and_plugin_types(hooks: Hooks) -> None:
    names = {c.value.name: c.plugin for c in hooks.collect("md_hypothesis_types")}
    assert names["tool_use_change"] == "recorder"
    assert names["safety_degradation"] == "hypothesis-types"  # the builtin plugin, via entry point


def test_md_behaviour_metrics(hooks: Hooks) -> None:
    metrics = hooks.collect("md_behaviour_metrics")
    (metric,) = [c.value for c in metrics if c.plugin == "recorder"]
    assert isinstance(metric, BehaviourMetric)
    (reading,) = metric.measure(None, [TestCase(id="a", hypothesis_id="h", prompt="abc")])
    assert reading.value == 3.0 and reading.output == "abc"


def test_md_prompt_family_generators(hooks: Hooks) -> None:
    (gen,) = [c.value for c in hooks.collect("md_prompt_family_generators") if c.plugin == "recorder"]
    assert gen.generate(2, seed=1) == ["Count to 1", "Count to 2"]


def test_md_load_universe_is_firstresult(hooks: Hooks) -> None:
    found = hooks.first("md_load_universe", source="counting-universe", n_per_family=2, seed=5)
    assert found is not None and found.plugin == "recorder"
    assert found.value == {"counting": ["Count to 5", "Count to 6"]}
    assert hooks.first("md_load_universe", source="elsewhere", n_per_family=2, seed=5) is None


def test_md_register_commands(hooks: Hooks) -> None:
    from click.testing import CliRunner

    group = click.Group("md")
    hooks.call("md_register_commands", cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and "hello from plugin" in result.output


def test_md_load_model_is_firstresult(hooks: Hooks) -> None:
    found = hooks.first("md_load_model", spec=ModelSpec(source="fake"), options=ModelLoadOptions())
    assert found is not None and found.plugin == "recorder" and found.value.model_id == "fake:1"
    assert hooks.first("md_load_model", spec=ModelSpec(source="nothing-loads-this"),
                       options=ModelLoadOptions()) is None


def test_md_interpret_features(hooks: Hooks) -> None:
    out = hooks.collect("md_interpret_features", features=[FeatureRef(layer=1, feature=2)], context={})
    assert [c.value.description for c in out] == ["feature 1:2"]


def test_md_detect_patterns_and_hypotheses(hooks: Hooks) -> None:
    patterns = hooks.collect("md_detect_patterns", diff=DIFF, interpretations={}, config=None)
    assert [(c.plugin, c.value.description) for c in patterns] == [("recorder", "seen a")]
    hyps = hooks.collect("md_hypotheses_from_patterns", patterns=[c.value for c in patterns],
                         interpretations={}, config=None, pattern_types={}, hypothesis_types={})
    assert hyps[0].value.source_patterns == ["p1"]


def test_md_generate_tests(hooks: Hooks) -> None:
    out = hooks.collect("md_generate_tests", hypothesis=HYP, n_tests=3, context=TestGenerationContext())
    assert [c.value.prompt for c in out if c.plugin == "recorder"] == ["p0", "p1", "p2"]


def test_builtins_can_be_left_out(recorder: Recorder) -> None:
    pm = get_plugin_manager(autoload=False, builtins=False, extra_plugins=[("recorder", recorder)])
    assert [c.plugin for c in Hooks(pm).collect("md_hypothesis_types")] == ["recorder"]
    assert pm.records["hypothesis-types"].status == "not-autoloaded"


def test_lifecycle_hooks(hooks: Hooks, recorder: Recorder, tmp_path: Path) -> None:
    result = ValidationResult(hypothesis=HYP, test_name="wilcoxon", p_value=0.5, decision=False, n=4)
    hooks.call("md_run_started", config=None, run_dir=tmp_path)
    hooks.call("md_phase_finished", phase="trace", summary={"prompts": 3})
    hooks.call("md_hypothesis_decided", result=result)
    hooks.call("md_report_ready", report=AnalysisReport(), out_dir=tmp_path)
    assert recorder.events == [
        ("run_started", tmp_path), ("phase_finished", ("trace", {"prompts": 3})),
        ("decided", "h1"), ("report", tmp_path),
    ]


class Exploding:
    @hookimpl
    def md_detect_patterns(self, diff):
        raise ZeroDivisionError("bad lab code")


def test_raising_plugin_is_named_or_skipped(recorder: Recorder) -> None:
    pm = get_plugin_manager(autoload=False, extra_plugins=[("recorder", recorder), ("exploding", Exploding())])
    with pytest.raises(PluginError, match=r'plugin "exploding".*md_detect_patterns raised ZeroDivisionError'):
        Hooks(pm).collect("md_detect_patterns", diff=DIFF, interpretations={}, config=None)
    skipping = Hooks(pm, on_error="skip")
    out = skipping.collect("md_detect_patterns", diff=DIFF, interpretations={}, config=None)
    assert [c.plugin for c in out] == ["recorder"]
    assert [e.plugin for e in skipping.skipped] == ["exploding"]


class Wrapper:
    @hookimpl(wrapper=True)
    def md_detect_patterns(self, diff):
        return (yield)


def test_hook_wrappers_are_rejected() -> None:
    with pytest.raises(PluginError, match="wrapper"):
        get_plugin_manager(autoload=False, extra_plugins=[("wrapper", Wrapper())])


def test_unknown_hookimpl_is_caught_by_check_pending() -> None:
    class Typo:
        @hookimpl
        def md_detect_pattern(self, diff):  # missing "s"
            return []

    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError, match="md_detect_pattern"):
        get_plugin_manager(autoload=False, extra_plugins=[("typo", Typo())])


def test_blocked_builtin_is_not_loaded() -> None:
    pm = get_plugin_manager(autoload=False, blocked=["hypothesis-types"])
    assert pm.records["hypothesis-types"].status == "blocked"
    assert Hooks(pm).collect("md_hypothesis_types") == []


def test_trace_env_writes_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                     recorder: Recorder) -> None:
    monkeypatch.setenv("MD_TRACE_HOOKS", "1")
    hooks = Hooks(get_plugin_manager(autoload=False, extra_plugins=[("recorder", recorder)]))
    hooks.collect("md_detect_patterns", diff=DIFF, interpretations={}, config=None)
    err = capsys.readouterr().err
    assert "md hook: recorder.md_detect_patterns(diff, interpretations, config)" in err
