"""Merge ``bench.json`` files of several ``md bench`` runs (e.g. seed ranges run in parallel
with ``--first-seed``) into one ``bench.json`` / ``bench.md`` with the summary over all
seeds, intervals and plots.

    python benchmarks/organisms-merge.py OUT_DIR RUN_DIR... [--max-seed N] [--exclude RUN_DIR:METHOD]
        [--organism NAME] [--rename RUN_DIR:METHOD=LABEL]

``--exclude`` leaves one method's rows of one run out, e.g. a method that was re-run on newer
code in another run directory (the merged bench.json records every exclusion). ``--organism``
keeps only that organism's rows of a run that holds several (repeatable; default: all).
``--rename`` gives one run's rows of a method another label, e.g. the pipeline run with another
``--pipeline-config`` beside the default one. Rows of one organism from different builds are
refused (``bench_report.check_one_build``).
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
    ap.add_argument("--exclude", action="append", default=[], metavar="RUN_DIR:METHOD",
                    help="leave this run's rows of this method out (repeatable)")
    ap.add_argument("--organism", action="append", default=[], metavar="NAME",
                    help="keep only this organism's rows (repeatable)")
    ap.add_argument("--rename", action="append", default=[], metavar="RUN_DIR:METHOD=LABEL",
                    help="label this run's rows of METHOD as LABEL (repeatable)")
    args = ap.parse_args()
    renames: dict[tuple[str, str], str] = {}
    for item in args.rename:
        left, eq, label = item.partition("=")
        run, sep, method = left.rpartition(":")
        if not eq or not sep or not label or run not in args.runs:
            raise SystemExit(f"--rename {item!r}: expected RUN_DIR:METHOD=LABEL with RUN_DIR one of the runs")
        renames[(run, method)] = label
    excluded: set[tuple[str, str]] = set()
    for item in args.exclude:
        run, sep, method = item.rpartition(":")
        if not sep or run not in args.runs:
            raise SystemExit(f"--exclude {item!r}: expected RUN_DIR:METHOD with RUN_DIR one of the runs")
        excluded.add((run, method))
    rows, configs, seen = [], [], set()
    for run in args.runs:
        data = json.loads((Path(run) / "bench.json").read_text())
        # a merged or re-scored run keeps its own runs' configs under "runs"
        configs.append(data.get("config") or {"runs": data.get("runs")})
        for r in data["rows"]:
            if (run, r["method"]) in excluded or (args.organism and r["organism"] not in args.organism):
                continue
            if (run, r["method"]) in renames:
                r["method"] = renames[(run, r["method"])]
            key = (r["organism"], r["seed"], r["method"])
            if key in seen:
                raise SystemExit(f"{run}: {key} appears in two runs")
            if args.max_seed is not None and r["seed"] >= args.max_seed:
                continue
            seen.add(key)
            (r.get("details") or {}).pop("records", None)  # per-arm records stay in the run dirs
            rows.append(r)
    md = bench_report.write_rows(Path(args.out), rows, {"configs": configs, "runs": args.runs,
                                                       "excluded": sorted(args.exclude),
                                                       "organisms": args.organism,
                                                       "renamed": sorted(args.rename)})
    print(md)


if __name__ == "__main__":
    main()
