"""Simulations behind the statistical guarantees of docs/validation.md, as tests.

Each is a seeded numpy simulation through the real kernel code (test generation, the
validator's test choice and relevance test, the confidence sequence, the explorer with the
default online FDR procedure). Bounds are the nominal level plus two Monte Carlo standard
errors; every simulation also checks that the biased design it replaces *would* fail, so
the test can fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from toy import fake_model

from builtin_plugins.pipeline.evidence import mean_difference_cs
from builtin_plugins.pipeline.testgen import generate_tests, stable_seed
from md_framework.runtime import MetricReading, TestGenerationContext
from md_framework.types import Hypothesis, TestCase


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


# --------------------------------------------------------------------------- selection bias


@dataclass
class _Contribution:
    value: TestCase
    plugin: str


class _Hooks:
    """A hook caller whose only ``md_generate_tests`` plugin offers what the old builtin
    generator offered: feature contexts ranked by the *intervention* model's activation of
    a changed feature, template probes with a large change, and paraphrases."""

    def __init__(self, ranked_by_intervention: list[str], family: str) -> None:
        self.ranked = ranked_by_intervention
        self.family = family

    def collect(self, name, hypothesis, n_tests, context):
        cases = [TestCase(id=f"f{k}", hypothesis_id="", prompt=p, family=self.family,
                          metadata={"generator": "feature"})
                 for k, p in enumerate(self.ranked[:8])]
        cases += [TestCase(id=f"t{k}", hypothesis_id="", prompt=f"template probe {k}",
                           family=self.family, target="x", metadata={"generator": "template"})
                  for k in range(12)]
        cases += [TestCase(id=f"p{k}", hypothesis_id="", prompt=f"PLEASE: {c.prompt}",
                           family=self.family,
                           metadata={"generator": "paraphrase", "paraphrase_of": c.prompt})
                  for k, c in enumerate(cases[:10])]
        for c in cases:
            yield _Contribution(c, "fake-generator")


def _wilcoxon_greater(d: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, alternative="greater").pvalue)


def test_family_claims_use_random_family_prompts_type_one_error():
    """The family's mean change is exactly 0 per prompt in distribution, the changed feature
    fires on the intervention model where the metric rises, template probes carry a change
    of +2. A claim about the family, tested on what generate_tests returns, must keep its
    type-I error at alpha; ranking by intervention activation (the old design) must not."""
    alpha, reps, n_tests = 0.05, 300, 20
    family = "stories"
    prompts = [f"{family} prompt {i}" for i in range(60)]
    rejections = biased = 0
    for rep in range(reps):
        rng = np.random.default_rng(rep)
        effect = {p: float(rng.normal()) for p in prompts}  # D on each prompt: mean 0
        effect.update({f"template probe {k}": 2.0 + float(rng.normal()) for k in range(12)})
        activation = {p: effect[p] + 0.5 * float(rng.normal()) for p in prompts}
        ranked = sorted(prompts, key=lambda p: -activation[p])
        h = Hypothesis(id=f"h{rep}", hypothesis_type="knowledge_update", description="x",
                       metric="m", direction="increase", families=[family])
        context = TestGenerationContext(universe={family: prompts}, seed=rep)
        cases = generate_tests(h, n_tests, hooks=_Hooks(ranked, family), context=context)
        assert len(cases) == n_tests
        assert all(c.prompt in prompts and c.family == family for c in cases)
        assert all(c.metadata["evidence"] == "family" for c in cases)
        d = np.array([effect[c.prompt] + 0.1 * float(rng.normal()) for c in cases])
        rejections += _wilcoxon_greater(d) <= alpha
        old = np.array([effect[p] for p in ranked[:8]] +
                       [effect[f"template probe {k}"] for k in range(12)])
        biased += _wilcoxon_greater(old) <= alpha
    rate, old_rate = rejections / reps, biased / reps
    assert rate <= alpha + 2 * _se(alpha, reps), rate
    assert old_rate > 0.5, old_rate  # the simulation detects the selection bias it guards


def test_paraphrases_are_one_cluster_for_generated_prompts():
    """A hypothesis naming no family is tested on generated prompts: at most one member of a
    paraphrase cluster is used."""
    h = Hypothesis(id="h", hypothesis_type="style_change", description="x", metric="m")
    hooks = _Hooks([f"p{i}" for i in range(8)], "stories")
    cases = generate_tests(h, 20, hooks=hooks, context=TestGenerationContext(seed=0),
                           allow_fewer=True)
    clusters = [c.metadata["cluster"] for c in cases]
    assert len(clusters) == len(set(clusters))
    originals = {c.prompt for c in cases if "paraphrase_of" not in c.metadata}
    assert not any(c.metadata.get("paraphrase_of") in originals for c in cases)


# --------------------------------------------------------------------------- coverage


def test_confidence_sequence_covers_after_early_stopping():
    """Bounded metric, betting e-process checked after every batch of 5 pairs and stopped at
    E >= 20 (or n = 200; most runs stop early): the confidence sequence the validator reports
    at the stopping time covers the true mean difference in >= 0.93 of runs."""
    from builtin_plugins.stats.paired_tests import BettingEProcess

    test = BettingEProcess(BettingEProcess.Options(lo=0.0, hi=1.0))
    reps, cap, covered, early = 400, 200, 0, 0
    true_shift = 0.06

    def draw(rng, size):
        base = rng.beta(2, 2, size=size)
        return base, np.clip(base + true_shift + rng.normal(0, 0.2, size=size), 0, 1)

    big_base, big_inter = draw(np.random.default_rng(99), 2_000_000)
    truth = float(np.mean(big_inter - big_base))  # the clipping makes it a bit below 0.06
    for rep in range(reps):
        base, inter = draw(np.random.default_rng(10_000 + rep), cap)
        path = test.e_path(base, inter, "two-sided")
        n = cap
        for stop in range(5, cap + 1, 5):
            if path[:stop].max() >= 20:
                n, early = stop, early + 1
                break
        cs = mean_difference_cs(base[:n], inter[:n], (0.0, 1.0))
        assert cs.method and "confidence sequence" in cs.method
        covered += cs.ci_low <= truth <= cs.ci_high
    assert early / reps > 0.5  # the design does stop early
    assert covered / reps >= 0.93, covered / reps


# --------------------------------------------------------------------------- binary size


class _BinaryMetric:
    name = "flip"
    description = "binary toy metric"
    kind = "scored"
    outcome = "binary"
    bounds = (0.0, 1.0)
    min_change = 0.05

    def measure(self, model, cases):
        raise AssertionError("not measured in this test")


def _validator(paired_test: str = "wilcoxon"):
    from md_framework.drivers import create_driver
    from builtin_plugins.pipeline.validation import Validator

    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
    return Validator(fake_model("b"), fake_model("i"), [_BinaryMetric()], fdr=fdr,
                     paired_test=paired_test)


def test_binary_metrics_default_to_exact_tests_and_keep_their_size():
    v = _validator("wilcoxon")
    metric = _BinaryMetric()
    assert v.test_for(metric).name == "mcnemar"
    assert _validator("betting-e").test_for(metric).name == "beta-binomial-e"
    # the example: 3 of 20 pairs flip upward, none downward
    base, inter = np.zeros(20), np.r_[np.ones(3), np.zeros(17)]
    plain = v.test_for(metric).test(base, inter, "two-sided")
    assert plain.p_value == pytest.approx(0.25)  # exact two-sided (0.125 one-sided)
    assert v.test_for(metric).test(base, inter, "greater").p_value == pytest.approx(0.125)
    # size of the relevance test under identical models, 20 pairs, 30 % discordant
    relevance = v.relevance_for(metric)
    # fixed n: the exact margin test, no betting e-process built; anytime: the e-process
    assert relevance.bounded is None and relevance.name == "mcnemar+exact-margin(D>0.05)"
    assert _validator("betting-e").relevance_for(metric).bounded is not None
    reps, alpha, rejected = 2000, 0.05, 0
    rng = np.random.default_rng(7)
    for _ in range(reps):
        b = (rng.random(20) < 0.5).astype(float)
        flip = rng.random(20) < 0.3
        i = np.where(flip, 1 - b, b)
        rejected += relevance.test_pairs(b, i, "greater").p_value <= alpha
    assert rejected / reps <= alpha + 2 * _se(alpha, reps)
    # and it has power against a real, relevant change
    b = np.zeros(40)
    i = np.r_[np.ones(30), np.zeros(10)]
    assert relevance.test_pairs(b, i, "greater").p_value < 0.01


def test_relevance_test_does_not_reject_a_real_but_irrelevant_change():
    """H0 "effect <= min_change": a tiny, real shift (below the floor) is rejected as "no
    change" but not as "relevant" (continuous metric, Wilcoxon on D - min_change)."""
    from md_framework.drivers import create_driver
    from builtin_plugins.pipeline.evidence import RelevanceTest

    wilcoxon = create_driver("paired_test", "wilcoxon", {})
    rel = RelevanceTest(wilcoxon, 0.25)
    rng = np.random.default_rng(3)
    base = rng.normal(size=200)
    inter = base + 0.1 + rng.normal(0, 0.05, size=200)
    assert wilcoxon.test(base, inter, "greater").p_value < 1e-6
    assert rel.test_pairs(base, inter, "greater").p_value > 0.5
    assert rel.test_pairs(base, base + 0.6, "greater").p_value < 1e-6
    assert rel.test_pairs(base, base - 0.6, "two-sided").p_value < 1e-6


# --------------------------------------------------------------------------- dependence


class _SharedPromptMetric:
    """Bounded metrics on shared prompts: every metric of one family reads the same prompt
    effect (correlation rho between the hypotheses' differences), plus noise; planted
    families get a shift on the intervention model."""

    outcome = "bounded"
    bounds = (0.0, 1.0)
    kind = "scored"
    description = "toy shared-prompt metric"

    def __init__(self, name: str, planted: set[str], seed: int, rho: float = 0.7) -> None:
        self.name, self.planted, self.seed, self.rho = name, planted, seed, rho
        self.min_change = 0.0

    def measure(self, model, cases):
        out = []
        for c in cases:
            g = np.random.default_rng(stable_seed(self.seed, c.prompt))
            shared, own = g.normal(size=2)
            n2 = np.random.default_rng(stable_seed(self.seed, c.prompt, self.name,
                                                   model.model_id)).normal()
            x = 0.3 * shared + math.sqrt(1 - self.rho) * 0.3 * n2
            if model.model_id == "intervention":
                x += math.sqrt(self.rho) * 0.3 * own  # shared across metrics of a prompt
                if c.family in self.planted:
                    x += 1.5
            out.append(MetricReading(value=float(1 / (1 + math.exp(-x)))))
        return out


def test_default_fdr_procedure_under_shared_prompts_and_bandit_allocation():
    """Hypotheses on one family share prompts (three metrics per family whose differences
    correlate at rho = 0.9: a false rejection on a null family tends to come with two more);
    the UCB bandit allocates pulls by evidence, so fixed-n tests reach their n at
    evidence-dependent times; decisions follow the pre-registered order with the default
    test and procedure (Wilcoxon, SAFFRON). The false discovery proportion averaged over runs
    stays <= alpha (+ 2 SE), and the procedure does find the planted changes. With a betting
    e-process and early stopping (the anytime path) as well."""
    from md_framework.config import StatisticsConfig
    from md_framework.drivers import create_driver
    from builtin_plugins.pipeline.explorer import BudgetedExplorer
    from builtin_plugins.pipeline.validation import Validator

    defaults = StatisticsConfig()
    alpha = 0.1
    for paired_test, reps, n_per, budget in ((defaults.paired_test, 80, 20, 760),
                                             ("betting-e", 20, 40, 1400)):
        fdps: list[float] = []
        true_found: list[int] = []
        for rep in range(reps):
            planted = {f"fam{k}" for k in range(2)}
            metrics = [_SharedPromptMetric(f"m{j}", planted, rep, rho=0.9) for j in range(3)]
            hyps = [Hypothesis(id=f"h{k}{j}", hypothesis_type="style_change", description="x",
                               metric=f"m{j}", direction="change", families=[f"fam{k}"])
                    for k in range(6) for j in range(3)]

            def tests_for(h, n_per=n_per):
                fam = h.families[0]
                return [TestCase(id=f"{h.id}/{i}", hypothesis_id=h.id, prompt=f"{fam} p{i}",
                                 family=fam) for i in range(n_per)]  # the same prompts per family

            fdr = create_driver("fdr_procedure", defaults.procedure, {}, alpha=alpha)
            # a fixed stopping threshold (about 1 / SAFFRON's first levels) instead of the
            # peeked level: validity does not depend on it, and peeking is slow here
            validator = Validator(fake_model("base"), fake_model("intervention"), metrics,
                                  fdr=fdr, paired_test=paired_test, stop_threshold=10 / alpha)
            bandit = create_driver("bandit_strategy", "ucb", {})
            explorer = BudgetedExplorer(hyps, validator, bandit, tests_for, budget=budget,
                                             batch_size=4, cases_per_pull=5)
            result = explorer.run()
            rejected = [r.hypothesis for r in result.results if r.decision]
            false = sum(1 for h in rejected if h.families[0] not in planted)
            fdps.append(false / max(1, len(rejected)))
            true_found.append(len(rejected) - false)
        fdr_hat = float(np.mean(fdps))
        se = float(np.std(fdps, ddof=1) / math.sqrt(reps))
        assert fdr_hat <= alpha + 2 * se, (paired_test, fdr_hat, se)
        assert np.mean(true_found) >= 3, paired_test  # it rejects: the bound is not vacuous
