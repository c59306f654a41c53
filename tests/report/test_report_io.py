from __future__ import annotations

import json

import pytest

from builtin_plugins.report import load_graph_pairs, load_report, save_graph_pair, save_report
from builtin_plugins.report.synthetic import synthetic_graph_pair
from md_framework.errors import ConfigError
from md_framework.types import SCHEMA_VERSION


def test_round_trip(tmp_path, report):
    path = save_report(report, tmp_path)
    assert path == tmp_path / "report.json"
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert load_report(tmp_path) == report
    assert load_report(path) == report  # the file itself works too


def test_newer_schema_is_refused(tmp_path, report):
    data = json.loads(report.model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="newer"):
        load_report(tmp_path)


def test_missing_and_invalid_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no report.json"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"hypotheses": 3}))
    with pytest.raises(ConfigError, match="not a valid AnalysisReport"):
        load_report(tmp_path)


def test_graph_pairs_round_trip(tmp_path):
    base, inter = synthetic_graph_pair()
    save_graph_pair(base, inter, tmp_path, "a/b c")
    [(name, b, i)] = load_graph_pairs(tmp_path)
    assert name == "a-b-c" and b == base and i == inter
