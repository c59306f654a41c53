"""The ``md`` command line. Plugins add commands through ``md_register_commands``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from md_framework import __version__
from md_framework.errors import MDError


class MDGroup(click.Group):
    """Turns md-framework's own errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MDError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=MDGroup)
@click.version_option(__version__, prog_name="md")
def cli() -> None:
    """md-framework: find how a model changed, from its circuits, with honest statistics."""


# --------------------------------------------------------------------------- plugins


@cli.group(cls=MDGroup)
def plugins() -> None:
    """Installed plugins and drivers."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_list(as_json: bool) -> None:
    """Every plugin and driver, its distribution, version, hooks and status."""
    from md_framework.inventory import plugin_inventory
    from md_framework.plugins import get_plugin_manager

    rows = plugin_inventory(get_plugin_manager())
    if as_json:
        click.echo(json.dumps({"plugins": rows}, indent=2))
        return
    by_dist: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_dist.setdefault(f"{row['distribution']} {row['version']}", []).append(row)
    for dist, dist_rows in sorted(by_dist.items()):
        click.secho(dist, bold=True)
        for row in dist_rows:
            what = ", ".join(row["hooks"]) if row["kind"] == "hooks" else row["driver_kind"]
            status = "" if row["status"] == "ok" else f"  [{row['status']}]"
            status += "  [essential]" if row.get("essential") else ""
            click.echo(f"  {row['name']:<24} {what}{status}")
            if row["error"]:
                click.secho(f"      {row['error']}", fg="red")


# --------------------------------------------------------------------------- config


@cli.group(cls=MDGroup)
def config() -> None:
    """Validate and inspect analysis configs."""


def _resolve(path: Path) -> Any:
    from md_framework.config import load_config, resolve_config

    return resolve_config(load_config(path))


@config.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
def config_validate(file: Path) -> None:
    """Check FILE: shape, types, driver names and driver options."""
    resolved = _resolve(file)
    chosen = ", ".join(f"{k}={v.name}" for k, v in resolved.drivers.items())
    click.echo(f"{file}: valid ({chosen})")


@config.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def config_show(file: Path, as_json: bool) -> None:
    """Print FILE fully resolved: defaults, chosen drivers and their options, alternatives."""
    resolved = _resolve(file)
    data = resolved.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False))


# --------------------------------------------------------------------------- plugin commands


def _register_plugin_commands() -> None:
    from md_framework.plugins import Hooks, get_plugin_manager

    pm = get_plugin_manager()
    hooks = Hooks(pm, on_error="skip")
    hooks.call("md_register_commands", cli=cli)
    for error in hooks.skipped:
        click.secho(f"Warning: {error}", fg="yellow", err=True)


def main(argv: list[str] | None = None) -> Any:
    _register_plugin_commands()
    return cli.main(args=argv, prog_name="md")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
