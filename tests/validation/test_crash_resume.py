"""Crash test (issue 9): SIGKILL a toy exploration with a ledger at >= 20 seeded points,
resume each time, and compare the final decisions and the ledger with an uninterrupted run.

Children are forked from the test process (no re-import per resume, so it fits CI) and
killed with a real SIGKILL from a ledger fault hook, right before or right after a
row-changing commit. ``benchmarks/crash_resume.py`` runs a larger version with fresh
interpreters and time-based kills.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import traceback

import pytest

import toy
from md_framework.pipeline.ledger import Ledger

TOY = dict(n_hypotheses=5, planted=(1, 3), n_per=24, budget=400)


def _fork_run(run_dir, hook_factory=None, log=None, pair=False) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            commits: list[int] = []
            hook = hook_factory() if hook_factory else _counting_hook(commits)
            result, ledger = toy.run_toy(run_dir, fault_hook=hook, log_path=log, pair=pair, **TOY)
            with open(os.path.join(run_dir, "final.json"), "w") as fh:
                json.dump({"decisions": result.decisions(), "queries": result.queries}, fh)
            with open(os.path.join(run_dir, "commits"), "w") as fh:
                fh.write(str(len(commits)))
            ledger.close()
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _counting_hook(counter):
    def hook(phase):
        if phase == "after_commit":
            counter.append(1)
    return hook


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("pair", [False, True], ids=["measure", "measure_pair"])
def test_sigkill_at_random_points_then_resume_matches_uninterrupted(tmp_path, pair):
    # SIGKILL loses no page cache, so a RAM disk (fast fsync) tests the same thing
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        tmp_path = __import__("pathlib").Path(tempfile.mkdtemp(dir="/dev/shm", prefix="md-crash-"))
    try:
        _crash_test(tmp_path, pair)
    finally:
        if str(tmp_path).startswith("/dev/shm/"):
            shutil.rmtree(tmp_path, ignore_errors=True)


def _crash_test(tmp_path, pair=False):
    toy.run_toy(None, n_hypotheses=1, n_per=4)  # import everything once, before forking
    ref_dir = str(tmp_path / "ref")
    status = _fork_run(ref_dir, pair=pair)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    reference = json.load(open(os.path.join(ref_dir, "final.json")))
    ref_ledger = Ledger(ref_dir, toy_fingerprint(pair))
    ref_contents = ref_ledger.contents()
    total_commits = int(open(os.path.join(ref_dir, "commits")).read())
    ref_decisions = ref_ledger.decisions()
    ref_ledger.close()

    rng = random.Random(20261127)
    run_dir = str(tmp_path / "crashy")
    log = str(tmp_path / "queries.log")
    kills = before_commit_kills = 0
    for _ in range(24):
        after = rng.randint(1, max(2, total_commits // 16))
        phase = rng.choice(["before_commit", "after_commit"])
        status = _fork_run(run_dir, lambda: toy.killer(after, phase), log, pair)
        if os.WIFEXITED(status):  # the run finished before reaching the kill point
            assert os.WEXITSTATUS(status) == 0
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        kills += 1
        before_commit_kills += phase == "before_commit"
        conn = sqlite3.connect(os.path.join(run_dir, "ledger.sqlite"))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        recorded = [tuple(r) for r in conn.execute(
            "SELECT fdr_index, hypothesis_id, value, rejected FROM decisions ORDER BY fdr_index")]
        conn.close()
        expected = [(d.index, d.hypothesis_id, d.value, int(d.rejected)) for d in ref_decisions]
        assert recorded == expected[:len(recorded)]  # decisions so far are the reference's
    assert kills >= 20, kills
    status = _fork_run(run_dir, None, log, pair)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    final = json.load(open(os.path.join(run_dir, "final.json")))
    assert final == reference
    ledger = Ledger(run_dir, toy_fingerprint(pair))
    assert ledger.contents() == ref_contents
    ledger.close()
    # never re-queried what was recorded: a repeat happens only for readings whose
    # transaction a before-commit kill destroyed (at most one batch per such kill)
    lines = open(log).read().splitlines()
    repeats = len(lines) - len(set(lines))
    assert len(set(lines)) == len(ref_contents["queries"])
    if not pair:
        assert repeats <= before_commit_kills * 4, (repeats, before_commit_kills)
    else:  # a pair's two sides are two commits: a kill between them re-measures the pair
        assert repeats <= kills * 2 * 4, (repeats, kills)


def toy_fingerprint(pair=False):
    fingerprint = {"seed": 0, "toy": [TOY["n_hypotheses"], list(TOY["planted"]), 2.0,
                                      TOY["n_per"], TOY["budget"], "betting-e", "saffron"]}
    if pair:
        fingerprint["pair"] = True
    return fingerprint
