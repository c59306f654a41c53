"""The dependency direction (docs/architecture.md): builtin plugins depend on the kernel,
never the reverse; only the public façade reaches into builtin plugins, lazily."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the public façade: lazy re-exports of the design document's names
FACADE = {"md_framework/__init__.py", "md_framework/utils.py"}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def kernel_imports_of_builtins(root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / "md_framework").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in FACADE:
            continue
        out += [f"{rel}:{line} imports {module}" for line, module in _imported_modules(path)
                if module == "builtin_plugins" or module.startswith("builtin_plugins.")]
    return out


def test_no_kernel_module_imports_builtin_plugins() -> None:
    assert kernel_imports_of_builtins() == []


#: the one exception (also in pyproject's contract): the parser of the labels a user hands
#: to generate_hypotheses(feature_interpretations=...), shared with the user interpreter
STAGE_IMPORT_EXCEPTIONS = {("builtin_plugins/pipeline/discovery.py", "builtin_plugins.interpreters.user")}


def stage_plugin_imports_of_other_plugins(root: Path = ROOT) -> list[str]:
    """Imports of other builtin plugin packages by the stage plugins (builtin_plugins.pipeline):
    they reach detectors, templates, interpreters, tracers, metrics... through hooks and
    drivers, so blocking or replacing one works as for a third party's."""
    out = []
    for path in sorted((root / "builtin_plugins" / "pipeline").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        out += [f"{rel}:{line} imports {module}" for line, module in _imported_modules(path)
                if (module == "builtin_plugins" or module.startswith("builtin_plugins."))
                and not (module + ".").startswith("builtin_plugins.pipeline.")
                and (rel, module) not in STAGE_IMPORT_EXCEPTIONS]
    return out


def test_stage_plugins_import_no_other_builtin_plugin() -> None:
    assert stage_plugin_imports_of_other_plugins() == []


def test_the_scan_sees_lazy_imports(tmp_path: Path) -> None:
    # the check itself can fail: a function-level import in a kernel module is caught
    kernel = tmp_path / "md_framework"
    kernel.mkdir()
    (kernel / "__init__.py").write_text("")
    (kernel / "stage.py").write_text("def f():\n    from builtin_plugins.pipeline import diff\n")
    assert kernel_imports_of_builtins(tmp_path) == ["md_framework/stage.py:2 imports builtin_plugins.pipeline"]


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("import-linter is a dev dependency: pip install -e '.[dev]'")
    done = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_kernel_imports_without_torch() -> None:
    code = ("import sys, pkgutil, importlib, md_framework\n"
            "for m in pkgutil.walk_packages(md_framework.__path__, 'md_framework.'):\n"
            "    if not m.name.startswith(('md_framework.cli', 'md_framework.__main__')):\n"
            "        importlib.import_module(m.name)\n"
            "heavy = sorted(n for n in ('torch', 'transformers', 'circuit_tracer', 'sae_lens')"
            " if n in sys.modules)\n"
            "leaked = sorted(n for n in sys.modules if n.startswith('builtin_plugins'))\n"
            "print(heavy, leaked)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] []"
