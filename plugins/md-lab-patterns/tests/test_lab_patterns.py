from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.types import CircuitDiff, FeatureRef, SystematicChange

import md_lab_patterns.detectors as detectors


def _change(layer: int, feature: int, delta: float, q: float, families: dict[str, float]) -> SystematicChange:
    return SystematicChange(
        feature=FeatureRef(layer=layer, feature=feature), mean_delta=delta, n_prompts=10,
        p_value=q, q_value=q, families=families,
    )


def _diff(changes: list[SystematicChange]) -> CircuitDiff:
    return CircuitDiff(base_model_id="a", intervention_model_id="b", systematic_changes=changes)


def _run(diff: CircuitDiff) -> list:
    # builtins off: this test is about the lab plugin's rules alone
    pm = get_plugin_manager(autoload=False, builtins=False, extra_plugins=[("lab-patterns", detectors)])
    return Hooks(pm).collect("md_detect_patterns", diff=diff, interpretations={}, config=None)


def test_concentrated_family_is_found_with_provenance() -> None:
    diff = _diff([
        _change(2, 1, -1.0, 0.01, {"harmful": -2.0, "weather": -0.1}),
        _change(3, 7, -0.8, 0.02, {"harmful": -1.5, "weather": 0.05}),
        _change(1, 4, 0.1, 0.03, {"weather": 0.2}),
    ])
    found = _run(diff)
    families = [c.value for c in found if c.value.pattern_type == "family_concentrated_change"]
    assert [p.families for p in families] == [["harmful"]]
    assert families[0].evidence["signed_mass"] < 0
    assert {c.plugin for c in found} == {"lab-patterns"}


def test_insignificant_changes_make_no_pattern() -> None:
    diff = _diff([
        _change(2, 1, -1.0, 0.5, {"harmful": -2.0}),
        _change(3, 7, -0.8, 0.4, {"harmful": -1.5}),
    ])
    assert _run(diff) == []


def test_spread_out_change_is_not_concentrated() -> None:
    diff = _diff([
        _change(0, i, 0.5, 0.01, {f"family{i}": 1.0}) for i in range(4)
    ])
    assert detectors.family_concentrated(diff) == []


def test_late_layer_shift() -> None:
    late = _diff([_change(9, 1, 2.0, 0.01, {"a": 1}), _change(8, 2, 1.5, 0.01, {"a": 1}),
                  _change(0, 3, 0.2, 0.01, {"b": 1})])
    early = _diff([_change(0, 1, 2.0, 0.01, {"a": 1}), _change(1, 2, 1.5, 0.01, {"a": 1}),
                   _change(9, 3, 0.2, 0.01, {"b": 1})])
    assert [p.pattern_type for p in detectors.late_layer_shift(late)] == ["late_layer_shift"]
    assert detectors.late_layer_shift(early) == []
