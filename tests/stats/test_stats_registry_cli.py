"""Every builtin statistics driver is discoverable and constructible; md fdr run works."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from md_framework.drivers import create_driver, discover_drivers, load_driver_class

EXPECTED = {
    "fdr_procedure": {"saffron", "addis", "lord++", "lond", "alpha-investing", "e-lond",
                      "bh", "by"},
    "paired_test": {"wilcoxon", "sign", "permutation", "mcnemar", "beta-binomial-e",
                    "betting-e"},
    "bandit_strategy": {"ucb", "thompson", "epsilon_greedy"},
}
R_P = [2.90e-08, 0.06743, 0.01514, 0.08174, 0.00171, 3.60e-05, 0.79149, 0.27201,
       0.28295, 7.59e-08, 0.69274, 0.30443, 0.00136, 0.72342, 0.54757]


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_every_builtin_driver_is_discovered_and_creatable(group):
    found = discover_drivers(group, autoload=False)
    assert EXPECTED[group] <= set(found)
    for name in EXPECTED[group]:
        assert found[name].distribution == "md-framework"
        cls = load_driver_class(group, name)
        assert cls.name == name and cls.description
        if group == "fdr_procedure":
            driver = create_driver(group, name, {}, alpha=0.05)
            assert driver.alpha == 0.05
            json.dumps(driver.state())
        elif group == "bandit_strategy":
            driver = create_driver(group, name, {"exploration_weight": 1.0,
                                                 "diversity_weight": 0.1})
            json.dumps(driver.state())
        else:
            driver = create_driver(group, name, {})
            assert driver.test([0, 1, 1], [1, 1, 0]).n == 3


def test_config_resolves_the_statistics_groups(monkeypatch):
    from md_framework.config import AnalysisConfig, resolve_config

    # only the three statistics groups: tracer/executor drivers belong to other work
    original = AnalysisConfig.driver_choices
    monkeypatch.setattr(
        AnalysisConfig, "driver_choices",
        lambda self: {k: v for k, v in original(self).items() if k in EXPECTED},
    )

    config = AnalysisConfig(
        base_model="a", intervention_model="b",
        statistics={"procedure": "addis", "procedure_options": {"tau": 0.6},
                    "paired_test": "betting-e", "paired_test_options": {"lo": -1, "hi": 1}},
        exploration={"method": "thompson", "method_options": {"likelihood": "bernoulli"},
                     "exploration_weight": 0.5},
    )
    resolved = resolve_config(config)
    assert resolved.drivers["fdr_procedure"].options["tau"] == 0.6
    assert resolved.drivers["bandit_strategy"].options["exploration_weight"] == 0.5
    assert set(resolved.drivers["paired_test"].available) >= EXPECTED["paired_test"]
    assert resolved.drivers["paired_test"].options == {"lo": -1.0, "hi": 1.0, "clip": 0.5}
    defaults = resolve_config(AnalysisConfig(base_model="a", intervention_model="b"))
    assert {k: v.name for k, v in defaults.drivers.items()} == {
        "fdr_procedure": "saffron", "paired_test": "wilcoxon", "bandit_strategy": "ucb"}
    assert defaults.drivers["bandit_strategy"].options["diversity_weight"] == 0.1


def test_plugin_module_registers_the_fdr_command():
    import click

    from builtin_plugins.stats import commands
    from md_framework.plugins import get_plugin_manager

    pm = get_plugin_manager(autoload=False)
    assert any(p is commands for p in pm.get_plugins())
    root = click.Group("md")
    commands.md_register_commands(cli=root)
    assert "fdr" in root.commands and "run" in root.commands["fdr"].commands


def _cli():
    from md_framework import cli as cli_module

    cli_module._register_plugin_commands()
    return cli_module.cli


def test_cli_runner_prints_one_line_per_hypothesis():
    text = "\n".join(str(p) for p in R_P[:8]) + "\n" + ", ".join(str(p) for p in R_P[8:])
    result = CliRunner().invoke(_cli(), ["fdr", "run", "--procedure", "saffron", "-"],
                                input=text)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 15
    fields = [line.split("\t") for line in lines]
    assert [int(f[0]) for f in fields] == list(range(1, 16))
    assert [int(f[3]) for f in fields if f[3] == "1"] and \
        [int(f[0]) for f in fields if f[3] == "1"] == [1, 5, 6, 10, 13]
    assert float(fields[0][2]) == pytest.approx(0.005468627, abs=1e-9)


def test_cli_json_options_and_resume(tmp_path):
    values = tmp_path / "p.txt"
    values.write_text("\n".join(str(p) for p in R_P[:6]) + "\n# comment\n")
    rest = tmp_path / "rest.txt"
    rest.write_text(" ".join(str(p) for p in R_P[6:]))
    state = tmp_path / "state.json"
    runner = CliRunner()
    cli = _cli()
    first = runner.invoke(cli, ["fdr", "run", "-p", "saffron", "-o", "lambda_=0.5",
                                "--save-state", str(state), "--json", str(values)])
    assert first.exit_code == 0, first.output
    head = json.loads(first.output)
    assert head["procedure"] == "saffron" and head["options"]["lambda_"] == 0.5
    second = runner.invoke(cli, ["fdr", "run", "--resume", str(state), "--json", str(rest)])
    assert second.exit_code == 0, second.output
    tail = json.loads(second.output)
    assert head["rejected"] + tail["rejected"] == [1, 5, 6, 10, 13]
    assert tail["decisions"][0]["index"] == 7


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-p", "safron", "-"], "0.1", 'Did you mean "saffron"'),
        (["-p", "bh", "-"], "0.1 abc", "not a number"),
        (["-p", "bh", "-"], "1.5", "[0, 1]"),
        (["-p", "lond", "-o", "nope=1", "-"], "0.1", "nope"),
        (["-p", "lond", "-o", "noequals", "-"], "0.1", "KEY=VALUE"),
        (["-p", "lond", "--alpha", "2", "-"], "0.1", "alpha"),
        (["-"], "0.1", "--procedure"),
    ],
)
def test_cli_errors_are_one_red_line_exit_2(args, stdin, message):
    result = CliRunner().invoke(_cli(), ["fdr", "run", *args], input=stdin)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_md_fdr_run_subprocess():
    env = {**os.environ, "MD_DISABLE_PLUGIN_AUTOLOAD": "1"}
    md = os.path.join(os.path.dirname(sys.executable), "md")
    proc = subprocess.run([md, "fdr", "run", "--procedure", "e-lond", "--json", "-"],
                          input="1e6\n0.5\ninf\n", capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["input"] == "e" and out["rejected"] == [1, 3]


def test_imports_stay_light():
    code = (
        "import sys, builtin_plugins.stats.commands, builtin_plugins.stats.fdr, "
        "builtin_plugins.stats.bandits, builtin_plugins.stats.paired_tests, "
        "builtin_plugins.stats.effect_sizes, builtin_plugins.stats.power, "
        "builtin_plugins.stats.meta, md_framework.stats_api;"
        "print(sorted(m for m in ('torch', 'statsmodels', 'online_fdr', 'scipy') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
