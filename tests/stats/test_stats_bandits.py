"""Bandit strategies: credit assignment, learning, batch/diversity/uncertainty selection,
state round trip with identical future choices, reward helpers."""

from __future__ import annotations

import json
import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from builtin_plugins.stats.bandits import (
    STRATEGIES,
    decision_progress_reward,
    information_gain_reward,
    restore_strategy,
)
from md_framework.drivers import create_driver
from md_framework.errors import ConfigError
from md_framework.stats_api import StatisticsError

NAMES = sorted(STRATEGIES)


def make(name, **options):
    bandit = STRATEGIES[name]({"diversity_weight": 0.0, **options})
    return bandit


@pytest.mark.parametrize("name", NAMES)
def test_config_options_are_accepted(name):
    bandit = create_driver("bandit_strategy", name,
                           {"exploration_weight": 2.0, "diversity_weight": 0.3, "seed": 4})
    assert bandit.options.exploration_weight == 2.0
    assert bandit.options.diversity_weight == 0.3
    with pytest.raises(ConfigError):
        create_driver("bandit_strategy", name, {"exploration_weight": -1})


@pytest.mark.parametrize("name", NAMES)
def test_arms_registration_and_credit(name):
    bandit = make(name)
    assert bandit.select(3) == []
    for arm in "abc":
        bandit.add_arm(arm)
    with pytest.raises(StatisticsError):
        bandit.add_arm("a")
    with pytest.raises(StatisticsError):
        bandit.update("zzz", 1.0)
    with pytest.raises(StatisticsError):
        bandit.update("a", float("nan"))
    with pytest.raises(StatisticsError):
        bandit.select(0)
    first = bandit.select(5)
    assert sorted(first) == ["a", "b", "c"]  # warm start: every new arm once, k capped
    bandit.update("b", 0.7)
    states = {a.arm_id: a for a in bandit.arms()}
    assert states["b"].pulls == 1 and states["b"].reward_sum == pytest.approx(0.7)
    assert states["a"].pulls == 0 and states["c"].pulls == 0
    bandit.deactivate_arm("b")
    for _ in range(5):
        assert "b" not in bandit.select(2)


@pytest.mark.parametrize("name", NAMES)
def test_learns_best_arm(name):
    rng = np.random.default_rng(0)
    mu = [0.2, 0.5, 0.8]
    bandit = make(name, seed=1)
    for i in range(3):
        bandit.add_arm(str(i))
    for _ in range(1500):
        arm = bandit.select(1)[0]
        bandit.update(arm, float(rng.random() < mu[int(arm)]))
    pulls = {a.arm_id: a.pulls for a in bandit.arms()}
    assert pulls["2"] > 0.75 * 1500, pulls


def test_thompson_gaussian_rewards():
    rng = np.random.default_rng(3)
    bandit = make("thompson", seed=2)
    means = [-1.0, 0.5, 2.0]
    for i in range(3):
        bandit.add_arm(str(i))
    for _ in range(600):
        arm = bandit.select(1)[0]
        bandit.update(arm, means[int(arm)] + rng.normal())
    assert not bandit._bernoulli()
    pulls = {a.arm_id: a.pulls for a in bandit.arms()}
    assert pulls["2"] > 400


@pytest.mark.parametrize("name", NAMES)
def test_diversity_penalty_spreads_the_batch(name):
    def build(weight):
        bandit = STRATEGIES[name]({"diversity_weight": weight, "exploration_weight": 0.0,
                                   "epsilon": 0.0} if name == "epsilon_greedy" else
                                  {"diversity_weight": weight, "exploration_weight": 0.0})
        bandit.add_arm("a", [1.0, 0.0])
        bandit.add_arm("a2", [0.99, 0.05])  # near-duplicate of a
        bandit.add_arm("b", [0.0, 1.0])
        for arm, reward in (("a", 0.9), ("a2", 0.85), ("b", 0.6)):
            for _ in range(20):
                bandit.update(arm, reward)
        return bandit

    assert build(0.0).select(2) == ["a", "a2"]
    assert build(1.0).select(2) == ["a", "b"]


@pytest.mark.parametrize("name", NAMES)
def test_uncertainty_sampling_prefers_least_known_arm(name):
    bandit = make(name, selection="uncertainty")
    for arm, n in (("x", 50), ("y", 3), ("z", 20)):
        bandit.add_arm(arm)
        for i in range(n):
            bandit.update(arm, float(i % 2))
    assert bandit.select(1) == ["y"]
    assert bandit.select(3) == ["y", "z", "x"]


OPS = st.lists(
    st.tuples(st.sampled_from(["select", "update", "add"]), st.integers(1, 4),
              st.floats(-2.0, 2.0, allow_nan=False)),
    min_size=1, max_size=40,
)


def _play(bandit, ops, start_id):
    out = []
    arm_id = start_id
    for op, k, reward in ops:
        if op == "add":
            arm_id += 1
            bandit.add_arm(f"arm{arm_id}", [math.cos(arm_id), math.sin(arm_id)])
        elif op == "select":
            out.append(bandit.select(k))
        else:
            arms = [a.arm_id for a in bandit.arms()]
            if arms:
                bandit.update(arms[k % len(arms)], abs(reward) / 2 if k % 2 else reward)
    return out, arm_id


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(NAMES), head=OPS, tail=OPS, seed=st.integers(0, 2**32 - 1),
       weight=st.sampled_from([0.0, 0.5, 1.0]))
def test_state_roundtrip_gives_identical_future_choices(name, head, tail, seed, weight):
    options = {"seed": seed, "diversity_weight": weight}
    a = STRATEGIES[name](options)
    b = STRATEGIES[name](options)
    for bandit in (a, b):
        for i in range(3):
            bandit.add_arm(f"init{i}", [float(i), 1.0])
    _, next_id = _play(a, head, 0)
    _play(b, head, 0)
    restored = STRATEGIES[name].from_state(json.loads(json.dumps(a.state())))
    expected, _ = _play(b, tail, next_id)
    got, _ = _play(restored, tail, next_id)
    assert got == expected
    assert restored.arms() == b.arms()


def test_restore_strategy_dispatch_and_mismatch():
    bandit = make("thompson", seed=9)
    bandit.add_arm("a")
    again = restore_strategy(json.loads(json.dumps(bandit.state())))
    assert type(again).__name__ == "Thompson"
    with pytest.raises(StatisticsError):
        STRATEGIES["ucb"].from_state(bandit.state())


def test_reward_helpers():
    assert information_gain_reward(2.0, 8.0) == pytest.approx(math.log(4))
    assert information_gain_reward(8.0, 2.0) == pytest.approx(-math.log(4))
    with pytest.raises(StatisticsError):
        information_gain_reward(0.0, 1.0)
    assert decision_progress_reward(1.0, 20.0, 0.05) == pytest.approx(1.0)
    assert decision_progress_reward(1.0, math.sqrt(20), 0.05) == pytest.approx(0.5)
    assert decision_progress_reward(0.5, 0.9, 0.05) == 0.0
    assert decision_progress_reward(20.0, 400.0, 0.05) == 0.0
    with pytest.raises(StatisticsError):
        decision_progress_reward(1.0, 2.0, 1.0)
