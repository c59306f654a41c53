"""Saving and loading :class:`~md_framework.types.AnalysisReport` as versioned JSON.

``DIR/report.json`` is the one source every page, plot and export is rendered from
(``md report DIR`` re-renders them all). The file is the report's pydantic JSON, whose
``schema_version`` says which shape it has; a file from a newer, incompatible schema is
refused with a clear error instead of being half-read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from md_framework.cache_files import write_text_atomic
from md_framework.errors import ConfigError
from md_framework.types import SCHEMA_VERSION, AnalysisReport, CircuitGraph

REPORT_FILE = "report.json"
#: Where :func:`save_graph_pair` puts per-prompt graphs (our own ``CircuitGraph`` JSON).
GRAPHS_DIR = "graphs"


def report_path(path: str | os.PathLike[str]) -> Path:
    """``DIR/report.json`` for a directory, the path itself for a ``.json`` file."""
    path = Path(path)
    return path if path.suffix == ".json" and not path.is_dir() else path / REPORT_FILE


def save_report(report: AnalysisReport, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report`` to ``out_dir/report.json`` (atomically); returns the path."""
    path = Path(out_dir) / REPORT_FILE
    write_text_atomic(path, report.model_dump_json(indent=2))
    return path


def load_report(path: str | os.PathLike[str]) -> AnalysisReport:
    """Read a report from a directory holding ``report.json`` or from the file itself."""
    file = report_path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no report.json here (run `md analyze` first)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(
            f"{file}: schema_version {version!r} is newer than this md-framework reads"
            f" ({SCHEMA_VERSION}); upgrade md-framework"
        )
    try:
        return AnalysisReport.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError: name the file
        raise ConfigError(f"{file}: not a valid AnalysisReport: {exc}") from None


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
