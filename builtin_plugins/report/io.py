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
from md_framework.types import SCHEMA_VERSION, AnalysisReport

REPORT_FILE = "report.json"


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
