"""Crosscoder tracer and activation-difference lens (ADL) on the toy organisms (issue 18).

Four measurements per organism, all judged against the organism's measured ground truth
(read only after the methods ran, for scoring):

1. **crosscoder**: train (cached) one BatchTopK crosscoder on the pair; FVU per model on
   held-out tokens and the share of latents per class.
2. **patching share**: for each planted change, up to ``--n-latents`` latents chosen on
   the planted family's *explore* prompts, either (``class``) the latents classified
   intervention-only or changed that write most into the intervention model there, or
   (``diff``) the latents whose contribution changed most between the models there (what
   the circuit diff ranks), are patched to the base side (``base`` mode) and the planted
   metric measured on the family's *confirm* prompts on base (B), intervention (I) and the
   patched model (A): share = mean(I - A) / mean(I - B) with a paired bootstrap CI
   (:func:`builtin_plugins.pipeline.causal.causal_share`). Control: as many latents drawn at
   random (``--control-draws`` seeds) among the other latents active on the same prompts
   (``class``: the shared ones; in a crosscoder with designated shared latents, every
   control is drawn among the active *free* latents, since a tied latent's base-side patch
   changes nothing). ``--selections`` adds ``class-all`` (every latent of those
   classes active on the explore prompts; control: as many active shared latents), ``all``
   (every latent active there: what the crosscoder carries in all), ``contrast`` (the
   ``changed`` latents whose difference write, the node the graph diff sees, exceeds its mean
   on the other families' explore prompts by the widest margin; control: as many other
   changed latents active there) and ``residual`` (the
   crosscoder layers' whole residual stream replaced by the base model's: what any
   dictionary at those layers could carry). No patch touches a sequence's first position,
   which the crosscoder never reads.
3. **pipeline**: ``MechanisticBehavioralAnalyzer`` with ``tracer: crosscoder`` and with
   ``tracer: activation-diff`` (same config otherwise), scored with md bench's rule
   (:func:`builtin_plugins.organisms.bench.score`).
4. **ADL alone**: <= 32 generic prompts, mapped onto the explore prompts of each seed's
   split; a hit when the top named family is a planted family. ``--adl-seeds`` seeds (the
   seed draws the generic prompts and the explore split).

    python benchmarks/crosscoder_adl.py --cache-dir /work/cache/tests \\
        --specs toy-safety,toy-style,toy-knowledge,toy-multi --out benchmarks/crosscoder-adl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3))


def family_contribution(tracer: Any, model: Any, prompts: list[str]) -> dict[int, Any]:
    """{layer: mean over prompts of the peak contribution per latent}."""
    from builtin_plugins.tracers._common import encode_prompt, tracing_text

    acc: dict[int, Any] = {}
    for p in prompts:
        ids = encode_prompt(model.tokenizer, tracing_text(model.tokenizer, p))
        _, _, contrib = tracer.contributions(model, ids)
        for layer, c in contrib.items():
            peak = c[1:].max(dim=0).values if c.shape[0] > 1 else c[0]
            acc[layer] = peak / len(prompts) if layer not in acc else acc[layer] + peak / len(prompts)
    return acc


def select_latents(xc: Any, contrib_i: dict[int, Any], contrib_b: dict[int, Any], selection: str,
                   n_latents: int, rest: dict[int, Any] | None = None) -> tuple[list[Any], list[Any]]:
    """(chosen latents, control pool) of one patching ``selection`` (module docstring) from the
    per-layer contributions of a family's explore prompts on both models (``rest``: the mean
    intervention-side contribution on the other families' explore prompts, for ``contrast``)."""
    from md_framework.types import FeatureRef

    if selection == "contrast":
        return _contrast_latents(xc, contrib_i, rest or {}, n_latents)
    chosen, pool = [], []
    for layer, c in contrib_i.items():
        delta = (c - contrib_b[layer]).abs()
        # a tied (designated shared) latent has one decoder for both models, so its base-side
        # patch changes nothing: random controls are drawn among the free latents
        tied = xc.states[layer].get("tied")
        score = c if selection in ("class", "class-all") else delta
        for j in score.argsort(descending=True).tolist():
            if float(score[j]) <= 0:
                break
            ref = FeatureRef(layer=layer, feature=j)
            cls = xc.classes[layer][j]
            if selection in ("class", "class-all") and cls in ("intervention-only", "changed"):
                chosen.append((float(score[j]), ref))
            elif selection in ("diff", "all"):
                chosen.append((float(score[j]), ref))
            is_free = tied is None or float(tied[j]) == 0.0
            if float(c[j]) > 0 and is_free and (
                    selection in ("diff", "all") or cls == "shared" or tied is not None):
                pool.append(ref)
    # class / diff: the n_latents strongest; class-all: every active latent of those classes;
    # all: every latent active on the family's explore prompts
    cap = n_latents if selection in ("class", "diff") else len(chosen)
    picked = [f for _, f in sorted(chosen, key=lambda t: -t[0])[:cap]]
    return picked, [f for f in pool if f not in picked]


def _contrast_latents(xc: Any, contrib_i: dict[int, Any], rest: dict[int, Any],
                      n_latents: int) -> tuple[list[Any], list[Any]]:
    """``contrast``: the ``changed`` latents whose *difference write* (their difference
    latent's node, ``f_j ||d_j^I - d_j^B||``: what the graph diff sees) is larger on the
    family's explore prompts than on the other families' by the widest margin, the
    ``n_latents`` strongest with a positive margin; control pool: the other ``changed``
    latents active on the family's prompts (equal-size random draws among them)."""
    from md_framework.types import FeatureRef

    scored, active = [], []
    for layer, c in contrib_i.items():
        # contrib = f_j ||d_j^I||, so f_j ||d_j^I - d_j^B|| = contrib / ||d_j^I|| * ||d_j^I - d_j^B||
        scale = xc.diff_norm[layer][1] / xc.dec_norm[layer][1].clamp_min(1e-12)
        margin = (c - rest[layer]) * scale
        for j, cls in enumerate(xc.classes[layer]):
            if cls != "changed" or float(c[j]) <= 0:
                continue
            ref = FeatureRef(layer=layer, feature=j)
            active.append(ref)
            if float(margin[j]) > 0:
                scored.append((float(margin[j]), ref))
    picked = [f for _, f in sorted(scored, key=lambda t: -t[0])[:n_latents]]
    return picked, [f for f in active if f not in picked]


def patching(built: Any, base: Any, inter: Any, tracer: Any, n_latents: int, draws: int,
             seed: int, n_confirm: int, selections: tuple[str, ...] = ("class", "diff"),
             family_draws: int = 0) -> list[dict[str, Any]]:
    """Patching rows (module docstring). ``family_draws`` > 0 adds the other-family control:
    the same selection rule applied to that many other, unplanted families' explore prompts
    (drawn at random), patched on the planted family's confirm prompts: whether the latents
    the rule finds are specific to the planted family."""
    import hashlib

    from builtin_plugins.pipeline.causal import causal_share
    from builtin_plugins.pipeline.testgen import split_universe
    from residual_ceiling import PatchReadings, planted_cases, residual_of_base, universe_of  # benchmarks/

    xc = tracer.crosscoder()
    readings = PatchReadings(base, inter, "crosscoder_adl patching")

    def measure(fam: str, latents: list[Any] | None, patch: Any, cases: list[Any], metric: Any) -> Any:
        """(base, intervention, patched) readings; ``latents`` None: the residual patch."""
        key = "residual" if latents is None else hashlib.sha256(
            repr(sorted((f.layer, f.feature) for f in latents)).encode()).hexdigest()[:16]
        return readings.triplet(metric, patch, cases, f"{fam}|{key}")
    explore_all, _ = split_universe(universe_of(built)[0], 0.5, seed)
    planted_families = {p["family"] for p in built.ground_truth()["planted"]}
    others = sorted(f for f in explore_all if f not in planted_families)
    other_contrib: dict[str, tuple[dict[int, Any], dict[int, Any]]] = {}
    inter_by_family: dict[str, dict[int, Any]] = {}

    def inter_of(family: str) -> dict[int, Any]:
        """The intervention-side contribution on a family's explore prompts, read once."""
        if family not in inter_by_family:
            inter_by_family[family] = family_contribution(tracer, inter, explore_all[family])
        return inter_by_family[family]

    def rest_of(family: str) -> dict[int, Any] | None:
        """Mean intervention-side contribution over every other family's explore prompts
        (``contrast`` only; each family weighs the same)."""
        if "contrast" not in selections:
            return None
        rest = [inter_of(f) for f in explore_all if f != family]
        return {layer: sum(r[layer] for r in rest) / len(rest) for layer in rest[0]}
    rows = []
    for planted, metric, cases, explore, min_den in planted_cases(built, n_confirm, "patch", seed):
        fam, metric_name = planted["family"], planted["metrics"][0]
        contrib_i = family_contribution(tracer, inter, explore)
        contrib_b = family_contribution(tracer, base, explore)
        intervene = lambda fs: (lambda: tracer.intervened_model(inter, fs, "base", base=base))  # noqa: E731
        control_families = random.Random(f"{seed}:{fam}:families").sample(others, min(family_draws, len(others)))
        for selection in selections:
            chosen, pool = [], []
            if selection == "residual":  # the layers' whole residual stream: the ceiling
                layers = sorted(xc.states)
                label = [f"whole residual after layer {', '.join(map(str, layers))}"]
                patch = lambda: residual_of_base(base, inter, layers, keep_first=True)  # noqa: E731
            else:
                chosen, pool = select_latents(xc, contrib_i, contrib_b, selection, n_latents,
                                              rest_of(fam) if selection == "contrast" else None)
                label = sorted({xc.classes[f.layer][f.feature] for f in chosen})
                patch = intervene(chosen)
            row: dict[str, Any] = {"organism": built.name, "planted": planted["id"], "family": fam,
                                   "metric": metric_name, "selection": selection,
                                   "n_latents": len(chosen), "n_prompts": len(cases), "classes": label,
                                   "control_pool": len(pool)}
            if not chosen and selection != "residual":
                row["note"] = "no latent selected"
                rows.append(row)
                continue
            vb, vi, va = measure(fam, None if selection == "residual" else chosen, patch, cases, metric)
            est = causal_share(vb, vi, va, min_denominator=min_den, seed=seed)
            row.update(mean_base=sum(vb) / len(vb), mean_intervention=sum(vi) / len(vi),
                       mean_patched=sum(va) / len(va))
            if est.effect is not None:
                row.update(share=round(est.effect.estimate, 3), ci=[est.effect.ci_low, est.effect.ci_high])
            else:
                row["note"] = est.reason
            controls = []
            for d in range(draws if chosen else 0):
                rng = random.Random(f"{seed}:{d}:{fam}:{selection}")
                if len(pool) < len(chosen):
                    break
                ctrl = rng.sample(pool, len(chosen))
                _, _, vc = measure(fam, ctrl, intervene(ctrl), cases, metric)
                c = causal_share(vb, vi, vc, n_bootstrap=0, min_denominator=min_den)
                if c.effect is not None:
                    controls.append(round(c.effect.estimate, 3))
            row["control_shares"] = controls
            if selection != "residual" and control_families:
                family_controls = []
                for other in control_families:
                    if other not in other_contrib:
                        other_contrib[other] = (inter_of(other),
                                                family_contribution(tracer, base, explore_all[other]))
                    ctrl, _ = select_latents(xc, *other_contrib[other], selection, n_latents,
                                             rest_of(other) if selection == "contrast" else None)
                    entry: dict[str, Any] = {"family": other, "n_latents": len(ctrl),
                                             "overlap": sum(f in chosen for f in ctrl)}
                    if ctrl:
                        _, _, vc = measure(fam, ctrl, intervene(ctrl), cases, metric)
                        c = causal_share(vb, vi, vc, n_bootstrap=0, min_denominator=min_den)
                        entry["share"] = None if c.effect is None else round(c.effect.estimate, 3)
                    family_controls.append(entry)
                row["family_controls"] = family_controls
            rows.append(row)
    readings.close()
    return rows


def adl_seeds(built: Any, base: Any, inter: Any, seeds: int) -> dict[str, Any]:
    from md_framework.config import ActivationDifferenceLensConfig
    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import activation_difference_lens

    planted = {p["family"] for p in built.ground_truth()["planted"]}
    hits, runs = 0, []
    t0 = time.time()
    for s in range(seeds):
        explore, _ = split_universe(built.universe, 0.5, s)
        res = activation_difference_lens(base, inter, explore, ActivationDifferenceLensConfig(enabled=True), seed=s)
        hit = res.named_families[0] in planted
        hits += hit
        best = next(d for d in res.directions if d.layer == res.layer)
        ranked = sorted(res.family_scores, key=lambda f: -res.family_scores[f])
        runs.append({"seed": s, "named": res.named_families, "hit": hit,
                     "z": res.family_scores.get(res.named_families[0]),
                     "planted_ranks": sorted(ranked.index(f) + 1 for f in planted if f in ranked),
                     "prompt_source": res.prompt_source, "family_scores": res.family_scores,
                     "lens": best.lens_tokens[:8], "candidates": [c[1] for c in res.hypotheses],
                     "cost": res.cost})
    return {"organism": built.name, "hits": hits, "seeds": seeds, "interval": wilson(hits, seeds),
            "seconds": round(time.time() - t0, 1), "runs": runs}


def pipeline(built: Any, spec: str, tracer: str, options: dict[str, Any], seed: int,
             cache_dir: Path) -> dict[str, Any]:
    from md_framework.config import AnalysisConfig
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    from builtin_plugins.organisms.bench import discovery_from_validation, score

    t0 = time.time()
    config = AnalysisConfig.model_validate({
        "base_model": f"organism:{spec}#base", "intervention_model": f"organism:{spec}#intervention",
        "universe": {"organism": spec}, "seed": seed, "cache_dir": str(cache_dir), "threads": 1,
        "tracer": tracer, "tracer_options": options})
    report = MechanisticBehavioralAnalyzer(config).analyze()
    prompt_family = {p: f for f, ps in built.universe.items() for p in ps}
    found = [discovery_from_validation(r, prompt_family) for r in report.validated()]
    planted = [{"id": p["id"], "family": p["family"], "metrics": p["metrics"],
                "direction": p["direction"], "kind": p["kind"]} for p in built.ground_truth()["planted"]]
    s = score(found, planted)
    return {"organism": built.name, "tracer": tracer, "seed": seed, "recall": s["recall"],
            "precision": s["precision"], "recovered": s["recovered"],
            "false_discoveries": s["false_discoveries"],
            "queries": report.costs.behaviour_queries, "traced_prompts": report.costs.traced_prompts,
            "causal": [(r.hypothesis.id, r.causal_share.estimate if r.causal_share else None,
                        r.causal_control_share.estimate if r.causal_control_share else None)
                       for r in report.validated()],
            "wall_s": round(time.time() - t0, 1)}


def markdown(results: dict[str, Any]) -> str:
    """The README tables from a results.json."""
    out = ["| organism | layer | FVU base | FVU intervention | L0 | shared | base-only | "
           "intervention-only | changed | dead | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in results.get("train", []):
        for m in t["layers"]:
            c = m["class_shares"]
            out.append(f"| {t['organism']} | {m['layer']} | {m['fvu_base']:.3f} | {m['fvu_intervention']:.3f} | "
                       f"{m['l0']:.1f} | {c['shared']:.3f} | {c['base-only']:.3f} | "
                       f"{c['intervention-only']:.3f} | {c['changed']:.3f} | {c['dead']:.3f} | {t['seconds']:.0f} |")
    out += ["", "| organism | planted | metric | selection | latents (classes) | share [95 % CI] | "
            "control shares: median (min–max, n) | other-family controls: share (latents, overlap) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results.get("patch", []):
        ci = r.get("ci") or [None, None]
        share = (f"{r['share']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if r.get("share") is not None and ci[0] is not None
                 else str(r.get("share", r.get("note", ""))))
        cs = sorted(r.get("control_shares", []))
        ctrl = (f"{cs[len(cs) // 2]:.3f} ({cs[0]:.3f}–{cs[-1]:.3f}, {len(cs)})" if cs else "–")
        fmt_share = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        fams = "; ".join(f"{c['family']}: {fmt_share(c.get('share'))} ({c['n_latents']}, {c['overlap']})"
                         for c in r.get("family_controls", [])) or "–"
        out.append(f"| {r['organism']} | {r['planted']} | {r['metric']} | {r['selection']} | "
                   f"{r['n_latents']} ({', '.join(r.get('classes', []))}) | {share} | {ctrl} | {fams} |")
    out += ["", "| organism | ADL hits / seeds | Wilson 95 % | families named | planted family's rank (of N), median (min–max) | generic prompts | forward passes / run | generated tokens / run |",
            "|---|---|---|---|---|---|---|---|"]
    for a in results.get("adl", []):
        named: dict[str, int] = {}
        for r in a["runs"]:
            named[r["named"][0]] = named.get(r["named"][0], 0) + 1
        cost = a["runs"][0]["cost"]
        lo, hi = wilson(a["hits"], a["seeds"])
        ranks = sorted(r["planted_ranks"][0] for r in a["runs"] if r.get("planted_ranks"))
        n_fam = len(a["runs"][0].get("family_scores") or {}) or "?"
        rank = f"{ranks[len(ranks) // 2]} ({ranks[0]}–{ranks[-1]}) of {n_fam}" if ranks else "–"
        out.append(f"| {a['organism']} | {a['hits']}/{a['seeds']} | {lo:.2f}–{hi:.2f} | "
                   f"{', '.join(f'{k} x{v}' for k, v in sorted(named.items(), key=lambda t: -t[1]))} | "
                   f"{rank} | {a['runs'][0].get('prompt_source', 'english')} | "
                   f"{cost['forward_passes']} | {cost['generated_tokens']} |")
    out += ["", "| organism | seed | tracer | recall | precision | recovered | false disc. | queries | traced prompts | causal share (control) of validated feature hypotheses | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["pipeline"]:
        causal = "; ".join(f"{h.split(':')[1]}/{h.split(':')[-1]}: "
                           f"{'–' if s is None else f'{s:.2f}'} ({'–' if c is None else f'{c:.2f}'})"
                           for h, s, c in r["causal"] if s is not None) or "–"
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        out.append(f"| {r['organism']} | {r['seed']} | {r['tracer']} | {fmt(r['recall'])} | "
                   f"{fmt(r['precision'])} | {', '.join(r['recovered']) or '–'} | {r['false_discoveries']} | "
                   f"{r['queries']} | {r['traced_prompts']} | {causal} | {r['wall_s']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="toy-safety,toy-style,toy-knowledge,toy-multi")
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".md-cache")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "crosscoder-adl")
    ap.add_argument("--parts", default="train,patch,adl,pipeline")
    ap.add_argument("--adl-seeds", type=int, default=10)
    ap.add_argument("--pipeline-seeds", type=int, default=1)
    ap.add_argument("--n-latents", type=int, default=8)
    ap.add_argument("--control-draws", type=int, default=10)
    ap.add_argument("--family-controls", type=int, default=0,
                    help="other-family control: the same selection on this many unplanted "
                         "families' explore prompts, patched on the planted family's prompts")
    ap.add_argument("--n-confirm", type=int, default=12)
    ap.add_argument("--selections", default="class,diff",
                    help="patching selections, comma-separated: class, diff (the --n-latents "
                         "strongest), class-all (every active intervention-only or changed latent), "
                         "all (every latent active on the family's explore prompts), residual "
                         "(the crosscoder layers' whole residual stream, the ceiling), contrast "
                         "(the --n-latents changed latents whose difference write is most "
                         "specific to the family against the other families)")
    ap.add_argument("--train", default=None, metavar="JSON",
                    help="crosscoder training options (CrosscoderTrainConfig keys) on top of the "
                         "defaults md bench uses (TOY_CROSSCODER on the toy, the command's own "
                         "elsewhere); the crosscoder is the one md bench's pipeline-crosscoder "
                         "trains with the same --dictionary-config, and is shared with it")
    ap.add_argument("--markdown", action="store_true", help="print the tables of OUT/results.json and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads((args.out / "results.json").read_text())))
        return 0

    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.tracers.crosscoder import CrosscoderTracer
    from builtin_plugins.organisms.bench_methods import crosscoder_for, dictionary_settings
    from builtin_plugins.tracers.crosscoder_train import META_FILE

    parts = set(args.parts.split(","))
    unknown = set(args.selections.split(",")) - {"class", "diff", "class-all", "all", "residual", "contrast"}
    if unknown:
        ap.error(f"unknown --selections {sorted(unknown)}; choose from class, diff, class-all, all, residual, contrast")
    args.out.mkdir(parents=True, exist_ok=True)
    train_options = json.loads(args.train) if args.train else {}
    results: dict[str, Any] = {"train": [], "patch": [], "adl": [], "pipeline": []}
    out_file = args.out / "results.json"
    if out_file.exists():
        old = json.loads(out_file.read_text())
        results.update({k: v for k, v in old.items() if k not in parts})
    for k in parts:
        results[k] = []
    for spec in args.specs.split(","):
        built = build_organism(spec, args.cache_dir / "organisms", log=None)
        base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
        if "adl" in parts:  # ADL needs no crosscoder: measured first, before any training
            a = adl_seeds(built, base, inter, args.adl_seeds)
            results["adl"].append(a)
            print(f"[{spec}] ADL hits {a['hits']}/{a['seeds']} {a['interval']} "
                  f"named {[r['named'][0] for r in a['runs']]} ({a['seconds']}s)", flush=True)
            out_file.write_text(json.dumps(results, indent=1, default=str))
        if not parts & {"train", "patch", "pipeline"}:
            continue
        t0 = time.time()
        toy = json.loads((built.root / "spec.json").read_text()).get("base") == "toy"
        settings = dictionary_settings("crosscoder", toy, train_options)
        path, _ = crosscoder_for(base, inter, args.cache_dir / "organisms", settings)
        meta = json.loads((path / META_FILE).read_text())
        if "train" in parts:
            results["train"].append({"organism": spec, "path": str(path), "seconds": meta["seconds"],
                                     "layers": meta["layer_metrics"], "train_config": settings})
            print(f"[{spec}] crosscoder {time.time() - t0:.0f}s: " + json.dumps(
                [{k: m[k] for k in ("layer", "fvu_base", "fvu_intervention", "l0", "class_shares")}
                 for m in meta["layer_metrics"]]), flush=True)
        tracer = CrosscoderTracer({"crosscoder": str(path), "cache_dir": str(args.cache_dir)})
        if "patch" in parts:
            rows = patching(built, base, inter, tracer, args.n_latents, args.control_draws, 0,
                            args.n_confirm, tuple(args.selections.split(",")), args.family_controls)
            results["patch"] += rows
            for r in rows:
                print(f"[{spec}] patch {r['planted']} ({r['selection']}): share {r.get('share')} {r.get('ci')} "
                      f"control {r.get('control_shares')} ({r['n_latents']} latents) {r.get('note', '')}",
                      flush=True)
        if "pipeline" in parts:
            for seed in range(args.pipeline_seeds):
                for name, opts in (("crosscoder", {"crosscoder": str(path), "cache_dir": str(args.cache_dir)}),
                                   ("activation-diff", {})):
                    row = pipeline(built, spec, name, opts, seed, args.cache_dir)
                    results["pipeline"].append(row)
                    print(f"[{spec}] pipeline {name} seed {seed}: recall {row['recall']} precision "
                          f"{row['precision']} recovered {row['recovered']} ({row['wall_s']}s)", flush=True)
        out_file.write_text(json.dumps(results, indent=1, default=str))
    out_file.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
