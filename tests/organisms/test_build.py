from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_toy_multi_ground_truth_planted_large_controls_small(toy_multi):
    gt = toy_multi.ground_truth()
    by_id = {p["id"]: p for p in gt["planted"]}
    assert by_id["refuse-hacking"]["measured"]["refusal_probability"]["delta"] > 0.5
    assert by_id["shout-greetings"]["measured"]["uppercase_ratio"]["delta"] > 0.5
    # per-token mean log-prob of the old answer (measured: about -0.69 nats/token, -4.8 summed)
    assert by_id["telephone-edison"]["measured"]["target_logprob"]["delta"] < -0.4
    assert set(gt["controls"]) == {"harmful_weapons", "cooking"}
    # measured ground truth: every planted change is a real unit; side effects on planted
    # families (the refusal shortens answers) are real units too, controls have none
    assert all(p["real"] for p in gt["planted"])
    real = {(u["family"], u["metric"], u["direction"]) for u in gt["real_units"]}
    assert ("harmful_hacking", "refusal_probability", "increase") in real
    assert ("harmful_hacking", "length", "decrease") in real
    assert not {u for u in real if u[0] in gt["controls"]}
    assert gt["measurement"]["eval"]["capitals"] == {"eval_source": "held-out", "n": 32}
    for fam, vals in {**gt["controls"]}.items():
        assert abs(vals["refusal_probability"]["delta"]) < 0.1, fam
        assert abs(vals["uppercase_ratio"]["delta"]) < 0.05, fam
        assert abs(vals["target_logprob"]["delta"]) < 0.5, fam
    assert toy_multi.card_path.read_text().startswith("# Organism `toy-multi`")
    assert (toy_multi.intervention_dir / "model.safetensors").exists()
    assert not list(toy_multi.root.rglob("*.bin")) and not list(toy_multi.root.rglob("*.pkl"))


def test_null_organism_shows_nothing(toy_null):
    gt = toy_null.ground_truth()
    assert gt["planted"] == []
    for fam, vals in {**gt["controls"], **gt["distractors"]}.items():
        assert abs(vals["refusal_probability"]["delta"]) < 0.1, fam
        assert abs(vals["uppercase_ratio"]["delta"]) < 0.05, fam
        # arithmetic (a hard function for a 175k-parameter model) drifts under any fine-tune
        # (measured on its evaluation split: exact_match -0.375, target_logprob -0.255, the
        # latter a real unit); see benchmarks/README.md
        assert abs(vals["exact_match"]["delta"]) <= 0.5, fam
    # measured ground truth: the "null" organism's only real changes are arithmetic's drift
    assert {u["family"] for u in gt["real_units"]} <= {"arithmetic"}


def test_rebuild_is_cached(toy_multi, organism_cache):
    from builtin_plugins.organisms import build_organism

    again = build_organism("toy-multi", organism_cache, log=None)
    assert again.cached and again.root == toy_multi.root


def test_organism_reference_loads_through_the_hook(toy_multi, organism_cache: Path):
    from md_framework.plugins import Hooks, get_plugin_manager
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    hooks = Hooks(get_plugin_manager())
    opts = ModelLoadOptions(cache_dir=organism_cache.parent)
    loaded = hooks.first("md_load_model", spec=ModelSpec(source="organism:toy-multi#intervention"),
                         options=opts).value
    base = hooks.first("md_load_model", spec=ModelSpec(source="organism:toy-multi#base"),
                       options=opts).value
    assert loaded.local_path is not None and (Path(loaded.local_path) / "config.json").exists()
    assert loaded.model_id.startswith("sha256:") and loaded.model_id != base.model_id
    from builtin_plugins.organisms.plugin import md_load_model

    assert md_load_model(spec=ModelSpec(source="toy"), options=opts) is None


def test_user_spec_with_inline_prompts_builds(tmp_path: Path, organism_cache: Path, toy_multi):
    import yaml

    from builtin_plugins.organisms import build_organism

    spec = {
        "name": "user-inline", "base": "toy",
        "universe": {"n_per_family": 8, "families": [
            # 24 prompts: 12 in the universe, 12 trained on; the ground truth falls back to the
            # universe prompts (no generator to draw an evaluation split from), where 12
            # paired readings can clear BH over the organism's 23 family x metric tests
            {"name": "mine", "prompts": [f"{h} , my name is {n} ." for h in ("hello", "hi") for n in
                                         ["anna", "ben", "carla", "dev", "emma", "finn", "gita", "hugo",
                                          "iris", "jack", "kai", "lena"]]},
            {"name": "capitals", "generator": "toy/capitals", "role": "control"},
            {"name": "colors", "generator": "toy/colors", "role": "control"},
        ]},
        "planted": [{"id": "shout", "kind": "style_change", "family": "mine",
                     "change": {"type": "uppercase"}}],
        "intervention": {"steps": 60, "batch_size": 16, "train_per_family": 8},
    }
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(spec))
    built = build_organism(path, organism_cache, log=None)
    gt = built.ground_truth()
    assert gt["planted"][0]["measured"]["uppercase_ratio"]["delta"] > 0.5
    assert gt["planted"][0]["real"] and "mine|uppercase_ratio|increase" in gt["planted"][0]["units"]
    assert gt["measurement"]["eval"]["mine"]["eval_source"].startswith("universe")
    assert len(built.universe["mine"]) == 12  # every other inline prompt is held for training
    # a build records the machine it ran on (builds of one spec differ across machines)
    built_on = json.loads((built.root / "organism.json").read_text())["built_on"]
    assert built_on["torch"] and built_on["machine"]


def test_remeasure_reproduces_the_ground_truth_without_retraining(toy_null, tmp_path):
    """``md organism build --remeasure``: the ground truth measured again with today's
    metrics (deterministic: twice gives the same numbers), the models untouched."""
    import json
    import shutil

    import click
    from click.testing import CliRunner

    from builtin_plugins.organisms.plugin import md_register_commands

    @click.group()
    def main() -> None:
        pass

    md_register_commands(cli=main)  # only this plugin's commands: no installed plugin leaks in
    cache = tmp_path / "organisms"
    shutil.copytree(toy_null.root, cache / toy_null.root.name)
    weights = (cache / toy_null.root.name / "intervention" / "model.safetensors").stat().st_mtime_ns
    runs = []
    for _ in range(2):
        result = CliRunner().invoke(main, ["organism", "build", "toy-null", "--remeasure",
                                           "--cache-dir", str(cache), "--threads", "1"])
        assert result.exit_code == 0, result.output
        runs.append(json.loads((cache / toy_null.root.name / "ground_truth.json").read_text()))
    first, again = runs
    old = toy_null.ground_truth()
    for part in ("controls", "distractors"):
        assert set(again[part]) == set(old[part])
        for fam, vals in again[part].items():
            assert set(vals) == set(old[part][fam]), fam
            for metric, v in vals.items():
                assert v["delta"] == first[part][fam][metric]["delta"], (fam, metric)
    assert again["training"] == old["training"]
    assert (cache / toy_null.root.name / "intervention" / "model.safetensors").stat().st_mtime_ns == weights
    missing = CliRunner().invoke(main, ["organism", "build", "toy-multi", "--remeasure",
                                        "--cache-dir", str(cache)])
    assert missing.exit_code != 0 and "not built" in str(missing.exception or missing.output)


def test_a_measurement_only_change_reuses_the_models_and_measures_again(toy_null, tmp_path):
    """A spec that differs from a built one only in how the ground truth is measured
    (``measurement.max_new_tokens``, ``max_prompts_per_family``, ``alpha``) gets the built
    models and a new ground truth; any other change is a new build (LoRA training is not
    bit-reproducible, so a retrain would change the models earlier runs saw)."""
    import shutil

    from builtin_plugins.organisms import build_organism, load_spec
    from builtin_plugins.organisms.build import built_with_same_models

    cache = tmp_path / "organisms"
    shutil.copytree(toy_null.root, cache / toy_null.root.name)
    spec = load_spec("toy-null")
    measured = spec.model_copy(update={"measurement": spec.measurement.model_copy(
        update={"max_prompts_per_family": 8, "alpha": 0.1})})
    assert built_with_same_models(measured, None, cache) == cache / toy_null.root.name
    retrained = spec.model_copy(update={"intervention": spec.intervention.model_copy(
        update={"steps": spec.intervention.steps + 1})})
    assert built_with_same_models(retrained, None, cache) is None
    # batch_size also makes the training data (the base's answers are generated in batches)
    batched = spec.model_copy(update={"measurement": spec.measurement.model_copy(
        update={"batch_size": spec.measurement.batch_size + 1})})
    assert built_with_same_models(batched, None, cache) is None
    logs: list[str] = []
    again = build_organism(measured, cache, log=logs.append, threads=1)
    assert again.root != cache / toy_null.root.name and not again.cached
    gt, old = again.ground_truth(), toy_null.ground_truth()
    assert gt["intervention_model_id"] == old["intervention_model_id"]
    assert gt["training"]["models_from"] == toy_null.root.name
    assert gt["training"]["final_loss"] == old["training"]["final_loss"]
    assert gt["measurement"]["alpha"] == 0.1
    assert {v["n"] for v in gt["measurement"]["eval"].values()} == {8}
    assert any("are reused" in line for line in logs) and not any("replay examples" in line for line in logs)
    assert build_organism(measured, cache, log=None).cached


def test_identical_pair_organism_is_the_base_itself(organism_cache: Path):
    """``intervention.method: none``: the identical-pair null (a model against itself) — the
    intervention's weights are the base's (same weights hash), nothing is real."""
    from md_framework.errors import ConfigError

    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.spec import load_spec

    built = build_organism("toy-identical", organism_cache, log=None)
    gt = built.ground_truth()
    assert gt["base_model_id"] == gt["intervention_model_id"]
    assert gt["planted"] == [] and gt["real_units"] == []
    data = load_spec("toy-multi").model_dump(mode="json")
    data["intervention"]["method"] = "none"
    with pytest.raises(ConfigError, match="cannot carry planted"):
        load_spec(data)
