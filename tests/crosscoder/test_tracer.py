"""The crosscoder tracer on a toy organism: graphs, reading, intervening, diff + detectors."""

from __future__ import annotations

import json

import pytest

from md_framework.errors import ConfigError
from md_framework.tracing_api import FeatureIntervener, FeatureReader
from md_framework.types import FeatureRef

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracer(safety_crosscoder, artefact_cache_dir):
    from builtin_plugins.tracers.crosscoder import CrosscoderTracer

    return CrosscoderTracer({"crosscoder": str(safety_crosscoder), "cache_dir": str(artefact_cache_dir)})


def test_trained_crosscoder_reports_fvu_and_class_shares(safety_crosscoder) -> None:
    from builtin_plugins.tracers.crosscoder_train import CLASSES, META_FILE

    meta = json.loads((safety_crosscoder / META_FILE).read_text())
    (m,) = meta["layer_metrics"]
    # better than predicting each model's mean activation (FVU 1) by a wide margin
    assert m["fvu_base"] < 0.5 and m["fvu_intervention"] < 0.5
    assert set(m["class_shares"]) == set(CLASSES)
    assert sum(m["class_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert meta["dictionary_id"].startswith("xc:")


def test_options_need_a_crosscoder_or_both_models() -> None:
    from builtin_plugins.tracers.crosscoder import CrosscoderTracer

    with pytest.raises(ConfigError, match="crosscoder"):
        CrosscoderTracer({})
    with pytest.raises(ConfigError, match="no_such_option: unknown option"):
        CrosscoderTracer({"crosscoder": "x", "no_such_option": 1})


def test_graphs_hide_the_other_models_exclusive_latents(tracer, safety_pair, toy_safety) -> None:
    base, inter = safety_pair
    prompts = sorted(toy_safety.universe["harmful_hacking"])[:3]
    gb = tracer.trace(base, prompts, ["harmful_hacking"] * 3)
    gi = tracer.trace(inter, prompts, ["harmful_hacking"] * 3)
    xc = tracer.crosscoder()
    for g, hidden in ((gb, "intervention-only"), (gi, "base-only")):
        for graph in g:
            assert graph.dictionary_id == xc.id and graph.feature_nodes()
            for node in graph.feature_nodes():
                if node.feature >= xc.n_latents(node.layer):  # a difference latent (own test)
                    continue
                assert xc.classes[node.layer][node.feature] != hidden
                assert node.activation > 0
    assert gb[0].metadata["role"] == "base" and gi[0].metadata["role"] == "intervention"
    # the same latent on the same token: f_j is joint, so the two nodes differ only by the
    # decoder norms of the two models
    nb = {n.node_id: n for n in gb[0].feature_nodes()}
    for n in gi[0].feature_nodes():
        if n.node_id in nb:
            norms = xc.dec_norm[n.layer][:, n.feature]
            assert n.activation / nb[n.node_id].activation == pytest.approx(
                float(norms[1] / norms[0]), rel=1e-3)
            break


def test_unknown_model_is_refused(tracer, artefact_cache_dir) -> None:
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model

    other = load_model(ModelSpec(source="toy"), ModelLoadOptions(cache_dir=artefact_cache_dir))
    with pytest.raises(ConfigError, match="neither the base"):
        tracer.trace(other, ["hello"])


def test_reader_matches_the_trace_and_decoder_directions(tracer, safety_pair, toy_safety) -> None:
    base, inter = safety_pair
    assert isinstance(tracer, FeatureReader) and isinstance(tracer, FeatureIntervener)
    prompt = sorted(toy_safety.universe["harmful_hacking"])[0]
    graph = tracer.trace(inter, [prompt])[0]
    top = max(graph.feature_nodes(), key=lambda n: n.activation)
    ref = FeatureRef(layer=top.layer, feature=top.feature)
    (row,) = tracer.feature_activations(inter, [prompt], [ref])
    assert row[ref.key][0] >= top.activation - 1e-5
    d = tracer.decoder_directions(inter, [ref])[ref.key]
    w = tracer.crosscoder().states[ref.layer]["W_dec"][1, ref.feature]
    assert d == pytest.approx(w.tolist(), rel=1e-6)
    with pytest.raises(ConfigError, match="out of range"):
        tracer.decoder_directions(inter, [FeatureRef(layer=ref.layer, feature=10**6)])


def test_answer_traces_read_the_latents_along_both_answers(tracer, safety_pair, toy_safety) -> None:
    """The crosscoder tracer has the answer-aware capability: each answer position carries
    the latents whose contribution changed most, keyed like the graphs' feature nodes, and
    each model's peak latents over its answer positions."""
    base, inter = safety_pair
    prompt = sorted(toy_safety.universe["harmful_hacking"])[0]
    (trace,) = tracer.trace_answers(base, inter, [prompt], ["harmful_hacking"], max_new_tokens=8)
    assert trace.dictionary_id == tracer.dictionary_id
    assert trace.base_answer != trace.intervention_answer  # the planted refusal
    assert {a.source for a in trace.answers} == {"base", "intervention"}
    layers = set(tracer.crosscoder().states)
    keys = [k for a in trace.answers for pos in a.positions for k in pos.features]
    assert keys and all(int(k.split(":")[0]) in layers for k in keys)
    n = tracer.crosscoder().states[min(layers)]["W_dec"].shape[1]
    for peaks in (trace.base_features, trace.intervention_features):
        assert peaks and max(peaks.values()) > 0
        assert all(int(k.split(":")[0]) in layers and 0 <= int(k.split(":")[1]) < 2 * n for k in peaks)
    # a difference latent (n + j, its own test file) writes nothing on the base side
    assert all(v == 0 for k, v in trace.base_features.items() if int(k.split(":")[1]) >= n)
    assert trace.base_features != trace.intervention_features


def test_interventions_change_the_output_and_are_undone(tracer, safety_pair, toy_safety) -> None:
    import torch

    from builtin_plugins.tracers._common import encode_prompt

    base, inter = safety_pair
    prompt = sorted(toy_safety.universe["harmful_hacking"])[0]
    ids = torch.tensor([encode_prompt(inter.tokenizer, prompt)])
    graph = tracer.trace(inter, [prompt])[0]
    refs = [FeatureRef(layer=n.layer, feature=n.feature)
            for n in sorted(graph.feature_nodes(), key=lambda n: -n.activation)[:8]]
    with torch.no_grad():
        before = inter.model(input_ids=ids).logits
    for mode in ("zero", "base"):
        with tracer.intervened_model(inter, refs, mode, base=base) as patched:
            assert patched.model_id != inter.model_id
            with torch.no_grad():
                during = patched.model(input_ids=ids).logits
            # generation works with the partner in lock-step (KV caches on both sides)
            out = patched.model.generate(input_ids=ids, max_new_tokens=3, do_sample=False,
                                         pad_token_id=inter.tokenizer.pad_token_id)
            assert out.shape[1] == ids.shape[1] + 3
        assert not torch.allclose(before, during)
    with torch.no_grad():
        after = inter.model(input_ids=ids).logits
    assert torch.allclose(before, after)
    # scale 1 is the identity
    with tracer.intervened_model(inter, refs, "scale", 1.0) as same:
        with torch.no_grad():
            assert torch.allclose(same.model(input_ids=ids).logits, before, atol=1e-5)


def test_interventions_leave_the_first_position_alone(tracer, safety_pair, toy_safety) -> None:
    """Training never shows the crosscoder a sequence's first position, so no intervention
    writes there; later positions change, also in a left-padded batch."""
    import torch

    from builtin_plugins.tracers import _hooks
    from builtin_plugins.tracers._common import encode_prompt

    base, inter = safety_pair
    prompts = sorted(toy_safety.universe["harmful_hacking"])[:2]
    classes = tracer.crosscoder().classes
    layer = min(classes)
    refs = [FeatureRef(layer=layer, feature=j) for j, c in enumerate(classes[layer]) if c != "dead"]
    a, b = (encode_prompt(inter.tokenizer, p) for p in prompts)
    pad = inter.tokenizer.pad_token_id or 0
    width = max(len(a), len(b))
    ids = torch.tensor([[pad] * (width - len(x)) + x for x in (a, b)])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in (a, b)])
    first = mask.argmax(dim=1)
    seen: list = []

    def read_layer():  # registered after the intervention's own hook, so it sees the patch
        return _hooks.decoder_layers(inter.model)[layer].register_forward_hook(
            lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).detach()))

    with torch.no_grad():
        handle = read_layer()
        inter.model(input_ids=ids, attention_mask=mask)
        handle.remove()
        with tracer.intervened_model(inter, refs, "zero") as patched:
            handle = read_layer()
            try:
                patched.model(input_ids=ids, attention_mask=mask)
            finally:
                handle.remove()
    before, after = seen
    for row in range(2):
        f = int(first[row])
        assert torch.equal(before[row, f], after[row, f])
        assert not torch.allclose(before[row, f + 1:], after[row, f + 1:])


def test_graphs_flow_through_the_diff_and_the_detectors(tracer, safety_pair, four_families) -> None:
    from builtin_plugins.pipeline.diff import diff_graph_sets
    from builtin_plugins.pipeline.discovery import detect_patterns, generate_hypotheses
    from md_framework.plugins import Hooks, get_plugin_manager

    base, inter = safety_pair
    prompts, fams = four_families
    gb, gi = tracer.trace(base, prompts, fams), tracer.trace(inter, prompts, fams)
    diff = diff_graph_sets(gb, gi, base.model_id, inter.model_id, dictionary_id=gb[0].dictionary_id)
    assert diff.dictionary_id == tracer.dictionary_id
    assert diff.systematic_changes
    hooks = Hooks(get_plugin_manager())
    patterns = detect_patterns(hooks, diff, {}, None)
    assert patterns
    hypotheses = generate_hypotheses(patterns, {}, hooks=hooks)
    assert hypotheses
    # an intervention-only latent that fires here is a node that only intervention graphs have
    xc = tracer.crosscoder()
    only = {(n.layer, n.feature) for g in gi for n in g.feature_nodes()
            if n.feature < xc.n_latents(n.layer) and xc.classes[n.layer][n.feature] == "intervention-only"}
    in_base = {(n.layer, n.feature) for g in gb for n in g.feature_nodes()}
    assert not (only & in_base)


def test_crosscoders_train_cli_and_trace_cli(toy_safety, artefact_cache_dir, tmp_path) -> None:
    from click.testing import CliRunner

    from md_framework.cli import _register_plugin_commands, cli
    from md_framework.types import CircuitGraph

    _register_plugin_commands()
    runner = CliRunner()
    out = tmp_path / "xc"
    res = runner.invoke(cli, [
        "crosscoders", "train", "--base", str(toy_safety.base_dir),
        "--intervention", str(toy_safety.intervention_dir), "--layers", "0,1", "--d-sae", "32",
        "--k", "4", "--tokens", "600", "--epochs", "1", "--n-samples", "64", "--out", str(out),
        "--cache-dir", str(artefact_cache_dir), "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [m["layer"] for m in report["layer_metrics"]] == [0, 1]
    assert {"fvu_base", "fvu_intervention", "class_shares"} <= set(report["layer_metrics"][0])
    assert (out / "layer_1.safetensors").exists()
    res = runner.invoke(cli, ["crosscoders", "train", "--base", "toy", "--intervention", "toy",
                              "--corpus", "samples+nope", "--out", str(tmp_path / "bad"),
                              "--cache-dir", str(artefact_cache_dir)])
    assert res.exit_code != 0 and "nope" in res.output
    free = tmp_path / "xc-free"
    common = ["crosscoders", "train", "--base", str(toy_safety.base_dir), "--intervention",
              str(toy_safety.intervention_dir), "--layers", "1", "--d-sae", "32", "--k", "4",
              "--tokens", "600", "--epochs", "1", "--n-samples", "64",
              "--cache-dir", str(artefact_cache_dir), "--threads", "1", "--json"]
    res = runner.invoke(cli, common + ["--free-latents", "8", "--k-free", "1", "--out", str(free)])
    assert res.exit_code == 0, res.output
    layer = json.loads(res.stdout)["layer_metrics"][0]
    assert layer["free_latents"] == 8 and 0 <= layer["fvu_delta"] and len(layer["threshold"]) == 2
    res = runner.invoke(cli, common + ["--k-free", "2", "--out", str(tmp_path / "bad2")])
    assert res.exit_code != 0 and "--free-latents" in res.output
    res = runner.invoke(cli, common + ["--free-latents", "32", "--out", str(tmp_path / "bad3")])
    assert res.exit_code != 0 and "both groups need latents" in res.output

    graph_file = tmp_path / "g.json"
    prompt = sorted(toy_safety.universe["harmful_hacking"])[0]
    res = runner.invoke(cli, [
        "trace", "--model", str(toy_safety.intervention_dir), "--tracer", "crosscoder",
        "--option", f"crosscoder={out}", "--prompt", prompt, "--out", str(graph_file),
        "--cache-dir", str(artefact_cache_dir), "--threads", "1"])
    assert res.exit_code == 0, res.output
    graph = CircuitGraph.model_validate_json(graph_file.read_text())
    assert graph.dictionary_id == report["dictionary_id"] and graph.feature_nodes()


def test_tracer_trains_its_crosscoder_from_the_two_sources(toy_safety, tmp_path) -> None:
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.tracers.crosscoder import CrosscoderTracer

    tracer = CrosscoderTracer({
        "base_model": str(toy_safety.base_dir), "intervention_model": str(toy_safety.intervention_dir),
        "train": {"layers": [0], "d_sae": 32, "k": 4, "tokens": 500, "epochs": 1, "n_samples": 64},
        "cache_dir": str(tmp_path)})
    path = tracer.crosscoder().path
    assert path.parent == tmp_path / "crosscoders"
    inter = load_dir(toy_safety.intervention_dir)
    (graph,) = tracer.trace(inter, [sorted(toy_safety.universe["cooking"])[0]])
    assert graph.dictionary_id == tracer.dictionary_id and {n.layer for n in graph.feature_nodes()} == {0}
    # the same options find the cached directory again
    again = CrosscoderTracer(tracer.options.model_dump())
    assert again.crosscoder().path == path
