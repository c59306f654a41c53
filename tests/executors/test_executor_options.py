"""Executor options and failure modes that need no running workers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from md_framework.drivers import create_driver
from md_framework.errors import ConfigError, MissingDependencyError


def test_ray_options_are_validated() -> None:
    with pytest.raises(ConfigError, match='driver "ray"'):
        create_driver("executor", "ray", {"n_workers": 0})
    with pytest.raises(ConfigError, match="unknown_option"):
        create_driver("executor", "ray", {"unknown_option": 1})
    executor = create_driver("executor", "ray", {"address": "ray://example:10001", "n_workers": 4})
    assert executor.options.address == "ray://example:10001"
    executor.close()  # never started: nothing to do, safe twice
    executor.close()


def test_ray_missing_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    executor = create_driver("executor", "ray", {})
    with pytest.raises(MissingDependencyError, match=r'md-framework\[ray\]'):
        executor.map(abs, [1])
    assert executor.map(abs, []) == []  # no work, no Ray needed


def test_orchestration_and_drivers_import_without_torch_or_ray() -> None:
    code = (
        "import sys, md_framework.tracing, md_framework.cache, builtin_plugins.executor_ray,"
        " builtin_plugins.executors, builtin_plugins.cache_commands;"
        " bad = [m for m in ('torch', 'ray', 'safetensors') if m in sys.modules];"
        " assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_process_executor_context_manager() -> None:
    with create_driver("executor", "process", {"n_workers": 1, "progress": False}) as executor:
        assert executor.map(abs, [-1, -2]) == [1, 2]
    executor.close()  # second close is harmless
