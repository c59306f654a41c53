"""``md analyze``: run the whole pipeline from a config file and write the report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from md_framework import hookimpl


def _progress_printer(console) -> tuple:
    started = time.perf_counter()

    def progress(phase: str, message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:6.1f}s[/dim] [bold cyan]{phase:<9}[/] {message}")

    return progress


@hookimpl
def md_register_commands(cli: click.Group) -> None:
    @cli.command("analyze")
    @click.argument("config_file", type=click.Path(path_type=Path))
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
                  help="Run directory: ledger, report.json, summary and dashboard. "
                       "Default: runs/<config name>.")
    @click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
                  help="Continue the interrupted run in this directory.")
    def analyze(config_file: Path, out_dir: Path | None, resume_dir: Path | None) -> None:
        """Find how the intervention model differs from the base model described in CONFIG_FILE."""
        from rich.console import Console

        from md_framework.config import load_config
        from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer
        from md_framework.pipeline.ledger import RunInterrupted, resume_message

        console = Console(stderr=True)
        config = load_config(config_file)
        if resume_dir is not None and out_dir is not None and resume_dir != out_dir:
            raise click.UsageError("give either --out or --resume, or the same directory to both")
        run_dir = resume_dir or out_dir or Path("runs") / config_file.stem
        analyzer = MechanisticBehavioralAnalyzer(
            config, run_dir=run_dir, resume=resume_dir is not None,
            progress=_progress_printer(console),
        )
        command = f"md analyze {config_file} --resume {run_dir}"
        try:
            report = analyzer.analyze()
        except (KeyboardInterrupt, RunInterrupted):
            console.print(f"[yellow]Interrupted.[/] {resume_message(run_dir, command)}")
            sys.exit(130)
        click.echo(report.summary_text())
        click.echo(f"\nreport: {run_dir / 'report.json'}")
        if "html" in report.artefacts or (run_dir / "report.html").exists():
            click.echo(f"dashboard: {run_dir / 'report.html'}")
