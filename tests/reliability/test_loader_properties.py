"""Property-based tests: whatever mapping or YAML text the config loader and the organism
spec loader get, they return a valid object or raise ConfigError — never anything else."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from md_framework.config import AnalysisConfig, config_from_mapping, load_config
from md_framework.errors import ConfigError

from builtin_plugins.organisms.spec import OrganismSpec, load_spec

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

CONFIG_KEYS = list(AnalysisConfig.model_fields) + [
    "base_model_name", "intervention_model_name", "alpha", "procedure", "families", "enable",
    "on_hook_error", "query_budget", "method", "source", "gguf_file", "adapter"]
SPEC_KEYS = list(OrganismSpec.model_fields) + [
    "families", "prompts", "generator", "n", "role", "id", "kind", "family", "change", "type",
    "text", "replace", "steps", "method", "hidden_size"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["toy", "cpu", "saffron", "ucb", "stop", "skip", "4bit",
                                     "refusal", "style_change", "a", ""]))


def values(keys):
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=6),
                                                          st.integers(0, 3)),
                                                inner, max_size=5)),
        max_leaves=25)


def config_like():
    base = st.fixed_dictionaries({}, optional={"base_model": values(CONFIG_KEYS),
                                               "intervention_model": values(CONFIG_KEYS)})
    rest = st.dictionaries(st.sampled_from(CONFIG_KEYS), values(CONFIG_KEYS), max_size=6)
    return st.builds(lambda a, b: {**b, **a}, base, rest)


def spec_like():
    family = st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "bad name!"])},
                                   optional={"prompts": values(SPEC_KEYS),
                                             "generator": st.text(max_size=8),
                                             "role": st.sampled_from(["control", "distractor", "x"])})
    universe = st.fixed_dictionaries({"families": st.lists(family, max_size=3)},
                                     optional={"n_per_family": values(SPEC_KEYS)})
    base = st.fixed_dictionaries({"name": st.sampled_from(["x", "y z"]), "base": st.just("toy"),
                                  "universe": st.one_of(universe, values(SPEC_KEYS))})
    rest = st.dictionaries(st.sampled_from(SPEC_KEYS), values(SPEC_KEYS), max_size=4)
    return st.builds(lambda a, b: {**b, **a}, base, rest)


@SETTINGS
@given(config_like())
def test_config_mapping_is_valid_or_config_error(data):
    try:
        config = config_from_mapping(data)
    except ConfigError as exc:
        assert str(exc).startswith("invalid config:")
    else:
        assert isinstance(config, AnalysisConfig)


@SETTINGS
@given(spec_like())
def test_spec_mapping_is_valid_or_config_error(data):
    try:
        spec = load_spec(data)
    except ConfigError as exc:
        assert str(exc).startswith("invalid organism spec")
    else:
        assert isinstance(spec, OrganismSpec)


def _yaml_texts(mappings):
    dumped = mappings.map(lambda d: yaml.safe_dump(d, allow_unicode=True))
    garbage = st.lists(st.sampled_from(list("abc:{}[]-,'\"!&*|>#%@` \n\t=")
                                       + ["!!python/name:os.system ", "&a ", "*a", "= 1"]),
                       max_size=30).map("".join)
    mutated = st.builds(lambda t, i, s: t[:i] + s + t[i:], dumped, st.integers(0, 80), garbage)
    return st.one_of(dumped, garbage, mutated)


@SETTINGS
@given(text=_yaml_texts(config_like()), suffix=st.sampled_from([".yaml", ".toml", ".json"]))
def test_config_file_text_is_valid_or_config_error(tmp_path_factory, text, suffix):
    path = Path(tmp_path_factory.mktemp("cfg")) / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path)
    except ConfigError:
        pass
    else:
        assert isinstance(config, AnalysisConfig)


@SETTINGS
@given(text=_yaml_texts(spec_like()))
def test_spec_file_text_is_valid_or_config_error(tmp_path_factory, text):
    path = Path(tmp_path_factory.mktemp("spec")) / "s.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        spec = load_spec(path)
    except ConfigError:
        pass
    else:
        assert isinstance(spec, OrganismSpec)
