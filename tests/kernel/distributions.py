"""Install small throwaway distributions into a private directory for plugin tests.

``pip install --target`` writes a real ``*.dist-info`` with ``entry_points.txt``, so the
kernel discovers these plugins exactly as it discovers any installed distribution, while
the test's own environment stays untouched (the directory is only on a subprocess's path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def pip_install_target(target: Path, *projects: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), *map(str, projects)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def make_project(root: Path, name: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]) -> Path:
    project = root / name
    package_files = project / "src"
    for module, source in modules.items():
        path = package_files / module
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    groups = "\n".join(
        f'[project.entry-points."{group}"]\n' + "\n".join(f'"{k}" = "{v}"' for k, v in eps.items())
        for group, eps in entry_points.items()
    )
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "9.9.9"\n{groups}\n'
        '[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    return project


def run_md(*args: str, site: Path | None = None, autoload: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if autoload:
        env.pop("MD_DISABLE_PLUGIN_AUTOLOAD", None)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "md_framework", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO_ROOT)
