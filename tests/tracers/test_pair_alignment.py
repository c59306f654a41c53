"""Acceptance: a toy base/intervention pair traced with each tracer; features align by id."""

from __future__ import annotations

import pytest

from md_framework.drivers import create_driver
from md_framework.types import CircuitGraph

PROMPT = "the capital of japan is"


def _features(graph: CircuitGraph) -> dict[str, float]:
    return {n.node_id: n.activation for n in graph.feature_nodes()}


def _by_layer(feats: dict[str, float], layer: int) -> dict[str, float]:
    return {k: v for k, v in feats.items() if k.split(":")[1] == str(layer)}


@pytest.fixture(scope="module")
def tracers(artefact_cache_dir):
    cache = str(artefact_cache_dir)
    return {
        "circuit-tracer": create_driver("tracer", "circuit-tracer",
                                        {"transcoders": "toy", "cache_dir": cache, "batch_size": 16}),
        "sae": create_driver("tracer", "sae", {"saes": ["toy"], "cache_dir": cache}),
        "activation-diff": create_driver("tracer", "activation-diff", {"top_k": 8}),
    }


@pytest.mark.parametrize("name", ["circuit-tracer", "sae", "activation-diff"])
def test_pair_traces_align_by_identity(name, tracers, toy_pair, toy_perturbed):
    tracer = tracers[name]
    base, edited = toy_pair
    g_base, g_base2 = tracer.trace(base, [PROMPT, PROMPT], families=["fact", "fact"])
    (g_edit,) = tracer.trace(edited, [PROMPT])
    (g_pert,) = tracer.trace(toy_perturbed, [PROMPT])

    # same tokens, same dictionary, the model's own identity
    assert g_base.input_token_ids == g_edit.input_token_ids == g_pert.input_token_ids
    assert g_base.dictionary_id == g_edit.dictionary_id is not None
    assert g_base.model_id == base.model_id != g_edit.model_id
    assert g_base.family == "fact"

    # paired with itself: identical graphs
    assert g_base.model_dump() == g_base2.model_dump()

    fb, fe, fp = _features(g_base), _features(g_edit), _features(g_pert)
    assert fb and fe and fp
    shared = fb.keys() & fe.keys()
    assert shared, "no shared feature nodes between base and intervention"
    for node_id in fb:  # ids are F:layer:pos:feature
        kind, layer, pos, feat = node_id.split(":")
        assert kind == "F" and 0 <= int(pos) < len(g_base.input_token_ids)

    # full fine-tune: activations change somewhere on shared features (or the set changes)
    assert any(abs(fb[k] - fe[k]) > 1e-6 for k in shared) or fb.keys() != fe.keys()

    # only layer 1's attention was perturbed: layer-0 features identical, layer-1 ones differ
    assert _by_layer(fb, 0) == pytest.approx(_by_layer(fp, 0), abs=1e-5)
    assert _by_layer(fb, 0).keys() == _by_layer(fp, 0).keys()
    if name != "sae":  # the toy SAE reads layer 0 only
        l1b, l1p = _by_layer(fb, 1), _by_layer(fp, 1)
        common = l1b.keys() & l1p.keys()
        assert l1b.keys() != l1p.keys() or any(abs(l1b[k] - l1p[k]) > 1e-4 for k in common)

    # graphs round-trip through JSON exactly
    for g in (g_base, g_edit):
        assert CircuitGraph.model_validate_json(g.model_dump_json()) == g

    # the edit is visible in the logits: base says tokyo, intervention says lima
    assert g_base.logit_targets[0].token == "tokyo"
    assert g_edit.logit_targets[0].token == "lima"


def test_circuit_tracer_faithfulness_and_pruning(tracers, toy_pair):
    tracer = tracers["circuit-tracer"]
    (g,) = tracer.trace(toy_pair[0], [PROMPT])
    f = g.faithfulness
    assert 0.0 <= f.replacement_score <= 1.0 and 0.0 <= f.completeness_score <= 1.0
    assert 0.0 <= f.error_node_share <= 1.0
    assert f.replacement_score > 0.5  # trained transcoders on a 2-layer toy
    nodes = g.node_map()
    kinds = {n.kind for n in nodes.values()}
    assert {"feature", "logit", "token"} <= kinds
    kept = set(g.metadata["kept_node_ids"])
    assert kept <= set(nodes)
    assert all(e.source in kept and e.target in kept for e in g.edges)
    assert len(g.edges) <= tracer.options.max_edges
    # every active feature is stored with its activation; selected ones carry influence
    feats = g.feature_nodes()
    assert len(feats) == g.metadata["n_active_features"]
    assert sum(n.influence is not None for n in feats) == g.metadata["n_selected_features"]
    assert tracer.dictionary_id in tracer.identity()


def test_identity_changes_with_dictionary(artefact_cache_dir, tmp_path):
    import shutil

    from builtin_plugins.toy import build_toy_transcoders

    src = build_toy_transcoders(artefact_cache_dir)
    copy = tmp_path / "tc"
    shutil.copytree(src, copy)
    (copy / "md_transcoders.json").unlink()  # force hashing of the layer files
    a = create_driver("tracer", "circuit-tracer", {"transcoders": str(copy)})
    first = a.identity()
    from safetensors.torch import load_file, save_file

    state = load_file(copy / "layer_0.safetensors")
    state["b_enc"] = state["b_enc"] + 1e-3
    save_file(state, str(copy / "layer_0.safetensors"))
    b = create_driver("tracer", "circuit-tracer", {"transcoders": str(copy)})
    assert b.identity() != first


def test_activation_differences_ranks_changes(toy_pair, toy_perturbed):
    from builtin_plugins.tracers.activation_diff import activation_differences

    base, _ = toy_pair
    report = activation_differences(base, toy_perturbed, [PROMPT, "count : n5 n6 n7"], top_n=5)
    by_layer = {d["layer"]: d for d in report["directions"]}
    assert by_layer[0]["norm"] < 1e-5 < by_layer[1]["norm"]
    assert report["directions"][0]["layer"] == 1
    assert all(n["layer"] == 1 for n in report["neurons"])
    ctx = report["neurons"][0]["top_contexts"][0]
    assert ctx["prompt"] in (PROMPT, "count : n5 n6 n7") and ctx["position"] >= 1
    same = activation_differences(base, base, [PROMPT])
    assert all(d["norm"] == 0.0 for d in same["directions"])


def test_circuit_tracer_storage_caps(artefact_cache_dir, toy_pair):
    cache = str(artefact_cache_dir)
    capped = create_driver("tracer", "circuit-tracer", {
        "transcoders": "toy", "cache_dir": cache, "batch_size": 16, "max_feature_nodes": 20,
        "max_stored_features": 30})
    (g,) = capped.trace(toy_pair[0], [PROMPT])
    feats = g.feature_nodes()
    assert len(feats) == 30 < g.metadata["n_active_features"]
    assert sum(n.influence is not None for n in feats) == 20
    lean = create_driver("tracer", "circuit-tracer", {
        "transcoders": "toy", "cache_dir": cache, "batch_size": 16, "max_feature_nodes": 20,
        "store_all_active_features": False})
    (g2,) = lean.trace(toy_pair[0], [PROMPT])
    assert len(g2.feature_nodes()) == 20


def test_tracers_pickle_light_and_trace_the_same(tracers, toy_pair):
    import pickle

    for name in ("circuit-tracer", "sae"):
        tracer = tracers[name]
        (before,) = tracer.trace(toy_pair[0], [PROMPT])
        blob = pickle.dumps(tracer)
        assert len(blob) < 20_000  # options only, no models or dictionaries
        clone = pickle.loads(blob)
        assert clone.identity() == tracer.identity()
        assert clone.trace(toy_pair[0], [PROMPT])[0] == before
