"""The ``report`` plugin: renders the dashboard when an analysis finishes and adds
``md report DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from md_framework import hookimpl
from md_framework.types import AnalysisReport


@hookimpl
def md_report_ready(report: AnalysisReport, out_dir: Path | None) -> None:
    """Write ``report.html``, ``plots/*.png`` and circuit-tracer exports into ``out_dir``,
    record them in ``report.artefacts`` and refresh ``out_dir/report.json`` with them."""
    if out_dir is None:
        return
    from builtin_plugins.report.io import REPORT_FILE, save_report
    from builtin_plugins.report.render import render_report

    render_report(report, out_dir)
    if (Path(out_dir) / REPORT_FILE).is_file():
        save_report(report, out_dir)


def _report_command() -> Any:
    import click

    @click.command("report")
    @click.argument("directory", type=click.Path(path_type=Path, exists=True))
    @click.option("--out", "out", type=click.Path(path_type=Path), default=None,
                  help="Write the pages here instead of DIRECTORY (report.json is copied along).")
    @click.option("--bench", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                  help="md bench results JSON for the sample-efficiency plot (default: DIRECTORY/bench.json if present).")
    @click.option("--summary/--no-summary", default=True, help="Print the terminal summary.")
    def report_cmd(directory: Path, out: Path | None, bench: Path | None, summary: bool) -> None:
        """Re-render report.html, plots and graph exports from DIRECTORY/report.json."""
        from builtin_plugins.report.io import load_report, save_report
        from builtin_plugins.report.render import render_report
        from builtin_plugins.report.summary import print_rich_summary

        report = load_report(directory)
        source = directory if directory.is_dir() else directory.parent
        target = out or source
        artefacts = render_report(report, target, source_dir=source, bench=bench)
        save_report(report, target)
        if summary:
            print_rich_summary(report)
        click.echo(f"wrote {target / artefacts['html']} ({len(artefacts)} artefacts)")

    return report_cmd


@hookimpl
def md_register_commands(cli: Any) -> None:
    """Add ``md report DIR [--out DIR2] [--bench FILE]``."""
    cli.add_command(_report_command())
