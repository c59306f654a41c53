"""One writer per run directory; ``--out``/``--resume`` refuse what they cannot honour;
ledger faults (full disk, read-only, damaged pages, a second writer) are one clear error
and leave the run resumable (issue 19, findings 2 and 3)."""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import faultfs
import pytest
from reliability_helpers import assert_one_clear_error

from md_framework.errors import MDError
from md_framework.pipeline.ledger import Ledger, LedgerMismatchError
from md_framework.run_dir import RUN_LOCK_FILENAME, RunDirBusyError, RunDirError, open_run_dir
from md_framework.storage_errors import DamagedFileError, StorageError

# models that do not exist: every check below must fire before any model loads
CONFIG = """\
base_model: /no/such/base-model
intervention_model: /no/such/intervention-model
universe:
  families:
    greetings: [hello there, good morning, hi friend]
    farewells: [goodbye now, see you, take care]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


def _ledger_run(run_dir: Path) -> None:
    """A run directory holding a started run (the fingerprint of CONFIG, seed 0)."""
    from md_framework.config import load_config
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    analyzer = MechanisticBehavioralAnalyzer(load_config(run_dir.parent / "c.yaml"), run_dir=run_dir)
    with Ledger(run_dir, analyzer._fingerprint()) as ledger:
        ledger.log_event("started", {})


# ------------------------------------------------------------------- one writer


def test_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = open_run_dir(tmp_path / "run", resume=False)
    try:
        with pytest.raises(RunDirBusyError) as info:
            open_run_dir(tmp_path / "run", resume=False)
        message = str(info.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert "another md process is writing this run directory" in message
    finally:
        first.release()
    open_run_dir(tmp_path / "run", resume=False).release()  # free again once released


HOLDER = """
import sys, time
from md_framework.run_dir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_md_analyze_into_a_busy_run_directory_is_one_clear_error(md, config: Path,
                                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = md("analyze", str(config), "--out", str(run))
        error = assert_one_clear_error(result, f"{run}: another md process is writing this run"
                                               f" directory: pid {holder.pid} on")
        assert "choose another --out directory" in error
        assert not (run / "ledger.sqlite").exists()  # the second writer wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    open_run_dir(run, resume=False).release()  # a dead holder never blocks a run
    assert (run / RUN_LOCK_FILENAME).exists()


# ------------------------------------------------------------------- --out / --resume


def test_out_on_an_existing_run_refuses_unless_resume(md, config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _ledger_run(run)
    before = (run / "ledger.sqlite").read_bytes()
    result = md("analyze", str(config), "--out", str(run))
    assert_one_clear_error(result, f"{run}: already holds a run", f"--resume {run}")
    assert (run / "ledger.sqlite").read_bytes() == before


def test_out_on_an_empty_or_new_directory_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    open_run_dir(tmp_path / "empty", resume=False).release()
    open_run_dir(tmp_path / "new" / "run", resume=False).release()


@pytest.mark.parametrize("case", ["missing", "empty", "zero-byte"])
def test_resume_without_a_run_refuses(md, config: Path, tmp_path: Path, case: str) -> None:
    run = tmp_path / "run"
    expected = {"missing": f"{run}: no run to resume: the directory does not exist",
                "empty": f"{run}: no run to resume: there is no ledger.sqlite in it",
                "zero-byte": f"{run / 'ledger.sqlite'}: no run to resume: the ledger is empty (0 bytes)"}
    if case != "missing":
        run.mkdir()
    if case == "zero-byte":
        (run / "ledger.sqlite").write_bytes(b"")
    result = md("analyze", str(config), "--resume", str(run))
    assert_one_clear_error(result, expected[case])
    assert not (run / "ledger.sqlite").exists() or (run / "ledger.sqlite").stat().st_size == 0


def _damage_pages(ledger: Path) -> None:
    """Overwrite the middle of the file (table pages, not the header) with junk."""
    data = bytearray(ledger.read_bytes())
    assert len(data) >= 3 * 4096
    for i in range(4096 + 16, len(data) - 64, 97):
        data[i] = (data[i] + 0x5A) % 256
    ledger.write_bytes(bytes(data))


def _filled_ledger(run: Path) -> None:
    from toy import run_toy

    _, ledger = run_toy(run, seed=3, n_hypotheses=4, n_per=12, budget=200)
    ledger.close()
    with sqlite3.connect(run / "ledger.sqlite") as conn:  # fold the WAL into the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_damaged_ledger_is_refused_before_any_model_loads(md, config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _filled_ledger(run)
    _damage_pages(run / "ledger.sqlite")
    result = md("analyze", str(config), "--resume", str(run))
    error = assert_one_clear_error(result, f"{run / 'ledger.sqlite'}: damaged")
    # the config's models do not exist: had any loaded first, the error would name them
    assert "cannot be resumed" in error and "/no/such" not in error


def test_ledger_of_another_config_is_refused_before_any_model_loads(md, config: Path,
                                                                    tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Ledger(run, {"seed": 99}):
        pass
    result = md("analyze", str(config), "--resume", str(run))
    assert_one_clear_error(result, f"{run / 'ledger.sqlite'}: belongs to another run")


def test_damaged_ledger_opened_directly_is_a_damaged_file_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _filled_ledger(run)
    _damage_pages(run / "ledger.sqlite")
    with pytest.raises(DamagedFileError, match="damaged ledger"):
        Ledger(run, {"seed": 3})
    (run / "ledger.sqlite").write_bytes(b"this is not a database at all, not even close" * 200)
    with pytest.raises(DamagedFileError) as info:
        Ledger(run, {"seed": 3})
    assert str(info.value).startswith(f"{run / 'ledger.sqlite'}: damaged database")


def test_resume_with_a_ledger_fingerprint_mismatch_is_refused_early(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Ledger(run, {"seed": 1}):
        pass
    with pytest.raises(LedgerMismatchError):
        open_run_dir(run, resume=True, fingerprint={"seed": 2})
    open_run_dir(run, resume=True, fingerprint={"seed": 1}).release()


# ------------------------------------------------------------------- ledger faults


def _decisions(result) -> list:
    return result.decisions()


def test_full_disk_under_the_ledger_is_one_clear_error_and_resumes(tmp_path: Path) -> None:
    from toy import run_toy

    reference, _ = run_toy(None, seed=5, n_hypotheses=6, n_per=20, budget=500)
    run = tmp_path / "run"
    run.mkdir()
    faultfs.install(run, errno.ENOSPC, sqlite_pages=24)
    try:
        with pytest.raises(StorageError) as info:
            run_toy(run, seed=5, n_hypotheses=6, n_per=20, budget=500)
    finally:
        faultfs.uninstall()
    message = str(info.value)
    assert message.startswith(f"{run / 'ledger.sqlite'}: no space left on device")
    assert "cannot rollback" not in message and f"--resume {run}" in message
    assert "Free space" in message
    with sqlite3.connect(run / "ledger.sqlite") as conn:  # what was committed is intact
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        committed = conn.execute("SELECT count(*) FROM queries").fetchone()[0]
    assert committed > 0
    resumed, ledger = run_toy(run, seed=5, n_hypotheses=6, n_per=20, budget=500)
    ledger.close()
    assert ledger.resumed
    assert _decisions(resumed) == _decisions(reference)
    assert resumed.queries == reference.queries


def test_read_only_ledger_is_one_clear_error(tmp_path: Path) -> None:
    from toy import run_toy

    run = tmp_path / "run"
    with Ledger(run, {"seed": 0, "toy": [4, [1], 2.0, 12, 200, "betting-e", "saffron"]}):
        pass
    faultfs.install(run, errno.EROFS)
    try:
        with pytest.raises(StorageError) as info:
            run_toy(run, seed=0, n_hypotheses=4, planted=(1,), n_per=12, budget=200)
    finally:
        faultfs.uninstall()
    message = str(info.value)
    assert message.startswith(f"{run / 'ledger.sqlite'}: read-only")
    assert "Traceback" not in message and f"--resume {run}" in message


def test_read_only_out_directory_is_one_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    faultfs.install(tmp_path, errno.EROFS)
    try:
        with pytest.raises(StorageError) as info:
            open_run_dir(run, resume=False)
    finally:
        faultfs.uninstall()
    assert str(info.value) == (f"{run}: read-only file system. Choose another --out directory"
                               " or make this one writable")


def test_a_second_ledger_writer_is_an_md_error_not_an_integrity_traceback(tmp_path: Path) -> None:
    from md_framework.types import DecisionRecord, ValidationResult

    run = tmp_path / "run"
    a, b = Ledger(run, {"seed": 0}), Ledger(run, {"seed": 0})
    try:
        from toy import hypotheses

        h1, h2 = hypotheses(2)
        record = DecisionRecord(index=1, hypothesis_id=h1.id, value=0.5, value_kind="p",
                                level=0.05, rejected=False)
        a.record_decision(record, ValidationResult(hypothesis=h1, decision=False, test_name="t", n=1), {})
        clash = record.model_copy(update={"hypothesis_id": h2.id})
        with pytest.raises(MDError, match="another writer changed this ledger"):
            b.record_decision(clash, ValidationResult(hypothesis=h2, decision=False, test_name="t", n=1), {})
    finally:
        a.close()
        b.close()


def test_run_dir_errors_are_storage_errors_with_one_line() -> None:
    error = RunDirError(Path("/x"), "no run to resume: the directory does not exist", "Check it")
    assert str(error) == "/x: no run to resume: the directory does not exist. Check it"
    assert "\n" not in str(error)


def test_a_ledger_is_keyed_by_the_models_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Ledger(run, {"seed": 0}) as ledger:
        ledger.bind_models(base="sha256:aaa", intervention="sha256:bbb")
    with Ledger(run, {"seed": 0}) as ledger:  # same weights: resumes
        ledger.bind_models(base="sha256:aaa", intervention="sha256:bbb")
    with Ledger(run, {"seed": 0}) as ledger:  # changed weights: its readings are not reused
        with pytest.raises(LedgerMismatchError, match="the weights changed since the run started"):
            ledger.bind_models(base="sha256:aaa", intervention="sha256:ccc")


# ------------------------------------------------------------------- md analyze's next step


def _storage_fault(exc, run: Path) -> str:
    from builtin_plugins.analysis_commands import storage_fault

    return str(storage_fault(exc, run, f"md analyze c.yaml --resume {run}"))


def test_md_analyze_advice_names_the_resume_command_once_a_run_exists(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Ledger(run, {"seed": 0}):
        pass
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "report.json"))
    assert _storage_fault(full, run) == (
        f"{run / 'report.json'}: no space left on device. Free space, then continue with:"
        f" md analyze c.yaml --resume {run} (every query and decision committed so far is kept)")
    ledger_full = sqlite3.OperationalError("database or disk is full")
    assert _storage_fault(ledger_full, run).startswith(
        f"{run / 'ledger.sqlite'}: no space left on device (database or disk is full). Free space,"
        f" then continue with: md analyze c.yaml --resume {run}")


def test_md_analyze_advice_before_the_ledger_exists_is_to_run_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cache_full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache"))
    assert _storage_fault(cache_full, run) == (
        f"{tmp_path / 'cache'}: no space left on device. Free space, then run the same command again")


def test_md_analyze_advice_for_a_read_only_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    read_only = OSError(errno.EROFS, "Read-only file system", str(run / "graphs"))
    assert _storage_fault(read_only, run) == (
        f"{run / 'graphs'}: read-only file system. Choose another --out directory"
        " (or make this one writable)")
    elsewhere = OSError(errno.EACCES, "Permission denied", str(tmp_path / "cache" / "tmp" / "x"))
    assert _storage_fault(elsewhere, run) == (
        f"{tmp_path / 'cache' / 'tmp' / 'x'}: permission denied. Make it writable (or choose"
        " another location), then run the same command again")
