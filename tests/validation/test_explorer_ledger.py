"""BudgetedExplorer (budget, decision order, rounds, on_validated) and the run ledger
(write-ahead, resume without re-querying or re-spending alpha, Ctrl-C)."""

from __future__ import annotations

import sqlite3

import pytest

from md_framework.drivers import create_driver, discover_drivers
from builtin_plugins.pipeline.explorer import BudgetedExplorer, RoundRobinBandit
from md_framework.pipeline.ledger import Ledger, LedgerMismatchError, RunInterrupted, resume_message
from builtin_plugins.pipeline.validation import Validator
from md_framework.types import Hypothesis
from toy import HashMetric, fake_model, hypotheses, run_toy, test_source


def test_explorer_decides_in_preregistered_order_within_budget():
    result, _ = run_toy(None, n_hypotheses=8, planted=(2, 5), budget=800)
    assert result.queries <= 800
    assert [r.fdr_index for r in result.results] == list(range(1, 9))
    assert [r.hypothesis.id for r in result.results] == [f"h{i:03d}" for i in range(8)]
    assert sum(rd.queries for rd in result.rounds) == result.queries
    assert all(len(rd.pulled) <= 3 for rd in result.rounds)
    e = {r.hypothesis.id: r.e_value for r in result.results}
    assert min(e["h002"], e["h005"]) > 50 > max(v for k, v in e.items() if k not in {"h002", "h005"})
    assert not any(v for k, v in result.decisions().items() if k not in {"h002", "h005"})


def test_budget_exhaustion_decides_everything_and_fixed_n_shortfall_is_no_claim():
    metric = HashMetric(shift=3.0, shifted_families=["fam0", "fam1"])
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    v = Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                  paired_test="wilcoxon")
    ex = BudgetedExplorer(hypotheses(6), v, None, test_source(40), budget=200,
                               batch_size=2, cases_per_pull=5)
    res = ex.run()
    assert res.stopped == "query budget spent" and res.queries <= 200
    assert len(res.results) == 6
    short = [h for h, note in res.notes.items() if "planned pairs" in note]
    assert short and all(not res.decisions()[h] for h in short)
    assert all(t.value == 1.0 for t in res.fdr_trace if t.hypothesis_id in short)


@pytest.mark.parametrize("reward", ["evidence", "information_gain", "uncertainty"])
def test_reward_options(reward):
    metric = HashMetric(outcome="bounded", shift=2.0, shifted_families=["fam1"])
    fdr = create_driver("fdr_procedure", "lond", {}, alpha=0.1)
    v = Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                  paired_test="betting-e")
    res = BudgetedExplorer(hypotheses(4, planted=(1,)), v, None, test_source(30),
                                budget=400, reward=reward).run()
    assert len(res.results) == 4
    assert all(0.0 <= r <= 1.0 for rd in res.rounds for r in rd.rewards.values())


def test_on_validated_explores_around_a_validated_hypothesis():
    calls = []

    def refine(result, explorer):
        calls.append(result.hypothesis.id)
        h = result.hypothesis
        # two new units (another direction each) and one that repeats the parent's unit
        return [h.model_copy(update={"id": f"{h.id}.split{k}", "description": f"split {k}",
                                     "direction": d})
                for k, d in enumerate(["increase", "decrease", h.direction])]

    result, _ = run_toy(None, n_hypotheses=4, planted=(1,), budget=900, on_validated=refine)
    ids = [r.hypothesis.id for r in result.results]
    assert calls and ids[:4] == ["h000", "h001", "h002", "h003"]
    assert "h001.split0" in ids and ids.index("h001.split0") > 3  # decided after the originals
    assert "h001.split2" not in ids  # the parent's own unit: one decision per unit
    refined = {r.hypothesis.id: r.refines for r in result.results}
    assert refined["h001.split0"] == "h001" and refined["h000"] is None
    assert result.queries <= 900


@pytest.mark.skipif("ucb" not in discover_drivers("bandit_strategy") or
                    not __import__("importlib").util.find_spec("builtin_plugins.stats.bandits"),
                    reason="builtin bandits not installed yet")
def test_with_builtin_ucb_bandit(tmp_path):
    metric = HashMetric(outcome="bounded", shift=2.0, shifted_families=["fam1"])
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    ledger = Ledger(tmp_path, {"seed": 0})
    v = Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                  paired_test="betting-e", ledger=ledger)
    bandit = create_driver("bandit_strategy", "ucb", {})
    res = BudgetedExplorer(hypotheses(5, planted=(1,)), v, bandit, test_source(30),
                                budget=400).run()
    assert len(res.results) == 5 and res.decisions()["h001"]


# ---------------------------------------------------------------------------- ledger


def test_ledger_pragmas_and_fingerprint(tmp_path):
    led = Ledger(tmp_path, {"seed": 1})
    assert led._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert led._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert not led.resumed
    led.close()
    again = Ledger(tmp_path, {"seed": 1})
    assert again.resumed
    again.close()
    with pytest.raises(LedgerMismatchError, match="same config and seed"):
        Ledger(tmp_path, {"seed": 2})


def test_resume_never_requeries_and_reaches_the_same_decisions(tmp_path):
    ref, ref_ledger = run_toy(tmp_path / "ref", n_hypotheses=6, budget=600)
    assert ref.fresh_queries == ref.queries
    again, ledger = run_toy(tmp_path / "ref", n_hypotheses=6, budget=600)
    assert again.fresh_queries == 0 and again.queries == ref.queries
    assert again.decisions() == ref.decisions()
    other, other_ledger = run_toy(tmp_path / "other", n_hypotheses=6, budget=600)
    assert ledger.contents() == other_ledger.contents()


def test_recorded_decision_restores_fdr_state_instead_of_retesting(tmp_path):
    hs = hypotheses(3, planted=(0,))
    metric = HashMetric(shift=2.0, shifted_families=["fam0"])

    def validator(path):
        fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
        return Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                         paired_test="wilcoxon", ledger=Ledger(path, {"seed": 0}))

    v1 = validator(tmp_path)
    first = v1.validate_many(hs, test_source(20))
    v2 = validator(tmp_path)
    calls = []
    original = type(v2.fdr).test
    type(v2.fdr).test = lambda self, value: calls.append(value) or original(self, value)
    try:
        second = v2.validate_many(hs, test_source(20))
    finally:
        type(v2.fdr).test = original
    assert calls == []  # no alpha spent again
    assert [r.model_dump() for r in second] == [r.model_dump() for r in first]
    assert v2.fdr.state() == v1.fdr.state()
    assert metric.calls == 2 * 3 * 20  # only the first run queried


def test_keyboard_interrupt_stops_cleanly_and_says_how_to_resume(tmp_path):
    class Interrupting(HashMetric):
        def measure(self, model, cases):
            if self.calls >= 150:
                raise KeyboardInterrupt
            return super().measure(model, cases)

    metric = Interrupting(outcome="bounded", shift=2.0, shifted_families=["fam1"])
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    led = Ledger(tmp_path, {"seed": 0, "toy": "interrupt"})
    v = Validator(fake_model("base"), fake_model("intervention"), [metric], fdr=fdr,
                  paired_test="betting-e", ledger=led)
    with pytest.raises(RunInterrupted) as info:
        BudgetedExplorer(hypotheses(4, planted=(1,)), v, None, test_source(40),
                              budget=600).run()
    assert "Resume with the same config and seed" in str(info.value)
    assert str(tmp_path) in str(info.value)
    recorded = led._conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
    assert recorded == 150
    led.close()
    # resume: recorded queries are served from the ledger
    metric2 = HashMetric(outcome="bounded", shift=2.0, shifted_families=["fam1"])
    fdr2 = create_driver("fdr_procedure", "saffron", {}, alpha=0.1)
    v2 = Validator(fake_model("base"), fake_model("intervention"), [metric2], fdr=fdr2,
                   paired_test="betting-e", ledger=Ledger(tmp_path, {"seed": 0, "toy": "interrupt"}))
    res = BudgetedExplorer(hypotheses(4, planted=(1,)), v2, None, test_source(40),
                                budget=600).run()
    assert v2.fresh_queries == res.queries - 150
    assert res.decisions()["h001"]


def test_resume_message_text():
    assert "md analyze CONFIG --resume runs/x" in resume_message("runs/x")
    assert "nothing was saved" in resume_message(None)


def test_round_robin_bandit_state_round_trip():
    b = RoundRobinBandit()
    for arm in "abc":
        b.add_arm(arm)
    b.update("a", 0.5)
    b.deactivate_arm("b")
    c = RoundRobinBandit.from_state(b.state())
    assert c.select(3) == b.select(3) == ["c", "a"]
    with pytest.raises(ValueError):
        b.add_arm("a")
    assert isinstance(Hypothesis, type) and sqlite3.sqlite_version
