"""Export :class:`~md_framework.types.CircuitGraph` objects in circuit-tracer's frontend
format (``circuit_tracer.frontend.graph_models.Model``, what ``create_graph_files`` writes),
so base and intervention graphs of a prompt open side by side in circuit-tracer's local
viewer::

    python -c "from circuit_tracer.frontend.local_server import serve; \\
               serve(data_dir='OUT/circuit-tracer', port=8032); input()"
    # then open http://localhost:8032/index.html

The viewer reads ``graph-metadata.json`` (``{"graphs": [metadata, ...]}``) from the data
directory and ``SLUG.json`` per graph, with ``metadata`` (slug, scan, prompt_tokens, prompt,
schema_version), ``qParams`` and ``nodes`` / ``links`` exactly as below. Written without
importing circuit-tracer (it is an optional dependency); tests validate the output against
its pydantic models when it is installed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from md_framework.types import CircuitGraph, FeatureInterpretation

EXPORT_DIR = "circuit-tracer"
METADATA_FILE = "graph-metadata.json"


def cantor(x: int, y: int) -> int:
    """circuit-tracer's feature index of (layer, feature)."""
    return (x + y) * (x + y + 1) // 2 + y


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-").lower()
    return slug[:80] or "graph"


def graph_to_frontend(
    graph: CircuitGraph,
    slug: str,
    *,
    interpretations: Mapping[str, Sequence[FeatureInterpretation]] | None = None,
    annotations: Mapping[str, str] | None = None,
    scan: str | None = None,
) -> dict[str, Any]:
    """One graph as the viewer's JSON object.

    ``annotations`` maps our node ids to text appended to the node's label ("clerp"), e.g.
    the change against the other model.
    """
    interpretations = interpretations or {}
    annotations = annotations or {}
    layers = [n.layer for n in graph.nodes if n.layer is not None and n.kind in ("feature", "error")]
    n_layers = int(graph.metadata.get("n_layers", (max(layers) + 1) if layers else 1))
    tokens = list(graph.input_tokens)
    if not tokens:
        token_nodes = sorted((n for n in graph.nodes if n.kind == "token"), key=lambda n: n.position or 0)
        tokens = [n.token or "" for n in token_nodes]
    last = max(len(tokens) - 1, 0)
    probs = {t.token_id: t.probability for t in graph.logit_targets}
    target_id = graph.logit_targets[0].token_id if graph.logit_targets else None

    nodes: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    for node in graph.nodes:
        note = annotations.get(node.node_id, "")
        common = {"influence": node.influence, "activation": node.activation,
                  "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0}
        if node.kind == "feature" and None not in (node.layer, node.feature, node.position):
            layer, feat, pos = node.layer, node.feature, node.position
            label = next((i.description for i in interpretations.get(f"{layer}:{feat}", []) if i.description), "")
            out = {"node_id": f"{layer}_{feat}_{pos}", "feature": cantor(layer, feat), "layer": str(layer),
                   "ctx_idx": pos, "feature_type": "cross layer transcoder",
                   "jsNodeId": f"{layer}_{feat}-0", "clerp": " ".join(x for x in (label, note) if x)}
        elif node.kind == "error" and None not in (node.layer, node.position):
            out = {"node_id": f"err_{node.layer}_{node.position}", "feature": -1, "layer": str(node.layer),
                   "ctx_idx": node.position, "feature_type": "mlp reconstruction error",
                   "jsNodeId": f"{node.layer}_{node.position}-0", "clerp": note}
        elif node.kind == "token" and node.position is not None:
            tok = node.token_id if node.token_id is not None else node.position
            out = {"node_id": f"E_{tok}_{node.position}", "feature": node.position, "layer": "E",
                   "ctx_idx": node.position, "feature_type": "embedding",
                   "jsNodeId": f"E_{tok}-{node.position}", "clerp": note}
        elif node.kind == "logit" and node.token_id is not None:
            prob = probs.get(node.token_id, 0.0)
            layer = str(n_layers + 1)
            token = (node.token or str(node.token_id)).replace('"', "'")
            out = {"node_id": f"{layer}_{node.token_id}_{last}", "feature": node.token_id, "layer": layer,
                   "ctx_idx": last, "feature_type": "logit", "jsNodeId": f"L_{node.token_id}-{last}",
                   # the viewer parses the probability back out of "(p=...)"
                   "clerp": f'Output "{token}" (p={prob:.3f})' + (f" {note}" if note else "")}
            common.update(token_prob=prob, is_target_logit=node.token_id == target_id)
        else:
            continue
        nodes.append({**common, **out})
        ids[node.node_id] = out["node_id"]
    links = [{"source": ids[e.source], "target": ids[e.target], "weight": e.weight}
             for e in graph.edges if e.source in ids and e.target in ids]
    return {
        "metadata": {"slug": slug, "scan": scan or graph.dictionary_id or graph.tracer,
                     "transcoder_list": [], "prompt_tokens": tokens, "prompt": graph.prompt,
                     "node_threshold": None, "schema_version": 1,
                     "info": {"model_id": graph.model_id, "tracer": graph.tracer, "family": graph.family}},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


def _diff_annotations(graph: CircuitGraph, other: CircuitGraph, name: str, other_name: str) -> dict[str, str]:
    mine, theirs = graph.node_map(), other.node_map()
    notes = {}
    for nid, node in mine.items():
        if node.kind != "feature":
            continue
        if nid not in theirs:
            notes[nid] = f"[only in {name}]"
        else:
            delta = (node.activation or 0.0) - (theirs[nid].activation or 0.0)
            if abs(delta) > 1e-9:
                notes[nid] = f"[Δ {delta:+.2f} vs {other_name}]"
    return notes


def _update_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    path = folder / METADATA_FILE
    existing = {"graphs": []}
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            pass
    graphs = [g for g in existing.get("graphs", []) if g.get("slug") != metadata["slug"]]
    graphs.append(metadata)
    path.write_text(json.dumps({"graphs": graphs}, indent=2), encoding="utf-8")


def export_graph(graph: CircuitGraph, out_dir: str | os.PathLike[str], slug: str, **kwargs: Any) -> Path:
    """Write ``SLUG.json`` into ``out_dir`` and register it in ``graph-metadata.json``."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    slug = slugify(slug)
    data = graph_to_frontend(graph, slug, **kwargs)
    path = folder / f"{slug}.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    _update_metadata(folder, data["metadata"])
    return path


def export_graph_pair(
    base: CircuitGraph,
    intervention: CircuitGraph,
    out_dir: str | os.PathLike[str],
    slug: str,
    interpretations: Mapping[str, Sequence[FeatureInterpretation]] | None = None,
) -> tuple[Path, Path]:
    """Both graphs of one prompt as ``SLUG-base.json`` / ``SLUG-intervention.json``; feature
    labels say which features exist in only one model and how much each changed."""
    slug = slugify(slug)
    paths = (
        export_graph(base, out_dir, f"{slug}-base", interpretations=interpretations,
                     annotations=_diff_annotations(base, intervention, "base", "intervention")),
        export_graph(intervention, out_dir, f"{slug}-intervention", interpretations=interpretations,
                     annotations=_diff_annotations(intervention, base, "intervention", "base")),
    )
    return paths
