"""``md cache info|clear|verify`` through the plugin hook, as the CLI registers them."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from md_framework.cache import ArtifactCache
from md_framework.cli import MDGroup
from md_framework.plugins import Hooks, get_plugin_manager


@pytest.fixture
def cli() -> click.Group:
    @click.group(cls=MDGroup)
    def root() -> None:
        pass

    pm = get_plugin_manager(autoload=False)
    assert pm.records["cache-commands"].status == "ok"
    Hooks(pm).call("md_register_commands", cli=root)
    assert "cache" in root.commands
    return root


@pytest.fixture
def filled(tmp_path: Path, monkeypatch) -> ArtifactCache:
    import md_framework.cache as cache_mod

    now = [1_000_000.0]
    monkeypatch.setattr(cache_mod.time, "time", lambda: now[0])
    cache = ArtifactCache(tmp_path / "c")
    cache.put_json("graph", "old", {"x": 1})
    now[0] += 40 * 86400
    cache.put_json("graph", "new", {"x": 2})
    cache.put_json("activations", "a", [1, 2, 3])
    monkeypatch.undo()
    # entries are "now" relative to the fake clock; shift them so the real clock sees ages
    import sqlite3
    import time

    db = sqlite3.connect(cache.root / "index.sqlite")
    db.execute("UPDATE entries SET last_access = last_access + ?", (time.time() - now[0],))
    db.commit()
    db.close()
    return cache


def test_info(cli, filled: ArtifactCache) -> None:
    result = CliRunner().invoke(cli, ["cache", "info", "--cache-dir", str(filled.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["entries"] == 3 and set(data["by_kind"]) == {"graph", "activations"}
    text = CliRunner().invoke(cli, ["cache", "info"], env={"MD_CACHE_DIR": str(filled.root)})
    assert text.exit_code == 0 and "entries: 3" in text.output and "graph" in text.output


def test_info_without_cache(cli, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cache", "info", "--cache-dir", str(tmp_path / "none")])
    assert result.exit_code == 0 and "entries: 0" in result.output
    assert not (tmp_path / "none").exists()  # looking does not create a cache


def test_clear_older_than_days(cli, filled: ArtifactCache) -> None:
    result = CliRunner().invoke(
        cli, ["cache", "clear", "--cache-dir", str(filled.root), "--older-than-days", "30"])
    assert result.exit_code == 0, result.output
    assert "removed 1 entries; 2 left" in result.output
    assert {e.key for e in filled.entries()} == {"new", "a"}


def test_clear_kind_and_all(cli, filled: ArtifactCache) -> None:
    runner = CliRunner()
    base = ["cache", "clear", "--cache-dir", str(filled.root)]
    aborted = runner.invoke(cli, base, input="n\n")
    assert aborted.exit_code != 0 and len(filled.entries()) == 3
    result = runner.invoke(cli, [*base, "--kind", "activations", "--yes"])
    assert result.exit_code == 0 and "removed 1 entries; 2 left" in result.output
    result = runner.invoke(cli, base, input="y\n")
    assert result.exit_code == 0 and "removed 2 entries; 0 left" in result.output
    bad = runner.invoke(cli, [*base, "--kind", "../etc", "--yes"])
    assert bad.exit_code == 2 and "invalid cache kind" in bad.output


def test_verify(cli, filled: ArtifactCache) -> None:
    path = filled.path_for("graph", "new")
    path.write_text(path.read_text().replace("2", "3"))
    result = CliRunner().invoke(cli, ["cache", "verify", "--cache-dir", str(filled.root)])
    assert result.exit_code == 1, result.output  # corruption found: not a clean bill of health
    assert "removed corrupt entry graph/new" in result.output and "2 entries ok" in result.output
    again = CliRunner().invoke(cli, ["cache", "verify", "--cache-dir", str(filled.root)])
    assert again.exit_code == 0 and "2 entries ok, 0 corrupt removed" in again.output


def test_clear_older_than_days_of_one_kind(cli, filled: ArtifactCache) -> None:
    base = ["cache", "clear", "--cache-dir", str(filled.root), "--older-than-days", "30"]
    result = CliRunner().invoke(cli, [*base, "--kind", "activations"])
    assert result.exit_code == 0 and "removed 0 entries; 3 left" in result.output
    result = CliRunner().invoke(cli, [*base, "--kind", "graph"])
    assert "removed 1 entries; 2 left" in result.output
