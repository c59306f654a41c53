"""Shared fixtures of the report tests: one synthetic report rendered once per module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builtin_plugins.report.synthetic import synthetic_bench_results, synthetic_graph_pair, synthetic_report


@pytest.fixture
def report():
    return synthetic_report(hostile=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A report directory as `md analyze` leaves it, rendered by md_report_ready."""
    from builtin_plugins.report import save_graph_pair, save_report
    from builtin_plugins.report.plugin import md_report_ready

    out = tmp_path_factory.mktemp("report")
    rep = synthetic_report(hostile=True)
    save_report(rep, out)
    save_graph_pair(*synthetic_graph_pair(), out, "thermite <prompt>")
    (out / "bench.json").write_text(json.dumps(synthetic_bench_results()))
    md_report_ready(report=rep, out_dir=out)
    return out
