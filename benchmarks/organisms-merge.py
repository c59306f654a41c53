"""Merge ``bench.json`` files of several ``md bench`` runs (e.g. seed ranges run in parallel
with ``--first-seed``) into one ``bench.json`` / ``bench.md`` with the summary over all
seeds, intervals and plots.

    python benchmarks/organisms-merge.py OUT_DIR RUN_DIR... [--max-seed N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from builtin_plugins.organisms import bench_report

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--max-seed", type=int, default=None,
                    help="keep seeds below this (a fixed seed range, not the finished ones)")
    args = ap.parse_args()
    rows, configs, seen = [], [], set()
    for run in args.runs:
        data = json.loads((Path(run) / "bench.json").read_text())
        configs.append(data["config"])
        for r in data["rows"]:
            key = (r["organism"], r["seed"], r["method"])
            if key in seen:
                raise SystemExit(f"{run}: {key} appears in two runs")
            if args.max_seed is not None and r["seed"] >= args.max_seed:
                continue
            seen.add(key)
            (r.get("details") or {}).pop("records", None)  # per-arm records stay in the run dirs
            rows.append(r)
    md = bench_report.write_rows(Path(args.out), rows, {"configs": configs, "runs": args.runs})
    print(md)


if __name__ == "__main__":
    main()
