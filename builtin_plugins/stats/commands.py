"""``md fdr run``: re-analyse a list of p-values (or e-values) with any FDR procedure,
without any model.

    md fdr run --procedure saffron --alpha 0.05 pvalues.txt
    printf '0.001\\n0.2\\n' | md fdr run --procedure lord++ --option w0=0.004 --json -

Values are read one per line; whitespace or commas also separate values, blank lines and
``#`` comments are ignored. Each hypothesis gives one line: index, value, test level and
decision (1 rejected / 0 not). ``--save-state`` writes the procedure's JSON state after the
last value and ``--resume`` continues a saved stream, with the same decisions as one
uninterrupted run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from md_framework import hookimpl
from md_framework.errors import ConfigError

_SEPARATORS = re.compile(r"[\s,;]+")


def parse_values(text: str, source: str = "input") -> list[float]:
    """Numbers of ``text`` in order; ``#`` starts a comment. Errors name line and token."""
    values: list[float] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0]
        for token in _SEPARATORS.split(line.strip()):
            if not token:
                continue
            try:
                values.append(float(token))
            except ValueError:
                raise ConfigError(f"{source}, line {line_no}: not a number: {token!r}") from None
    return values


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are YAML scalars (``0.5``, ``true``, ``null``, text)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--option {key}: cannot parse {raw!r}: {exc}") from None
    return options


def run_fdr(
    values: list[float],
    procedure: str | None,
    alpha: float,
    options: dict[str, Any],
    resume_state: dict[str, Any] | None = None,
) -> tuple[Any, list[Any]]:
    """Build (or restore) the procedure and decide ``values``; returns (driver, decisions)."""
    from md_framework.drivers import load_driver_class

    if resume_state is not None:
        from builtin_plugins.stats.fdr import restore_procedure

        driver = restore_procedure(resume_state)
        if procedure is not None and procedure != _name(driver):
            raise ConfigError(
                f"--procedure {procedure} does not match the resumed state's procedure"
                f" {_name(driver)}"
            )
    else:
        if procedure is None:
            raise ConfigError("--procedure is required (or --resume a saved state)")
        cls = load_driver_class("fdr_procedure", procedure)  # did-you-mean on a typo
        from md_framework.drivers import validate_options

        try:
            driver = cls(alpha, options=validate_options(cls, options))
        except ValueError as exc:  # e.g. alpha outside (0, 1)
            raise ConfigError(f"--alpha: {exc}") from None
    return driver, driver.test_many(values)


def _name(driver: Any) -> str:
    return getattr(driver, "procedure_name", "") or driver.name


def _fdr_group(cli: Any) -> Any:
    import click

    group_cls = type(cli) if isinstance(cli, click.Group) else click.Group

    @click.group("fdr", cls=group_cls)
    def fdr() -> None:
        """False-discovery-rate procedures on plain lists of p-values or e-values."""

    @fdr.command("run")
    @click.option("--procedure", "-p", default=None,
                  help="FDR procedure (entry-point name), e.g. saffron, addis, lord++, bh.")
    @click.option("--alpha", "-a", type=float, default=0.05, show_default=True,
                  help="Target FDR level.")
    @click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
                  help="Procedure option (repeatable); values parse as YAML scalars.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--save-state", type=click.Path(dir_okay=False, path_type=Path),
                  default=None, help="Write the procedure's JSON state here afterwards.")
    @click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Continue the stream of a state saved with --save-state.")
    @click.argument("file", type=click.File("r"))
    def run(procedure: str | None, alpha: float, option_pairs: tuple[str, ...],
            as_json: bool, save_state: Path | None, resume: Path | None, file: Any) -> None:
        """Decide the values in FILE (or - for stdin), one line per hypothesis:
        index, value, test level, decision (1 rejected, 0 not)."""
        source = "stdin" if file.name in {"-", "<stdin>"} else str(file.name)
        values = parse_values(file.read(), source)
        options = parse_options(option_pairs)
        resume_state = None
        if resume is not None:
            if option_pairs:
                raise ConfigError("--option cannot change a resumed procedure")
            try:
                resume_state = json.loads(resume.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"--resume {resume}: cannot read state: {exc}") from None
        driver, decisions = run_fdr(values, procedure, alpha, options, resume_state)
        if save_state is not None:
            save_state.write_text(json.dumps(driver.state()), encoding="utf-8")
        if as_json:
            payload = {
                "procedure": _name(driver),
                "alpha": driver.alpha,
                "input": driver.input_kind,
                "online": driver.online,
                "options": driver.options.model_dump(mode="json"),
                "decisions": [d.model_dump(mode="json") for d in decisions],
                "rejected": [d.index for d in decisions if d.rejected],
            }
            click.echo(json.dumps(payload, indent=2))
            return
        for d in decisions:
            click.echo(f"{d.index}\t{d.value:.10g}\t{d.level:.10g}\t{int(d.rejected)}")

    return fdr


@hookimpl
def md_register_commands(cli: Any) -> None:
    """Add ``md fdr run`` to the command line."""
    cli.add_command(_fdr_group(cli))
