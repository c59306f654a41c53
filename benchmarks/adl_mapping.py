"""ADL mapping rules on the toy organisms, development and holdout sets kept apart (issue 18).

For every organism, seed and rule: the activation-difference lens
(:func:`builtin_plugins.adl.lens.activation_difference_lens`, ≤ 32 generic prompts) mapped
onto the seed's explore split (half of each family's universe prompts; seed 0–9 draw both
the generic prompts and the split, as in ``benchmarks/crosscoder_adl.py``). A hit when the
top named family is planted. Records the planted family's rank, the named family (what
the lens names on toy-null, where nothing is planted), the z of the named family and the
cost. Protocol (dev set, freezing rule, holdout run once): benchmarks/README.md, section
"ADL mapping rules from the literature".

    python benchmarks/adl_mapping.py --cache-dir /work/cache/tests --set dev --out benchmarks/adl-mapping/dev.json
    python benchmarks/adl_mapping.py --cache-dir /work/cache/tests --set holdout --out benchmarks/adl-mapping/holdout.json
    python benchmarks/adl_mapping.py --markdown benchmarks/adl-mapping/dev.json
    # SmolLM2 organisms (built elsewhere; the script never builds what it does not find)
    python benchmarks/adl_mapping.py --cache-dir /work/cache/bench \
        --specs examples/organisms/smollm2-safety.yaml --out benchmarks/adl-mapping/smollm2-safety.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from crosscoder_adl import wilson  # noqa: E402

SETS = {
    "dev": ["toy-safety", "toy-style", "toy-null"],
    "holdout": ["toy-knowledge", "toy-midfact", "toy-unlearn", "toy-multi", "toy-scale-12"],
}
#: name -> ActivationDifferenceLensConfig options (besides enabled=True)
RULES: dict[str, dict[str, Any]] = {
    "projection (default)": {},
    "steering s=2": {"mapping": "steering", "mapping_strength": 2.0},
    "steering s=4": {"mapping": "steering", "mapping_strength": 4.0},
    "steering-control s=1": {"mapping": "steering-control", "mapping_strength": 1.0},
    "steering-control s=2": {"mapping": "steering-control", "mapping_strength": 2.0},
}


def run(spec: str, rule: dict[str, Any], seeds: int, cache: Path) -> dict[str, Any]:
    from md_framework.config import ActivationDifferenceLensConfig

    from builtin_plugins.adl.lens import activation_difference_lens
    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.organisms.build import find_built

    built = find_built(spec, cache / "organisms")
    if built is None and not spec.startswith("toy"):
        raise SystemExit(f"{spec} is not built under {cache / 'organisms'}; build it with md organism build")
    built = built or build_organism(spec, cache / "organisms", log=None)
    base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
    planted = sorted({p["family"] for p in built.ground_truth()["planted"]})
    runs = []
    t0 = time.time()
    for s in range(seeds):
        explore, _ = split_universe(built.universe, 0.5, s)
        res = activation_difference_lens(
            base, inter, explore, ActivationDifferenceLensConfig(enabled=True, steer_prompts=0, **rule), seed=s)
        ranked = sorted(res.family_scores, key=lambda f: -res.family_scores[f])
        runs.append({"seed": s, "named": res.named_families, "top": ranked[0],
                     "hit": bool(planted) and ranked[0] in planted,
                     "z_top": res.family_scores[ranked[0]],
                     "planted_rank": min((ranked.index(f) + 1 for f in planted), default=None),
                     "families": len(ranked), "cost": res.cost})
    hits = sum(r["hit"] for r in runs)
    return {"organism": built.name, "planted": planted, "rule": rule, "seeds": seeds, "hits": hits,
            "interval": wilson(hits, seeds) if planted else None,
            "seconds": round(time.time() - t0, 1), "runs": runs}


def markdown(results: dict[str, Any]) -> str:
    out = ["| rule | organism | planted | hits / seeds | Wilson 95 % | planted rank, median (min–max) of N | "
           "top family named (count) | forward passes / run |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in results["rules"].items():
        for r in rows:
            ranks = [x["planted_rank"] for x in r["runs"] if x["planted_rank"] is not None]
            rank = (f"{statistics.median(ranks):g} ({min(ranks)}–{max(ranks)}) of {r['runs'][0]['families']}"
                    if ranks else "–")
            named = ", ".join(f"{f} x{n}" for f, n in Counter(x["top"] for x in r["runs"]).most_common(3))
            hits = f"{r['hits']}/{r['seeds']}" if r["planted"] else "– (null)"
            ci = f"{r['interval'][0]:.2f}–{r['interval'][1]:.2f}" if r["interval"] else "–"
            passes = statistics.median(x["cost"]["forward_passes"] for x in r["runs"])
            out.append(f"| {name} | {r['organism']} | {', '.join(r['planted']) or '–'} | {hits} | {ci} | "
                       f"{rank} | {named} | {passes:g} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), default="dev")
    ap.add_argument("--specs", default=None, help="comma-separated organisms instead of --set")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated names from RULES")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--cache-dir", type=Path, default=Path(".md-cache"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="print the table of a results JSON")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    import torch

    torch.set_num_threads(1)
    specs = args.specs.split(",") if args.specs else SETS[args.set]
    names = args.rules.split(",")
    unknown = [n for n in names if n not in RULES]
    if unknown:
        ap.error(f"unknown rules {unknown}; known: {sorted(RULES)}")
    results: dict[str, Any] = {"set": args.set if not args.specs else "custom", "specs": specs,
                               "seeds": args.seeds, "torch_threads": 1, "rules": {}}
    for name in names:
        for spec in specs:
            r = run(spec, RULES[name], args.seeds, args.cache_dir)
            results["rules"].setdefault(name, []).append(r)
            print(f"[{name}] {spec}: hits {r['hits']}/{r['seeds']}, top "
                  f"{Counter(x['top'] for x in r['runs']).most_common(2)}, {r['seconds']} s", flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
