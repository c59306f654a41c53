"""Feature sets that carry each planted change of an organism, next to a random control.

For every planted change (family, metric) of the organism and every seed: search a set on
``--search`` discovery prompts of the family (attribution patching over MLP neurons capped
at 5 % of the neurons; residual difference directions per layer at the decision point and
over the whole answer; the candidates swept with the planted metric on the search prompts:
``ActivationDiffTracer.search_feature_set(..., metric=)``),
then measure on ``--fresh`` other prompts of the family (never searched on) with the planted
metric: the causal share of patching the set back to the base (``mean(I - A) / mean(I - B)``,
paired bootstrap CI), the share of a random control of the same size (random directions of
the same layers for a direction set, random neurons of the same layers for a neuron set), and
the paired difference share - control share with its CI (builtin_plugins.pipeline.causal).

A random set is a random variable, so the control is drawn ``--control-draws`` times (fresh
random sets, the same prompts): the range within which 95 % of random sets' shares fall (2.5
and 97.5 percentiles over draws), their mean, and the found set's rank among them as an
empirical p-value, (1 + #draws with share >= the found set's) / (1 + draws) (a Monte Carlo
permutation-style test: Davison & Hinkley 1997, "Bootstrap Methods", eq. 4.11). The
paired share - control CI is against the first draw.

    python benchmarks/causal_sets.py toy-multi --seeds 5 --control-draws 20 \
        --out benchmarks/causal-sets-toy-multi.json

Prompts: on a toy organism the family's whole toy-language pool, sampled per seed; on any
other organism (SmolLM2) the search prompts are drawn from the family's universe prompts
(what methods see) and the fresh prompts from its evaluation split when that is held out
(``measurement.eval``), so the share is measured on prompts the search never saw. The metric
is measured as the organism's ground truth measures it: its ``measurement.max_new_tokens``,
and the sign-off metric with the planted phrases added.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

#: planted change type -> the metric its share is measured with (a pipeline-validated one)
METRIC_FOR = {"refusal": "refusal_probability", "uppercase": "uppercase_ratio",
              "fact": "target_logprob", "signoff": "signoff"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("organism")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="splits first-seed .. first-seed + seeds - 1 (to finish a stopped run)")
    ap.add_argument("--search", type=int, default=10)
    ap.add_argument("--fresh", type=int, default=16)
    ap.add_argument("--cache-dir", default="/work/cache/tests/organisms")
    ap.add_argument("--control-draws", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from builtin_plugins.metrics.core import DEFAULT_SIGNOFFS, metric_by_name, model_word_lists
    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.build import _family_pools, _spec_and_dir, load_dir
    from builtin_plugins.organisms.toy_language import all_prompts
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer
    from builtin_plugins.tracers.feature_search import is_direction, random_directions
    from builtin_plugins.pipeline.causal import causal_share, measure_triplet, share_difference
    from md_framework.types import FeatureRef, TestCase

    built = build_organism(args.organism, args.cache_dir, log=None)
    base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
    spec = _spec_and_dir(args.organism)[0]
    pools = None if spec.base == "toy" else _family_pools(spec)
    tracer = ActivationDiffTracer()
    d_mlp = int(inter.model.config.intermediate_size)
    rows = []
    gt = built.ground_truth()
    planted_phrases = [p["change"]["text"] for p in gt["planted"]
                       if p["change"]["type"] == "signoff" and p["change"].get("text")]
    for planted in gt["planted"]:
        family = planted["family"]
        name = METRIC_FOR[planted["change"]["type"]]
        options = {"max_new_tokens": spec.measurement.max_new_tokens}
        if name == "signoff" and planted_phrases:  # as the ground truth measures it
            known = list(model_word_lists(base).get("signoffs") or DEFAULT_SIGNOFFS)
            options["signoffs"] = known + [s for s in planted_phrases if s not in known]
        metric = metric_by_name(name, options)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rng = random.Random(f"{family}:{seed}")
            if pools is None:
                pool = [p for p, _ in all_prompts(family)]
                prompts = rng.sample(pool, min(len(pool), args.search + args.fresh))
                search, fresh = prompts[:args.search], prompts[args.search:]
            else:
                fam = pools[family]
                seen = [p for p, _ in fam["universe"]]
                search = rng.sample(seen, min(len(seen), args.search))
                held = [p for p, _ in fam["eval"] if p not in search]
                if fam["eval_source"] != "held-out":
                    held = [p for p in held if p not in seen]
                fresh = rng.sample(held, min(len(held), args.fresh))
            t0 = time.time()
            found = tracer.search_feature_set(base, inter, search, metric=metric)
            search_s = time.time() - t0
            feats = list(found["features"])
            if not feats:
                rows.append({"organism": built.name, "planted": planted["id"], "seed": seed,
                             "error": found.get("reason")})
                continue
            def control_set(draw: int) -> list:
                if all(is_direction(f) for f in feats):
                    return random_directions(sorted({f.layer for f in feats}),
                                             seed=seed + 1 + 1000 * draw)
                crng = random.Random(f"{seed}:{draw}")
                own = {(f.layer, f.feature) for f in feats}
                out = []
                for layer in sorted({f.layer for f in feats}):
                    k = sum(f.layer == layer for f in feats)
                    cand = [i for i in range(d_mlp) if (layer, i) not in own]
                    out += [FeatureRef(layer=layer, feature=i, dictionary_id="neurons")
                            for i in crng.sample(cand, k)]
                return out

            controls = control_set(0)
            cases = [TestCase(id=f"c{i}", hypothesis_id="h", prompt=p) for i, p in enumerate(fresh)]

            def run(fs):
                return measure_triplet(metric, base, inter,
                                       lambda: tracer.intervened_model(inter, fs, "base", base=base),
                                       cases)

            vb, vi, va = run(feats)
            _, _, vc = run(controls)
            floor = float(getattr(metric, "min_change", 0.0) or 1e-9)
            est = causal_share(vb, vi, va, min_denominator=floor, seed=seed)
            ctrl = causal_share(vb, vi, vc, min_denominator=floor, seed=seed)
            diff = share_difference(vb, vi, va, vc, min_denominator=floor, seed=seed)
            def share_of(e):
                return e.effect.estimate if e.effect is not None else float("nan")

            draws = [share_of(ctrl)]
            for draw in range(1, args.control_draws):
                _, _, vd = run(control_set(draw))
                draws.append(share_of(causal_share(vb, vi, vd, min_denominator=floor, seed=seed)))
            lo_q, hi_q = np.nanquantile(draws, [0.025, 0.975])
            found_share = share_of(est)
            p_random = (1 + sum(d >= found_share for d in draws)) / (1 + len(draws))

            def fmt(e):
                return None if e is None else [round(e.estimate, 3), e.ci_low and round(e.ci_low, 3),
                                               e.ci_high and round(e.ci_high, 3)]

            row = {"organism": built.name, "planted": planted["id"], "family": family,
                   "metric": metric.name, "seed": seed, "kind": found.get("kind"),
                   "set": [f"{f.layer}:{f.feature}" + ("(dir)" if is_direction(f) else "")
                           for f in feats], "size": len(feats), "cap": found.get("cap"),
                   "search_share": round(found.get("search_share") or 0.0, 3),
                   "alternative": found.get("alternative"), "n_fresh": len(cases),
                   "effect": round(est.mean_intervention - est.mean_base, 4),
                   "share": fmt(est.effect), "control_share": fmt(ctrl.effect),
                   "share_minus_control": fmt(diff),
                   "control_draws": len(draws), "control_mean": round(float(np.mean(draws)), 4),
                   "control_95_range": [round(float(lo_q), 4), round(float(hi_q), 4)],
                   "control_draw_shares": [round(d, 4) for d in draws],
                   "p_vs_random_sets": round(p_random, 4),
                   "search_passes": found.get("passes"),
                   "search_queries": found.get("queries"),
                   "sweep": [{"set": r["set"], "size": r["size"], "share": round(r["share"], 3)}
                             for r in found.get("sweep", [])],
                   "search_s": round(search_s, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
