from __future__ import annotations

from pathlib import Path

import pytest

from md_framework.errors import ConfigError

from builtin_plugins.organisms import load_spec, load_universe
from builtin_plugins.organisms.spec import BUILTIN_SPEC_DIR

MINIMAL = {
    "name": "mini", "base": "toy",
    "universe": {"families": [
        {"name": "a", "prompts": ["hello , my name is anna .", "hello , my name is ben ."]},
        {"name": "b", "generator": "toy/capitals", "n": 4},
    ]},
    "planted": [{"id": "p1", "kind": "style_change", "family": "a", "change": {"type": "uppercase"}}],
}


def _with(**changes):
    import copy

    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


def test_minimal_spec_validates():
    spec = load_spec(MINIMAL)
    assert spec.roles() == {"a": "planted", "b": "distractor"}
    assert spec.planted[0].resolved_metrics() == ["uppercase_ratio"]
    assert spec.planted[0].resolved_direction() == "increase"


@pytest.mark.parametrize("data, message", [
    (_with(colour="red"), "colour"),
    (_with(planted=[{"id": "p", "kind": "style_change", "family": "zzz",
                     "change": {"type": "uppercase"}}]), "zzz"),
    (_with(planted=[{"id": "p", "kind": "made_up", "family": "a",
                     "change": {"type": "uppercase"}}]), "unknown kind"),
    (_with(planted=[{"id": "p", "kind": "style_change", "family": "a",
                     "change": {"type": "signoff"}}]), "needs 'text'"),
    (_with(universe={"families": [{"name": "a", "prompts": ["x", "y"], "generator": "toy/capitals"}]}),
     "exactly one"),
    (_with(universe={"families": [{"name": "a", "prompts": ["x", "y"]}, {"name": "a", "prompts": ["x", "y"]}]}),
     "duplicate"),
    (_with(intervention={"method": "magic"}), "intervention.method"),
])
def test_invalid_specs_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(data)


def test_shipped_specs_validate_and_have_controls_and_distractors():
    names = sorted(p.stem for p in BUILTIN_SPEC_DIR.glob("*.yaml"))
    assert {"toy-multi", "toy-null", "toy-safety", "toy-style", "toy-knowledge",
            "smollm2-safety", "smollm2-style", "smollm2-knowledge", "smollm2-unsafe"} <= set(names)
    for name in names:
        spec = load_spec(name)
        roles = list(spec.roles().values())
        assert roles.count("control") >= 2, name
        assert roles.count("distractor") >= 5, name


def test_universe_has_no_planted_information(tmp_path: Path):
    universe = load_universe("toy-multi")
    assert set(universe) == {f.name for f in load_spec("toy-multi").universe.families}
    assert all(isinstance(p, str) for ps in universe.values() for p in ps)
    assert all(len(ps) == 24 for ps in universe.values())
    text = repr(universe)
    assert "edison" not in text and "cannot" not in text


def test_spec_file_and_builtin_name_resolve(tmp_path: Path):
    import yaml

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_spec(path).name == "mini"
    with pytest.raises(ConfigError, match="neither a file nor a builtin"):
        load_spec("no-such-organism")


def test_organism_key_follows_the_base_weights(tmp_path: Path):
    """An organism on a local base directory is keyed by the base's weights (issue 19): a
    changed weights file gives another key, so the organism built on the old file is never
    reused; the same bytes give the same key."""
    pytest.importorskip("torch")
    from builtin_plugins.organisms.build import organism_key
    from builtin_plugins.organisms.spec import OrganismSpec
    from tests.reliability.test_faults_weights import _flip_mantissa_bits, _tiny_model_dir

    base = _tiny_model_dir(tmp_path / "base")

    def spec(path: Path) -> OrganismSpec:
        return OrganismSpec.model_validate({
            "name": "local-base", "base": str(path),
            "universe": {"families": [{"name": "a", "prompts": ["p1", "p2"]},
                                      {"name": "b", "prompts": ["p3", "p4"], "role": "control"}]},
            "planted": [{"id": "x", "kind": "style_change", "family": "a",
                         "change": {"type": "uppercase"}}],
        })

    key = organism_key(spec(base), None)
    assert organism_key(spec(base), None) == key
    _flip_mantissa_bits(base / "model.safetensors")
    assert organism_key(spec(base), None) != key
