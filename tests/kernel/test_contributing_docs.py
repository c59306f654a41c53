"""CONTRIBUTING.md documents every hook and driver group with its exact signature, and
every hook and driver group is exercised by at least one test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from md_framework import hookspecs
from md_framework.drivers import DRIVER_GROUPS, _import_object

ROOT = Path(__file__).resolve().parents[2]
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()
HOOKS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("md_")}


def render_signature(name: str, fn) -> str:
    """``def name(arg: Type = default) -> Return`` with string annotations unquoted."""
    sig = inspect.signature(fn)
    params = []
    for param in sig.parameters.values():
        text = param.name
        if param.annotation is not inspect.Parameter.empty:
            text += f": {param.annotation}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}"
        params.append(text)
    returns = "" if sig.return_annotation is inspect.Signature.empty else f" -> {sig.return_annotation}"
    return f"def {name}({', '.join(params)}){returns}"


_signature = render_signature


def _test_sources() -> str:
    files = [p for p in ROOT.glob("tests/**/*.py") if p.name != Path(__file__).name]
    files += list(ROOT.glob("plugins/*/tests/**/*.py"))
    return "\n".join(p.read_text() for p in files)


TEST_SOURCES = _test_sources()


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 10


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_documented_with_exact_signature(name: str) -> None:
    assert _signature(name, HOOKS[name]) in CONTRIBUTING, f"document {name} in CONTRIBUTING.md"
    firstresult = HOOKS[name].md_framework_spec["firstresult"]
    section = CONTRIBUTING.split(_signature(name, HOOKS[name]), 1)[1].split("`def ", 1)[0]
    expected = "**firstresult**" if firstresult else "Not firstresult."
    assert expected in section, f"say whether {name} is firstresult"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_test(name: str) -> None:
    assert f'"{name}"' in TEST_SOURCES or f".{name}(" in TEST_SOURCES, f"no test calls {name}"


def _abstract_methods(base: type) -> dict[str, str]:
    out = {}
    for name in sorted(getattr(base, "__abstractmethods__", ())):
        fn = inspect.getattr_static(base, name)
        fn = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        fn = fn.fget if isinstance(fn, property) else fn
        out[name] = render_signature(name, fn)
    return out


@pytest.mark.parametrize("key", sorted(DRIVER_GROUPS))
def test_driver_group_documented_with_signatures(key: str) -> None:
    group = DRIVER_GROUPS[key]
    assert f"`{group.namespace}`" in CONTRIBUTING
    methods = _abstract_methods(_import_object(group.base))
    assert methods, f"{group.base} has no abstract methods?"
    for signature in methods.values():
        assert signature in CONTRIBUTING, f"document `{signature}` of {group.namespace}"


@pytest.mark.parametrize("key", sorted(DRIVER_GROUPS))
def test_driver_group_has_a_test(key: str) -> None:
    group = DRIVER_GROUPS[key]
    assert f'"{key}"' in TEST_SOURCES or group.namespace in TEST_SOURCES, f"no test for {key}"
