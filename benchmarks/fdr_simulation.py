"""FDR and power of every FDR procedure on the SAFFRON paper's Gaussian simulation.

Ramdas, Zrnic, Wainwright & Jordan (2018), section 6: N = 1000 hypotheses, each non-null
with probability pi1; Z_i ~ N(mu_i, 1) with mu_i = 3 for non-nulls and 0 for nulls;
one-sided p_i = 1 - Phi(Z_i). e-LOND receives the likelihood-ratio e-values of the
alternative, e_i = phi(Z_i - 3) / phi(Z_i) = exp(3 Z_i - 4.5). Batch BH/BY decide the whole
list at once (offline reference). Every procedure sees the same streams (common random
numbers); each goes through the md-framework driver, exactly as the pipeline uses it.

    python benchmarks/fdr_simulation.py                   # 200 reps, pi1 = 0.1 0.3 0.5
    python benchmarks/fdr_simulation.py --reps 20 --markdown
    python benchmarks/fdr_simulation.py --pi1 0 --markdown    # null streams: FDR = FWER

Prints a table of mean FDR (false discovery proportion) and power (true discovery
proportion), each with its Monte Carlo standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

ORDER = ["saffron", "addis", "lord++", "lond", "alpha-investing", "e-lond", "bh", "by"]


def simulate_stream(seed: int, pi_index: int, rep: int, n: int, pi1: float, mu: float):
    rng = np.random.default_rng(np.random.SeedSequence([seed, pi_index, rep]))
    nonnull = rng.random(n) < pi1
    z = rng.normal(size=n) + mu * nonnull
    return nonnull, z


def run_cell(args: tuple) -> dict:
    name, pi_index, pi1, reps, n, mu, alpha, seed = args
    from scipy.stats import norm

    from md_framework.drivers import load_driver_class

    cls = load_driver_class("fdr_procedure", name)
    fdps, tdps, times = [], [], []
    for rep in range(reps):
        nonnull, z = simulate_stream(seed, pi_index, rep, n, pi1, mu)
        values = np.exp(mu * z - mu * mu / 2) if cls.input_kind == "e" else norm.sf(z)
        procedure = cls(alpha)
        start = time.perf_counter()
        rejected = np.array([d.rejected for d in procedure.test_many(values.tolist())])
        times.append(time.perf_counter() - start)
        r = int(rejected.sum())
        fdps.append(float((rejected & ~nonnull).sum()) / max(r, 1))
        tdps.append(float((rejected & nonnull).sum()) / max(int(nonnull.sum()), 1))
    return {
        "procedure": name, "pi1": pi1, "reps": reps,
        "fdr": float(np.mean(fdps)), "fdr_se": float(np.std(fdps, ddof=1) / np.sqrt(reps)),
        "power": float(np.mean(tdps)),
        "power_se": float(np.std(tdps, ddof=1) / np.sqrt(reps)),
        "seconds_per_stream": float(np.mean(times)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--mu", type=float, default=3.0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--pi1", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--procedures", nargs="+", default=ORDER)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=str, default=None, help="also write results here")
    parser.add_argument("--cells", type=str, default=None,
                        help="JSON-lines file: finished cells are appended as they complete"
                             " and cells already in it are not run again")
    args = parser.parse_args(argv)

    cells = [
        (name, i, pi1, args.reps, args.n, args.mu, args.alpha, args.seed)
        for name in args.procedures for i, pi1 in enumerate(args.pi1)
    ]
    # the slow cells first so the pool stays busy
    cells.sort(key=lambda c: (c[0] != "alpha-investing", -c[2]))
    results: list[dict] = []
    if args.cells and os.path.exists(args.cells):
        with open(args.cells, encoding="utf-8") as fh:
            done = [json.loads(line) for line in fh if line.strip()]
        key = lambda r: (r["procedure"], r["pi1"], r["reps"])  # noqa: E731
        finished = {key(r) for r in done}
        results = [r for r in done if (r["procedure"], r["pi1"]) in
                   {(c[0], c[2]) for c in cells} and r["reps"] == args.reps]
        cells = [c for c in cells if (c[0], c[2], c[3]) not in finished]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_cell, cell) for cell in cells]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if args.cells:
                with open(args.cells, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")
    wall = time.perf_counter() - start
    results.sort(key=lambda r: (ORDER.index(r["procedure"]) if r["procedure"] in ORDER
                                else 99, r["pi1"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "wall_seconds": wall, "results": results}, fh,
                      indent=2)
    header = ["procedure"] + [f"FDR pi1={p}" for p in args.pi1] + [f"power pi1={p}"
                                                                    for p in args.pi1]
    by_proc: dict[str, dict[float, dict]] = {}
    for r in results:
        by_proc.setdefault(r["procedure"], {})[r["pi1"]] = r
    rows = []
    for name, cells_of in by_proc.items():
        row = [name]
        row += [f"{cells_of[p]['fdr']:.3f} ± {cells_of[p]['fdr_se']:.3f}" for p in args.pi1]
        row += [f"{cells_of[p]['power']:.3f} ± {cells_of[p]['power_se']:.3f}" if p > 0
                else "n/a (no non-nulls)" for p in args.pi1]
        rows.append(row)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"\nN={args.n}, mu={args.mu}, alpha={args.alpha}, reps={args.reps},"
          f" seed={args.seed}; wall time {wall:.0f} s on {args.workers} worker(s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
