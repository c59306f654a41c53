"""Graph diff by node identity, and systematic feature changes across prompts.

Two rules make this stage correct by construction:

* **Identity, never position.** Nodes are matched by ``GraphNode.node_id`` (``F:layer:pos:feature``,
  ``T:pos:token``, ``L:token``, ``E:layer:pos``) and an edge is identified by its
  ``(source id, target id)`` pair. Two graphs of the same prompt may list different
  active features, prune differently and order nodes and edges arbitrarily; none of that
  changes the diff.
* **No fixed thresholds.** Per-feature change across prompts is judged with paired
  statistics (weighted paired t, or Wilcoxon signed-rank), with Benjamini–Hochberg
  q-values over all features. These are *exploratory*: they rank what to look at and feed
  the pattern detectors. Confirmatory error control is spent only in validation.

Absent means inactive: a feature that one graph lists and the other does not counts as
activation 0 in the other (it was below the tracer's activation or pruning cut). Diffs of
graphs whose replacement model explains the real one poorly are discounted through
``PromptDiff.faithfulness_weight`` and the reason is written to ``PromptDiff.notes``.

Torch-free: numpy, scipy and statsmodels only.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from builtin_plugins.pipeline.answers import add_answer_features, answer_maxima, attach_answers
from md_framework.hookspecs import hookimpl
from md_framework.types import (
    AnswerTrace,
    CircuitDiff,
    CircuitGraph,
    EdgeChange,
    Faithfulness,
    FeatureChange,
    FeatureRef,
    GraphNode,
    PromptDiff,
    SystematicChange,
)

#: Top paths kept per graph (input tokens -> the graph's top logit target).
DEFAULT_TOP_K_PATHS = 5
#: Relative tolerance under which two edge weights are "unchanged" (numerical equality).
WEIGHT_RTOL = 1e-6
WEIGHT_ATOL = 1e-9

Aggregate = Literal["max", "sum"]
PairedTest = Literal["t", "wilcoxon"]


# --------------------------------------------------------------------------- faithfulness


def graph_faithfulness_weight(faith: Faithfulness) -> tuple[float, list[str]]:
    """One graph's weight in [0, 1]: ``replacement_score * (1 - error_node_share)``.

    ``replacement_score`` falls back to ``completeness_score``; a missing score counts as 1
    and a missing error share as 0 (the weight is then 1 and a note says scores are absent).
    """
    notes: list[str] = []
    score = faith.replacement_score
    name = "replacement score"
    if score is None and faith.completeness_score is not None:
        score, name = faith.completeness_score, "completeness score"
    share = faith.error_node_share
    if score is None and share is None:
        return 1.0, ["no faithfulness scores (tracer without a replacement model): weight 1"]
    weight = 1.0
    if score is not None:
        weight *= min(1.0, max(0.0, float(score)))
        if score < 1.0:
            notes.append(f"{name} {score:.3g}")
    if share is not None:
        weight *= 1.0 - min(1.0, max(0.0, float(share)))
        if share > 0.0:
            notes.append(f"error-node share {share:.3g}")
    return weight, notes


def pair_faithfulness_weight(base: CircuitGraph, intervention: CircuitGraph) -> tuple[float, list[str]]:
    """A diff is only as trustworthy as its less faithful graph: the minimum of the two."""
    wb, nb = graph_faithfulness_weight(base.faithfulness)
    wi, ni = graph_faithfulness_weight(intervention.faithfulness)
    weight = min(wb, wi)
    notes = [f"base graph: {n}" for n in nb] + [f"intervention graph: {n}" for n in ni]
    if weight < 1.0:
        notes.append(f"faithfulness weight {weight:.3g}: this prompt's diff is discounted")
    return weight, notes


# --------------------------------------------------------------------------- top paths


def _topological_order(nodes: Sequence[str], succ: dict[str, list[tuple[str, float]]]) -> list[str]:
    indeg: dict[str, int] = {n: 0 for n in nodes}
    for src in nodes:
        for dst, _ in succ.get(src, ()):
            indeg[dst] = indeg.get(dst, 0) + 1
    ready = sorted(n for n, d in indeg.items() if d == 0)
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for dst, _ in succ.get(node, ()):
            indeg[dst] -= 1
            if indeg[dst] == 0:
                ready.append(dst)
    return order  # nodes on cycles (not expected in attribution graphs) are left out


def top_paths(graph: CircuitGraph, k: int = DEFAULT_TOP_K_PATHS,
              target: str | None = None) -> list[list[str]]:
    """The ``k`` best paths from any input-token node to ``target`` (node ids).

    A path's score is the product of ``|edge weight|`` along it (its attribution share),
    found exactly with a k-best dynamic programme over the DAG in topological order.
    ``target`` defaults to the graph's most probable logit target, so ``path[-1]`` is the
    model's top output. Paths are returned best first; ties break on node ids.
    """
    if k <= 0:
        return []
    if target is None:
        target = top_logit_node(graph)
        if target is None:
            return []
    succ: dict[str, list[tuple[str, float]]] = defaultdict(list)
    node_ids: set[str] = set()
    for edge in graph.edges:
        if edge.weight == 0.0 or edge.source == edge.target:
            continue
        succ[edge.source].append((edge.target, math.log(abs(edge.weight))))
        node_ids.update((edge.source, edge.target))
    if target not in node_ids:
        return []
    kinds = {n.node_id: n.kind for n in graph.nodes}
    order = _topological_order(sorted(node_ids), succ)
    # best[node]: up to k (log score, path) pairs of paths from a token node to node
    best: dict[str, list[tuple[float, tuple[str, ...]]]] = {}
    for node in order:
        is_token = kinds.get(node) == "token" or (node not in kinds and node.startswith("T:"))
        here = best.get(node, [])
        if is_token:
            here = here + [(0.0, (node,))]
        here = heapq.nlargest(k, here, key=lambda item: (item[0], item[1]))
        best[node] = here
        if not here:
            continue
        for dst, logw in succ.get(node, ()):
            extended = [(score + logw, path + (dst,)) for score, path in here]
            best[dst] = heapq.nlargest(k, best.get(dst, []) + extended, key=lambda i: (i[0], i[1]))
    return [list(path) for _, path in best.get(target, [])[:k]]


def top_logit_node(graph: CircuitGraph) -> str | None:
    """Node id of the graph's most probable logit target (``L:token_id``)."""
    if graph.logit_targets:
        target = max(graph.logit_targets, key=lambda t: t.probability)
        return f"L:{target.token_id}"
    logits = [n.node_id for n in graph.nodes if n.kind == "logit"]
    return sorted(logits)[0] if len(logits) == 1 else None


def path_signature(path: Sequence[str]) -> tuple[str, ...]:
    """A path without positions: features as ``F:layer:feature``, other nodes unchanged
    except tokens (``T:token_id``); used to recognise the same route across prompts."""
    sig = []
    for node in path:
        parts = node.split(":")
        if parts[0] == "F" and len(parts) == 4:
            sig.append(f"F:{parts[1]}:{parts[3]}")
        elif parts[0] == "T" and len(parts) == 3:
            sig.append(f"T:{parts[2]}")
        elif parts[0] == "E" and len(parts) == 3:
            sig.append(f"E:{parts[1]}")
        else:
            sig.append(node)
    return tuple(sig)


def path_features(paths: Sequence[Sequence[str]]) -> set[str]:
    """Position-free feature keys (``layer:feature``) on any of ``paths``."""
    keys = set()
    for path in paths:
        for node in path:
            parts = node.split(":")
            if parts[0] == "F" and len(parts) == 4:
                keys.add(f"{parts[1]}:{parts[3]}")
    return keys


def changed_paths(diff: PromptDiff) -> tuple[list[list[str]], list[list[str]]]:
    """(paths only in the intervention's top paths, paths only in the base's)."""
    base = {tuple(p) for p in diff.base_top_paths}
    inter = {tuple(p) for p in diff.intervention_top_paths}
    return ([list(p) for p in diff.intervention_top_paths if tuple(p) not in base],
            [list(p) for p in diff.base_top_paths if tuple(p) not in inter])


def top_output(paths: Sequence[Sequence[str]]) -> str | None:
    """The logit node the paths end at (the graph's top output), if any."""
    return paths[0][-1] if paths and paths[0] else None


# --------------------------------------------------------------------------- one prompt


def _activation(node: GraphNode) -> float:
    return float(node.activation) if node.activation is not None else 0.0


def diff_graphs(base: CircuitGraph, intervention: CircuitGraph, *,
                top_k_paths: int = DEFAULT_TOP_K_PATHS,
                include_unchanged_edges: bool = False) -> PromptDiff:
    """Diff one prompt's two graphs by node identity.

    * feature changes: every feature node id in either graph; ``shared`` / ``base_only`` /
      ``intervention_only``; a missing activation is 0.
    * edge changes: edges keyed by ``(source, target)``; ``new`` / ``removed`` /
      ``reweighted`` (``unchanged`` ones only with ``include_unchanged_edges``). Duplicate
      listings of the same edge in one graph are summed.
    * top paths: :func:`top_paths` of each graph towards its own top logit target.
    * faithfulness weight and notes: :func:`pair_faithfulness_weight`.
    """
    notes: list[str] = []
    if base.prompt != intervention.prompt:
        notes.append("graphs are of different prompts; node ids may not correspond")
    if base.input_token_ids and intervention.input_token_ids and \
            base.input_token_ids != intervention.input_token_ids:
        notes.append("input tokenisations differ: positions may not correspond")
    if base.dictionary_id != intervention.dictionary_id:
        notes.append(
            f"dictionaries differ ({base.dictionary_id} vs {intervention.dictionary_id}):"
            " feature ids are not comparable"
        )

    b_feats = {n.node_id: n for n in base.nodes if n.kind == "feature"}
    i_feats = {n.node_id: n for n in intervention.nodes if n.kind == "feature"}
    feature_changes: list[FeatureChange] = []
    for node_id in sorted(set(b_feats) | set(i_feats)):
        bn, inn = b_feats.get(node_id), i_feats.get(node_id)
        ref = bn or inn
        assert ref is not None
        layer, position, feature = ref.layer, ref.position, ref.feature
        if layer is None or position is None or feature is None:
            parts = node_id.split(":")
            layer, position, feature = int(parts[1]), int(parts[2]), int(parts[3])
        status = "shared" if bn and inn else "base_only" if bn else "intervention_only"
        feature_changes.append(FeatureChange(
            node_id=node_id, layer=layer, position=position, feature=feature,
            base_activation=_activation(bn) if bn else 0.0,
            intervention_activation=_activation(inn) if inn else 0.0,
            status=status,
        ))

    def edge_map(graph: CircuitGraph) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = defaultdict(float)
        for edge in graph.edges:
            out[(edge.source, edge.target)] += edge.weight
        return out

    b_edges, i_edges = edge_map(base), edge_map(intervention)
    edge_changes: list[EdgeChange] = []
    n_unchanged = 0
    for key in sorted(set(b_edges) | set(i_edges)):
        bw, iw = b_edges.get(key), i_edges.get(key)
        if bw is None:
            status = "new"
        elif iw is None:
            status = "removed"
        elif math.isclose(bw, iw, rel_tol=WEIGHT_RTOL, abs_tol=WEIGHT_ATOL):
            status = "unchanged"
            n_unchanged += 1
            if not include_unchanged_edges:
                continue
        else:
            status = "reweighted"
        edge_changes.append(EdgeChange(
            source=key[0], target=key[1], base_weight=bw or 0.0,
            intervention_weight=iw or 0.0, status=status,
        ))
    if n_unchanged and not include_unchanged_edges:
        notes.append(f"{n_unchanged} unchanged edges omitted")

    b_paths = top_paths(base, top_k_paths)
    i_paths = top_paths(intervention, top_k_paths)
    bo, io = top_output(b_paths), top_output(i_paths)
    if bo is not None and io is not None:
        shared = len({tuple(p) for p in b_paths} & {tuple(p) for p in i_paths})
        notes.append(
            f"top output {bo} -> {io} ({'same' if bo == io else 'changed'}); "
            f"{shared} of {max(len(b_paths), len(i_paths))} top paths shared"
        )
    weight, faith_notes = pair_faithfulness_weight(base, intervention)
    return PromptDiff(
        prompt=base.prompt, family=base.family if base.family is not None else intervention.family,
        feature_changes=feature_changes, edge_changes=edge_changes,
        base_top_paths=b_paths, intervention_top_paths=i_paths,
        base_logit_targets=list(base.logit_targets),
        intervention_logit_targets=list(intervention.logit_targets),
        faithfulness_weight=weight, notes=notes + faith_notes,
    )


# --------------------------------------------------------------------------- statistics


def _feature_table(graphs: Sequence[CircuitGraph], index: dict[str, int], n_rows: int,
                   aggregate: Aggregate) -> np.ndarray:
    table = np.zeros((n_rows, len(graphs)))
    for j, graph in enumerate(graphs):
        for node in graph.nodes:
            if node.kind != "feature":
                continue
            row = index[_feature_key(node)]
            value = _activation(node)
            if aggregate == "sum":
                table[row, j] += value
            else:
                table[row, j] = max(table[row, j], value)
    return table


def _feature_key(node: GraphNode) -> str:
    if node.layer is not None and node.feature is not None:
        return f"{node.layer}:{node.feature}"
    parts = node.node_id.split(":")
    return f"{parts[1]}:{parts[3]}"


def _sign_test_p(n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    from scipy import stats

    n = n_pos + n_neg
    k = np.minimum(n_pos, n_neg)
    return np.where(n > 0, np.minimum(1.0, 2.0 * stats.binom.cdf(k, np.maximum(n, 1), 0.5)), 1.0)


def weighted_paired_t(deltas: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise weighted paired t-test of ``deltas`` (features x prompts) against 0.

    Weighted mean and variance with effective sample size ``(sum w)^2 / sum w^2`` (the
    ordinary paired t when all weights are 1). Rows with zero variance fall back to an
    exact sign test (all deltas equal and non-zero is consistent, not infinitely so).
    Returns (weighted mean, t, two-sided p).
    """
    from scipy import stats

    w = np.asarray(weights, dtype=float)
    sw = w.sum()
    if sw <= 0:
        n = deltas.shape[0]
        return np.zeros(n), np.zeros(n), np.ones(n)
    mean = deltas @ w / sw
    n_eff = sw**2 / float((w**2).sum())
    var = ((deltas - mean[:, None]) ** 2) @ w / sw * (n_eff / max(n_eff - 1.0, 1e-12))
    se = np.sqrt(var / n_eff)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), 0.0)
    df = max(n_eff - 1.0, 1.0)
    p = 2.0 * stats.t.sf(np.abs(t), df)
    flat = se <= 1e-15 * np.maximum(1.0, np.abs(mean))
    if flat.any():
        active = w > 0
        n_pos = ((deltas > 0) & active).sum(axis=1)
        n_neg = ((deltas < 0) & active).sum(axis=1)
        p = np.where(flat, _sign_test_p(n_pos, n_neg), p)
        t = np.where(flat, 0.0, t)
    if n_eff < 2:
        p = np.ones_like(p)
    return mean, t, np.clip(p, 0.0, 1.0)


def wilcoxon_rows(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise two-sided Wilcoxon signed-rank (zeros dropped); (statistic, p)."""
    from scipy import stats

    stat = np.zeros(deltas.shape[0])
    p = np.ones(deltas.shape[0])
    for i, row in enumerate(deltas):
        nz = row[row != 0]
        if len(nz) == 0:
            continue
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
        stat[i], p[i] = float(res.statistic), float(res.pvalue)
    return stat, p


# --------------------------------------------------------------------------- family contrasts

#: a family's change is *specific* when its contrast q <= this (exploratory) ...
CONTRAST_Q = 0.1
#: ... and at least this share of the family's change is beyond the other families' drift
SPECIFIC_SHARE = 0.5


def welch_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise two-sided Welch t-test of ``a`` (rows x n_a) against ``b`` (rows x n_b).

    Rows where both groups have zero variance fall back to the exact two-sided
    Mann-Whitney test (which then only depends on the ordering: all of one group above the
    other gives the smallest p the group sizes allow). Returns (t, p); p = 1 with fewer
    than 2 values in a group."""
    from scipy import stats

    n_a, n_b = a.shape[1], b.shape[1]
    rows = a.shape[0]
    if n_a < 2 or n_b < 2 or rows == 0:
        return np.zeros(rows), np.ones(rows)
    ma, mb = a.mean(axis=1), b.mean(axis=1)
    va, vb = a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)
    se2 = va / n_a + vb / n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se2 > 0, (ma - mb) / np.sqrt(np.where(se2 > 0, se2, 1.0)), 0.0)
        df = np.where(se2 > 0, se2**2 / np.where(se2 > 0, (va / n_a) ** 2 / (n_a - 1)
                                                   + (vb / n_b) ** 2 / (n_b - 1), 1.0), 1.0)
    df = np.maximum(np.nan_to_num(df, nan=1.0, posinf=n_a + n_b - 2.0), 1.0)
    p = 2.0 * stats.t.sf(np.abs(t), df)
    flat = se2 <= 1e-24 * np.maximum(1.0, np.abs(ma - mb)) ** 2
    for r in np.flatnonzero(flat):
        if ma[r] == mb[r]:
            p[r] = 1.0
        else:
            p[r] = float(stats.mannwhitneyu(a[r], b[r], alternative="two-sided", method="exact").pvalue)
    return t, np.clip(p, 0.0, 1.0)


def specific_share(family_mean: np.ndarray | float, rest_mean: np.ndarray | float) -> np.ndarray:
    """How much of a family's change is specific to it: |d_f - d_rest| / (|d_f - d_rest| +
    |d_rest|). 1 when the other families do not move, 0 when the family moves exactly like
    them (pure drift), 0.5 when it moves twice as much as the drift in the same direction;
    0 when the family itself did not move in the direction of the contrast."""
    fm, rm = np.asarray(family_mean, dtype=float), np.asarray(rest_mean, dtype=float)
    contrast = np.abs(fm - rm)
    denom = contrast + np.abs(rm)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(denom > 0, contrast / np.where(denom > 0, denom, 1.0), 0.0)
    # the family itself must move in the contrast's direction: a family that stays put
    # while another family changes is not "specifically" changed (it only differs from it)
    return np.where(fm * (fm - rm) > 0, share, 0.0)


def family_contrast_stats(deltas: np.ndarray, families: Sequence[str | None],
                          weights: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Family x model interaction per feature: each family's per-prompt deltas against the
    deltas on every other family's prompts (Welch t, :func:`welch_rows`).

    ``deltas`` is features x prompts (intervention - base). Prompts with weight 0 are left
    out. Returns ``{family: {"effect", "t", "p", "q", "share", "family_mean",
    "rest_mean"}}`` with one entry per feature in each array; ``effect`` = family mean delta
    - rest mean delta (the family-specific change), ``share`` = :func:`specific_share`,
    ``q`` = Benjamini-Hochberg over all (feature, family) contrasts together (exploratory).
    """
    from statsmodels.stats.multitest import multipletests

    deltas = np.asarray(deltas, dtype=float)
    fams = list(families)
    keep = np.ones(len(fams), dtype=bool) if weights is None else np.asarray(weights) > 0
    names = sorted({f for f, k in zip(fams, keep) if f is not None and k})
    out: dict[str, dict[str, np.ndarray]] = {}
    if len(names) < 2 or deltas.size == 0:
        return out
    fam_arr = np.array([f if f is not None else "" for f in fams], dtype=object)
    for name in names:
        in_f = (fam_arr == name) & keep
        rest = (fam_arr != name) & keep
        a, b = deltas[:, in_f], deltas[:, rest]
        t, p = welch_rows(a, b)
        fm, rm = a.mean(axis=1), b.mean(axis=1)
        out[name] = {"effect": fm - rm, "t": t, "p": p, "share": specific_share(fm, rm),
                     "family_mean": fm, "rest_mean": rm}
    all_p = np.concatenate([out[n]["p"] for n in names])
    all_q = multipletests(all_p, method="fdr_bh")[1]
    rows = deltas.shape[0]
    for i, name in enumerate(names):
        out[name]["q"] = all_q[i * rows:(i + 1) * rows]
    return out


def specific_families(contrasts: dict[str, dict[str, np.ndarray]], row: int,
                      q_max: float = CONTRAST_Q, share_min: float = SPECIFIC_SHARE) -> list[str]:
    """Families whose change of feature ``row`` is specific: contrast q <= ``q_max`` and
    specific share >= ``share_min``."""
    return sorted(f for f, c in contrasts.items()
                  if c["q"][row] <= q_max and c["share"][row] >= share_min and c["effect"][row] != 0)


def _pair_graphs(base_graphs: Sequence[CircuitGraph], intervention_graphs: Sequence[CircuitGraph],
                 notes: list[str]) -> list[tuple[CircuitGraph, CircuitGraph]]:
    if len(base_graphs) == len(intervention_graphs) and all(
        b.prompt == i.prompt for b, i in zip(base_graphs, intervention_graphs)
    ):
        return list(zip(base_graphs, intervention_graphs))
    by_prompt: dict[str, list[CircuitGraph]] = defaultdict(list)
    for graph in intervention_graphs:
        by_prompt[graph.prompt].append(graph)
    pairs = []
    for graph in base_graphs:
        if by_prompt.get(graph.prompt):
            pairs.append((graph, by_prompt[graph.prompt].pop(0)))
    unpaired = len(base_graphs) + len(intervention_graphs) - 2 * len(pairs)
    notes.append(f"graphs paired by prompt text; {unpaired} graph(s) without a partner skipped")
    return pairs


def diff_graph_sets(
    base_graphs: Sequence[CircuitGraph],
    intervention_graphs: Sequence[CircuitGraph],
    base_model_id: str,
    intervention_model_id: str,
    dictionary_id: str | None = None,
    *,
    aggregate: Aggregate = "max",
    test: PairedTest = "t",
    top_k_paths: int = DEFAULT_TOP_K_PATHS,
    answers: Sequence[AnswerTrace | None] | None = None,
) -> CircuitDiff:
    """Diff each prompt's pair of graphs and find systematic feature changes.

    Per feature (``layer:feature``) and prompt, the activation is aggregated over positions
    (``max`` by default, or ``sum``; absent = 0). The paired deltas across prompts are
    tested against 0 with ``test``: ``"t"`` is a faithfulness-weighted paired t-test,
    ``"wilcoxon"`` the (unweighted) signed-rank test. Each feature is tested on all prompts
    and within each prompt family; its p-value is the smallest of these, Bonferroni
    corrected for the number of tests made (so a change confined to one family is not
    diluted by the others, at a price for looking). BH q-values over all features follow.
    ``families`` holds the faithfulness-weighted mean delta per family. All of this is
    exploratory ranking, not confirmation.

    ``answers`` (:class:`~md_framework.types.AnswerTrace` per prompt, matched by prompt and
    family) adds the answer positions: attached as ``PromptDiff.answer``; with the graphs'
    dictionary, their per-feature answer activations join the table (same aggregate).
    """
    from statsmodels.stats.multitest import multipletests

    notes: list[str] = []
    pairs = _pair_graphs(base_graphs, intervention_graphs, notes)
    prompt_diffs = [diff_graphs(b, i, top_k_paths=top_k_paths) for b, i in pairs]
    if dictionary_id is None:
        ids = {g.dictionary_id for pair in pairs for g in pair if g.dictionary_id}
        dictionary_id = ids.pop() if len(ids) == 1 else None
        if ids:
            notes.append("graphs use more than one dictionary: features are not comparable")
    prompt_diffs, answer_feats = attach_answers(pairs, prompt_diffs, answers, dictionary_id, notes)

    keys = sorted({
        _feature_key(n) for pair in pairs for g in pair for n in g.nodes if n.kind == "feature"
    } | {k for t in answer_feats if t is not None for k in (*t.base_features, *t.intervention_features)},
        key=lambda k: tuple(int(x) for x in k.split(":")))
    changes: list[SystematicChange] = []
    if keys and pairs:
        index = {k: r for r, k in enumerate(keys)}
        base_t = _feature_table([b for b, _ in pairs], index, len(keys), aggregate)
        inter_t = _feature_table([i for _, i in pairs], index, len(keys), aggregate)
        add_answer_features(base_t, inter_t, answer_feats, index, aggregate)
        deltas = inter_t - base_t
        weights = np.array([d.faithfulness_weight for d in prompt_diffs])
        families = [d.family for d in prompt_diffs]
        contrasts: dict[str, dict[str, np.ndarray]] = {}
        fam_names = sorted({f for f in families if f is not None})
        groups: list[np.ndarray] = [np.ones(len(pairs), dtype=bool)]
        if len(fam_names) > 1:
            groups += [np.array([f == name for f in families]) for name in fam_names]
        stats_rows, p_rows = [], []
        for mask in groups:
            if test == "wilcoxon":
                stat, p = wilcoxon_rows(deltas[:, mask])
            else:
                _, stat, p = weighted_paired_t(deltas[:, mask], weights[mask])
            stats_rows.append(stat)
            p_rows.append(p)
        p_all = np.vstack(p_rows)
        best = np.argmin(p_all, axis=0)
        cols = np.arange(len(keys))
        p_min = np.minimum(1.0, p_all[best, cols] * len(groups))
        stat_best = np.vstack(stats_rows)[best, cols]
        sw = weights.sum()
        mean = deltas @ weights / sw if sw > 0 else deltas.mean(axis=1)
        q = multipletests(p_min, method="fdr_bh")[1] if len(p_min) else p_min
        contrasts = family_contrast_stats(deltas, families, weights)
        for r, key in enumerate(keys):
            if not np.any(deltas[r]):
                continue
            layer, feature = (int(x) for x in key.split(":"))
            changes.append(SystematicChange(
                feature=FeatureRef(layer=layer, feature=feature, dictionary_id=dictionary_id),
                mean_delta=float(mean[r]), n_prompts=int(np.count_nonzero(deltas[r])),
                statistic=float(stat_best[r]), p_value=float(p_min[r]), q_value=float(q[r]),
                families={name: float(contrasts[name]["effect"][r]) if name in contrasts else 0.0
                          for name in fam_names},
            ))
        changes.sort(key=lambda c: (c.p_value, -abs(c.mean_delta)))
        notes.append(
            f"systematic changes: {len(keys)} features, per-prompt {aggregate} activation "
            f"(absent = 0), {'weighted paired t' if test == 't' else 'Wilcoxon signed-rank'}"
            f" on {len(pairs)} prompts, min over pooled + {len(groups) - 1} family tests "
            "(Bonferroni), BH q-values across features. Exploratory: ranking only; "
            "confirmatory FDR control happens in validation"
        )
        if contrasts:
            notes.append(
                "families: family-specific effect per feature (family mean delta - mean delta on"
                " the other families' prompts); family contrasts: Welch t of the family's deltas"
                " against the rest, BH over all (feature, family) pairs (exploratory), see"
                " family_contrasts(diff)"
            )
    if any(t is not None for t in answer_feats):
        notes.append(f"answer positions in the table ({sum(t is not None for t in answer_feats)}"
                     f" of {len(pairs)} prompts: both answers teacher-forced through both models)")
    discounted = sum(1 for d in prompt_diffs if d.faithfulness_weight < 1.0)
    if discounted:
        notes.append(f"{discounted} of {len(prompt_diffs)} prompt diffs discounted for faithfulness")
    result = CircuitDiff(
        base_model_id=base_model_id, intervention_model_id=intervention_model_id,
        dictionary_id=dictionary_id, prompt_diffs=prompt_diffs,
        systematic_changes=changes, notes=notes,
    )
    if keys and pairs:
        _remember_contrasts(result, _contrast_table(keys, contrasts))
    return result


# --------------------------------------------------------------------------- contrasts of a diff

#: (diff object, table) of recent diffs: the kernel's SystematicChange has no field for the
#: per-family q/share, so they are kept beside the diff and rebuilt from prompt_diffs when a
#: diff comes from elsewhere (a report, a test).
_CONTRAST_MEMO: list[tuple[CircuitDiff, dict[str, dict[str, dict[str, float]]]]] = []
_MEMO_SIZE = 4


def _contrast_table(keys: Sequence[str], contrasts: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    if not contrasts:
        return table
    for r, key in enumerate(keys):
        table[key] = {fam: {stat: float(values[r]) for stat, values in c.items()}
                      for fam, c in contrasts.items()}
    return table


def _remember_contrasts(diff: CircuitDiff, table: dict[str, dict[str, dict[str, float]]]) -> None:
    _CONTRAST_MEMO.append((diff, table))
    del _CONTRAST_MEMO[:-_MEMO_SIZE]


def prompt_diff_deltas(prompt_diffs: Sequence[PromptDiff]) -> tuple[list[str], np.ndarray]:
    """(feature keys, features x prompts deltas) rebuilt from the prompts' feature changes
    with the per-prompt ``max`` activation over positions (absent = 0)."""
    per_prompt: list[dict[str, tuple[float, float]]] = []
    keys: set[str] = set()
    for pd in prompt_diffs:
        acc: dict[str, list[float]] = {}
        for fc in pd.feature_changes:
            key = f"{fc.layer}:{fc.feature}"
            cur = acc.setdefault(key, [0.0, 0.0])
            cur[0] = max(cur[0], fc.base_activation)
            cur[1] = max(cur[1], fc.intervention_activation)
        answer_maxima(pd, acc)
        per_prompt.append({k: (v[0], v[1]) for k, v in acc.items()})
        keys.update(acc)
    ordered = sorted(keys, key=lambda k: tuple(int(x) for x in k.split(":")))
    index = {k: i for i, k in enumerate(ordered)}
    deltas = np.zeros((len(ordered), len(prompt_diffs)))
    for j, acc in enumerate(per_prompt):
        for k, (b, i) in acc.items():
            deltas[index[k], j] = i - b
    return ordered, deltas


def family_contrasts(diff: CircuitDiff) -> dict[str, dict[str, dict[str, float]]]:
    """Per feature key, per family: ``effect`` (family-specific change), ``t``, ``p``,
    ``q`` (BH over all feature x family contrasts), ``share`` (:func:`specific_share`),
    ``family_mean``, ``rest_mean``. Exploratory. Taken from :func:`diff_graph_sets` when
    this diff object came from it, else rebuilt from ``diff.prompt_diffs`` (max over
    positions)."""
    for known, table in _CONTRAST_MEMO:
        if known is diff:
            return table
    keys, deltas = prompt_diff_deltas(diff.prompt_diffs)
    weights = np.array([pd.faithfulness_weight for pd in diff.prompt_diffs])
    contrasts = family_contrast_stats(deltas, [pd.family for pd in diff.prompt_diffs], weights)
    table = _contrast_table(keys, contrasts)
    _remember_contrasts(diff, table)
    return table


def specific_families_of(diff: CircuitDiff, key: str, q_max: float = CONTRAST_Q,
                         share_min: float = SPECIFIC_SHARE) -> list[str]:
    """Families where feature ``key``'s change is specific (contrast q <= ``q_max``, share
    >= ``share_min``), from :func:`family_contrasts`."""
    row = family_contrasts(diff).get(key, {})
    return sorted(f for f, c in row.items()
                  if c["q"] <= q_max and c["share"] >= share_min and c["effect"] != 0)


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_diff(base_graphs: Sequence[CircuitGraph], intervention_graphs: Sequence[CircuitGraph],
                  base_model_id: str, intervention_model_id: str, dictionary_id: str | None,
                  answers: Sequence[Any] | None) -> CircuitDiff:
    """The builtin graph diff (:func:`diff_graph_sets` with its default statistics)."""
    return diff_graph_sets(base_graphs, intervention_graphs, base_model_id, intervention_model_id,
                           dictionary_id=dictionary_id, answers=answers)
