"""The stage hooks: every algorithm is an essential builtin plugin's implementation, and a
third-party plugin replaces one by implementing the same hook with ``tryfirst``."""

from __future__ import annotations

import inspect

import pytest

from md_framework import hookimpl, hookspecs
from md_framework.errors import ConfigError, PluginError
from md_framework.plugins import ESSENTIAL_PLUGINS, Hooks, MDPluginManager, get_plugin_manager
from md_framework.types import CircuitDiff
from tests.discovery.synth import organism

STAGE_HOOKS = sorted(n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction)
                     if n.startswith("md_stage_"))


@pytest.fixture(scope="module")
def essential_only() -> Hooks:
    return Hooks(get_plugin_manager(builtins=False, autoload=False))


def test_every_stage_hook_is_firstresult_with_one_essential_implementation(essential_only: Hooks) -> None:
    assert len(STAGE_HOOKS) == 9
    loaded = {name for name, _ in essential_only.pm.list_name_plugin()}
    assert set(ESSENTIAL_PLUGINS) <= loaded  # loaded even with builtins=False
    for name in STAGE_HOOKS:
        assert getattr(hookspecs, name).md_framework_spec["firstresult"], name
        providers = [impl.plugin_name for impl in essential_only._impls(name)]
        assert len(providers) == 1 and providers[0] in ESSENTIAL_PLUGINS, (name, providers)


def test_essential_plugins_cannot_be_blocked() -> None:
    with pytest.raises(ConfigError, match="graph-diff is essential.*tryfirst"):
        get_plugin_manager(blocked=["graph-diff"])


def test_a_manager_without_them_says_so() -> None:
    with pytest.raises(PluginError, match="no plugin implements md_stage_split_universe.*essential"):
        Hooks(MDPluginManager()).stage("md_stage_split_universe", universe={}, explore_fraction=0.5,
                                       seed=0)


def test_builtin_split_diff_patterns_discover_and_screen(essential_only: Hooks) -> None:
    hooks = essential_only
    universe = {"a": [f"a{i}" for i in range(10)], "b": [f"b{i}" for i in range(10)]}
    explore, confirm = hooks.stage("md_stage_split_universe", universe=universe,
                                   explore_fraction=0.5, seed=3)
    for family in universe:
        assert set(explore[family]).isdisjoint(confirm[family])
        assert sorted(explore[family] + confirm[family]) == sorted(universe[family])

    base, intervention = organism(planted=True)
    diff = hooks.stage("md_stage_diff", base_graphs=base, intervention_graphs=intervention,
                       base_model_id="b", intervention_model_id="i", dictionary_id=None,
                       answers=None)
    assert isinstance(diff, CircuitDiff) and diff.systematic_changes
    full = Hooks(get_plugin_manager(autoload=False))  # the detectors are ordinary builtins
    patterns = full.stage("md_stage_patterns", hooks=full, diff=diff, interpretations={}, config=None)
    assert any("harmful" in p.families for p in patterns)
    assert all(p.detector for p in patterns)
    from md_framework.config import config_from_mapping

    config = config_from_mapping({"base_model": "toy", "intervention_model": "toy"})
    result = full.stage("md_stage_discover", hooks=full, diff=diff, config=config, context={})
    assert [p.id for p in result.patterns] and all(h.priority >= 0.3 for h in result.hypotheses)
    assert all(d.reason in ("below_floor", "over_cap") for d in result.dropped)

    seeds = [(f"{f} prompt {i}", f) for f in ("harmful", "benign", "other") for i in range(3)]
    flagged, chosen, checks = hooks.stage("md_stage_screen", seeds=seeds, patterns=patterns,
                                          check_prompts=1, seed=0, max_families=None,
                                          prompts_per_family=None)
    assert "harmful" in flagged and set(checks) <= set(chosen) <= set(seeds)
    # the caps reach the builtin through the hook call (an argument with a default in the
    # implementation would silently not be passed)
    capped = hooks.stage("md_stage_screen", seeds=seeds, patterns=patterns, check_prompts=1,
                         seed=0, max_families=1, prompts_per_family=2)
    assert len(capped[0]) == 1 and len(capped[1]) == 2 + len(capped[2]) == 3
    assert hooks.stage_providers["md_stage_diff"] == "graph-diff"
    assert full.stage_providers["md_stage_discover"] == "discovery"


class FixedSplit:
    """A third party's split: every prompt confirms, none explores."""

    @hookimpl(tryfirst=True)
    def md_stage_split_universe(self, universe, explore_fraction, seed):
        return {f: [] for f in universe}, {f: list(p) for f, p in universe.items()}


def test_a_tryfirst_plugin_replaces_a_stage_and_is_recorded() -> None:
    hooks = Hooks(get_plugin_manager(builtins=False, autoload=False,
                                     extra_plugins=[("fixed-split", FixedSplit())]))
    explore, confirm = hooks.stage("md_stage_split_universe", universe={"a": ["x", "y"]},
                                   explore_fraction=0.5, seed=0)
    assert explore == {"a": []} and confirm == {"a": ["x", "y"]}
    assert hooks.stage_providers == {"md_stage_split_universe": "fixed-split"}


def test_stage_errors_propagate_unchanged() -> None:
    class Broken:
        @hookimpl(tryfirst=True)
        def md_stage_split_universe(self, universe):
            raise KeyError("mine")

    hooks = Hooks(get_plugin_manager(builtins=False, autoload=False, extra_plugins=[("broken", Broken())]))
    with pytest.raises(KeyError, match="mine"):
        hooks.stage("md_stage_split_universe", universe={}, explore_fraction=0.5, seed=0)


def test_design_views_come_from_the_stage_hook() -> None:
    from md_framework.config import config_from_mapping
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    analyzer = MechanisticBehavioralAnalyzer(config_from_mapping({"base_model": "toy",
                                                                  "intervention_model": "toy"}))
    view = analyzer.circuit_analyzer
    assert view is analyzer.circuit_analyzer  # built once
    assert type(view).__module__ == "builtin_plugins.pipeline.design_stages"
    assert analyzer.__dict__["_md_view_hooks"].stage_providers["md_stage_views"] == "design-stages"
    # the views call plugins through the runner the analyzer asked with (one plugin manager)
    assert analyzer.pattern_recognizer._s.get_hooks() is analyzer.__dict__["_md_view_hooks"]


def test_plugins_list_marks_the_essential_plugins() -> None:
    from click.testing import CliRunner

    from md_framework.cli import cli
    from md_framework.inventory import plugin_inventory

    rows = {r["name"]: r for r in plugin_inventory(get_plugin_manager(autoload=False))}
    assert {n for n, r in rows.items() if r.get("essential")} == set(ESSENTIAL_PLUGINS)
    out = CliRunner().invoke(cli, ["plugins", "list"]).output
    assert "graph-diff" in out and out.count("[essential]") == len(ESSENTIAL_PLUGINS)
