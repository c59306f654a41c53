"""CONTRIBUTING's detector walk-through works as written: its pyproject, detector and tests,
copied from the page into an empty folder, install with pip and pass their own tests with
the kit's fixtures, and md sees the plugin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "CONTRIBUTING.md").read_text().split(
    "## A pattern detector, from an empty folder to the report", 1)[1].split("\n## ", 1)[0]


def test_walkthrough_builds_an_installed_tested_detector(md_installed, tmp_path: Path) -> None:
    blocks = re.findall(r"```(\w+)\n(.*?)```", SECTION, re.S)
    toml = [b for lang, b in blocks if lang == "toml"]
    python = [b for lang, b in blocks if lang == "python"]
    assert len(toml) == 1 and len(python) == 2, "the walk-through changed shape: update this test"
    project = tmp_path / "md-my-detector"
    (project / "src" / "md_my_detector").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "src" / "md_my_detector" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(toml[0])
    (project / "src" / "md_my_detector" / "detector.py").write_text(python[0])
    (project / "tests" / "test_detector.py").write_text(python[1])
    md_installed.install(project)
    listed = md_installed.run_md("plugins", "list")
    assert listed.returncode == 0 and "my-detector" in listed.stdout, listed.stdout + listed.stderr
    env = md_installed.env()
    env["MD_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                           cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "2 passed" in tests.stdout
