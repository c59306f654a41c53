"""Graph diff by node identity and systematic change statistics."""

from __future__ import annotations

import math

import pytest

from builtin_plugins.pipeline.diff import (
    family_contrast_stats,
    family_contrasts,
    specific_families_of,
    specific_share,
    welch_rows,
    changed_paths,
    diff_graph_sets,
    diff_graphs,
    top_paths,
    weighted_paired_t,
)
from md_framework.types import Faithfulness, feature_node_id as F, logit_node_id as L, token_node_id as T
from tests.discovery.synth import PLANTED, REFUSAL, graph, organism


def _identity_pair():
    """The same prompt traced on two models with different active features and pruning.

    The base lists extra features (pruned away in the intervention), the intervention has
    one feature the base lacks, and nodes and edges come in different orders, so every
    shared node and edge sits at a different list/matrix position in the two graphs.
    """
    base_feats = {(1, 2, 5): 1.0, (2, 3, 9): 2.0, (0, 1, 4): 0.5, (3, 4, 11): 0.7, (1, 0, 8): 0.2}
    inter_feats = {(3, 4, 11): 0.7, (2, 3, 9): 1.5, (0, 0, 33): 0.9, (1, 2, 5): 1.0}
    base_edges = [
        (T(2, 12), F(1, 2, 5), 0.5), (F(1, 2, 5), F(2, 3, 9), 0.8), (F(2, 3, 9), L(901), 0.6),
        (F(0, 1, 4), F(2, 3, 9), 0.1), (F(1, 0, 8), F(3, 4, 11), 0.05), (F(3, 4, 11), L(901), 0.3),
        (T(4, 14), F(3, 4, 11), 0.4),
    ]
    inter_edges = [
        (F(0, 0, 33), F(2, 3, 9), 0.7), (F(3, 4, 11), L(901), 0.3), (F(2, 3, 9), L(901), 0.6),
        (T(0, 10), F(0, 0, 33), 0.9), (F(1, 2, 5), F(2, 3, 9), 0.2), (T(2, 12), F(1, 2, 5), 0.5),
        (T(4, 14), F(3, 4, 11), 0.4),
    ]
    base = graph("p", "fam", base_feats, base_edges)
    inter = graph("p", "fam", inter_feats, inter_edges, shuffle_seed=3)
    return base, inter


def test_edges_and_features_are_matched_by_node_identity() -> None:
    base, inter = _identity_pair()
    # shared nodes really sit at different positions in the two node/edge lists
    b_pos = {n.node_id: i for i, n in enumerate(base.nodes)}
    i_pos = {n.node_id: i for i, n in enumerate(inter.nodes)}
    assert any(b_pos[k] != i_pos[k] for k in set(b_pos) & set(i_pos))
    diff = diff_graphs(base, inter)
    edges = {(e.source, e.target): e for e in diff.edge_changes}
    assert edges[(F(1, 2, 5), F(2, 3, 9))].status == "reweighted"
    assert edges[(F(1, 2, 5), F(2, 3, 9))].base_weight == pytest.approx(0.8)
    assert edges[(F(1, 2, 5), F(2, 3, 9))].intervention_weight == pytest.approx(0.2)
    assert edges[(F(0, 0, 33), F(2, 3, 9))].status == "new"
    assert edges[(T(0, 10), F(0, 0, 33))].status == "new"
    assert edges[(F(0, 1, 4), F(2, 3, 9))].status == "removed"
    assert edges[(F(1, 0, 8), F(3, 4, 11))].status == "removed"
    # identical edges listed at different positions are not reported as changes
    for key in [(F(3, 4, 11), L(901)), (F(2, 3, 9), L(901)), (T(2, 12), F(1, 2, 5)), (T(4, 14), F(3, 4, 11))]:
        assert key not in edges
    assert len(diff.edge_changes) == 5
    feats = {c.node_id: c for c in diff.feature_changes}
    assert feats[F(2, 3, 9)].status == "shared" and feats[F(2, 3, 9)].delta == pytest.approx(-0.5)
    assert feats[F(0, 0, 33)].status == "intervention_only" and feats[F(0, 0, 33)].base_activation == 0
    assert feats[F(0, 1, 4)].status == "base_only" and feats[F(0, 1, 4)].intervention_activation == 0
    assert feats[F(3, 4, 11)].delta == 0
    # the diff does not depend on the order nodes and edges are listed in
    inter_feats_reversed = {(1, 2, 5): 1.0, (0, 0, 33): 0.9, (2, 3, 9): 1.5, (3, 4, 11): 0.7}
    reordered = graph("p", "fam", inter_feats_reversed,
                      [(e.source, e.target, e.weight) for e in reversed(inter.edges)])
    again = diff_graphs(base, reordered)
    assert again.edge_changes == diff.edge_changes
    assert again.feature_changes == diff.feature_changes


def test_top_paths_and_changed_paths() -> None:
    base, inter = _identity_pair()
    bp = top_paths(base, 3)
    assert bp[0] == [T(2, 12), F(1, 2, 5), F(2, 3, 9), L(901)]  # 0.5*0.8*0.6 is the best
    ip = top_paths(inter, 3)
    assert ip[0] == [T(0, 10), F(0, 0, 33), F(2, 3, 9), L(901)]
    diff = diff_graphs(base, inter, top_k_paths=3)
    new, lost = changed_paths(diff)
    assert ip[0] in new and bp[0] not in new
    assert [T(4, 14), F(3, 4, 11), L(901)] not in new + lost  # the same route in both


def test_faithfulness_discount_and_notes() -> None:
    base, inter = _identity_pair()
    low = inter.model_copy(update={"faithfulness": Faithfulness(replacement_score=0.4, error_node_share=0.5)})
    diff = diff_graphs(base, low)
    assert diff.faithfulness_weight == pytest.approx(min(0.9 * 0.9, 0.4 * 0.5))
    assert any("discounted" in n for n in diff.notes)
    none = diff_graphs(base.model_copy(update={"faithfulness": Faithfulness()}),
                       inter.model_copy(update={"faithfulness": Faithfulness()}))
    assert none.faithfulness_weight == 1.0
    assert any("no faithfulness scores" in n for n in none.notes)


def test_weighted_paired_t_reduces_to_paired_t() -> None:
    from scipy import stats
    import numpy as np

    d = np.array([[0.3, -0.1, 0.5, 0.2, 0.4, 0.1]])
    _, t, p = weighted_paired_t(d, np.ones(6))
    ref = stats.ttest_1samp(d[0], 0.0)
    assert t[0] == pytest.approx(ref.statistic) and p[0] == pytest.approx(ref.pvalue)
    _, _, p_flat = weighted_paired_t(np.array([[1.0] * 6]), np.ones(6))
    assert p_flat[0] == pytest.approx(2 * 0.5**6)


def test_planted_change_is_systematic_and_null_is_not() -> None:
    planted = diff_graph_sets(*organism(True), "base", "intervention")
    top = planted.systematic_changes[0]
    assert (top.feature.layer, top.feature.feature) in PLANTED
    assert top.mean_delta < 0 and top.q_value < 1e-3
    # families carry the family-specific effect: harmful drops, the others only "rise"
    # relative to it (the contrast is against every other family's prompts)
    assert top.families["harmful"] < -2 and top.families["weather"] > 0
    key = top.feature.key
    assert specific_families_of(planted, key) == ["harmful"]
    contrast = family_contrasts(planted)[key]["harmful"]
    assert contrast["q"] < 1e-3 and contrast["share"] > 0.9
    assert top.feature.dictionary_id == "dict"
    assert any("Exploratory" in n for n in planted.notes)
    screened = {(c.feature.layer, c.feature.feature) for c in planted.systematic_changes if c.q_value <= 0.1}
    assert screened == set(PLANTED)
    for seed in range(3):
        null = diff_graph_sets(*organism(False, seed=seed), "base", "intervention")
        assert min(c.q_value for c in null.systematic_changes) > 0.1
        assert all(not math.isnan(c.p_value) for c in null.systematic_changes)


def test_pairs_by_prompt_when_orders_differ() -> None:
    base, inter = organism(True, n_per_family=3)
    diff = diff_graph_sets(base, list(reversed(inter)), "b", "i", test="wilcoxon")
    assert len(diff.prompt_diffs) == 9
    assert all(pd.prompt == b.prompt for pd, b in zip(diff.prompt_diffs, base))
    assert any("paired by prompt" in n for n in diff.notes)


def test_family_contrast_statistics() -> None:
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(0)
    fams = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    drift = 0.5 + rng.normal(0, 0.05, size=(3, 18))  # every feature drifts up everywhere
    drift[0, :6] += 2.0  # feature 0 changes specifically on family a
    drift[2] -= 0.5  # feature 2: no drift, no change
    drift[2] = rng.normal(0, 0.05, size=18)
    c = family_contrast_stats(drift, fams)
    assert set(c) == {"a", "b", "c"}
    # Welch t of family a against the rest, as scipy computes it
    ref = stats.ttest_ind(drift[0, :6], drift[0, 6:], equal_var=False)
    assert c["a"]["p"][0] == pytest.approx(ref.pvalue) and c["a"]["t"][0] == pytest.approx(ref.statistic)
    assert c["a"]["effect"][0] == pytest.approx(drift[0, :6].mean() - drift[0, 6:].mean())
    assert c["a"]["q"][0] < 1e-3 and c["a"]["share"][0] > 0.75
    # b and c differ from a on feature 0 but did not move specifically: share 0
    assert c["b"]["share"][0] == 0.0 and c["c"]["share"][0] == 0.0
    # pure drift (feature 1) is nowhere specific
    assert all(c[f]["q"][1] > 0.1 or c[f]["share"][1] < 0.5 for f in "abc")
    # q is BH over all (feature, family) pairs
    all_p = np.concatenate([c[f]["p"] for f in ("a", "b", "c")])
    from statsmodels.stats.multitest import multipletests
    assert np.allclose(np.concatenate([c[f]["q"] for f in ("a", "b", "c")]),
                       multipletests(all_p, method="fdr_bh")[1])


def test_specific_share_and_flat_welch() -> None:
    assert specific_share(1.0, 0.0) == pytest.approx(1.0)
    assert specific_share(1.0, 1.0) == pytest.approx(0.0)
    assert specific_share(2.0, 1.0) == pytest.approx(0.5)
    assert specific_share(0.0, -1.0) == pytest.approx(0.0)  # the family did not move
    assert specific_share(-1.0, 1.0) == pytest.approx(2 / 3)  # moved against the drift
    import numpy as np
    t, p = welch_rows(np.array([[1.0, 1.0, 1.0]]), np.array([[0.0, 0.0, 0.0, 0.0]]))
    assert p[0] == pytest.approx(2 / 35)  # exact Mann-Whitney: 1 of C(7,3) orderings, two-sided
    _, p_eq = welch_rows(np.array([[1.0, 1.0]]), np.array([[1.0, 1.0]]))
    assert p_eq[0] == 1.0
