"""No unsafe loading anywhere in the shipped code (an AST scan of md_framework/ and
builtin_plugins/), and configs cannot import modules or build Python objects.

HTML escaping of model and prompt text in the report is tested in
tests/report/test_report_html.py::test_hostile_text_is_escaped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("md_framework", "builtin_plugins")
                 for p in (REPO_ROOT / d).rglob("*.py"))

#: (file, call) pairs allowed, each with the reason (also in docs/bad-inputs.md)
ALLOWED = {
    # Ray's in-memory transport of (function, item) to its own workers; never read from disk
    ("builtin_plugins/executor_ray.py", "cloudpickle.loads"),
    # entry-point values ("module:attr") of installed distributions only
    ("md_framework/drivers.py", "importlib.import_module"),
    # fixed names of optional dependencies (torch, transformers, ...), never from a config
    ("builtin_plugins/models/_util.py", "importlib.import_module"),
}
UNPICKLERS = {"pickle", "cloudpickle", "dill", "marshal", "joblib", "_pickle", "shelve"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(path: Path, root: Path = REPO_ROOT) -> list[str]:
    rel = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        head, _, tail = name.rpartition(".")
        problem = None
        if head.split(".")[-1] in UNPICKLERS and tail in {"load", "loads", "open", "Unpickler"}:
            problem = "unpickling"
        elif name == "torch.load":
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                problem = "torch.load without weights_only=True"
        elif name in {"yaml.load", "yaml.load_all"}:
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _name(loader).split(".")[-1] not in SAFE_LOADERS:
                problem = "yaml.load without a safe loader"
        elif name in {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"}:
            problem = "unsafe yaml loader"
        elif name in {"eval", "exec", "compile", "__import__"}:
            problem = f"{name}()"
        elif name in {"importlib.import_module", "import_module"}:
            problem = "dynamic import"
        elif (kw := _kw(node, "trust_remote_code")) is not None and not (
                isinstance(kw, ast.Constant) and kw.value is False):
            problem = "trust_remote_code"
        if problem and (rel, name) not in ALLOWED:
            found.append(f"{rel}:{node.lineno}: {name} ({problem})")
    return found


def test_scan_covers_the_code():
    assert len(SOURCES) > 40
    assert any(p.name == "executor_ray.py" for p in SOURCES)


def test_no_unsafe_loading_in_shipped_code():
    problems = [p for path in SOURCES for p in unsafe_calls(path)]
    assert problems == []


def test_allowlist_is_not_stale():
    used = set()
    for path in SOURCES:
        rel = path.relative_to(REPO_ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (rel, _name(node.func)) in ALLOWED:
                used.add((rel, _name(node.func)))
    assert used == ALLOWED


@pytest.mark.parametrize("snippet,expected", [
    ("import pickle\npickle.loads(b)\n", "unpickling"),
    ("import torch\ntorch.load(p)\n", "weights_only"),
    ("import torch\ntorch.load(p, weights_only=False)\n", "weights_only"),
    ("import yaml\nyaml.load(t)\n", "safe loader"),
    ("import yaml\nyaml.load(t, Loader=yaml.FullLoader)\n", "safe loader"),
    ("eval(text)\n", "eval()"),
    ("m.from_pretrained(p, trust_remote_code=True)\n", "trust_remote_code"),
])
def test_scanner_catches_unsafe_calls(tmp_path, snippet, expected):
    path = tmp_path / "probe.py"
    path.write_text(snippet)
    found = unsafe_calls(path, root=tmp_path)
    assert len(found) == 1 and expected in found[0]


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(p, weights_only=True)\n",
    "import yaml\nyaml.load(t, Loader=yaml.SafeLoader)\nyaml.safe_load(t)\n",
    "model.eval()\n",
])
def test_scanner_accepts_safe_calls(tmp_path, snippet):
    path = tmp_path / "probe.py"
    path.write_text(snippet)
    assert unsafe_calls(path, root=tmp_path) == []


def test_config_cannot_name_a_module_as_plugin(tmp_path):
    """plugins.enable takes installed entry-point names; a module path is refused, never
    imported (md_framework/drivers.py imports only entry-point values)."""
    import sys

    from md_framework.config import load_config, resolve_config
    from md_framework.errors import ConfigError

    (tmp_path / "evil_plugin_mod.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "c.yaml").write_text("base_model: toy\nintervention_model: toy\n"
                                     "plugins: {enable: [evil_plugin_mod]}\n"
                                     "tracer: 'evil_plugin_mod:Tracer'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError, match='unknown plugin "evil_plugin_mod"'):
            resolve_config(load_config(tmp_path / "c.yaml"))
    finally:
        sys.path.remove(str(tmp_path))
    assert "evil_plugin_mod" not in sys.modules
