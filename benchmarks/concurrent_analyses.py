"""N ``md analyze`` runs started together on one cold artefact cache (issue 19).

Each run is a separate process (``python -m md_framework analyze CONFIG --out DIR``, its
own run directory) and all share a fresh cache root, so they race for every graph key.
The child processes log every traced (model, tracer, prompt, family) key to a JSON-lines
file (the ``trace_task`` of :mod:`md_framework.tracing` is wrapped, nothing else
changes); the script reports how often each key was traced, the wall time of the N runs
and, with ``--baseline``, of one run alone on another cold cache, and whether all runs
reached the same decisions.

    python benchmarks/concurrent_analyses.py examples/configs/demo.yaml \\
        --root /work/cache/faults-bench --n 4 --baseline --organisms /work/cache/tests/organisms

``--organisms`` links an existing organism cache into each fresh root, so only graphs
(and weights-hash memos) start cold; without it the organisms are built too (once: the
builders of one organism wait for the first).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys
import md_framework.tracing as tracing
log = open(os.environ["MD_BENCH_TRACE_LOG"], "a")
real = tracing.trace_task
def logged(task):
    out = real(task)
    for prompt, family in zip(task.prompts, task.families):
        log.write(json.dumps([out.model_id, tracing.graph_cache_key(out.model_id, "", prompt, family)]) + "\n")
    log.flush()
    return out
tracing.trace_task = logged
sys.argv = ["md", *sys.argv[1:]]
from md_framework.cli import main
sys.exit(main())
"""


def _fresh_root(root: Path, organisms: Path | None) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if organisms is not None:
        (root / "organisms").symlink_to(organisms.resolve(), target_is_directory=True)
    return root


def _config(base: Path, cache: Path, out: Path) -> Path:
    data = yaml.safe_load(base.read_text())
    data.update(cache_dir=str(cache), threads=1)
    out.write_text(yaml.safe_dump(data))
    return out


def run_batch(config: Path, cache: Path, n: int, work: Path) -> dict:
    if work.exists():  # old run directories would be refused (--out on an existing run)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cfg = _config(config, cache, work / "config.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", MD_DISABLE_PLUGIN_AUTOLOAD="1",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    procs, logs = [], []
    started = time.perf_counter()
    for i in range(n):
        log = work / f"traced-{i}.jsonl"
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CHILD, "analyze", str(cfg), "--out", str(work / f"run-{i}")],
            env={**env, "MD_BENCH_TRACE_LOG": str(log)}, stdout=subprocess.DEVNULL,
            stderr=open(work / f"stderr-{i}.txt", "w")))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - started
    per_key: collections.Counter = collections.Counter()
    per_run = []
    for log in logs:
        keys = [tuple(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []
        per_run.append(len(keys))
        per_key.update(keys)
    decisions = []
    for i in range(n):
        report = work / f"run-{i}" / "report.json"
        if report.exists():
            data = json.loads(report.read_text())
            decisions.append([(r["hypothesis"]["id"], r["decision"]) for r in data["validation_results"]])
    return {
        "runs": n, "exit_codes": codes, "wall_s": round(wall, 1),
        "distinct_keys": len(per_key), "traces": sum(per_key.values()),
        "max_traces_per_key": max(per_key.values(), default=0),
        "traces_per_run": per_run,
        "same_decisions": len({json.dumps(d) for d in decisions}) == 1 and len(decisions) == n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--root", type=Path, required=True, help="scratch folder (emptied)")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--baseline", action="store_true", help="also one run alone, cold")
    parser.add_argument("--organisms", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    if args.baseline:
        cache = _fresh_root(args.root / "cache-1", args.organisms)
        results["one"] = run_batch(args.config, cache, 1, args.root / "work-1")
    cache = _fresh_root(args.root / f"cache-{args.n}", args.organisms)
    results[f"{args.n}_together"] = run_batch(args.config, cache, args.n, args.root / f"work-{args.n}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
