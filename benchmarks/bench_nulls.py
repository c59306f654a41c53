"""Null organisms through ``md bench``: per organism × method, the runs (seeds) with at
least one discovery with its exact Clopper–Pearson
95 % interval (Clopper & Pearson 1934: the α/2 and 1 − α/2 quantiles of Beta(k, n − k + 1)
and Beta(k + 1, n − k)) and the Wilson score upper bound (Wilson 1927:
(p̂ + z²/2n + z·sqrt(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n), z = 1.96), and, for the pipeline, how many hypotheses reached the validator
(``decisions``; a null run that decides nothing tests only that nothing upstream invents a
change) and why the others were not validated.

"Any discovery" counts every discovery (the scorer's ``any_discovery``); "false discovery"
counts only those the scorer judged false against the organism's measured real units
(``any_false``). On a pair with no real unit (toy-identical) the two are the same; toy-null's
fine-tune has one measured real unit (arithmetic target_logprob decrease), and a discovery
of it is true. The table is markdown.

    python benchmarks/bench_nulls.py RUN_DIR...
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def wilson_upper(k: int, n: int, z: float = 1.959964) -> float:
    """Upper end of the Wilson score interval for k successes in n trials (Wilson 1927)."""
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (centre + half) / (1 + z * z / n)


def _ranges(seeds: list[int]) -> str:
    out, start = [], seeds[0]
    for a, b in zip(seeds, seeds[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}–{a}" if a != start else f"{a}")
            start = b
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in args.runs:
        for r in json.loads((Path(run) / "bench.json").read_text())["rows"]:
            if r.get("status") == "ok":
                groups.setdefault((r["organism"], r["method"]), []).append(r)
    print("| organism | method | runs (seeds) | runs with ≥ 1 discovery | share | Wilson 95 % upper "
          "| Clopper–Pearson 95 % | runs with a false discovery (Clopper–Pearson 95 %) "
          "| decisions (total; runs with ≥ 1) | not validated: reasons | hypotheses proposed (mean) "
          "| tokens (mean) | wall s (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (org, method), rs in sorted(groups.items()):
        seeds = sorted(r["seed"] for r in rs)
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"{org} {method}: a seed appears twice")
        n, k = len(rs), sum(bool(r.get("any_discovery")) for r in rs)
        lo, hi = clopper_pearson(k, n)
        k_false = sum(bool(r.get("any_false")) for r in rs)
        f_lo, f_hi = clopper_pearson(k_false, n)
        det = [r.get("details") or {} for r in rs]
        if method not in ("pipeline", "pipeline-internal", "pipeline-output"):
            # a baseline decides every arm it tests: its records (bandit: confirmed arms)
            dec = [len(d.get("records") or []) for d in det]
            decisions = f"{sum(dec)}; {sum(x > 0 for x in dec)}/{n}"
            why = "—"
        elif all("decisions" in d for d in det):
            dec = [d["decisions"] for d in det]
            decisions = f"{sum(dec)}; {sum(x > 0 for x in dec)}/{n}"
            reasons = Counter(x for d in det for x in d.get("not_validated_reasons", []))
            why = ", ".join(f"{c} {r}" for r, c in reasons.most_common()) or "—"
        else:
            decisions, why = "not recorded", "—"
        hyp = [len(d["hypotheses"]) for d in det if "hypotheses" in d]
        hyp_s = f"{sum(hyp) / len(hyp):.1f}" if hyp else "—"
        seed_s = f"{n} ({_ranges(seeds)})"
        print(f"| {org} | {method} | {seed_s} | {k} | {k / n:.3f} | {wilson_upper(k, n):.3f} "
              f"| [{lo:.3f}, {hi:.3f}] | {k_false} [{f_lo:.3f}, {f_hi:.3f}] | {decisions} "
              f"| {why} | {hyp_s} | {sum(r['tokens'] for r in rs) / n:,.0f} "
              f"| {sum(r['wall_s'] for r in rs) / n:.1f} |")


if __name__ == "__main__":
    main()
