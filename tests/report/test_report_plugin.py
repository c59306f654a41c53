from __future__ import annotations

import io
import json

from click.testing import CliRunner

from builtin_plugins.report import load_report, print_rich_summary


def test_report_ready_writes_and_records_artefacts(rendered):
    report = load_report(rendered)  # report.json refreshed with the artefacts
    arte = report.artefacts
    assert arte["html"] == "report.html"
    for name in ("circuit_heatmap", "circuit_network", "validation", "fdr_trace", "bandit_pulls",
                 "sample_efficiency"):
        assert (rendered / arte[f"plot:{name}"]).is_file()
        assert (rendered / arte[f"plot:{name}"]).read_bytes()[:4] == b"\x89PNG"
    assert (rendered / arte["circuit-tracer:metadata"]).is_file()
    assert all((rendered / p).is_file() for p in arte.values())


def test_hook_is_registered_and_noop_without_dir(report):
    from md_framework.plugins import Hooks, get_plugin_manager

    pm = get_plugin_manager()
    assert pm.records["report"].status == "ok", pm.records["report"].error
    assert "md_report_ready" in pm.hooks_of("report")
    assert "md_register_commands" in pm.hooks_of("report")
    Hooks(pm).call("md_report_ready", report=report, out_dir=None)
    assert report.artefacts == {}


def test_md_report_rerenders_into_other_dir(rendered, tmp_path):
    from md_framework.cli import _register_plugin_commands, cli

    _register_plugin_commands()
    out = tmp_path / "copy"
    result = CliRunner().invoke(cli, ["report", str(rendered), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Validated hypotheses" in result.output and "wrote" in result.output
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    assert (out / "plots" / "sample_efficiency.png").is_file()  # bench.json found in the source
    assert json.loads((out / "report.json").read_text())["artefacts"]["html"] == "report.html"


def test_md_report_errors_cleanly(tmp_path):
    from md_framework.cli import _register_plugin_commands, cli

    _register_plugin_commands()
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no report.json" in result.output


def test_rich_summary(report):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, record=True)
    print_rich_summary(report, console=console)
    text = console.export_text()
    for needle in ("Validated hypotheses (2)", "Not validated (2)", "p=0.0004", "e=2.4",
                   "+0.41 [0.29, 0.53]", "queries spent: 320", "Circuit statistics", "5 / 5", "H5"):
        assert needle in text, needle


def test_renders_without_matplotlib(tmp_path, report, monkeypatch):
    import sys
    import warnings

    from builtin_plugins.report.render import render_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        artefacts = render_report(report, tmp_path)
    assert any("matplotlib" in str(w.message) for w in caught)
    assert artefacts == {"html": "report.html"} and (tmp_path / "report.html").is_file()
