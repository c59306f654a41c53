"""The black-box baselines on simulated arms: FDR <= alpha on nulls, power on clear changes.

Simulated arms replace the models (no torch): each family x metric arm draws paired
differences from a known distribution, so every rejection's truth is known."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from builtin_plugins.organisms import baselines as B


@dataclass
class FakeMetric:
    name: str
    min_change: float = 0.05
    bounds: tuple[float, float] | None = (0.0, 1.0)
    outcome: str = "bounded"
    kind: str = "generated"


class SimArms(B.Arms):
    """Arms whose base readings are 0.5 and intervention readings 0.5 + shift + noise."""

    def __init__(self, shifts: dict[tuple[str, str], float], n_per_family: int, rng: random.Random,
                 noise: float = 0.2) -> None:
        families = sorted({f for f, _ in shifts})
        metrics = [FakeMetric(m) for m in sorted({m for _, m in shifts})]
        cases = {f: [(f"{f} prompt {k}", None) for k in range(n_per_family)] for f in families}
        super().__init__(None, None, cases, metrics)
        self.shifts, self.rng, self.noise = shifts, rng, noise

    def measure(self, family, metric, items):
        for p, _ in items:
            self._seen.add(("base", p, metric))
            self._seen.add(("intervention", p, metric))
        b = [0.5] * len(items)
        shift = self.shifts[(family, metric)]
        i = [min(1.0, max(0.0, 0.5 + shift + self.rng.gauss(0, self.noise))) for _ in items]
        return b, i


def _fdp(found, real):
    claimed = {(d.families[0], d.metric) for d in found}
    return len(claimed - real) / max(1, len(claimed)), len(claimed & real)


def _world(rng, n_fam=8, n_real=3, null_shift=0.02, real_shift=0.5):
    shifts = {}
    real = set()
    for f in range(n_fam):
        for m in ("m1", "m2"):
            shifts[(f"f{f}", m)] = rng.uniform(-null_shift, null_shift)  # below min_change
    for f in range(n_real):
        shifts[(f"f{f}", "m1")] = real_shift
        real.add((f"f{f}", "m1"))
    return shifts, real


def _run(method, arms, alpha, rep, shifts, rng, monkeypatch):
    if method == "exhaustive":
        return B.run_exhaustive(arms, alpha, 12)
    if method == "sequential":
        return B.run_sequential(arms, alpha, n_max=24)
    if method == "bandit":
        return B.run_bandit(arms, alpha, 12, 3, seed=rep, budget=10_000)

    def fake_divergence(base, inter, prompts, max_new_tokens, batch_size=8):
        fam = prompts[0].split()[0]
        return max(abs(shifts[(fam, m)]) for m in ("m1", "m2")) + rng.random() * 0.01
    monkeypatch.setattr(B, "family_divergence", fake_divergence)
    return B.run_output_screen(arms, alpha, 12, k_max=3)  # default cap K/3 = 2 of 8 families


def _simulate(method, relevance, null_shift, monkeypatch, reps=30, alpha=0.1):
    rng = random.Random(7)
    fdps, hits = [], 0
    for rep in range(reps):
        shifts, real = _world(rng, n_real=0 if rep % 2 else 3, null_shift=null_shift)
        arms = SimArms(shifts, 24, rng, noise=0.1)
        arms.relevance = relevance
        out = _run(method, arms, alpha, rep, shifts, rng, monkeypatch)
        fdp, n_hit = _fdp(out["discoveries"], real)
        fdps.append(fdp)
        hits += n_hit
    return sum(fdps) / reps, hits / (3 * (reps // 2))


@pytest.mark.parametrize("method", ["exhaustive", "sequential", "bandit", "output-screen"])
def test_fdr_at_most_alpha_on_simulated_worlds(method, monkeypatch):
    """Average FDP over simulated worlds stays at or below alpha. Null arms: no change at all
    (every method) and, for the relevance-null designs (sequential's e-processes, the fixed-n
    designs with the shifted test), small real shifts below min_change."""
    fdr, power = _simulate(method, "gate", 0.0, monkeypatch)
    assert fdr <= 0.1
    if method != "bandit":  # the bandit may spend its budget elsewhere; the others must find
        assert power >= 0.8
    fdr, power = _simulate(method, "shifted", 0.02, monkeypatch)
    assert fdr <= 0.1
    if method != "bandit":
        assert power >= 0.8


def test_gate_is_not_a_test_of_the_relevance_null(monkeypatch):
    """Why ``--relevance shifted`` exists: with real shifts just below min_change, p := 1
    below min_change lets about half of them through to BH (measured here: FDR above alpha),
    the shifted test does not."""
    gate, _ = _simulate("exhaustive", "gate", 0.045, monkeypatch, reps=20)
    shifted, _ = _simulate("exhaustive", "shifted", 0.045, monkeypatch, reps=20)
    assert shifted <= 0.1 < gate


def test_shifted_p():
    assert B.shifted_p([0.5] * 12, 0.05) == 0.0
    assert B.shifted_p([0.01] * 12, 0.05) == 1.0
    assert B.shifted_p([0.06, 0.04] * 6, 0.05) > 0.5  # centred on the floor: no evidence
    assert B.shifted_p([0.4, 0.6] * 6, 0.05) < 1e-6


def test_shifted_relevance_on_binary_arms_is_exact():
    """A 0/1 metric under ``--relevance shifted`` gets the exact margin test: TOST's t sees no
    spread when every pair flips and would call 3 of 3 flips p = 0."""
    flips = ([0.0] * 3, [1.0] * 3)
    assert B.shifted_p([y - x for x, y in zip(*flips)], 0.05) == 0.0
    assert B.binary_shifted_p(*flips, 0.05) > 0.2
    # both directions, Bonferroni-combined: 12 of 12 losing equals 12 of 12 gaining
    assert B.binary_shifted_p([0.0] * 12, [1.0] * 12, 0.05) == pytest.approx(
        B.binary_shifted_p([1.0] * 12, [0.0] * 12, 0.05))
    assert 1e-4 < B.binary_shifted_p([0.0] * 12, [1.0] * 12, 0.05) < 1e-3
    assert B.binary_shifted_p([0.0] * 12, [1.0] + [0.0] * 11, 0.05) > 0.5

    arms = B.Arms(None, None, {"f": [("p", None)]},
                  [FakeMetric("flag", outcome="binary"), FakeMetric("score")], relevance="shifted")
    p_binary, effect = arms.gated_p("flag", *flips)
    assert effect == 1.0 and p_binary == pytest.approx(B.binary_shifted_p(*flips, 0.05))
    assert arms.gated_p("score", *flips)[0] == 0.0  # bounded, not binary: the t-based test


def test_gate_before_bh_not_after():
    """Many tiny real shifts, n = 12: the relevance floor as p := 1 before BH rejects none."""
    rng = random.Random(1)
    shifts = {(f"f{f}", "m1"): 0.03 for f in range(40)}
    arms = SimArms(shifts, 24, rng, noise=0.01)
    out = B.run_exhaustive(arms, 0.05, 12)
    assert out["discoveries"] == []
    assert all(r["p"] == 1.0 for r in out["records"])


def test_ebh_rule():
    # K = 4, alpha = 0.5: thresholds K/(alpha k) = 8, 4, 2.67, 2
    assert B.ebh([9.0, 1.0, 1.0, 1.0], 0.5) == [True, False, False, False]
    assert B.ebh([5.0, 5.0, 1.0, 1.0], 0.5) == [True, True, False, False]
    assert B.ebh([3.0, 3.0, 3.0, 0.1], 0.5) == [True, True, True, False]
    assert B.ebh([1.9, 1.9, 1.9, 1.9], 0.5) == [False] * 4


def test_betting_eprocess_is_anytime_valid_under_the_null():
    """Ville: P(sup_t E_t >= 1/alpha) <= alpha for i.i.d. differences with |mean| <= delta."""
    rng = random.Random(3)
    alpha, crossings, reps = 0.1, 0, 300
    for _ in range(reps):
        e = B.BettingEProcess(delta=0.05, radius=1.0, alpha=alpha)
        for _ in range(60):
            e.update(max(-1.0, min(1.0, 0.05 + rng.gauss(0, 0.2))))  # mean exactly at delta
            if e.e >= 1 / alpha:
                crossings += 1
                break
    assert crossings / reps <= alpha
    strong = B.BettingEProcess(delta=0.05, radius=1.0, alpha=alpha)
    for _ in range(30):
        strong.update(0.6 + rng.gauss(0, 0.1))
    assert strong.e >= 1 / alpha


def test_select_outliers_takes_families_standing_out():
    scores = {f"f{k}": 0.01 + 0.001 * k for k in range(10)}
    scores["odd"] = 0.5
    assert B.select_outliers(scores, 3) == ["odd"]
    flat = {f"f{k}": 0.01 for k in range(5)}
    assert len(B.select_outliers(flat, 3)) == 1  # at least one family is confirmed


def test_applicable_metrics_need_reference_for_exact_match():
    metrics = {"exact_match": 1, "length": 2}
    assert B.applicable(metrics, [("p", None)]) == ["length"]
    assert B.applicable(metrics, [("p", "ref")]) == ["exact_match", "length"]
