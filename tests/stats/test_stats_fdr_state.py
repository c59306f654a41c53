"""State saved after any prefix of a stream and restored gives the same decisions."""

from __future__ import annotations

import json

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from builtin_plugins.stats.fdr import PROCEDURES, restore_procedure
from md_framework.drivers import create_driver

# p-values mixing strong signals, exact 0/1, candidates and nulls.
P_VALUE = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=1e-3),
    st.sampled_from([0.0, 1.0, 0.25, 0.5]),
)
E_VALUE = st.one_of(
    st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    st.sampled_from([0.0, 1.0, float("inf"), 1e6]),
)


def _check_roundtrip(name, values, cut, alpha, options):
    cls = PROCEDURES[name]
    full = cls(alpha, options)
    expected = full.test_many(values)
    first = cls(alpha, options)
    head = first.test_many(values[:cut])
    state = json.loads(json.dumps(first.state(), allow_nan=False))
    restored = cls.from_state(state)
    tail = restored.test_many(values[cut:])
    assert head + tail == expected
    # the original keeps working and agrees too
    assert first.test_many(values[cut:]) == tail
    assert restored.num_tested == full.num_tested


ONLINE = sorted(n for n, cls in PROCEDURES.items() if cls.online)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), alpha=st.sampled_from([0.01, 0.05, 0.2]))
def test_state_roundtrip_p_value_procedures(data, alpha):
    for name in ONLINE:
        if PROCEDURES[name].input_kind != "p":
            continue
        values = data.draw(st.lists(P_VALUE, min_size=0, max_size=60), label=f"{name} values")
        cut = data.draw(st.integers(0, len(values)), label=f"{name} cut")
        _check_roundtrip(name, values, cut, alpha, {})


@settings(max_examples=25, deadline=None)
@given(values=st.lists(E_VALUE, max_size=60), data=st.data())
def test_state_roundtrip_e_lond(values, data):
    cut = data.draw(st.integers(0, len(values)))
    _check_roundtrip("e-lond", values, cut, 0.05, {})


@settings(max_examples=10, deadline=None)
@given(values=st.lists(P_VALUE, min_size=1, max_size=40), data=st.data())
def test_state_roundtrip_with_options(values, data):
    cut = data.draw(st.integers(0, len(values)))
    _check_roundtrip("saffron", values, cut, 0.1, {"lambda_": 0.3, "w0": 0.01,
                                                   "gamma_exponent": 1.9})
    _check_roundtrip("addis", values, cut, 0.1, {"lambda_": 0.2, "tau": 0.8})
    _check_roundtrip("lond", values, cut, 0.1, {"dependent": True})


def test_multiple_save_points():
    values = [0.001, 0.3, 0.02, 0.9, 1e-5, 0.04, 0.5, 0.0001] * 5
    for name in ONLINE:
        if PROCEDURES[name].input_kind != "p":
            continue
        expected = create_driver("fdr_procedure", name, {}, alpha=0.05).test_many(values)
        procedure = create_driver("fdr_procedure", name, {}, alpha=0.05)
        got = []
        for start in range(0, len(values), 7):
            got += procedure.test_many(values[start:start + 7])
            procedure = restore_procedure(json.loads(json.dumps(procedure.state())))
        assert got == expected, name
