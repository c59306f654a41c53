"""The layout of a run directory that the kernel and report plugins share.

``DIR/report.json`` and ``DIR/summary.txt`` are written by the analyzer; per-prompt graph
pairs live under ``DIR/graphs/NAME.{base,intervention}.json`` (our own ``CircuitGraph``
JSON), where report plugins find them to export for circuit-tracer's viewer.
"""

from __future__ import annotations

import os
from pathlib import Path

from md_framework.cache_files import write_text_atomic
from md_framework.types import CircuitGraph

#: Where :func:`save_graph_pair` puts per-prompt graphs.
GRAPHS_DIR = "graphs"


def save_graph_pair(
    base: CircuitGraph, intervention: CircuitGraph, out_dir: str | os.PathLike[str], name: str
) -> tuple[Path, Path]:
    """Store one prompt's base and intervention graphs as ``DIR/graphs/NAME.{base,intervention}.json``.

    The report renderer exports every pair found there in circuit-tracer's viewer format.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "graph"
    folder = Path(out_dir) / GRAPHS_DIR
    paths = (folder / f"{safe}.base.json", folder / f"{safe}.intervention.json")
    for graph, path in zip((base, intervention), paths):
        write_text_atomic(path, graph.model_dump_json(indent=1))
    return paths


def load_graph_pairs(out_dir: str | os.PathLike[str]) -> list[tuple[str, CircuitGraph, CircuitGraph]]:
    """Every ``(name, base, intervention)`` stored by :func:`save_graph_pair`, sorted by name."""
    folder = Path(out_dir) / GRAPHS_DIR
    pairs = []
    for base_file in sorted(folder.glob("*.base.json")):
        name = base_file.name[: -len(".base.json")]
        other = folder / f"{name}.intervention.json"
        if not other.is_file():
            continue
        pairs.append((
            name,
            CircuitGraph.model_validate_json(base_file.read_text(encoding="utf-8")),
            CircuitGraph.model_validate_json(other.read_text(encoding="utf-8")),
        ))
    return pairs
