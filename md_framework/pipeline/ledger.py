"""Durable per-run evidence ledger (SQLite, WAL mode, ``synchronous=FULL``).

Write-ahead discipline: every model query result, observation, test result (p/e-value),
FDR decision with the procedure's state after it, and bandit state is committed here
*before* the pipeline acts on it. With WAL + ``synchronous=FULL`` a commit that returned is
on disk, and a process killed at any instant (SIGKILL included) leaves the ledger at the
last commit: a transaction is all or nothing.

Resume model: a resumed run *replays* the run from the start with the same seed. Model
queries found here are served from the ledger (:meth:`Ledger.cached_readings`; never
re-queried), a hypothesis found in ``decisions`` is not re-tested: its recorded decision is
returned and the FDR procedure is restored from the recorded state (``from_state``), so
no alpha is spent twice; bandit state is restored from the last recorded round. Because
every choice is a deterministic function of (seed, recorded readings), the replay reaches
the same decisions as an uninterrupted run (checked by the crash test in
``tests/validation/test_crash_resume.py``).

Schema (see ``docs/validation.md``)::

    meta(key PRIMARY KEY, value)                              -- schema, fingerprint, ...
    queries(model_id, metric, case_id, prompt_sha, value, output, PK(model_id, metric, case_id))
    observations(hypothesis_id, case_id, metric, json, PK(hypothesis_id, case_id, metric))
    evidence(hypothesis_id, step, n, test, p_value, e_value, json, PK(hypothesis_id, step))
    decisions(fdr_index PK, hypothesis_id UNIQUE, value, value_kind, level, rejected,
              record_json, result_json, fdr_state_json)
    bandit(round PK, pulled_json, rewards_json, queries, state_json)
    events(id PK AUTOINCREMENT, kind, json)                    -- free-form audit trail
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from md_framework.errors import MDError
from md_framework.runtime import MetricReading
from md_framework.storage_errors import DamagedFileError, StorageError, from_os_error, from_sqlite_error
from md_framework.types import DecisionRecord, Observation, ValidationResult

__all__ = [
    "LEDGER_FILENAME",
    "LEDGER_SCHEMA",
    "Ledger",
    "LedgerMismatchError",
    "RunInterrupted",
    "resume_message",
]

LEDGER_FILENAME = "ledger.sqlite"
LEDGER_SCHEMA = 1

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    model_id TEXT NOT NULL, metric TEXT NOT NULL, case_id TEXT NOT NULL,
    prompt_sha TEXT NOT NULL, value REAL NOT NULL, output TEXT,
    PRIMARY KEY (model_id, metric, case_id));
CREATE TABLE IF NOT EXISTS observations (
    hypothesis_id TEXT NOT NULL, case_id TEXT NOT NULL, metric TEXT NOT NULL,
    json TEXT NOT NULL, PRIMARY KEY (hypothesis_id, case_id, metric));
CREATE TABLE IF NOT EXISTS evidence (
    hypothesis_id TEXT NOT NULL, step INTEGER NOT NULL, n INTEGER NOT NULL,
    test TEXT NOT NULL, p_value REAL, e_value REAL, json TEXT NOT NULL,
    PRIMARY KEY (hypothesis_id, step));
CREATE TABLE IF NOT EXISTS decisions (
    fdr_index INTEGER PRIMARY KEY, hypothesis_id TEXT NOT NULL UNIQUE, value REAL NOT NULL,
    value_kind TEXT NOT NULL, level REAL NOT NULL, rejected INTEGER NOT NULL,
    record_json TEXT NOT NULL, result_json TEXT NOT NULL, fdr_state_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bandit (
    round INTEGER PRIMARY KEY, pulled_json TEXT NOT NULL, rewards_json TEXT NOT NULL,
    queries INTEGER NOT NULL, state_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, json TEXT NOT NULL);
"""

#: Tables whose full contents define "the same run" (events is an audit trail only).
CONTENT_TABLES = ("meta", "queries", "observations", "evidence", "decisions", "bandit")


class LedgerMismatchError(MDError):
    """The run directory's ledger belongs to a different run (seed, config or schema)."""


class RunInterrupted(MDError):
    """Ctrl-C: the ledger holds everything committed so far; the message says how to resume."""

    def __init__(self, run_dir: str | Path | None, command: str | None = None) -> None:
        self.run_dir = run_dir
        super().__init__(resume_message(run_dir, command))


def resume_message(run_dir: str | Path | None, command: str | None = None) -> str:
    """The text shown after Ctrl-C (the CLI passes its own command line as ``command``)."""
    if run_dir is None:
        return "interrupted; this run had no run directory, so nothing was saved to resume"
    ledger = Path(run_dir) / LEDGER_FILENAME
    how = command or f"md analyze CONFIG --resume {run_dir}"
    return (
        f"interrupted: every query and decision made so far is saved in {ledger}. "
        f"Resume with the same config and seed: {how} "
        "(recorded queries are not repeated and decided hypotheses are not re-tested)"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


class Ledger:
    """One run's ledger at ``<run_dir>/ledger.sqlite``.

    ``fingerprint`` (e.g. seed + resolved config) is stored on creation and must match on
    resume, otherwise :class:`LedgerMismatchError`. ``fault_hook`` (tests only) is called
    with ``"before_commit"`` / ``"after_commit"`` around every commit that changes rows, so a
    crash test can SIGKILL the process at exact points.
    """

    def __init__(self, run_dir: str | Path, fingerprint: Mapping[str, Any] | None = None,
                 *, fault_hook: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEDGER_FILENAME
        self.fault_hook = fault_hook
        self._conn: sqlite3.Connection | None = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, self.run_dir, "Choose another run directory") from None
        existed = self.path.is_file() and self.path.stat().st_size > 0
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            if existed:  # an intact ledger, before anything is added to it
                problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check(5)")]
                if problems != ["ok"]:
                    raise DamagedFileError(
                        self.path, f"damaged ledger ({'; '.join(problems)[:300]})",
                        "It cannot be resumed: start a new run in another directory")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA_SQL)
        except sqlite3.Error as exc:
            self.close()
            raise self._fault(exc, damaged_ok=existed) from None
        except BaseException:
            self.close()
            raise
        self.resumed = False
        try:
            self._check_meta(dict(fingerprint or {}))
        except BaseException:
            self.close()
            raise

    def _fault(self, exc: sqlite3.Error, damaged_ok: bool = True) -> StorageError:
        """The one-line error for an SQLite failure on this ledger."""
        error = from_sqlite_error(exc, self.path)
        if isinstance(error, DamagedFileError):
            return error.with_advice(
                "It cannot be resumed: start a new run in another directory"
                " (or restore the file from a backup)")
        how = f"md analyze CONFIG --resume {self.run_dir}"
        if error.no_space:
            return error.with_advice(
                f"Free space, then continue with {how}: every query and decision committed"
                " so far is kept")
        if error.read_only:
            return error.with_advice(
                f"Make {self.run_dir} writable, then continue with {how}; or start a new run"
                " in another directory")
        return error.with_advice(f"Fix the cause, then continue with {how}")

    # ------------------------------------------------------------------ plumbing
    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> int:
        """Run ``statements`` in one transaction; returns the number of rows changed."""
        conn = self._conn
        assert conn is not None, "ledger is closed"
        before = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                conn.execute(sql, params)
            changed = conn.total_changes - before
            if changed and self.fault_hook is not None:
                self.fault_hook("before_commit")
            conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite rolls back by itself on a full disk or an I/O error; a second ROLLBACK
            # would raise "no transaction is active" and hide the real cause
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise MDError(
                    f"{self.path}: another writer changed this ledger during the run ({exc});"
                    " one run directory takes one writer at a time") from None
            if isinstance(exc, sqlite3.Error):
                raise self._fault(exc) from None
            raise
        if changed and self.fault_hook is not None:
            self.fault_hook("after_commit")
        return changed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_meta(self, fingerprint: dict[str, Any]) -> None:
        rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        wanted = {"schema": str(LEDGER_SCHEMA), "fingerprint": _dumps(fingerprint)}
        if not rows:
            self._write(("INSERT INTO meta(key, value) VALUES (?, ?)", (k, v))
                        for k, v in wanted.items())
            return
        self.resumed = True
        if rows.get("schema") != wanted["schema"]:
            raise LedgerMismatchError(
                f"{self.path}: ledger schema {rows.get('schema')} is not {LEDGER_SCHEMA};"
                " start a new run directory")
        if rows.get("fingerprint") != wanted["fingerprint"]:
            raise LedgerMismatchError(
                f"{self.path} belongs to another run (recorded {rows.get('fingerprint')},"
                f" now {wanted['fingerprint']}); resume with the same config and seed, or"
                " use a new run directory")

    def bind_models(self, **model_ids: str) -> None:
        """Record the run's model identities (content hashes of the weights) on first use;
        a resumed run must bring the same ones, otherwise its recorded readings and
        decisions belong to other weights (:class:`LedgerMismatchError`)."""
        assert self._conn is not None, "ledger is closed"
        wanted = _dumps(dict(model_ids))
        row = self._conn.execute("SELECT value FROM meta WHERE key='models'").fetchone()
        if row is None:
            self._write([("INSERT INTO meta(key, value) VALUES ('models', ?)", (wanted,))])
        elif row[0] != wanted:
            raise LedgerMismatchError(
                f"{self.path}: recorded with models {row[0]}, now {wanted}: the weights changed"
                " since the run started (their content hash differs). Resume with the same"
                " weights, or start a new run in another directory")

    # ------------------------------------------------------------------ queries
    def cached_readings(self, model_id: str, metric: str,
                        case_ids: Sequence[str]) -> dict[str, MetricReading]:
        found: dict[str, MetricReading] = {}
        for i in range(0, len(case_ids), 500):
            chunk = list(case_ids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            for case_id, value, output in self._conn.execute(
                f"SELECT case_id, value, output FROM queries WHERE model_id=? AND metric=?"
                f" AND case_id IN ({marks})", (model_id, metric, *chunk)):
                found[case_id] = MetricReading(value=value, output=output)
        return found

    def record_readings(self, model_id: str, metric: str,
                        items: Sequence[tuple[str, str, MetricReading]]) -> None:
        """``items``: (case_id, prompt, reading). Recorded before any use of the readings."""
        self._write(
            ("INSERT OR IGNORE INTO queries VALUES (?, ?, ?, ?, ?, ?)",
             (model_id, metric, case_id, prompt_sha(prompt), reading.value, reading.output))
            for case_id, prompt, reading in items)

    # ------------------------------------------------------------------ evidence
    def record_evidence(self, hypothesis_id: str, step: int, n: int,
                        observations: Sequence[Observation], test: str, p_value: float | None, e_value: float | None,
                        details: Mapping[str, Any]) -> None:
        """New observations of one batch and the test result on all evidence so far."""
        statements: list[tuple[str, Sequence[Any]]] = [
            ("INSERT OR IGNORE INTO observations VALUES (?, ?, ?, ?)",
             (o.hypothesis_id, o.test_case_id, o.metric, o.model_dump_json()))
            for o in observations
        ]
        statements.append((
            "INSERT OR IGNORE INTO evidence VALUES (?, ?, ?, ?, ?, ?, ?)",
            (hypothesis_id, step, n, test, p_value, e_value, _dumps(dict(details)))))
        self._write(statements)

    def observations(self, hypothesis_id: str) -> list[Observation]:
        return [Observation.model_validate_json(j) for (j,) in self._conn.execute(
            "SELECT json FROM observations WHERE hypothesis_id=? ORDER BY rowid",
            (hypothesis_id,))]

    # ------------------------------------------------------------------ decisions
    def decision_for(self, hypothesis_id: str) -> tuple[DecisionRecord, ValidationResult,
                                                        dict[str, Any]] | None:
        row = self._conn.execute(
            "SELECT record_json, result_json, fdr_state_json FROM decisions"
            " WHERE hypothesis_id=?", (hypothesis_id,)).fetchone()
        if row is None:
            return None
        return (DecisionRecord.model_validate_json(row[0]),
                ValidationResult.model_validate_json(row[1]), json.loads(row[2]))

    def record_decision(self, record: DecisionRecord, result: ValidationResult,
                        fdr_state: Mapping[str, Any]) -> None:
        self._write([(
            "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.index, record.hypothesis_id, record.value, record.value_kind, record.level,
             int(record.rejected), record.model_dump_json(), result.model_dump_json(),
             _dumps(dict(fdr_state))))])

    def decisions(self) -> list[DecisionRecord]:
        return [DecisionRecord.model_validate_json(j) for (j,) in self._conn.execute(
            "SELECT record_json FROM decisions ORDER BY fdr_index")]

    def results(self) -> list[ValidationResult]:
        return [ValidationResult.model_validate_json(j) for (j,) in self._conn.execute(
            "SELECT result_json FROM decisions ORDER BY fdr_index")]

    # ------------------------------------------------------------------ bandit
    def bandit_round(self, round_index: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        row = self._conn.execute(
            "SELECT pulled_json, rewards_json, queries, state_json FROM bandit WHERE round=?",
            (round_index,)).fetchone()
        if row is None:
            return None
        info = {"pulled": json.loads(row[0]), "rewards": json.loads(row[1]), "queries": row[2]}
        return info, json.loads(row[3])

    def record_bandit_round(self, round_index: int, pulled: Sequence[str],
                            rewards: Mapping[str, float], queries: int,
                            state: Mapping[str, Any]) -> None:
        self._write([(
            "INSERT OR IGNORE INTO bandit VALUES (?, ?, ?, ?, ?)",
            (round_index, _dumps(list(pulled)), _dumps(dict(rewards)), queries,
             _dumps(dict(state))))])

    # ------------------------------------------------------------------ misc
    def log_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        self._write([("INSERT INTO events(kind, json) VALUES (?, ?)", (kind, _dumps(dict(payload))))])

    def contents(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the content tables in key order (what the crash test compares)."""
        order = {"meta": "key", "queries": "model_id, metric, case_id",
                 "observations": "hypothesis_id, case_id, metric",
                 "evidence": "hypothesis_id, step", "decisions": "fdr_index",
                 "bandit": "round"}
        return {t: [tuple(r) for r in self._conn.execute(f"SELECT * FROM {t} ORDER BY {order[t]}")]
                for t in CONTENT_TABLES}

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
