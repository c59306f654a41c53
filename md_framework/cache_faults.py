"""How the artefact cache meets faults: a read-only root, a full disk, an unwritable index.

A mixin of :class:`md_framework.cache.ArtifactCache`. A root that cannot be written
(``EROFS``/``EACCES``/``EPERM``, or an index SQLite opens read-only) turns the cache
read-only: the index is opened ``mode=ro`` (``immutable=1`` when a WAL index cannot get its
``-shm`` file), hits are served, results that cannot be stored are counted in
``stats.unstored`` and reported once as a warning. Any other write failure is a
:class:`CacheWriteError` naming the root and the cause, with what to do next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import uuid
from typing import Any

from md_framework.cache_keys import _SCHEMA, CACHE_DIR_ENV
from md_framework.storage_errors import READ_ONLY_ERRNOS, StorageError, from_os_error, sqlite_cause

logger = logging.getLogger("md_framework.cache")
_WARNED: set[str] = set()


class CacheWriteError(StorageError):
    """The cache could not store an entry (full disk, I/O error...); names the root."""


class CacheFaultHandling:
    """Read-only fallbacks and write-error reporting (needs ``root``, ``read_only``,
    ``stats`` and ``_local`` from :class:`~md_framework.cache.ArtifactCache`)."""

    root: Any
    read_only: bool
    stats: Any
    _local: Any

    def _connect_read_only(self) -> sqlite3.Connection:
        """The index of a read-only root: ``mode=ro``, else ``immutable=1`` (a WAL index
        whose ``-shm`` file cannot be created), else an empty in-memory index."""
        uri = (self.root / "index.sqlite").as_uri()
        for suffix in ("?mode=ro", "?immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}{suffix}", uri=True, timeout=60.0,
                                     isolation_level=None, check_same_thread=True)
                db.execute("SELECT COUNT(*) FROM entries").fetchone()
                return db
            except sqlite3.Error:
                with contextlib.suppress(Exception):
                    db.close()
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=True)
        db.executescript(_SCHEMA)
        return db

    def _root_is_read_only(self) -> bool:
        probe = self.root / "tmp" / f"{os.getpid()}-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            return exc.errno in READ_ONLY_ERRNOS
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()
        return False

    def _set_read_only(self, cause: BaseException) -> None:
        if not self.read_only and str(self.root) not in _WARNED:
            _WARNED.add(str(self.root))  # once per process and root, not per cache object
            reason = (sqlite_cause(cause)[0] if isinstance(cause, sqlite3.Error)
                      else (from_os_error(cause).cause if isinstance(cause, OSError) else str(cause)))
            logger.warning(
                "md cache: %s is read-only (%s): serving the entries it has; results it does not"
                " have are computed but not stored", self.root, reason)
        self.read_only = True
        local = self._local
        db = getattr(local, "db", None)
        if db is not None and getattr(local, "pid", None) == os.getpid():
            with contextlib.suppress(Exception):
                db.close()
        local.db = None

    def _write_error(self, exc: BaseException, kind: str = "", key: str = "") -> StorageError:
        what = f" {kind}/{key}" if kind else ""
        if isinstance(exc, sqlite3.Error):
            cause, number = sqlite_cause(exc)
            path = self.root / "index.sqlite"
        else:
            assert isinstance(exc, OSError)
            error = from_os_error(exc)
            cause, number, path = error.cause, error.errno, self.root
        return CacheWriteError(
            path, f"cannot store cache entry{what}: {cause}",
            f"Free space on that disk or set cache_dir (--cache-dir / ${CACHE_DIR_ENV}) to"
            " another directory, then run the command again", errno_=number)

    def _store_failed(self, exc: OSError | sqlite3.Error, kind: str, key: str) -> None:
        """A write failed: read-only root -> read-only mode; anything else -> CacheWriteError."""
        number = exc.errno if isinstance(exc, OSError) else sqlite_cause(exc)[1]
        if number in READ_ONLY_ERRNOS or (isinstance(exc, sqlite3.Error) and self._root_is_read_only()):
            self._set_read_only(exc)
            self.stats.unstored += 1
            return None
        raise self._write_error(exc, kind, key) from None
