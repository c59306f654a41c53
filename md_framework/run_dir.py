"""The layout of a run directory that the kernel and report plugins share, and its lock.

``DIR/report.json`` and ``DIR/summary.txt`` are written by the analyzer; per-prompt graph
pairs live under ``DIR/graphs/NAME.{base,intervention}.json`` (our own ``CircuitGraph``
JSON), where report plugins find them to export for circuit-tracer's viewer.

One writer per run directory: :func:`open_run_dir` takes an exclusive ``flock`` on
``DIR/.md-run.lock`` before anything else is written there, and checks that the directory
is what the caller expects (a new run: no ledger yet; a resume: a non-empty, intact ledger
of the same config and seed) before any model loads. A second writer gets one error naming
the holder's pid and host. The lock file is never deleted (deleting a lock file that
another process has open would let two processes "hold" it); the kernel releases the
lock when the run ends or the process dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from md_framework.cache_files import write_text_atomic
from md_framework.storage_errors import (
    DamagedFileError,
    StorageError,
    from_os_error,
    from_sqlite_error,
)
from md_framework.types import CircuitGraph

#: Where :func:`save_graph_pair` puts per-prompt graphs.
GRAPHS_DIR = "graphs"


def save_graph_pair(
    base: CircuitGraph, intervention: CircuitGraph, out_dir: str | os.PathLike[str], name: str
) -> tuple[Path, Path]:
    """Store one prompt's base and intervention graphs as ``DIR/graphs/NAME.{base,intervention}.json``.

    The report renderer exports every pair found there in circuit-tracer's viewer format.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "graph"
    folder = Path(out_dir) / GRAPHS_DIR
    paths = (folder / f"{safe}.base.json", folder / f"{safe}.intervention.json")
    for graph, path in zip((base, intervention), paths):
        write_text_atomic(path, graph.model_dump_json(indent=1))
    return paths


def load_graph_pairs(out_dir: str | os.PathLike[str]) -> list[tuple[str, CircuitGraph, CircuitGraph]]:
    """Every ``(name, base, intervention)`` stored by :func:`save_graph_pair`, sorted by name."""
    folder = Path(out_dir) / GRAPHS_DIR
    pairs = []
    for base_file in sorted(folder.glob("*.base.json")):
        name = base_file.name[: -len(".base.json")]
        other = folder / f"{name}.intervention.json"
        if not other.is_file():
            continue
        pairs.append((
            name,
            CircuitGraph.model_validate_json(base_file.read_text(encoding="utf-8")),
            CircuitGraph.model_validate_json(other.read_text(encoding="utf-8")),
        ))
    return pairs


# --------------------------------------------------------------------------- one writer

#: The lock file in every run directory (holds the writer's pid/host as JSON).
RUN_LOCK_FILENAME = ".md-run.lock"
_LEDGER = "ledger.sqlite"  # pipeline.ledger.LEDGER_FILENAME (kept import-free here)
_LEDGER_TABLES = {"meta", "queries", "observations", "evidence", "decisions", "bandit", "events"}


class RunDirError(StorageError):
    """The run directory is not what the command needs (busy, a run already there, none)."""


class RunDirBusyError(RunDirError):
    """Another process holds the run directory's lock."""


class RunDirLock:
    """An exclusive ``flock`` on ``DIR/.md-run.lock``; :meth:`release` (or process exit) frees it."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive its object
        with contextlib.suppress(Exception):
            self.release()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info['pid']} on {info.get('host', '?')} (since {since})"


def lock_run_dir(run_dir: str | os.PathLike[str]) -> RunDirLock:
    """Create ``run_dir`` if needed and take its writer lock without waiting.

    Raises :class:`RunDirBusyError` naming the holder when another process has it, and a
    :class:`StorageError` naming the directory when it cannot be created or written.
    """
    run_dir = Path(run_dir)
    advice = "Choose another --out directory or make this one writable"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / RUN_LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise from_os_error(exc, run_dir, advice) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirBusyError(
                run_dir, f"another md process is writing this run directory: {_holder(run_dir / RUN_LOCK_FILENAME)}",
                "Wait for it to finish, or choose another --out directory") from None
        raise from_os_error(exc, run_dir, advice) from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise from_os_error(exc, run_dir / RUN_LOCK_FILENAME, advice) from None
    return RunDirLock(run_dir, fd)


def has_run(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a started run (a non-empty ledger or a report)."""
    run_dir = Path(run_dir)
    ledger = run_dir / _LEDGER
    return (ledger.is_file() and ledger.stat().st_size > 0) or (run_dir / "report.json").is_file()


def check_ledger_file(path: str | os.PathLike[str],
                      fingerprint: Mapping[str, Any] | None = None) -> None:
    """Open ``path`` read-only and check it is an intact ledger (of ``fingerprint``'s run).

    ``PRAGMA integrity_check`` over every page, the ledger's tables, its schema and
    fingerprint rows. Cheap (milliseconds for a finished run's ledger), so it runs before
    any model loads. Raises :class:`DamagedFileError` / ``LedgerMismatchError``.
    """
    path = Path(path)
    resume_elsewhere = ("It cannot be resumed: start a new run with --out in another directory"
                        " (or restore the file from a backup)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise from_sqlite_error(exc, path, resume_elsewhere) from None
    try:
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
            if problems == ["ok"]:
                problems = _row_problems(conn, tables & _LEDGER_TABLES)
        except sqlite3.Error as exc:
            error = from_sqlite_error(exc, path, resume_elsewhere)
            if error.errno is not None:  # cannot open / read-only / I/O: not the file's fault
                raise error from None
            problems = [str(exc)]
    finally:
        conn.close()
    if problems != ["ok"]:
        raise DamagedFileError(path, f"damaged ledger ({'; '.join(problems)[:300]})", resume_elsewhere)
    missing = sorted(_LEDGER_TABLES - tables)
    if missing or "schema" not in meta or "fingerprint" not in meta:
        what = f"tables {', '.join(missing)} missing" if missing else "no schema/fingerprint record"
        raise DamagedFileError(path, f"not a complete md ledger ({what})", resume_elsewhere)
    if fingerprint is not None:
        from md_framework.pipeline.ledger import LEDGER_SCHEMA, LedgerMismatchError, _dumps

        if meta["schema"] != str(LEDGER_SCHEMA):
            raise LedgerMismatchError(
                f"{path}: ledger schema {meta['schema']} is not {LEDGER_SCHEMA}; start a new run directory")
        if meta["fingerprint"] != _dumps(dict(fingerprint)):
            raise LedgerMismatchError(
                f"{path}: belongs to another run (different config or seed). Resume it with the"
                " config and seed it was started with, or start a new run with --out in another"
                " directory")


def _row_problems(conn: sqlite3.Connection, tables: set[str]) -> list[str]:
    """Every row decodes and every ``*json`` column parses: ``integrity_check`` sees the
    b-tree structure, not bytes changed inside a row."""
    for table in sorted(tables):
        cursor = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
        columns = [d[0] for d in cursor.description]
        json_columns = [i for i, c in enumerate(columns) if c.endswith("json")]
        for row in cursor:
            for i in json_columns:
                try:
                    json.loads(row[i])
                except (TypeError, ValueError) as exc:
                    return [f"{table}.{columns[i]}: {exc}"]
    return ["ok"]


def open_run_dir(run_dir: str | os.PathLike[str], *, resume: bool,
                 fingerprint: Mapping[str, Any] | None = None) -> RunDirLock:
    """Lock ``run_dir`` and check it suits a new run (``resume=False``) or a resume.

    A new run refuses a directory that already holds a run (its ledger or report): continue
    it with ``--resume`` or choose another directory. A resume refuses a missing or empty
    directory and a missing or zero-byte ledger (nothing to resume), and a damaged ledger or
    one of another config/seed. Everything is checked before any model loads.
    """
    run_dir = Path(run_dir)
    if resume:
        ledger = run_dir / _LEDGER
        if not run_dir.is_dir():
            raise RunDirError(run_dir, "no run to resume: the directory does not exist",
                              "Check the path, or start a new run with --out")
        if not ledger.is_file():
            raise RunDirError(run_dir, f"no run to resume: there is no {_LEDGER} in it",
                              "Check the path, or start a new run with --out")
        if ledger.stat().st_size == 0:
            raise RunDirError(ledger, "no run to resume: the ledger is empty (0 bytes)",
                              "Start a new run with --out in another directory")
    lock = lock_run_dir(run_dir)
    try:
        if resume:
            check_ledger_file(run_dir / _LEDGER, fingerprint)
        elif has_run(run_dir):
            raise RunDirError(run_dir, f"already holds a run ({_LEDGER} or report.json)",
                              f"Continue it with --resume {run_dir} (Python: resume=True), or choose another --out directory")
    except BaseException:
        lock.release()
        raise
    return lock


F = TypeVar("F", bound=Callable[..., Any])


def holds_run_dir(method: F) -> F:
    """Decorator for ``analyze(self)``: hold ``self.run_dir``'s lock for the whole call.

    Uses ``self.run_dir`` (``None``: nothing to lock), ``self.resume`` and
    ``self._fingerprint()``.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "run_dir", None) is None:
            return method(self, *args, **kwargs)
        with open_run_dir(self.run_dir, resume=bool(getattr(self, "resume", False)),
                          fingerprint=self._fingerprint()):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]

