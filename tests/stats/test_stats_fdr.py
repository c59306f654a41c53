"""Online/batch FDR drivers: R onlineFDR examples, input checks, null-stream FDR."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from builtin_plugins.stats.fdr import PROCEDURES, restore_procedure
from md_framework.drivers import create_driver, load_driver_class
from md_framework.errors import ConfigError, MDError

# The p-value vector of R onlineFDR's documentation examples (random = FALSE).
R_P = [2.90e-08, 0.06743, 0.01514, 0.08174, 0.00171, 3.60e-05, 0.79149, 0.27201,
       0.28295, 7.59e-08, 0.69274, 0.30443, 0.00136, 0.72342, 0.54757]


def rejected(decisions):
    return [d.index for d in decisions if d.rejected]


def test_saffron_reproduces_onlinefdr_documentation_example():
    saffron = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
    decisions = saffron.test_many(R_P)
    assert rejected(decisions) == [1, 5, 6, 10, 13]
    assert decisions[0].level == pytest.approx(0.005468627, abs=1e-9)
    assert [d.index for d in decisions] == list(range(1, 16))
    assert all(d.rejected == (d.value <= d.level) for d in decisions)


@pytest.mark.parametrize(
    ("name", "expected", "alpha_1"),
    [
        # R: ADDIS(d), LORD(d) (version "++"), LOND(d), Alpha_investing(d); alpha = 0.05
        ("addis", [1, 5, 6, 10, 13], 0.002734314),
        ("lord++", [1, 6, 10], 0.0002675839),
        ("lond", [1, 6, 10], 0.0026758385),
        ("alpha-investing", [1, 5, 6, 10, 13], 0.010818925),
    ],
)
def test_other_procedures_match_onlinefdr_documentation(name, expected, alpha_1):
    procedure = create_driver("fdr_procedure", name, {}, alpha=0.05)
    decisions = procedure.test_many(R_P)
    assert rejected(decisions) == expected
    assert decisions[0].level == pytest.approx(alpha_1, rel=1e-6)


def test_batch_procedures_agree_with_statsmodels():
    from statsmodels.stats.multitest import multipletests

    for name, method in (("bh", "fdr_bh"), ("by", "fdr_by")):
        procedure = create_driver("fdr_procedure", name, {}, alpha=0.05)
        assert procedure.online is False
        decisions = procedure.test_many(R_P)
        expected = multipletests(R_P, alpha=0.05, method=method)[0]
        assert [d.rejected for d in decisions] == list(expected)
        assert all(d.rejected == (d.value <= d.level) for d in decisions)
        # a second call is a new family whose indices continue
        more = procedure.test_many([0.5, 0.001])
        assert [d.index for d in more] == [16, 17]


def test_test_single_value_continues_the_stream():
    a = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
    b = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
    assert [a.test(p) for p in R_P] == b.test_many(R_P)
    assert a.num_tested == 15


def test_options_aliases_and_defaults():
    s = create_driver("fdr_procedure", "saffron", {"lambda": 0.4}, alpha=0.05)
    assert s.options.lambda_ == 0.4
    s = create_driver("fdr_procedure", "saffron", {"lambda_": 0.5, "w0": 0.025}, alpha=0.05)
    assert rejected(s.test_many(R_P)) == [1, 5, 6, 10, 13]
    # gamma exponent other than 1.6 uses the zeta-normalised sequence
    s = create_driver("fdr_procedure", "saffron", {"gamma_exponent": 2.0}, alpha=0.05)
    assert s.test(0.5).level == pytest.approx(0.5 * 0.025 * 6 / np.pi**2)


@pytest.mark.parametrize(
    ("name", "options"),
    [("saffron", {"w0": 0.06}), ("saffron", {"lambda_": 1.5}), ("addis", {"lambda_": 0.6}),
     ("lord++", {"w0": 0.0}), ("lond", {"unknown": 1}), ("bh", {"x": 1})],
)
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError, match=name.replace("+", r"\+")):
        create_driver("fdr_procedure", name, options, alpha=0.05)


@pytest.mark.parametrize("name", sorted(PROCEDURES))
def test_bad_values_and_alpha(name):
    with pytest.raises(MDError):
        create_driver("fdr_procedure", name, {}, alpha=1.5)
    procedure = create_driver("fdr_procedure", name, {}, alpha=0.05)
    bad = [-0.1, float("nan"), "x"] + ([1.5] if procedure.input_kind == "p" else [])
    for value in bad:
        with pytest.raises(ValueError):
            procedure.test_many([value])
    assert procedure.num_tested == 0


def test_numpy_inputs_give_plain_python_decisions():
    s = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
    d = s.test_many(np.asarray(R_P, dtype=np.float32))
    assert type(d[0].rejected) is bool
    json.dumps(s.state())


def test_elond_rejects_when_e_exceeds_inverse_level():
    e = create_driver("fdr_procedure", "e-lond", {}, alpha=0.05)
    assert e.input_kind == "e"
    decisions = e.test_many([1e6, 0.5, float("inf"), 3.0])
    assert [d.rejected for d in decisions] == [True, False, True, False]
    assert all(d.rejected == (d.value >= 1 / d.level) for d in decisions)


def test_restore_procedure_dispatches_on_name():
    s = create_driver("fdr_procedure", "addis", {}, alpha=0.1)
    s.test_many(R_P[:5])
    again = restore_procedure(json.loads(json.dumps(s.state())))
    assert type(again).__name__ == "Addis" and again.num_tested == 5
    with pytest.raises(MDError, match="saffron"):
        PROCEDURES["saffron"].from_state(s.state())
    with pytest.raises(MDError):
        restore_procedure({"schema": 1, "procedure": "safron"})


def _null_fdr(name: str, n_reps: int, n: int, alpha: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    cls = load_driver_class("fdr_procedure", name)
    false_discovery_props = []
    for _ in range(n_reps):
        procedure = cls(alpha)
        if procedure.input_kind == "e":
            z = rng.normal(size=n)  # likelihood-ratio e-values of N(3,1) vs N(0,1)
            values = np.exp(3 * z - 4.5)
        else:
            values = rng.random(n)
        decisions = procedure.test_many(values)
        false_discovery_props.append(float(any(d.rejected for d in decisions)))
    return float(np.mean(false_discovery_props))


@pytest.mark.parametrize("name", sorted(PROCEDURES))
def test_null_streams_keep_fdr_below_alpha(name):
    # Under the global null FDR = P(any rejection) (the FWER). 400 streams of 50 nulls;
    # the binomial standard error at 0.1 is 0.015, so allow alpha + 3 SE.
    alpha = 0.1
    n_reps = 400 if name != "alpha-investing" else 200
    fdr = _null_fdr(name, n_reps=n_reps, n=50, alpha=alpha, seed=11)
    assert fdr <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / n_reps)


def test_mixed_stream_fdr_and_power_sanity():
    # 40 streams of 100 hypotheses, 30% non-null (mu=3): every online procedure keeps the
    # empirical FDR near or below alpha and finds something.
    rng = np.random.default_rng(5)
    alpha = 0.1
    for name in ("saffron", "addis", "lord++"):
        fdps, powers = [], []
        for _ in range(40):
            h = rng.random(100) < 0.3
            p = norm.sf(rng.normal(size=100) + 3 * h)
            procedure = PROCEDURES[name](alpha)
            r = np.array([d.rejected for d in procedure.test_many(p)])
            fdps.append((r & ~h).sum() / max(r.sum(), 1))
            powers.append((r & h).sum() / max(h.sum(), 1))
        assert np.mean(fdps) <= alpha + 0.05, name
        assert np.mean(powers) > 0.3, name
