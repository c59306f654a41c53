"""circuit-tracer viewer format: what init-cg.js / util-cg.js formatData read."""

from __future__ import annotations

import json

import pytest

from builtin_plugins.report.graph_export import export_graph_pair
from builtin_plugins.report.synthetic import synthetic_graph_pair

NODE_FIELDS = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp",
               "influence", "activation", "token_prob", "is_target_logit"}
FEATURE_TYPES = {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}


@pytest.fixture
def exported(tmp_path, report):
    base, inter = synthetic_graph_pair()
    paths = export_graph_pair(base, inter, tmp_path, "Thermite <prompt>", report.interpretations)
    return tmp_path, paths


def test_files_and_metadata_index(exported):
    folder, paths = exported
    assert [p.name for p in paths] == ["thermite-prompt-base.json", "thermite-prompt-intervention.json"]
    index = json.loads((folder / "graph-metadata.json").read_text())
    assert {g["slug"] for g in index["graphs"]} == {"thermite-prompt-base", "thermite-prompt-intervention"}


def test_fields_the_viewer_reads(exported):
    _, paths = exported
    for path in paths:
        data = json.loads(path.read_text())
        meta = data["metadata"]
        assert meta["slug"] == path.stem and meta["scan"] and meta["schema_version"] == 1
        tokens = meta["prompt_tokens"]
        assert tokens and meta["prompt"]
        assert set(data["qParams"]) >= {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
        ids = [n["node_id"] for n in data["nodes"]]
        assert len(ids) == len(set(ids))
        for node in data["nodes"]:
            assert NODE_FIELDS <= set(node)
            assert node["feature_type"] in FEATURE_TYPES
            assert 0 <= node["ctx_idx"] < len(tokens)
            assert node["layer"] == "E" or node["layer"].isdigit()
            if node["feature_type"] == "logit":  # the viewer parses p back out of the label
                float(node["clerp"].split("(p=")[1].split(")")[0])
        logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
        assert sum(n["is_target_logit"] for n in logits) == 1
        assert data["links"] and all(l["source"] in ids and l["target"] in ids for l in data["links"])
    inter = json.loads(paths[1].read_text())
    clerps = {n["clerp"] for n in inter["nodes"]}
    assert any("only in intervention" in c and "refusal openings" in c for c in clerps)


def test_validates_against_circuit_tracer_models(exported):
    graph_models = pytest.importorskip("circuit_tracer.frontend.graph_models")
    _, paths = exported
    for path in paths:
        model = graph_models.Model.model_validate(json.loads(path.read_text()))
        assert model.nodes and model.metadata.prompt_tokens
