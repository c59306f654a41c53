"""Bad inputs met inside a run: incompatible model pairs, non-finite metric values, a plugin
hook that raises mid-run (stop naming it, or skip it), a corrupt cache entry."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError as PydanticValidationError

from md_framework import hookimpl
from md_framework.errors import ConfigError, MDError, PluginError
from md_framework.runtime import LoadedModel, MetricReading, ModelSpec
from md_framework.types import Observation


class FakeTokenizer:
    def __init__(self, vocab):
        self.vocab = dict(vocab)

    def get_vocab(self):
        return dict(self.vocab)


def _model(source, arch, vocab):
    return LoadedModel(model=None, tokenizer=FakeTokenizer(vocab), model_id=f"id:{source}",
                       spec=ModelSpec(source=source), architecture=arch)


ARCH = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 3}
VOCAB = {"a": 0, "b": 1, "c": 2}


def test_compatible_pair_passes():
    from md_framework.pipeline.analyzer import check_pair_compatible

    check_pair_compatible(_model("base", ARCH, VOCAB), _model("int", dict(ARCH), dict(VOCAB)))


def test_dimension_mismatch_is_one_clear_error():
    from md_framework.pipeline.analyzer import check_pair_compatible

    with pytest.raises(ConfigError) as info:
        check_pair_compatible(_model("base", ARCH, VOCAB),
                              _model("int", {**ARCH, "hidden_size": 128}, VOCAB))
    assert "incompatible model pair base / int: hidden_size: 64 vs 128" in str(info.value)


def test_tokenizer_mismatch_is_one_clear_error():
    from md_framework.pipeline.analyzer import check_pair_compatible

    with pytest.raises(ConfigError) as info:
        check_pair_compatible(_model("base", ARCH, VOCAB),
                              _model("int", ARCH, {"a": 0, "c": 1, "d": 2}))
    assert ("tokenizer vocabularies differ (1 tokens only in base, 1 only in intervention,"
            " 1 with different ids)") in str(info.value)


# ----------------------------------------------------------------------- non-finite values

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_metric_reading_rejects_non_finite(bad):
    with pytest.raises(PydanticValidationError, match="metric value must be finite"):
        MetricReading(value=bad)


@pytest.mark.parametrize("field", ["base_value", "intervention_value"])
def test_observation_rejects_non_finite(field):
    values = {"base_value": 0.0, "intervention_value": 1.0, field: math.nan}
    with pytest.raises(PydanticValidationError, match=f"{field} must be a finite number"):
        Observation(test_case_id="t", hypothesis_id="h", metric="m", **values)


class NaNMetric:
    """A metric plugin that returns NaN as a plain float for the intervention model."""

    name = "nan_metric"
    description = "returns NaN"
    kind = "scored"
    outcome = "continuous"
    bounds = None
    serves = frozenset({"style_change"})

    def measure(self, model, cases):
        return [{"value": math.nan if model.model_id == "intervention" else 0.0}
                for _ in cases]


def test_non_finite_metric_value_mid_run_is_an_md_error(tmp_path):
    from toy import fake_model, hypotheses, test_source

    from md_framework.drivers import create_driver
    from builtin_plugins.pipeline.validation import Validator

    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    validator = Validator(fake_model("base"), fake_model("intervention"), [NaNMetric()],
                          fdr=fdr, paired_test="wilcoxon")
    h = hypotheses(1, metric="nan_metric")[0]
    with pytest.raises(MDError, match="nan_metric"):
        validator.validate(h, test_source(6)(h))


# ----------------------------------------------------------------------- a hook that raises

class ExplodingPlugin:
    """Raises from md_hypothesis_decided at its ``after``-th call."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0

    @hookimpl
    def md_hypothesis_decided(self, result):
        self.calls += 1
        if self.calls >= self.after:
            raise RuntimeError("boom in the middle of the run")


def _run(run_dir, on_error, plugin):
    from toy import HashMetric, fake_model, hypotheses, test_source

    from md_framework.drivers import create_driver
    from builtin_plugins.pipeline.explorer import BudgetedExplorer
    from md_framework.pipeline.ledger import Ledger
    from builtin_plugins.pipeline.validation import Validator
    from md_framework.plugins import Hooks, get_plugin_manager

    extra = []
    if plugin is not None:
        extra = [("exploding-plugin", plugin)]
    hooks = Hooks(get_plugin_manager(extra_plugins=extra, autoload=False), on_error=on_error)
    ledger = Ledger(run_dir, {"seed": 0})
    metric = HashMetric(outcome="bounded", shift=2.0, shifted_families=["fam1", "fam3"])
    validator = Validator(fake_model("base"), fake_model("intervention"), [metric],
                          fdr=create_driver("fdr_procedure", "saffron", {}, alpha=0.1),
                          paired_test="betting-e", ledger=ledger, min_effect_size=0.2,
                          hooks=hooks)
    explorer = BudgetedExplorer(hypotheses(5, planted=(1, 3)), validator, None,
                                     test_source(30), budget=600, batch_size=2, cases_per_pull=4)
    try:
        return explorer.run(), hooks, ledger
    finally:
        ledger.close()


def _decisions(run_dir):
    from md_framework.pipeline.ledger import Ledger

    ledger = Ledger(run_dir, {"seed": 0})
    try:
        return [(d.hypothesis_id, d.rejected) for d in ledger.decisions()], ledger.integrity_ok()
    finally:
        ledger.close()


def test_raising_hook_stops_the_run_naming_the_plugin_and_the_ledger_keeps_everything(tmp_path):
    reference, _, _ = _run(tmp_path / "clean", "stop", None)
    expected = [(r.hypothesis.id, r.decision) for r in reference.results]
    assert len(expected) == 5
    with pytest.raises(PluginError) as info:
        _run(tmp_path / "run", "stop", ExplodingPlugin(after=3))
    assert str(info.value) == ('plugin "exploding-plugin": hook md_hypothesis_decided raised'
                               " RuntimeError: boom in the middle of the run")
    kept, ok = _decisions(tmp_path / "run")
    assert ok
    # decisions are written before the hook hears of them: the 3rd is kept, in order
    assert kept == expected[:3]


def test_raising_hook_is_skipped_when_config_says_so(tmp_path):
    reference, _, _ = _run(tmp_path / "clean", "stop", None)
    result, hooks, _ = _run(tmp_path / "run", "skip", ExplodingPlugin(after=2))
    assert result.decisions() == reference.decisions()
    assert len(hooks.skipped) == 4  # calls 2..5 raised and were skipped
    assert all("exploding-plugin" in str(e) for e in hooks.skipped)
    assert [d for d, _ in _decisions(tmp_path / "run")[0]] == [
        r.hypothesis.id for r in reference.results]


# ----------------------------------------------------------------------- cache integrity

def test_tampered_cache_entry_is_detected_and_rebuilt(tmp_path):
    from md_framework.cache import ArtifactCache

    cache = ArtifactCache(tmp_path / "cache")
    path = cache.put_json("graph", "k1", {"nodes": [1, 2, 3]})
    path.write_text('{"nodes": [1, 2, 666]}')  # same shape, different bytes
    assert cache.get_json("graph", "k1") is None  # not trusted
    assert cache.stats.corrupt == 1
    cache.put_json("graph", "k1", {"nodes": [1, 2, 3]})  # rebuilt
    assert cache.get_json("graph", "k1") == {"nodes": [1, 2, 3]}
    cache.close()
