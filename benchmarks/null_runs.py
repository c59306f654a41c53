"""Null runs through the full pipeline: how often does ``md analyze`` claim anything when
nothing changed?

Two nulls, each run for ``--seeds`` seeds (the config's ``seed`` varies; everything else is
examples/configs/demo-activation-diff-null.yaml):

* ``toy-null``: the null organism pair (the intervention fine-tuned on the base model's own
  answers: weights differ, nothing planted);
* ``identical``: toy-multi's base model paired with itself (``toy-multi#base`` twice).

For every run the script records the validated results and the distinct discovery units
(families|metric|direction); the summary is the share of runs with any discovery with its
Wilson 95 % interval (Wilson 1927). Several workers may share one ``--out`` (e.g. with
different ``--first-seed``): each skips runs another has recorded. ``--demo`` additionally runs examples/configs/demo.yaml
and checks that each planted family of toy-multi is validated on its own family's held-out
prompts only. Results go to ``--out`` as JSON lines (one per run; an interrupted loop
resumes where it stopped) and a markdown summary is printed.

    nice -n 10 python benchmarks/null_runs.py --seeds 50 --out benchmarks/null-runs \\
        --cache-dir /work/cache/tests/organisms --threads 1 --demo
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NULL_CONFIG = ROOT / "examples" / "configs" / "demo-activation-diff-null.yaml"
DEMO_CONFIG = ROOT / "examples" / "configs" / "demo.yaml"
PLANTED = {"harmful_hacking", "greetings", "telephone_fact"}  # toy-multi's spec (scoring only)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _config(kind: str, seed: int, cache_dir: str, threads: int):
    from md_framework.config import AnalysisConfig, load_config

    data = load_config(DEMO_CONFIG if kind == "demo" else NULL_CONFIG).model_dump(mode="json")
    data.update(seed=seed, cache_dir=cache_dir, threads=threads)
    if kind == "identical":
        data.update(base_model={"source": "organism:toy-multi#base"},
                    intervention_model={"source": "organism:toy-multi#base"})
        data["universe"]["organism"] = "toy-multi"
    return AnalysisConfig.model_validate(data)


def run_one(kind: str, seed: int, run_root: Path, cache_dir: str, threads: int) -> dict:
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    run_dir = run_root / f"{kind}-{seed}"
    started = time.perf_counter()
    analyzer = MechanisticBehavioralAnalyzer(_config(kind, seed, cache_dir, threads),
                                             run_dir=run_dir)
    report = analyzer.analyze()
    pool = analyzer._causal_inputs[1]
    validated = []
    for r in report.validation_results:
        if not r.decision:
            continue
        tests = pool.tests_for(r.hypothesis)
        validated.append({
            "id": r.hypothesis.id, "unit": r.unit, "families": r.hypothesis.families,
            "p": r.p_value, "effect": r.effect_size.estimate if r.effect_size else None,
            "own_family_prompts_only": all(
                c.family in r.hypothesis.families and c.metadata.get("evidence") == "family"
                for c in tests) if r.hypothesis.families else False,
        })
    reasons: dict[str, int] = {}
    for r in report.validation_results:
        if r.reason:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return {
        "kind": kind, "seed": seed, "decided": len(report.validation_results),
        "validated": validated, "discoveries": report.discoveries(), "reasons": reasons,
        "behaviour_queries": report.costs.behaviour_queries,
        "selection_forward_passes": report.costs.selection_forward_passes,
        "traced_prompts": report.costs.traced_prompts,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def summarise(rows: list[dict]) -> str:
    rows = list({(r["kind"], r["seed"]): r for r in rows}.values())  # one row per run
    lines = ["| null | runs | runs with any discovery | share | Wilson 95 % interval |",
             "|---|---|---|---|---|"]
    for kind in ("toy-null", "identical"):
        sub = [r for r in rows if r["kind"] == kind]
        if not sub:
            continue
        k = sum(1 for r in sub if r["discoveries"] > 0)
        lo, hi = wilson(k, len(sub))
        lines.append(f"| {kind} | {len(sub)} | {k} | {k / len(sub):.3f} | [{lo:.3f}, {hi:.3f}] |")
    lines.append("")
    for kind in ("toy-null", "identical"):
        sub = [r for r in rows if r["kind"] == kind]
        if not sub:
            continue
        reasons: dict[str, int] = {}
        for r in sub:
            for why, count in r["reasons"].items():
                reasons[why] = reasons.get(why, 0) + count
        lines.append(f"{kind}: {sum(r['decided'] for r in sub)} decisions in {len(sub)} runs;"
                     f" not validated because: {reasons or 'n/a'}; mean behaviour queries"
                     f" {sum(r['behaviour_queries'] for r in sub) / len(sub):.0f}, mean"
                     f" test-selection passes {sum(r['selection_forward_passes'] for r in sub) / len(sub):.0f},"
                     f" mean wall {sum(r['wall_s'] for r in sub) / len(sub):.0f} s")
    lines.append("")
    lines.append("| null | runs | runs with any discovery | share | Wilson 95 % interval |")
    lines.append("|---|---|---|---|---|")
    nulls = [r for r in rows if r["kind"] in ("toy-null", "identical")]
    if nulls:
        k = sum(1 for r in nulls if r["discoveries"] > 0)
        lo, hi = wilson(k, len(nulls))
        lines.append(f"| both | {len(nulls)} | {k} | {k / len(nulls):.3f} | [{lo:.3f}, {hi:.3f}] |")
    for r in rows:
        if r["kind"] == "demo":
            got = {f for v in r["validated"] for f in v["families"]}
            own = all(v["own_family_prompts_only"] for v in r["validated"])
            lines.append("")
            lines.append(f"demo (seed {r['seed']}): planted families validated:"
                         f" {sorted(PLANTED & got)} of {sorted(PLANTED)}; other validated"
                         f" families: {sorted(got - PLANTED) or 'none'}; every validated"
                         f" result tested on its own families' held-out prompts only: {own};"
                         f" discoveries {r['discoveries']}, queries {r['behaviour_queries']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--kinds", default="toy-null,identical")
    parser.add_argument("--demo", action="store_true", help="also run the demo (seed 0)")
    parser.add_argument("--out", default="benchmarks/null-runs")
    parser.add_argument("--run-root", default="/tmp/md-null-runs",
                        help="where each run's directory (ledger, report) goes")
    parser.add_argument("--cache-dir", default=".md-cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summarise", nargs="+", metavar="RUNS_JSONL",
                        help="only print the summary of these runs.jsonl files")
    args = parser.parse_args(argv)
    if args.summarise:
        rows = [json.loads(line) for f in args.summarise for line in Path(f).read_text().splitlines()]
        print(summarise(rows))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["kind"], r["seed"]) for r in rows}
    jobs = [("demo", 0)] if args.demo else []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # interleave the two nulls so that a loop cut short still has both
    jobs += [(kind, s) for s in seeds for kind in args.kinds.split(",")]
    for i, (kind, seed) in enumerate(jobs):
        if path.exists():  # another worker on the same --out may have run it meanwhile
            done |= {(r["kind"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}
        if (kind, seed) in done:
            continue
        row = run_one(kind, seed, Path(args.run_root), args.cache_dir, args.threads)
        rows.append(row)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"[{i + 1}/{len(jobs)}] {kind} seed {seed}: {row['discoveries']} discoveries"
              f" ({row['wall_s']} s)", file=sys.stderr, flush=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
