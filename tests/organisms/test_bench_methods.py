"""md bench methods of issue 18: ``adl`` (ADL screen, then confirmation),
``pipeline-crosscoder`` and ``pipeline-circuit-tracer`` (dictionary training charged in the
token currency of md_framework.costs)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_new_methods_are_registered_and_misspellings_get_a_did_you_mean() -> None:
    from md_framework.errors import ConfigError

    from builtin_plugins.organisms.bench import METHODS, BenchConfig

    for m in ("adl", "pipeline-crosscoder", "pipeline-circuit-tracer"):
        assert m in METHODS
        BenchConfig(specs=["toy-multi"], methods=[m])
    with pytest.raises(ConfigError, match="pipeline-crosscoder"):
        BenchConfig(specs=["toy-multi"], methods=["pipeline-crosscoders"])


def _counted_linear():
    torch = pytest.importorskip("torch")
    from builtin_plugins.models.cost_counting import attach

    lin = torch.nn.Linear(4, 4)
    attach(lin, "t")
    return torch, lin


def test_dictionary_training_is_charged_once_recorded_and_reused(tmp_path: Path) -> None:
    """Trained now: counted by the measuring block around the method (no record returned);
    reused: the recorded work comes back so run_bench charges it to that run too; a directory
    whose work record is missing is trained again (its cost is unknown)."""
    from md_framework import costs

    from builtin_plugins.organisms.bench import charged_work
    from builtin_plugins.organisms.bench_methods import WORK_SUFFIX, _reuse_or_train

    torch, lin = _counted_linear()
    calls = []

    def train(out: Path) -> None:
        calls.append(out)
        out.mkdir(parents=True)
        lin(torch.zeros(1, 3, 4))  # one pass through a counted module

    out = tmp_path / "dict" / "k"
    with costs.measuring() as work:
        path, recorded = _reuse_or_train(out, train)
    assert path == out and recorded is None and len(calls) == 1
    trained = work()
    assert trained.prompt_tokens > 0 and trained.forward_passes == 1
    path, recorded = _reuse_or_train(out, train)
    assert len(calls) == 1 and recorded == trained.model_dump()
    measured = costs.ModelWork(prompt_tokens=10, forward_passes=1)
    assert charged_work(measured, {"dictionary_work": recorded}).tokens == 10 + trained.tokens
    assert charged_work(measured, {}).tokens == 10
    out.with_name(out.name + WORK_SUFFIX).unlink()
    _reuse_or_train(out, train)
    assert len(calls) == 2


def test_dictionary_pipeline_sets_the_tracer_and_passes_the_recorded_work(monkeypatch, tmp_path: Path) -> None:
    from builtin_plugins.organisms import bench, bench_methods
    from builtin_plugins.organisms.bench import BenchConfig, _run_dictionary_pipeline

    seen = {}

    def fake_pipeline(spec_ref, universe, cfg, seed, evidence="all"):
        seen["overrides"] = cfg.pipeline_overrides
        return {"status": "ok", "discoveries": [], "queries": 0, "circuit_passes": 0}

    monkeypatch.setattr(bench, "run_pipeline", fake_pipeline)
    trained = {}

    def fake_crosscoder(b, i, c, train):
        trained["crosscoder"] = train
        return tmp_path / "xc", {"prompt_tokens": 7}

    def fake_transcoders(b, u, c, train):
        trained["transcoders"] = train
        return tmp_path / "tc", None

    monkeypatch.setattr(bench_methods, "crosscoder_for", fake_crosscoder)
    monkeypatch.setattr(bench_methods, "transcoders_for", fake_transcoders)
    cfg = BenchConfig(specs=["toy-multi"], cache_dir=tmp_path, dictionaries={"crosscoder": {"d_sae": 128}})
    res = _run_dictionary_pipeline("pipeline-crosscoder", "toy-multi", None, None, {}, cfg, 0)
    assert trained["crosscoder"]["d_sae"] == 128  # the option, over the toy's layers
    assert trained["crosscoder"]["layers"] == bench_methods.TOY_CROSSCODER["layers"]
    assert seen["overrides"]["tracer"] == "crosscoder"
    assert seen["overrides"]["tracer_options"] == {"crosscoder": str(tmp_path / "xc")}
    assert seen["overrides"]["n_seed_prompts"] == cfg.pipeline_overrides["n_seed_prompts"]
    assert res["dictionary_work"] == {"prompt_tokens": 7}
    res = _run_dictionary_pipeline("pipeline-circuit-tracer", "toy-multi", None, None, {}, cfg, 0)
    assert trained["transcoders"]["d_sae"] == bench_methods.TOY_TRANSCODERS["d_sae"]
    assert seen["overrides"]["tracer"] == "circuit-tracer"
    assert seen["overrides"]["tracer_options"] == {"transcoders": str(tmp_path / "tc")}
    assert "dictionary_work" not in res
    assert "uncounted" not in res  # attribution passes are counted (tests/tracers/test_circuit_tracer_costs.py)
    assert cfg.pipeline_overrides.get("tracer") == "activation-diff"  # the config is not mutated
    # a pipeline config naming the tracer gives its options; the dictionary stays the bench's
    named = BenchConfig(specs=["toy-multi"], cache_dir=tmp_path, pipeline_overrides={
        "tracer": "crosscoder", "tracer_options": {"difference_nodes": False, "crosscoder": "elsewhere"}})
    _run_dictionary_pipeline("pipeline-crosscoder", "toy-multi", None, None, {}, named, 0)
    assert seen["overrides"]["tracer_options"] == {"difference_nodes": False, "crosscoder": str(tmp_path / "xc")}
    _run_dictionary_pipeline("pipeline-circuit-tracer", "toy-multi", None, None, {}, named, 0)
    assert seen["overrides"]["tracer_options"] == {"transcoders": str(tmp_path / "tc")}


class _FakeMetric:
    name = "m"
    outcome = "continuous"
    bounds = (0.0, 1.0)
    min_change = 0.1
    kind = "scored"


def test_adl_confirms_only_named_families_on_prompts_disjoint_from_its_mapping(monkeypatch) -> None:
    """The ADL screen sees only the last ``map_n`` prompts of each family; confirmation uses
    the first ones, every applicable metric of each named family, BH over those arms."""
    from builtin_plugins.adl import lens
    from builtin_plugins.adl.lens import ADLDirection, ADLResult
    from builtin_plugins.organisms import bench_methods
    from builtin_plugins.organisms.baselines import Arms

    cases = {f: [(f"{f} {i}", None) for i in range(16)] for f in ("a", "b", "c", "d", "e", "f")}
    seen = {}

    def fake_adl(base, inter, families, options, seed=0):
        seen["mapping"], seen["options"] = families, options
        return ADLResult(directions=[ADLDirection(layer=1, norm=1.0, relative_norm=0.1, lens_tokens=["x"],
                                                  steered=[], tags=[], direction=[1.0])],
                         family_scores={"a": 2.0, "b": 1.5, "c": 0.1}, named_families=["a", "b"], layer=1,
                         hypotheses=[], prompts=["p"], cost={"forward_passes": 3})

    monkeypatch.setattr(lens, "activation_difference_lens", fake_adl)
    arms = Arms(None, None, cases, [_FakeMetric()])
    measured = []

    def measure(family, metric, items):
        measured.append((family, [p for p, _ in items]))
        shift = 0.5 if family == "a" else 0.0
        return [0.0] * len(items), [shift + 0.01 * k for k in range(len(items))]

    monkeypatch.setattr(arms, "measure", measure)
    res = bench_methods.run_adl(arms, 0.05, n_prompts=12, map_n=4, seed=0)
    assert {f: len(p) for f, p in seen["mapping"].items()} == {f: 4 for f in cases}
    assert seen["options"].max_families == 2  # a third of the universe
    assert [f for f, _ in measured] == ["a", "b"]
    for family, prompts in measured:
        assert len(prompts) == 12 and not set(prompts) & set(seen["mapping"][family])
    assert [(d.families, d.metric) for d in res["discoveries"]] == [(["a"], "m")]
    assert res["named"] == ["a", "b"] and res["adl_cost"] == {"forward_passes": 3}


def test_adl_method_on_a_toy_organism_counts_its_passes(toy_multi, organism_cache: Path, tmp_path: Path) -> None:
    """End to end through run_bench: the lens reads the toy's own language, maps onto 4
    screening prompts per family, and every pass it makes is in the token ledger."""
    from builtin_plugins.organisms.bench import BenchConfig, run_bench

    cfg = BenchConfig(specs=["toy-multi"], out_dir=tmp_path, cache_dir=organism_cache, methods=["adl"],
                      plots=False, metrics=["refusal_probability", "uppercase_ratio"], threads=1)
    (row,) = run_bench(cfg, log=lambda *a, **k: None)["rows"]
    assert row["status"] == "ok", row.get("error")
    d = row["details"]
    assert d["prompt_source"] == "vocabulary"
    n_fam = row["families"]
    assert d["adl_cost"]["forward_passes"] == 2 * 32 + 4 * n_fam
    assert 1 <= len(d["named"]) <= n_fam // 3
    # ADL's passes plus the confirmation's are counted by the models themselves
    assert row["forward_passes"] >= d["adl_cost"]["forward_passes"]
    # confirmation only: 2 models x 12 prompts x 2 model calls (scored + greedy) per named family
    assert row["tokens"] > 0 and row["queries"] == 2 * 12 * 2 * len(d["named"])


def test_dictionary_settings_are_the_toys_on_the_toy_and_the_commands_defaults_elsewhere(tmp_path: Path) -> None:
    """md bench trained every dictionary with the toy's settings (layer 1 of SmolLM2's 30);
    on another model it now uses the training commands' defaults, and options override both."""
    from md_framework.errors import ConfigError

    from builtin_plugins.organisms.bench import BenchConfig
    from builtin_plugins.organisms.bench_methods import (
        TOY_CROSSCODER,
        TOY_TRANSCODERS,
        dictionary_settings,
    )
    from builtin_plugins.tracers.crosscoder_train import CrosscoderTrainConfig
    from builtin_plugins.tracers.transcoders import TrainConfig

    assert dictionary_settings("crosscoder", toy=True) == CrosscoderTrainConfig(**TOY_CROSSCODER).model_dump()
    assert dictionary_settings("transcoders", toy=True) == TrainConfig(**TOY_TRANSCODERS).model_dump()
    real = dictionary_settings("crosscoder", toy=False)
    assert real == CrosscoderTrainConfig().model_dump() and real["layers"] is None  # the middle layer
    assert dictionary_settings("transcoders", toy=False, options={"layers": [3, 4]})["layers"] == [3, 4]
    with pytest.raises(ConfigError, match="crosscoder"):
        dictionary_settings("crosscoders", toy=True)
    with pytest.raises(ConfigError, match="d_sae"):
        dictionary_settings("crosscoder", toy=True, options={"dsae": 64})
    with pytest.raises(ConfigError, match="k"):
        dictionary_settings("transcoders", toy=False, options={"k": 0})
    with pytest.raises(ConfigError, match="transcoders"):
        BenchConfig(specs=["toy-multi"], dictionaries={"transcoder": {}})


def test_bench_command_reads_the_dictionary_config(monkeypatch, tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from builtin_plugins.organisms import bench
    from builtin_plugins.organisms.plugin import md_register_commands

    @click.group()
    def cli() -> None:
        pass

    md_register_commands(cli=cli)  # only this plugin's commands: no installed plugin leaks in
    seen = {}

    def fake_run(config, log=print):
        seen["dictionaries"] = config.dictionaries
        return {"markdown": "ok"}

    monkeypatch.setattr(bench, "run_bench", fake_run)
    conf = tmp_path / "dicts.yaml"
    conf.write_text("crosscoder: {layers: [15], d_sae: 1024}\n")
    result = CliRunner().invoke(cli, ["bench", "toy-multi", "--dictionary-config", str(conf),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert seen["dictionaries"] == {"crosscoder": {"layers": [15], "d_sae": 1024}}
    conf.write_text("crosscoder: {layer: [15]}\n")
    result = CliRunner().invoke(cli, ["bench", "toy-multi", "--dictionary-config", str(conf),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "layers" in (result.output + str(result.exception))
