"""``md analyze``: run the whole pipeline from a config file and write the report.

``--out DIR`` starts a new run (refused when DIR already holds one), ``--resume DIR``
continues one (refused when DIR holds none); either way DIR has one writer at a time (see
:mod:`md_framework.run_dir`). A disk, permission or corruption fault ends the command with
one ``Error:`` line naming the path and the cause and saying how to continue.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import click

from md_framework import hookimpl
from md_framework.storage_errors import StorageError, from_os_error, from_sqlite_error


def storage_fault(exc: BaseException, run_dir: Path, command: str) -> StorageError:
    """``exc`` as one ``path: cause. next step`` error, the next step naming this run.

    After a full disk or a read-only location the run continues from its ledger
    (``--resume``) once the cause is fixed; before the ledger exists, the same command
    starts it again. A damaged file or a busy/absent run keeps its own advice.
    """
    from md_framework.run_dir import RunDirError, has_run
    from md_framework.storage_errors import DamagedFileError

    if isinstance(exc, StorageError):
        error = exc
    elif isinstance(exc, sqlite3.Error):
        error = from_sqlite_error(exc, run_dir / "ledger.sqlite")
    else:
        assert isinstance(exc, OSError)
        error = from_os_error(exc)
    if isinstance(error, (RunDirError, DamagedFileError)):
        return error
    try:
        resumable = has_run(run_dir)
    except OSError:
        resumable = False
    again = (f"then continue with: {command} (every query and decision committed so far is kept)"
             if resumable else "then run the same command again")
    if error.no_space:
        return error.with_advice(f"Free space, {again}")
    if error.read_only:
        inside = error.path is not None and Path(error.path).absolute().is_relative_to(run_dir.absolute())
        if inside:
            return error.with_advice("Choose another --out directory (or make this one writable)")
        return error.with_advice(f"Make it writable (or choose another location), {again}")
    return error.with_advice(f"Fix the cause, {again}")


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
            from md_framework.run_dir import has_run

            if has_run(run_dir):
                console.print(f"[yellow]Interrupted.[/] {resume_message(run_dir, command)}")
            else:  # nothing was recorded yet: --resume would find no run
                console.print("[yellow]Interrupted[/] before anything was recorded; run the"
                              " same command again to start over.")
            sys.exit(130)
        except (OSError, sqlite3.Error, StorageError) as exc:
            raise storage_fault(exc, run_dir, command) from None
        click.echo(report.summary_text())
        click.echo(f"\nreport: {run_dir / 'report.json'}")
        if "html" in report.artefacts or (run_dir / "report.html").exists():
            click.echo(f"dashboard: {run_dir / 'report.html'}")
