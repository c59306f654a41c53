"""Entry-point discovery in real (temporary) environments: example plugins, broken plugins."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from tests.kernel.distributions import REPO_ROOT, make_project, pip_install_target, run_md

BUILTIN_HOOK_PLUGINS = {"hypothesis-types", "fdr-commands", "model-loaders", "cache-commands",
                        "tracing-commands"}


def _rows(result) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {(row["name"], row["kind"]): row for row in json.loads(result.stdout)["plugins"]}


def test_builtins_are_listed_under_entry_point_names() -> None:
    rows = _rows(run_md("plugins", "list", "--json", autoload=False))
    hook_plugins = {name for name, kind in rows if kind == "hooks"}
    assert BUILTIN_HOOK_PLUGINS <= hook_plugins
    for name in ["saffron", "lord++", "wilcoxon", "ucb", "serial", "circuit-tracer"]:
        row = rows[(name, "driver")]
        assert row["distribution"] == "md-framework", row
        assert row["status"] == "ok", row
    assert rows[("hypothesis-types", "hooks")]["hooks"] == ["md_hypothesis_types"]


@pytest.fixture(scope="module")
def example_plugins_site(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The example plugins: already installed (CI does that) or installed to a temp dir."""
    try:
        importlib.metadata.distribution("md-medical")
        importlib.metadata.distribution("md-lab-patterns")
        return None
    except importlib.metadata.PackageNotFoundError:
        site = tmp_path_factory.mktemp("site")
        pip_install_target(site, REPO_ROOT / "plugins" / "md-medical", REPO_ROOT / "plugins" / "md-lab-patterns")
        return site


def test_example_plugins_are_discovered(example_plugins_site: Path | None) -> None:
    rows = _rows(run_md("plugins", "list", "--json", site=example_plugins_site))
    medical = rows[("medical", "hooks")]
    lab = rows[("lab-patterns", "hooks")]
    assert medical["distribution"] == "md-medical" and medical["status"] == "ok"
    assert medical["hooks"] == ["md_generate_tests", "md_prompt_family_generators"]
    assert lab["distribution"] == "md-lab-patterns" and lab["hooks"] == ["md_detect_patterns", "md_pattern_types"]


def test_autoload_switch_hides_third_party_plugins(example_plugins_site: Path | None) -> None:
    rows = _rows(run_md("plugins", "list", "--json", site=example_plugins_site, autoload=False))
    assert rows[("medical", "hooks")]["status"] == "not-autoloaded"


def test_example_plugins_take_part_in_hook_calls(example_plugins_site: Path | None) -> None:
    """Loaded through entry points (not imported by the test), both contribute to their hooks."""
    code = """
import json
from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.runtime import TestGenerationContext
from md_framework.types import CircuitDiff, FeatureRef, Hypothesis, SystematicChange
hooks = Hooks(get_plugin_manager(autoload=True))
hyp = Hypothesis(id="h", hypothesis_type="safety_degradation", description="d", metric="refusal_probability")
tests = hooks.collect("md_generate_tests", hypothesis=hyp, n_tests=4, context=TestGenerationContext())
changes = [SystematicChange(feature=FeatureRef(layer=1, feature=i), mean_delta=-1.0, n_prompts=8,
           p_value=0.001, q_value=0.01, families={"harmful": -1.0}) for i in range(3)]
diff = CircuitDiff(base_model_id="a", intervention_model_id="b", systematic_changes=changes)
patterns = hooks.collect("md_detect_patterns", diff=diff, interpretations={}, config=None)
print(json.dumps({"tests": sorted({c.plugin for c in tests}), "patterns": sorted({c.plugin for c in patterns})}))
"""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("MD_DISABLE_PLUGIN_AUTOLOAD", None)
    if example_plugins_site is not None:
        env["PYTHONPATH"] = str(example_plugins_site)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "medical" in out["tests"]
    assert "lab-patterns" in out["patterns"]


def test_broken_plugins_are_reported_and_listing_goes_on(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, "md-broken-demo",
        modules={
            "md_broken_demo/__init__.py": "",
            "md_broken_demo/explodes.py": "raise ImportError('needs libfoo >= 2')\n",
            "md_broken_demo/typo.py": """
                from md_framework import hookimpl

                @hookimpl
                def md_detect_pattern(diff):
                    return []
            """,
            "md_broken_demo/fine.py": """
                from md_framework import hookimpl

                @hookimpl
                def md_detect_patterns(diff):
                    return []
            """,
        },
        entry_points={
            "md_framework": {"explodes": "md_broken_demo.explodes", "typo": "md_broken_demo.typo",
                             "fine": "md_broken_demo.fine"},
            "md_framework.fdr_procedures": {"ghost": "md_broken_demo.fine:NoSuchClass",
                                            "not-a-driver": "md_broken_demo.fine:hookimpl"},
        },
    )
    site = tmp_path / "site"
    pip_install_target(site, project)
    rows = _rows(run_md("plugins", "list", "--json", site=site))
    explodes = rows[("explodes", "hooks")]
    assert explodes["status"] == "broken" and explodes["distribution"] == "md-broken-demo"
    assert "needs libfoo >= 2" in explodes["error"]
    assert rows[("typo", "hooks")]["status"] == "broken"
    assert "md_detect_pattern" in rows[("typo", "hooks")]["error"]
    assert rows[("fine", "hooks")]["status"] == "ok"
    ghost = rows[("ghost", "driver")]
    assert ghost["status"] == "broken" and "md-broken-demo" in ghost["error"]
    assert "not a subclass" in rows[("not-a-driver", "driver")]["error"]
    assert rows[("saffron", "driver")]["status"] == "ok"  # builtins unaffected
    text = run_md("plugins", "list", site=site)
    assert text.returncode == 0 and "explodes" in text.stdout and "[broken]" in text.stdout
