"""The plugin authors' kit: md_framework.testing (pytest11) and md_framework.detector_api."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from md_framework import hookimpl
from md_framework.detector_api import (
    affected_families,
    evidence_strength,
    exploratory_changes,
    q_of,
)
from md_framework.testing import make_change
from md_framework.types import CircuitDiff, Pattern

REPO = Path(__file__).resolve().parents[2]


class Echo:
    @hookimpl
    def md_detect_patterns(self, diff: CircuitDiff) -> list[Pattern]:
        return [Pattern(id="e", pattern_type="echo", description=diff.base_model_id)]


def test_md_hooks_holds_only_your_plugin(md_hooks) -> None:
    hooks = md_hooks(("echo", Echo()))
    from md_framework.plugins import ESSENTIAL_PLUGINS

    names = {name for name, _ in hooks.pm.list_name_plugin()}
    # the essential stage plugins are always there; they implement only md_stage_* hooks
    assert names - set(ESSENTIAL_PLUGINS) == {"echo"}
    found = hooks.collect("md_detect_patterns", diff=CircuitDiff(base_model_id="b", intervention_model_id="i"),
                          interpretations={}, config=None)
    assert [(c.plugin, c.value.description) for c in found] == [("echo", "b")]
    with_builtins = md_hooks(("echo", Echo()), builtins=True)
    assert {"echo", "pattern-detectors", "hypothesis-templates"} <= {n for n, _ in with_builtins.pm.list_name_plugin()}
    assert md_hooks(Echo()).pm is not hooks.pm  # a fresh manager every time


def test_synthetic_diff_plants_one_family_change(md_synthetic_diff) -> None:
    diff = md_synthetic_diff(changed_family="math")
    screened = exploratory_changes(diff)
    assert [c.feature.key for c in screened] == ["2:11", "3:7"]
    assert all(affected_families(c, diff) == ["math"] for c in screened)
    flipped = {pd.family for pd in diff.prompt_diffs
               if pd.intervention_logit_targets[0].token != pd.base_logit_targets[0].token}
    assert flipped == {"math"}
    with pytest.raises(ValueError):
        md_synthetic_diff(changed_family="nope")


def test_detector_helpers() -> None:
    change = make_change(1, 2, -1.0, 0.01, {"a": -2.0, "b": -0.9, "c": 0.5})
    assert q_of(change) == 0.01
    assert q_of(change.model_copy(update={"q_value": None, "p_value": None})) == 1.0
    assert affected_families(change) == ["a"]  # same sign, >= half the largest magnitude
    assert evidence_strength(0.01) == pytest.approx(0.5)
    diff = CircuitDiff(base_model_id="b", intervention_model_id="i", systematic_changes=[
        change, make_change(1, 3, 0.0, 0.001, {}), make_change(1, 4, 1.0, 0.2, {})])
    assert exploratory_changes(diff) == [change]
    assert exploratory_changes(diff, q_max=0.5)[-1].feature.feature == 4


def test_builtin_rules_use_the_public_helpers() -> None:
    import builtin_plugins.patterns.rules as rules
    from md_framework import detector_api

    assert rules.affected_families is detector_api.affected_families
    assert rules.evidence_strength is detector_api.evidence_strength


def test_kit_imports_neither_builtins_nor_torch() -> None:
    code = ("import sys, md_framework.testing, md_framework.detector_api;"
            "assert not [m for m in sys.modules if m.startswith('builtin_plugins')], 'imported builtin_plugins';"
            "assert 'torch' not in sys.modules, 'imported torch'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr


def test_kit_is_a_registered_pytest_plugin() -> None:
    from importlib.metadata import entry_points

    assert [ep.value for ep in entry_points(group="pytest11") if ep.name == "md_framework"] == ["md_framework.testing"]


def test_md_installed_installs_a_distribution_and_md_sees_it(md_installed) -> None:
    project = md_installed.make_project("md-kit-probe", {"md_kit_probe/__init__.py": """
        from md_framework import hookimpl
        from md_framework.types import PatternType

        @hookimpl
        def md_pattern_types():
            return [PatternType(name="probe_type", level="feature", weight=0.5)]
    """}, {"md_framework": {"kit-probe": "md_kit_probe"}})
    md_installed.install(project)
    assert list(md_installed.site.glob("md_kit_probe-*.dist-info"))
    listed = md_installed.run_md("plugins", "list")
    assert listed.returncode == 0 and "kit-probe" in listed.stdout, listed.stdout + listed.stderr
    run = md_installed.run_python("""
        from builtin_plugins.pipeline.discovery import pattern_types
        from md_framework.plugins import Hooks, get_plugin_manager
        print(sorted(pattern_types(Hooks(get_plugin_manager()))))
    """)
    assert run.returncode == 0 and "probe_type" in run.stdout, run.stderr
    with md_installed.activated():
        from md_framework.plugins import get_plugin_manager

        assert "kit-probe" in {n for n, _ in get_plugin_manager().list_name_plugin()}
    assert "kit-probe" not in {n for n, _ in get_plugin_manager(autoload=False).list_name_plugin()}


@pytest.mark.slow
def test_tiny_model_pair_comes_through_the_loader_hook(md_tiny_model_pair) -> None:
    base, edited = md_tiny_model_pair
    assert base.loader == edited.loader == "toy"
    assert base.model_id != edited.model_id and base.model_id.startswith("sha256:")
