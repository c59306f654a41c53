"""Transcoder training: TopK/BatchTopK in torch, JumpReLU export circuit-tracer can load."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("circuit_tracer")

from builtin_plugins.tracers.transcoders import (  # noqa: E402
    TrainConfig,
    dictionary_id_of,
    evaluate,
    load_transcoder_dir,
    stdlib_docstrings,
    train_layer,
    write_transcoder_dir,
)


def _sparse_task(n=4000, d=32, m=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    enc = torch.randn(m, d, generator=g)
    dec = torch.randn(m, d, generator=g)
    h = torch.relu(x @ enc.T - 2.0)  # sparse hidden code
    return x, h @ dec


@pytest.mark.parametrize("kind", ["batchtopk", "topk"])
def test_train_layer_learns_and_exports_jumprelu(kind, tmp_path):
    x, y = _sparse_task()
    x[0] *= 500  # an outlier token is left out of training
    cfg = TrainConfig(d_sae=128, k=8, kind=kind, batch_size=128, epochs=15, lr=3e-3,
                      outlier_factor=10.0)
    state, m = train_layer(x, y, cfg, layer=0)
    assert set(state) == {"W_enc", "W_dec", "b_enc", "b_dec", "activation_function.threshold"}
    assert state["W_enc"].shape == (128, 32) and state["W_dec"].shape == (128, 32)
    assert m["fvu"] < 0.5, m
    assert 1 <= m["l0"] <= 40 and 0.0 <= m["dead_share"] <= 1.0
    assert m["n_outlier_tokens"] >= 1
    dict_id = write_transcoder_dir(tmp_path / "tc", {0: state}, {"metrics": [m]}, scan="t")
    assert dict_id == dictionary_id_of(tmp_path / "tc")
    (tmp_path / "tc" / "md_transcoders.json").unlink()
    assert dictionary_id_of(tmp_path / "tc") == dict_id  # recomputed from the files
    ts = load_transcoder_dir(tmp_path / "tc")
    with torch.no_grad():
        acts = ts[0].encode(x[:50])
        rec = ts[0].decode(acts)
    ours = state["W_enc"]
    pre = x[:50] @ ours.T + state["b_enc"]
    expect = pre * (pre > state["activation_function.threshold"])
    assert torch.allclose(acts, expect, atol=1e-5)
    assert torch.allclose(rec, expect @ state["W_dec"] + state["b_dec"], atol=1e-4)
    assert evaluate(state, x[1:], y[1:])["fvu"] < 0.6


def test_stdlib_docstrings_corpus():
    texts = stdlib_docstrings(max_chars=20_000)
    assert len(texts) > 10 and sum(map(len, texts)) >= 20_000
    assert texts == stdlib_docstrings(max_chars=20_000)  # stable order


def test_toy_transcoders_cached(artefact_cache_dir):
    from builtin_plugins.toy import build_toy_transcoders

    path = build_toy_transcoders(artefact_cache_dir)
    meta = json.loads((path / "md_transcoders.json").read_text())
    assert meta["layers"] == [0, 1] and meta["dictionary_id"].startswith("tc:")
    assert all(m["fvu"] < 0.2 for m in meta["layers_metrics"])
    assert build_toy_transcoders(artefact_cache_dir) == path


def test_transcoders_train_cli_and_trace_cli(artefact_cache_dir, tmp_path):
    from click.testing import CliRunner

    from md_framework.cli import _register_plugin_commands, cli
    from md_framework.types import CircuitGraph

    _register_plugin_commands()
    runner = CliRunner()
    out = tmp_path / "tc"
    res = runner.invoke(cli, [
        "transcoders", "train", "--model", "toy", "--layers", "0-1", "--d-sae", "64", "--k", "4",
        "--tokens", "600", "--n-generate", "0", "--batch-size", "32", "--out", str(out),
        "--cache-dir", str(artefact_cache_dir), "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [m["layer"] for m in report["layers"]] == [0, 1]
    assert {"fvu", "l0", "dead_share"} <= set(report["layers"][0])
    assert (out / "layer_1.safetensors").exists() and (out / "config.yaml").exists()

    graph_file = tmp_path / "g.json"
    res = runner.invoke(cli, [
        "trace", "--model", "toy", "--tracer", "circuit-tracer", "--transcoders", str(out),
        "--prompt", "the capital of japan is", "--out", str(graph_file),
        "--cache-dir", str(artefact_cache_dir), "--threads", "1", "--option", "batch_size=16"])
    assert res.exit_code == 0, res.output
    assert "replacement score" in res.output and "edges" in res.output
    graph = CircuitGraph.model_validate_json(graph_file.read_text())
    assert graph.dictionary_id == report["dictionary_id"]
    assert graph.faithfulness.replacement_score is not None

    for extra in (["--tracer", "activation-diff"], ["--tracer", "sae", "--sae", "toy"]):
        res = runner.invoke(cli, ["trace", "--model", "toy", *extra, "--prompt", "count : n5 n6",
                                  "--cache-dir", str(artefact_cache_dir), "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert "features" in res.output

    res = runner.invoke(cli, ["trace", "--model", "toy", "--tracer", "circuit-tracer",
                              "--transcoders", "no-such-hub-name", "--prompt", "a",
                              "--cache-dir", str(artefact_cache_dir), "--threads", "1"])
    assert res.exit_code == 2 and "could not load transcoders" in res.output
