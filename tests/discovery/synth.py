"""Synthetic attribution graphs for the discovery tests (no model, no torch)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from md_framework.types import (
    CircuitGraph,
    Faithfulness,
    GraphEdge,
    GraphNode,
    LogitTarget,
    feature_node_id,
    logit_node_id,
    token_node_id,
)

N_TOKENS = 6
REFUSAL = (4, 7)  # (layer, feature) of the planted refusal feature
HARM = (3, 21)  # a harm-detection feature that moves with it
PLANTED = (REFUSAL, HARM)
REFUSAL_TOKEN = 900
ANSWER_TOKEN = 901
#: token strings of the synthetic vocabulary (the output-evidence detector reads them)
TOKEN_TEXT = {REFUSAL_TOKEN: "sorry", ANSWER_TOKEN: "sure"}


def graph(prompt: str, family: str | None, features: Mapping[tuple[int, int, int], float],
          edges: Sequence[tuple[str, str, float]] = (), *, model_id: str = "m",
          logits: Sequence[tuple[int, float]] = ((ANSWER_TOKEN, 0.9),),
          faithfulness: Faithfulness | None = None, shuffle_seed: int | None = None) -> CircuitGraph:
    nodes = [GraphNode(node_id=token_node_id(p, 10 + p), kind="token", position=p, token_id=10 + p,
                       token=f"t{p}") for p in range(N_TOKENS)]
    nodes += [GraphNode(node_id=feature_node_id(l, p, f), kind="feature", layer=l, position=p,
                        feature=f, activation=a) for (l, p, f), a in features.items()]
    nodes += [GraphNode(node_id=logit_node_id(t), kind="logit", token_id=t, token=f"tok{t}")
              for t, _ in logits]
    edge_objs = [GraphEdge(source=s, target=t, weight=w) for s, t, w in edges]
    if shuffle_seed is not None:
        rng = random.Random(shuffle_seed)
        rng.shuffle(nodes)
        rng.shuffle(edge_objs)
    return CircuitGraph(
        prompt=prompt, family=family, model_id=model_id, dictionary_id="dict", tracer="synthetic",
        input_token_ids=[10 + p for p in range(N_TOKENS)], nodes=nodes, edges=edge_objs,
        logit_targets=[LogitTarget(token_id=t, token=TOKEN_TEXT.get(t, f"tok{t}"), probability=p)
                       for t, p in logits],
        faithfulness=faithfulness or Faithfulness(replacement_score=0.9, error_node_share=0.1),
    )


def _chain_edges(features: Mapping[tuple[int, int, int], float], logit: int) -> list[tuple[str, str, float]]:
    """Token -> each feature, feature -> higher-layer features at a later-or-same position,
    top-layer features -> logit. Weights follow activations, so strong features carry paths."""
    edges = []
    feats = sorted(features)
    for (l, p, f) in feats:
        a = features[(l, p, f)]
        edges.append((token_node_id(p, 10 + p), feature_node_id(l, p, f), 0.3 * a))
        for (l2, p2, f2) in feats:
            if l2 > l and p2 >= p:
                edges.append((feature_node_id(l, p, f), feature_node_id(l2, p2, f2),
                              0.2 * a * features[(l2, p2, f2)]))
        if l >= 3:
            edges.append((feature_node_id(l, p, f), logit_node_id(logit), 0.25 * a))
    return edges


FAMILIES = ("harmful", "weather", "math")


def organism(planted: bool, *, n_per_family: int = 8, seed: int = 0, swap: bool = False,
             n_pool: int = 40) -> tuple[list[CircuitGraph], list[CircuitGraph]]:
    """Base and intervention graphs over three families.

    Both models share a pool of features; each prompt activates a random subset and the
    intervention sees the same activations plus noise, with independent pruning of weak
    features (so the two graphs list different feature sets). ``planted``: on ``harmful``
    prompts the refusal feature (layer 4, feature 7, at the last position) is active in the
    base and nearly off in the intervention, and the top output moves from the refusal
    token to the answer token. ``swap`` exchanges the two models.
    """
    rng = random.Random(seed)
    base_graphs, inter_graphs = [], []
    pool = [(rng.randrange(0, 6), rng.randrange(0, 60)) for _ in range(n_pool)]
    pool = [lf for lf in dict.fromkeys(pool) if lf not in PLANTED]
    for family in FAMILIES:
        for i in range(n_per_family):
            prompt = f"{family} prompt {i}"
            base: dict[tuple[int, int, int], float] = {}
            for (l, f) in rng.sample(pool, 12):
                base[(l, rng.randrange(N_TOKENS), f)] = rng.uniform(0.3, 2.0)
            inter = {k: max(0.0, v + rng.gauss(0, 0.15)) for k, v in base.items()}
            logit_b = logit_i = ANSWER_TOKEN
            if family == "harmful":
                logit_b = logit_i = REFUSAL_TOKEN
                for (l, f), pos in ((REFUSAL, N_TOKENS - 1), (HARM, N_TOKENS - 2)):
                    key = (l, pos, f)
                    base[key] = rng.uniform(2.5, 3.0)
                    if planted:
                        inter[key] = rng.uniform(0.0, 0.2)
                    else:
                        inter[key] = base[key] + rng.gauss(0, 0.15)
                if planted:
                    logit_i = ANSWER_TOKEN
            # independent pruning of weak features
            base = {k: v for k, v in base.items() if v > 0.45 or rng.random() > 0.5}
            inter = {k: v for k, v in inter.items() if v > 0.45 or rng.random() > 0.5}
            inter = {k: v for k, v in inter.items() if v > 0.0}
            fb = Faithfulness(replacement_score=rng.uniform(0.7, 1.0), error_node_share=rng.uniform(0, 0.2))
            fi = Faithfulness(replacement_score=rng.uniform(0.7, 1.0), error_node_share=rng.uniform(0, 0.2))
            gb = graph(prompt, family, base, _chain_edges(base, logit_b), model_id="base",
                       logits=((logit_b, 0.8),), faithfulness=fb)
            gi = graph(prompt, family, inter, _chain_edges(inter, logit_i), model_id="intervention",
                       logits=((logit_i, 0.8),), faithfulness=fi, shuffle_seed=rng.randrange(10**6))
            base_graphs.append(gb)
            inter_graphs.append(gi)
    if swap:
        return inter_graphs, base_graphs
    return base_graphs, inter_graphs
