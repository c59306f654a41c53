"""Larger crash/resume benchmark (issue 9): fresh interpreters, SIGKILL at seeded points.

Half the kills come from the ledger fault hook (exact points before/after a commit), half
are time-based (SIGKILL from outside after a random delay, wherever the process is).
After every kill the ledger's integrity is checked and the run resumed; at the end the
decisions and ledger contents are compared with an uninterrupted run.

    python benchmarks/crash_resume.py --kills 40 --n-hypotheses 12 --n-per 40 --budget 1200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "tests" / "validation" / "toy.py"


def run(run_dir, args, extra=(), kill_after_s=None):
    cmd = [sys.executable, str(TOY), str(run_dir), "--n-hypotheses", str(args.n_hypotheses),
           "--n-per", str(args.n_per), "--budget", str(args.budget), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after_s is not None:
        try:
            out, err = proc.communicate(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
    else:
        out, err = proc.communicate()
    return proc.returncode, out, err


def ledger_ok(path):
    conn = sqlite3.connect(path / "ledger.sqlite")
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=40)
    p.add_argument("--n-hypotheses", type=int, default=12)
    p.add_argument("--n-per", type=int, default=40)
    p.add_argument("--budget", type=int, default=1200)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="md-crash-bench-"))
    t0 = time.time()
    code, out, err = run(tmp / "ref", args)
    assert code == 0, err
    ref_time = time.time() - t0
    reference = json.loads(out)
    sys.path.insert(0, str(ROOT))
    from md_framework.pipeline.ledger import Ledger

    fp = {"seed": 0, "toy": [args.n_hypotheses, [1, 4, 7], 2.0, args.n_per, args.budget,
                             "betting-e", "saffron"]}
    ref_contents = Ledger(tmp / "ref", fp).contents()
    crash_dir = tmp / "crashy"
    kills = hook_kills = timed_kills = finished_early = 0
    t0 = time.time()
    while kills < args.kills:
        if rng.random() < 0.5:
            extra = ["--crash-after", str(rng.randint(1, 25)),
                     "--crash-phase", rng.choice(["before_commit", "after_commit"])]
            code, out, err = run(crash_dir, args, extra)
            hook_kills += code == -signal.SIGKILL
        else:
            code, out, err = run(crash_dir, args, (), kill_after_s=rng.uniform(0.5, 4.0))
            timed_kills += code == -signal.SIGKILL
        if code == 0:
            finished_early += 1
            continue
        assert code == -signal.SIGKILL, (code, err[-2000:])
        kills += 1
        assert ledger_ok(crash_dir), "ledger corrupt after SIGKILL"
    code, out, err = run(crash_dir, args)
    assert code == 0, err
    final = json.loads(out)
    crash_time = time.time() - t0
    same_decisions = final["decisions"] == reference["decisions"]
    same_ledger = Ledger(crash_dir, fp).contents() == ref_contents
    summary = {
        "hypotheses": args.n_hypotheses, "n_per": args.n_per, "budget": args.budget,
        "kills": kills, "fault_hook_kills": hook_kills, "timed_kills": timed_kills,
        "runs_that_finished_before_their_kill": finished_early,
        "same_decisions": same_decisions, "same_ledger_contents": same_ledger,
        "queries": final["queries"], "validated": sorted(k for k, v in final["decisions"].items() if v),
        "uninterrupted_s": round(ref_time, 1), "crash_and_resume_total_s": round(crash_time, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0 if same_decisions and same_ledger else 1


if __name__ == "__main__":
    sys.exit(main())
