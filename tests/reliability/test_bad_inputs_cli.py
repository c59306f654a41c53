"""Each bad input, run through the ``md`` CLI in a subprocess: exit code 2, no traceback,
one ``Error:`` message that names the field, file or plugin. docs/bad-inputs.md lists them."""

from __future__ import annotations

import json
import os

import pytest
from reliability_helpers import assert_one_clear_error

VALID = "base_model: toy\nintervention_model: toy\n"

#: (id, file name, file text, expected substrings of the error message)
CONFIG_CASES = [
    ("malformed-yaml", "c.yaml", VALID + "statistics: {alpha: 0.05\n",
     ["c.yaml: malformed YAML at line 4, column 1", "expected ',' or '}'"]),
    ("malformed-toml", "c.toml", 'base_model = "toy"\nintervention_model = \n',
     ["c.toml: malformed TOML: Invalid value (at line 2"]),
    ("not-a-mapping", "c.yaml", "- toy\n- toy\n", ["top level must be a mapping"]),
    ("unknown-field", "c.yaml", VALID + "n_seed_promts: 3\n",
     ["n_seed_promts: unknown field", 'Did you mean "n_seed_prompts"?']),
    ("unknown-nested-field", "c.yaml", VALID + "exploration: {budget: 30}\n",
     ["exploration.budget: unknown field", 'Did you mean "query_budget"?']),
    ("missing-field", "c.yaml", "base_model: toy\n", ["intervention_model: field required"]),
    ("wrong-type", "c.yaml", VALID + "n_seed_prompts: many\n",
     ["n_seed_prompts: Input should be a valid integer", "'many'"]),
    ("out-of-range", "c.yaml", VALID + "statistics: {alpha: 2}\n",
     ["statistics.alpha: Input should be less than 1 (got 2)"]),
    ("bad-literal", "c.yaml", VALID + "plugins: {on_hook_error: ignore}\n",
     ["plugins.on_hook_error: Input should be 'stop' or 'skip'"]),
    ("quantization-on-cpu", "c.yaml", VALID + "quantization: 4bit\n",
     ["needs a CUDA device"]),
    ("unknown-fdr-procedure", "c.yaml", VALID + "statistics: {procedure: safron}\n",
     ['statistics.procedure: unknown fdr procedure "safron". Did you mean "saffron"?']),
    ("unknown-tracer", "c.yaml", VALID + "tracer: circuit-tracr\n",
     ['tracer: unknown tracer "circuit-tracr". Did you mean "circuit-tracer"?']),
    ("unknown-executor", "c.yaml", VALID + "executor: rayy\n",
     ['executor: unknown executor "rayy". Did you mean "ray"?']),
    ("unknown-bandit", "c.yaml", VALID + "exploration: {method: usb}\n",
     ['exploration.method: unknown bandit strategy "usb". Did you mean "ucb"?']),
    ("unknown-paired-test", "c.yaml", VALID + "statistics: {paired_test: wilcoxn}\n",
     ['statistics.paired_test: unknown paired test "wilcoxn". Did you mean "wilcoxon"?']),
    ("bad-driver-option", "c.yaml", VALID + "statistics: {procedure_options: {gama: 1}}\n",
     ["statistics.procedure", "gama"]),
    ("unknown-plugin", "c.yaml", VALID + "plugins: {enable: [model-loader]}\n",
     ['plugins.enable: unknown plugin "model-loader". Did you mean "model-loaders"?']),
    ("module-path-as-plugin", "c.yaml", VALID + "plugins: {enable: [os.system]}\n",
     ['plugins.enable: unknown plugin "os.system"', "never imported"]),
    ("python-tag", "c.yaml",
     'base_model: !!python/object/apply:os.system ["touch PWNED"]\nintervention_model: toy\n',
     ["malformed YAML at line 1, column 13: the tag !!python/object/apply:os.system is refused", "safe loader"]),
    ("python-name-tag", "c.yaml", VALID + "tracer: !!python/name:os.system\n",
     ["the tag !!python/name:os.system is refused"]),
    ("empty-family", "c.yaml", VALID + "universe: {families: {greetings: [hi, hello], empty: []}}\n",
     ["universe.families: families with no prompts: empty"]),
    ("bad-extension", "c.ini", "x=1\n", ["must end in .yaml, .yml, .json or .toml"]),
]


@pytest.mark.parametrize("case_id,name,text,expected", CONFIG_CASES,
                         ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(md, tmp_path, case_id, name, text, expected):
    (tmp_path / name).write_text(text)
    message = assert_one_clear_error(md("config", "validate", name), *expected)
    assert not (tmp_path / "PWNED").exists()
    _record(case_id, f"md config validate {name}", message)


def test_missing_config_file(md):
    message = assert_one_clear_error(md("config", "validate", "nope.yaml"),
                                     "config file not found: nope.yaml")
    _record("missing-config-file", "md config validate nope.yaml", message)


def test_unknown_plugin_with_autoload(md, tmp_path):
    """Same message with third-party autoload on (the environment's entry points)."""
    (tmp_path / "c.yaml").write_text(VALID + "plugins: {disable: [reprot]}\n")
    assert_one_clear_error(md("config", "validate", "c.yaml", autoload=True),
                           'plugins.disable: unknown plugin "reprot". Did you mean "report"?')


SPEC_OK = "name: x\nbase: toy\n"
SPEC_CASES = [
    ("spec-empty-family", SPEC_OK + "universe: {families: [{name: a, prompts: []}]}\n",
     ["universe.families.0: family 'a' needs at least 2 prompts"]),
    ("spec-no-families", SPEC_OK + "universe: {families: []}\n",
     ["universe: the universe needs at least one family (families or sources)"]),
    ("spec-unknown-field", SPEC_OK + "universe: {families: [{name: a, promts: [p, q]}]}\n",
     ['universe.families.0.promts: unknown field. Did you mean "prompts"?']),
    ("spec-unknown-kind", SPEC_OK + "universe: {families: [{name: a, prompts: [p, q]}]}\n"
     "planted: [{id: p1, kind: style_chnage, family: a, change: {type: uppercase}}]\n",
     ["planted.0.kind: unknown kind 'style_chnage'"]),
    ("spec-unknown-family", SPEC_OK + "universe: {families: [{name: a, prompts: [p, q]}]}\n"
     "planted: [{id: p1, kind: style_change, family: b, change: {type: uppercase}}]\n",
     ["planted 'p1' names family 'b', which is not in the universe"]),
    ("spec-malformed-yaml", SPEC_OK + "universe: {families: [\n",
     ["malformed YAML at line"]),
    ("spec-python-tag", "name: !!python/object/apply:os.system [touch PWNED]\n",
     ["the tag !!python/object/apply:os.system is refused"]),
]


@pytest.mark.parametrize("case_id,text,expected", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_bad_organism_spec(md, tmp_path, case_id, text, expected):
    (tmp_path / "spec.yaml").write_text(text)
    message = assert_one_clear_error(md("organism", "universe", "spec.yaml"), *expected)
    assert not (tmp_path / "PWNED").exists()
    _record(case_id, "md organism universe spec.yaml", message)


def test_organism_spec_not_found_or_directory(md, tmp_path):
    message = assert_one_clear_error(md("organism", "universe", "toy-mlti"),
                                     "'toy-mlti' is neither a file nor a builtin name")
    _record("spec-not-found", "md organism universe toy-mlti", message)
    (tmp_path / "specdir").mkdir()
    message = assert_one_clear_error(md("organism", "universe", "specdir"),
                                     "cannot read organism spec", "specdir")
    _record("spec-is-directory", "md organism universe specdir", message)


# ----------------------------------------------------------------------- models


@pytest.mark.parametrize("case_id,source,expected", [
    ("missing-gguf", "/no/such/model.gguf", ["GGUF file /no/such/model.gguf does not exist"]),
    ("missing-local-dir", "/no/such/model-dir", ['"/no/such/model-dir"']),
], ids=["missing-gguf", "missing-local-dir"])
def test_missing_model_files(md, tmp_path, case_id, source, expected):
    # a universe is given: without one, this mixed pair has no default universe, which is
    # reported before any model loads (docs/api.md)
    (tmp_path / "c.yaml").write_text(f"base_model: {source}\nintervention_model: toy\n"
                                     "universe: {families: {a: [x, y]}}\n"
                                     f"cache_dir: {tmp_path / 'cache'}\n")
    message = assert_one_clear_error(md("analyze", "c.yaml", "--out", "run"), *expected)
    _record(case_id, f"md analyze c.yaml (base_model: {source})", message)


def test_missing_relative_model_dir_says_no_such_directory(md, tmp_path):
    (tmp_path / "c.yaml").write_text("base_model: models/my-finetune\nintervention_model: toy\n"
                                     "universe: {families: {a: [x, y]}}\n")
    result = md("analyze", "c.yaml", "--out", "run")
    assert_one_clear_error(result, "models/my-finetune")
    assert "does not exist" in result.error or "no such" in result.error.lower()


# ----------------------------------------------------------------------- transcoders

needs_tracer = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("torch", "circuit_tracer")),
    reason="needs torch and circuit-tracer")


def _toy_transcoders(artefact_cache_dir):
    from builtin_plugins.toy import build_toy_transcoders

    return build_toy_transcoders(artefact_cache_dir)


@needs_tracer
@pytest.mark.slow
def test_transcoders_with_too_few_layers(md, tmp_path, artefact_cache_dir):
    import shutil

    src = _toy_transcoders(artefact_cache_dir)
    bad = tmp_path / "tc-one-layer"
    bad.mkdir()
    shutil.copy(src / "layer_0.safetensors", bad)
    shutil.copy(src / "config.yaml", bad)
    message = assert_one_clear_error(
        md("trace", "--model", "toy", "--tracer", "circuit-tracer", "--transcoders", str(bad),
           "--prompt", "the capital of japan is", "--cache-dir", str(artefact_cache_dir),
           "--threads", "1"),
        "transcoder set has 1 layers but the model has 2")
    _record("transcoders-wrong-layer-count", "md trace --model toy --transcoders <1-layer dir>",
            message)


@needs_tracer
@pytest.mark.slow
def test_transcoders_of_the_wrong_width(md, tmp_path, artefact_cache_dir):
    import shutil

    from safetensors.numpy import load_file, save_file

    src = _toy_transcoders(artefact_cache_dir)
    bad = tmp_path / "tc-narrow"
    bad.mkdir()
    shutil.copy(src / "config.yaml", bad)
    for layer in (0, 1):
        tensors = load_file(str(src / f"layer_{layer}.safetensors"))
        narrow = {k: (v[..., :32].copy() if k in ("W_enc", "W_dec", "b_dec") else v)
                  for k, v in tensors.items()}
        save_file(narrow, str(bad / f"layer_{layer}.safetensors"))
    assert_one_clear_error(
        md("trace", "--model", "toy", "--tracer", "circuit-tracer", "--transcoders", str(bad),
           "--prompt", "the capital of japan is", "--cache-dir", str(artefact_cache_dir),
           "--threads", "1"),
        "32", "64")


# ----------------------------------------------------------------------- recording

def _record(case_id: str, command: str, message: str) -> None:
    """With MD_BAD_INPUTS_LOG=path, append each (case, command, message) for the docs table."""
    path = os.environ.get("MD_BAD_INPUTS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case_id, "command": command, "message": message}) + "\n")
