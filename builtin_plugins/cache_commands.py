"""``md cache info`` and ``md cache clear``: inspect and empty the artefact cache.

    md cache info [--json]
    md cache clear [--kind graph] [--older-than-days 30] [--yes]
    md cache verify            (exit code 1 when it found corruption)

The cache root is ``--cache-dir``, else ``$MD_CACHE_DIR``, else the user cache directory
(:func:`md_framework.cache.default_cache_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from md_framework import hookimpl


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _cache_group(cli: Any) -> Any:
    import click

    from md_framework.cache import CACHE_DIR_ENV

    group_cls = type(cli) if isinstance(cli, click.Group) else click.Group
    cache_dir_option = click.option(
        "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        envvar=CACHE_DIR_ENV, show_envvar=True,
        help="Cache root (default: the user cache directory, e.g. ~/.cache/md-framework).",
    )

    def open_existing(cache_dir: Path | None) -> Any:
        from md_framework.cache import ArtifactCache, default_cache_dir

        root = cache_dir if cache_dir is not None else default_cache_dir()
        if not (root / "index.sqlite").exists():
            return root, None
        return root, ArtifactCache(root)

    @click.group("cache", cls=group_cls)
    def cache() -> None:
        """The on-disk artefact cache (graphs, activations, converted models, dictionaries)."""

    @cache.command("info")
    @cache_dir_option
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def info(cache_dir: Path | None, as_json: bool) -> None:
        """Entries and size, in total and per kind."""
        root, store = open_existing(cache_dir)
        data = store.info() if store is not None else {
            "root": str(root.resolve()), "entries": 0, "bytes": 0, "max_bytes": None, "by_kind": {},
        }
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        click.echo(f"cache: {data['root']}")
        click.echo(f"entries: {data['entries']}, size: {_human(data['bytes'])}")
        for kind, row in data["by_kind"].items():
            click.echo(f"  {kind:<20} {row['entries']:>7} entries  {_human(row['bytes']):>10}")

    @cache.command("clear")
    @cache_dir_option
    @click.option("--kind", default=None, help="Only entries of this kind (e.g. graph).")
    @click.option("--older-than-days", type=click.FloatRange(min=0), default=None,
                  help="Only entries not used for this many days.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    def clear(cache_dir: Path | None, kind: str | None, older_than_days: float | None,
              yes: bool) -> None:
        """Remove cached entries (all of them unless filtered)."""
        from md_framework.errors import ConfigError

        root, store = open_existing(cache_dir)
        if store is None:
            click.echo(f"no cache at {root}; nothing to clear")
            return
        if older_than_days is None and not yes:
            what = f'all "{kind}" entries' if kind else "every entry"
            click.confirm(f"Remove {what} from {store.root}?", abort=True)
        try:
            if older_than_days is not None:
                removed = store.clear_old_entries(older_than_days, kind=kind)
            else:
                removed = store.clear(kind)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        left = store.info()
        click.echo(f"removed {removed} entries; {left['entries']} left ({_human(left['bytes'])})")

    @cache.command("verify")
    @cache_dir_option
    def verify(cache_dir: Path | None) -> None:
        """Check every entry's checksum; corrupt entries are removed (and rebuilt when next needed).

        Exit code 0 when every entry was intact, 1 when corruption was found (and removed).
        """
        root, store = open_existing(cache_dir)
        if store is None:
            click.echo(f"no cache at {root}")
            return
        bad = store.verify_all()
        verb = "found corrupt (read-only cache: left in place, never served)" if store.read_only \
            else "removed corrupt entry"
        for kind, key in bad:
            click.echo(f"{verb} {kind}/{key}")
        click.echo(f"{len(store.entries()) - (len(bad) if store.read_only else 0)} entries ok,"
                   f" {len(bad)} corrupt {'found' if store.read_only else 'removed'}")
        if bad:
            raise SystemExit(1)

    return cache


@hookimpl
def md_register_commands(cli: Any) -> None:
    """Add ``md cache info|clear|verify`` to the command line."""
    cli.add_command(_cache_group(cli))
