from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from md_framework.config import AnalysisConfig, config_from_mapping, load_config, resolve_config
from md_framework.errors import ConfigError
from tests.kernel.distributions import REPO_ROOT, run_md

EXAMPLES = REPO_ROOT / "examples" / "configs"


def _write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_python_construction_and_aliases() -> None:
    config = AnalysisConfig(base_model_name="toy", intervention_model_name="./ft")
    assert config.base_model.source == "toy" and config.intervention_model.source == "./ft"
    assert config.statistics.procedure == "saffron"


def test_yaml_and_toml_examples_load() -> None:
    yaml_config = load_config(EXAMPLES / "toy-saffron.yaml")
    toml_config = load_config(EXAMPLES / "toy-addis.toml")
    assert yaml_config.statistics.procedure == "saffron"
    assert toml_config.statistics.procedure == "addis" and toml_config.statistics.alpha == 0.1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"base_model": "toy"}, "intervention_model: field required"),
        ({"base_model": "toy", "intervention_model": "toy", "n_seed_prompt": 3}, "n_seed_prompt: unknown field"),
        ({"base_model": "toy", "intervention_model": "toy", "statistics": {"alpha": 1.5}},
         "statistics.alpha: Input should be less than 1 (got 1.5)"),
        ({"base_model": "toy", "intervention_model": "toy", "batch_size": "many"}, "batch_size:"),
        ({"base_model": "toy", "intervention_model": "toy", "quantization": "4bit"}, "needs a CUDA device"),
        ({"base_model": "toy", "intervention_model": "toy", "device": "gpu"}, "device must be"),
        ({"base_model": "toy", "intervention_model": "toy", "screen_max_families": 1},
         "screen_max_families only apply with two_stage_tracing: true"),
    ],
)
def test_errors_name_field_and_value(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert message in str(info.value)


def test_malformed_files(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("base_model: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad_yaml)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("base_model = \n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_config(bad_toml)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listing)


def test_yaml_cannot_build_python_objects(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("base_model: !!python/object/apply:os.system ['echo pwned']\nintervention_model: toy\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(evil)


def test_resolve_fills_driver_options_and_lists_alternatives() -> None:
    resolved = resolve_config(load_config(EXAMPLES / "toy-saffron.yaml"))
    fdr = resolved.drivers["fdr_procedure"]
    assert fdr.name == "saffron" and fdr.distribution == "md-framework"
    assert {"saffron", "addis", "lord++", "lond", "alpha-investing", "e-lond", "bh", "by"} <= set(fdr.available)
    bandit = resolved.drivers["bandit_strategy"]
    assert bandit.options["exploration_weight"] == 1.0 and bandit.options["diversity_weight"] == 0.1


def test_unknown_driver_gets_did_you_mean() -> None:
    config = AnalysisConfig(base_model="toy", intervention_model="toy",
                            statistics={"procedure": "saffrom"})
    with pytest.raises(ConfigError) as info:
        resolve_config(config)
    text = str(info.value)
    assert text.startswith("statistics.procedure: unknown fdr procedure \"saffrom\"")
    assert 'Did you mean "saffron"?' in text and "addis" in text


def test_bad_driver_options_name_the_driver() -> None:
    config = AnalysisConfig(base_model="toy", intervention_model="toy", executor="process",
                            executor_options={"n_workers": 0})
    with pytest.raises(ConfigError, match=r'executor: invalid options for driver "process": n_workers'):
        resolve_config(config)


def test_unknown_plugin_name_in_disable_list() -> None:
    config = AnalysisConfig(base_model="toy", intervention_model="toy",
                            plugins={"disable": ["hypothesis-type"]})
    with pytest.raises(ConfigError, match='plugins.disable: unknown plugin "hypothesis-type".*hypothesis-types'):
        resolve_config(config)


def test_disabled_driver_cannot_be_chosen() -> None:
    config = AnalysisConfig(base_model="toy", intervention_model="toy",
                            plugins={"disable": ["saffron"]})
    with pytest.raises(ConfigError, match="unknown fdr procedure"):
        resolve_config(config)


# ----------------------------------------------------------------------------- CLI


def test_cli_show_follows_procedure_name(tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLES / "toy-saffron.yaml").read_text())
    shown = {}
    for name in ["saffron", "lord++", "addis"]:
        data["statistics"]["procedure"] = name
        result = run_md("config", "show", "--json", str(_write(tmp_path, data, f"{name}.yaml")), autoload=False)
        assert result.returncode == 0, result.stderr
        shown[name] = json.loads(result.stdout)["drivers"]["fdr_procedure"]["name"]
    assert shown == {"saffron": "saffron", "lord++": "lord++", "addis": "addis"}


def test_cli_misspelt_procedure_exits_nonzero_with_suggestion(tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLES / "toy-saffron.yaml").read_text())
    data["statistics"]["procedure"] = "adis"
    result = run_md("config", "validate", str(_write(tmp_path, data)), autoload=False)
    assert result.returncode == 2
    assert 'Did you mean "addis"?' in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_validate_and_show_yaml() -> None:
    ok = run_md("config", "validate", str(EXAMPLES / "toy-addis.toml"), autoload=False)
    assert ok.returncode == 0 and "fdr_procedure=addis" in ok.stdout
    shown = run_md("config", "show", str(EXAMPLES / "toy-addis.toml"), autoload=False)
    data = yaml.safe_load(shown.stdout)
    assert data["config"]["statistics"]["procedure"] == "addis"
    assert data["drivers"]["bandit_strategy"]["name"] == "thompson"
