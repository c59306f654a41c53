"""Content-addressed on-disk artefact cache: graphs, tensors and directories.

Kernel module: importing it needs only the standard library and pydantic; torch,
safetensors and numpy are imported inside the tensor functions.

Layout under ``root`` (see ``docs/cache.md``)::

    index.sqlite            SQLite index (WAL): kind, key, format, size, created,
                            last_access, sha256 and object path of each entry
    objects/<kind>/<key[:2]>/<key>.<token>.json         JSON (graphs, pydantic models)
    objects/<kind>/<key[:2]>/<key>.<token>.safetensors  tensors (+ JSON metadata in the header)
    objects/<kind>/<key[:2]>/<key>.<token>.d/           directories (models, dictionaries)
    locks/NN.lock           256 striped fcntl lock files (never deleted)
    locks/keys/<kind>/..    per-key build claims (md_framework.cache_locks)
    tmp/                    writes in progress (same filesystem, so os.replace is atomic)

``<token>`` is random per write: a new version of an entry never overwrites the old one's
file, so the index row switching from one to the other is the single atomic step.

Guarantees:

* **Integrity** - every read hashes the stored bytes and compares them with the sha256
  recorded at write time. A missing, corrupt or tampered entry is removed, logged as a
  warning and reported as a miss, so the caller rebuilds it. Nothing is ever unpickled:
  JSON is parsed by ``json``/pydantic and tensors by safetensors (from the verified bytes,
  so what was checked is what is parsed).
* **Atomicity** - data is written to ``tmp/``, fsynced, ``os.replace``-d to a fresh object
  path, then the index row is switched to it in one transaction, then the old object is
  removed. A crash (SIGKILL-tested) leaves the old entry or the new one, never a mix; at
  worst an unindexed object file, which is never read and is removed by ``clear``/``verify_all``.
* **Concurrency** - any number of threads and processes may share a root. Each entry is
  guarded by a striped ``fcntl`` lock (shared for reads, exclusive for writes/deletes) and
  index updates are SQLite transactions (``BEGIN IMMEDIATE``, WAL, busy timeout).
  ``get_or_create`` (and ``trace_prompts``) claim a key before building it, so concurrent
  processes build an entry once and the others wait for it (:mod:`md_framework.cache_locks`).
* **Faults** - a read-only root (``EROFS``/``EACCES``) turns the cache read-only: hits are
  served, entries that cannot be stored are counted in ``stats.unstored`` and reported
  once as a warning. Any other write failure (a full disk...) is a :class:`CacheWriteError`
  naming the root, the cause and what to do.
* **Size limit** - with ``max_bytes`` set, writes evict least-recently-accessed entries
  until the total fits (the entry just written is kept).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from md_framework.cache_files import (
    _dir_digest,
    _DirProblem,
    _fsync_dir,
    _fsync_tree,
    _pid_alive,
    _remove_path,
    _safetensors_header,
)
from md_framework.cache_faults import CacheFaultHandling, CacheWriteError
from md_framework.cache_housekeeping import CacheHousekeeping
from md_framework.cache_keys import (  # re-exported: the public names live here
    _COLUMNS,
    _KEY_RE,
    _KIND_RE,
    _SCHEMA,
    _SUFFIX,
    _TENSOR_META_KEY,
    _TMP_MAX_AGE_S,
    CACHE_DIR_ENV,
    CACHE_KEY_VERSION,
    DEFAULT_CACHE_DIR,
    INDEX_VERSION,
    CacheEntry,
    CacheStats,
    Format,
    cache_key,
    canonical_json,
    default_cache_dir,
)
from md_framework.cache_locks import KeyClaim, claim_key, stripe_lock
from md_framework.storage_errors import READ_ONLY_ERRNOS

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "CACHE_DIR_ENV", "CACHE_KEY_VERSION", "DEFAULT_CACHE_DIR", "INDEX_VERSION", "ArtifactCache",
    "CacheEntry", "CacheStats", "CacheWriteError", "Format", "cache_key", "canonical_json",
    "default_cache_dir", "open_cache",
]


# --------------------------------------------------------------------------- the cache


class ArtifactCache(CacheFaultHandling, CacheHousekeeping):
    """A content-addressed store shared safely by threads and processes.

    ``kind`` names a namespace (``graph``, ``activations``, ``model-hf``...): lower-case
    letters, digits, ``-`` and ``_``. ``key`` is normally :func:`cache_key`'s hex digest
    (any ``[A-Za-z0-9_.-]`` string up to 128 characters is accepted).

    The object is picklable (only the root and limit travel) so worker processes can open
    the same cache.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 or None")
        self.root = Path(root).expanduser().resolve()
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._local = threading.local()
        self.read_only = False
        try:
            for sub in ("objects", "locks", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS:
                raise self._write_error(exc) from None
            self._set_read_only(exc)
        self._db()  # creates the index (WAL) if needed
        if not self.read_only:
            self._clean_tmp()

    # ---- pickling: connections and thread-locals stay behind
    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = Path(state["root"])
        self.max_bytes = state["max_bytes"]
        self.stats = CacheStats()
        self._local = threading.local()
        self.read_only = False

    def __repr__(self) -> str:
        return f"ArtifactCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # ------------------------------------------------------------------ sqlite
    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_read_only()
        try:
            db = sqlite3.connect(
                self.root / "index.sqlite", timeout=60.0, isolation_level=None,
                check_same_thread=True,
            )
        except sqlite3.OperationalError as exc:
            if not self._root_is_read_only():
                raise
            self._set_read_only(exc)
            return self._connect_read_only()
        try:
            db.execute("PRAGMA busy_timeout=60000")
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:  # another process is switching it right now
                time.sleep(0.05)
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Check and create the layout in one write transaction: read outside one, the
            # version and the table list are two snapshots, and a process that saw "version 0"
            # before another's schema commit and "table exists" after it took a fresh index
            # for a corrupt one and moved it aside under the other processes' feet.
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, INDEX_VERSION) or (version == 0 and db.execute(
                    "SELECT 1 FROM sqlite_master WHERE name='entries'"
                ).fetchone()):
                    raise sqlite3.DatabaseError(f"index layout version {version}, expected {INDEX_VERSION}")
                if version == 0:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version={INDEX_VERSION}")
                db.execute("SELECT COUNT(*) FROM entries").fetchone()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            db.close()
            if "readonly" not in str(exc) and not self._root_is_read_only():
                raise
            self._set_read_only(exc)
            return self._connect_read_only()
        except BaseException:
            db.close()
            raise
        return db

    def _db(self) -> sqlite3.Connection:
        """One connection per (process, thread); reopened after fork.

        A corrupt index (not a database, malformed image) is moved aside to
        ``index.sqlite.corrupt-*`` and a fresh one started: every object then lacks an index
        row, so nothing is trusted and each entry is rebuilt on its next use.
        """
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or getattr(local, "db", None) is None:
            try:
                db = self._connect()
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:
                db = self._recover_index(exc)
            local.db, local.pid = db, os.getpid()
        return local.db

    def _recover_index(self, error: Exception) -> sqlite3.Connection:
        with self._lock("index", exclusive=True):
            try:  # another process may have recovered it while we waited
                return self._connect()
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError:
                pass
            aside = self.root / f"index.sqlite.corrupt-{int(time.time())}-{os.getpid()}"
            logger.warning(
                "md cache: index %s is unreadable (%s); moved to %s and starting an empty"
                " index (cached objects will be rebuilt)", self.root / "index.sqlite", error, aside.name,
            )
            os.replace(self.root / "index.sqlite", aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.root / f"index.sqlite{suffix}", Path(f"{aside}{suffix}"))
            return self._connect()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def _row(self, kind: str, key: str) -> CacheEntry | None:
        row = self._db().execute(
            f"SELECT {_COLUMNS} FROM entries WHERE kind=? AND key=?", (kind, key),
        ).fetchone()
        return CacheEntry(*row) if row else None

    def close(self) -> None:
        """Close this thread's index connection (it reopens on next use)."""
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local.db = None

    # ------------------------------------------------------------------ locks
    def _lock(self, name: str, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return stripe_lock(self.root, name, exclusive)

    def claim(self, kind: str, key: str, *, wait: bool = True) -> KeyClaim | None:
        """Claim the build of ``kind/key`` (see :mod:`md_framework.cache_locks`).

        ``None`` when another process is building it and ``wait`` is false. After a claim
        succeeds, look the entry up again before building: the previous holder may have
        stored it. ``claim.release(done=True)`` once the entry is stored.
        """
        self._check(kind, key)
        if self.read_only:
            return KeyClaim(self.root, None)
        return claim_key(self.root, kind, key, wait=wait)

    # ------------------------------------------------------------------ paths
    @staticmethod
    def _check(kind: str, key: str) -> None:
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise ValueError(f"invalid cache kind {kind!r}: use [a-z0-9_-], at most 64 characters")
        if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
            raise ValueError(f"invalid cache key {key!r}: use [A-Za-z0-9_.-], at most 128 characters")

    def path_for(self, kind: str, key: str) -> Path | None:
        """Where the index says the entry's file/directory is (not verified), or ``None``."""
        self._check(kind, key)
        row = self._row(kind, key)
        return self.root / row.path if row is not None else None

    def _new_object_path(self, kind: str, key: str, fmt: str) -> Path:
        """A fresh, never-used path: every write gets its own file, so switching the index
        row from the old file to the new one is the single atomic step of a write."""
        return self.root / "objects" / kind / key[:2] / f"{key}.{uuid.uuid4().hex[:16]}{_SUFFIX[fmt]}"

    def _tmp_path(self, suffix: str = "") -> Path:
        return self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}"

    def _clean_tmp(self) -> None:
        """Remove what crashed writers left in ``tmp/``: files of processes that no longer
        exist (names start with the writer's pid), and anything older than a week."""
        cutoff = time.time() - _TMP_MAX_AGE_S
        with contextlib.suppress(FileNotFoundError):
            for child in (self.root / "tmp").iterdir():
                with contextlib.suppress(OSError):
                    pid_text = child.name.split("-", 1)[0]
                    dead = pid_text.isdigit() and not _pid_alive(int(pid_text))
                    if dead or child.lstat().st_mtime < cutoff:
                        _remove_path(child)

    # ------------------------------------------------------------------ core write/read
    def _commit(self, kind: str, key: str, fmt: str, staged: Path, sha: str, size: int) -> Path:
        """Move a fully written, fsynced ``staged`` file/dir into place and index it.

        Crash-consistent: the new object gets a fresh path, the index row switches to it in
        one transaction, and only then is the old object removed. A crash leaves the old
        entry or the new one, plus at worst an unindexed file (never read; ``clear`` and
        ``verify_all`` remove it).
        """
        final = self._new_object_path(kind, key, fmt)
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(f"{kind}/{key}", exclusive=True):
            old = self._row(kind, key)
            os.replace(staged, final)
            _fsync_dir(final.parent)
            now = time.time()
            with self._transaction() as db:
                db.execute(
                    f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, key, fmt, size, now, now, sha, final.relative_to(self.root).as_posix()),
                )
            if old is not None:
                self._trash(self.root / old.path)
        self.stats.writes += 1
        if self.max_bytes is not None:
            self._evict(keep=(kind, key))
        return final

    def _put_bytes(self, kind: str, key: str, fmt: str, data: bytes) -> Path | None:
        """Store ``data``; ``None`` when the cache is read-only (counted in ``stats.unstored``)."""
        self._check(kind, key)
        if self.read_only:
            self.stats.unstored += 1
            return None
        staged = self._tmp_path(_SUFFIX[fmt])
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                return self._commit(kind, key, fmt, staged, hashlib.sha256(data).hexdigest(), len(data))
            except BaseException:
                with contextlib.suppress(OSError):
                    _remove_path(staged)
                raise
        except (OSError, sqlite3.Error) as exc:
            return self._store_failed(exc, kind, key)

    def _discard_corrupt(self, kind: str, key: str, reason: str, path: str | None = None) -> None:
        """Remove an entry that failed verification (under the exclusive entry lock).

        With ``path``, only if the index still points at that object: a writer that replaced
        the entry in the meantime must not lose its fresh, valid entry.
        """
        logger.warning("md cache: discarding %s/%s (%s); it will be rebuilt", kind, key, reason)
        self.stats.corrupt += 1
        if self.read_only:
            return  # not trusted and not served; a writable cache removes it
        try:
            self._delete(kind, key, only_path=path)
        except (OSError, sqlite3.Error) as exc:
            logger.warning("md cache: could not remove %s/%s (%s)", kind, key, exc)

    def _read_bytes(self, kind: str, key: str, fmt: str) -> bytes | None:
        """The verified bytes of an entry, or ``None`` (miss / discarded corrupt entry)."""
        found = self._read_verified(kind, key, fmt)
        return found[0] if found is not None else None

    def _read_verified(self, kind: str, key: str, fmt: str) -> tuple[bytes, str] | None:
        """``(bytes, object path)`` of an entry whose checksum matched, or ``None``."""
        self._check(kind, key)
        problem: str | None = None
        with self._lock(f"{kind}/{key}", exclusive=False):
            row = self._row(kind, key)
            if row is None:
                self.stats.misses += 1
                return None
            if row.format != fmt:
                problem = f"stored as {row.format}, read as {fmt}"
            else:
                try:
                    with open(self.root / row.path, "rb") as handle:
                        data = handle.read()
                except FileNotFoundError:
                    problem = "file missing"
                else:
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != row.sha256 or len(data) != row.size:
                        problem = f"checksum mismatch (expected {row.sha256[:12]}…, got {digest[:12]}…)"
        if problem is not None:
            self.stats.misses += 1
            self._discard_corrupt(kind, key, problem, path=row.path)
            return None
        self._touch(kind, key)
        self.stats.hits += 1
        return data, row.path

    def _touch(self, kind: str, key: str) -> None:
        try:
            with self._transaction() as db:
                db.execute(
                    "UPDATE entries SET last_access=? WHERE kind=? AND key=?",
                    (time.time(), kind, key),
                )
        except sqlite3.OperationalError as exc:  # best effort: LRU order only
            logger.debug("md cache: could not update last_access: %s", exc)

    def _trash(self, path: Path) -> None:
        """Remove an object file or directory: renamed away first, so it vanishes at once."""
        trash = self._tmp_path(".trash")
        try:
            os.replace(path, trash)
        except FileNotFoundError:
            return
        _remove_path(trash)

    def _delete(self, kind: str, key: str, only_path: str | None = None) -> bool:
        """Drop the index row, then the object (a crash in between leaves an orphan)."""
        with self._lock(f"{kind}/{key}", exclusive=True):
            row = self._row(kind, key)
            if row is None or (only_path is not None and row.path != only_path):
                return False
            with self._transaction() as db:
                db.execute("DELETE FROM entries WHERE kind=? AND key=?", (kind, key))
            self._trash(self.root / row.path)
        return True

    # ------------------------------------------------------------------ JSON
    def put_json(self, kind: str, key: str, obj: Any) -> Path | None:
        """Store a JSON-serialisable object (floats round-trip bit-exactly; NaN/inf refused)."""
        data = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return self._put_bytes(kind, key, "json", data.encode("utf-8"))

    def get_json(self, kind: str, key: str) -> Any | None:
        found = self._read_verified(kind, key, "json")
        if found is None:
            return None
        data, path = found
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            self._discard_corrupt(kind, key, f"invalid JSON: {exc}", path=path)
            self.stats.hits -= 1
            self.stats.misses += 1
            return None

    def put_model(self, kind: str, key: str, model: BaseModel) -> Path | None:
        """Store a pydantic model as its JSON (``model_dump_json``)."""
        return self._put_bytes(kind, key, "json", model.model_dump_json().encode("utf-8"))

    def get_model(self, kind: str, key: str, cls: type[M]) -> M | None:
        """Load a pydantic model; an entry that no longer validates is discarded (a miss)."""
        found = self._read_verified(kind, key, "json")
        if found is None:
            return None
        data, path = found
        try:
            return cls.model_validate_json(data)
        except (ValidationError, ValueError) as exc:
            self._discard_corrupt(kind, key, f"does not validate as {cls.__name__}: {exc}", path=path)
            self.stats.hits -= 1
            self.stats.misses += 1
            return None

    # ------------------------------------------------------------------ tensors
    def put_tensors(
        self, kind: str, key: str, tensors: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> Path | None:
        """Store torch tensors (or numpy arrays) as safetensors; ``metadata`` is any JSON."""
        meta = {_TENSOR_META_KEY: canonical_json(dict(metadata or {}))}
        values = list(tensors.values())
        if values and all(type(v).__module__.startswith("numpy") for v in values):
            import numpy as np
            from safetensors.numpy import save as np_save

            data = np_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)
        else:
            from safetensors.torch import save as pt_save

            prepared: dict[str, Any] = {}
            seen: set[tuple[int, int]] = set()
            for name, tensor in tensors.items():
                tensor = tensor.detach().cpu().contiguous()
                ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
                if ident in seen and tensor.numel():  # safetensors refuses shared storage
                    tensor = tensor.clone()
                seen.add(ident)
                prepared[name] = tensor
            data = pt_save(prepared, metadata=meta)
        return self._put_bytes(kind, key, "safetensors", data)

    def get_tensors(
        self, kind: str, key: str, framework: Literal["pt", "np"] = "pt"
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(tensors, metadata)`` parsed by safetensors from the verified bytes, or ``None``."""
        found = self._read_verified(kind, key, "safetensors")
        if found is None:
            return None
        data, path = found
        try:
            header = _safetensors_header(data)
            metadata = json.loads((header.get("__metadata__") or {}).get(_TENSOR_META_KEY, "{}"))
        except Exception as exc:
            self._discard_corrupt(kind, key, f"unreadable safetensors: {exc}",
                                  path=path)
            self.stats.hits -= 1
            self.stats.misses += 1
            return None
        if framework == "np":
            unsupported = {v["dtype"] for k, v in header.items()
                           if k != "__metadata__" and v["dtype"] in {"BF16", "F8_E4M3", "F8_E5M2"}}
            if unsupported:  # a valid entry numpy cannot hold: the caller's problem, not corruption
                raise ValueError(f"numpy cannot load dtypes {sorted(unsupported)}; use framework='pt'")
        try:
            if framework == "np":
                from safetensors.numpy import load as np_load

                tensors = np_load(data)
            else:
                from safetensors.torch import load as pt_load

                tensors = pt_load(data)
        except ImportError:
            raise
        except Exception as exc:  # e.g. shapes that do not match the data offsets
            self._discard_corrupt(kind, key, f"unreadable safetensors: {exc}",
                                  path=path)
            self.stats.hits -= 1
            self.stats.misses += 1
            return None
        return tensors, metadata

    # ------------------------------------------------------------------ directories
    @contextlib.contextmanager
    def building_dir(self, kind: str, key: str) -> Iterator[Path]:
        """Yield an empty directory on the cache's filesystem; on normal exit it is
        fsynced, checksummed and atomically moved into place (on error it is removed)."""
        self._check(kind, key)
        if self.read_only:
            raise CacheWriteError(
                self.root, f"cannot build {kind}/{key}: the cache is read-only",
                "Set cache_dir (--cache-dir / $MD_CACHE_DIR) to a writable directory, or build"
                " the entry once with write access")
        staged = self._tmp_path(".d")
        try:
            staged.mkdir()
        except OSError as exc:
            raise self._write_error(exc, kind, key) from None
        try:
            yield staged
            try:
                self._commit_dir(kind, key, staged)
            except (OSError, sqlite3.Error) as exc:
                raise self._write_error(exc, kind, key) from None
        finally:
            if staged.exists():
                _remove_path(staged)

    def _commit_dir(self, kind: str, key: str, staged: Path) -> Path:
        try:
            sha, size = _dir_digest(staged)
        except _DirProblem as exc:
            raise ValueError(f"cannot cache directory: {exc}") from None
        _fsync_tree(staged)
        return self._commit(kind, key, "dir", staged, sha, size)

    def put_dir(self, kind: str, key: str, src_dir: str | os.PathLike[str], *, move: bool = False) -> Path:
        """Copy (or, with ``move=True``, move) ``src_dir`` into the cache; returns its path."""
        src = Path(src_dir)
        if not src.is_dir():
            raise NotADirectoryError(str(src))
        with self.building_dir(kind, key) as staged:
            staged.rmdir()
            if move:
                try:
                    os.replace(src, staged)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    shutil.move(str(src), staged)
            else:
                shutil.copytree(src, staged, symlinks=True)
        return self._last_commit_path(kind, key)

    def get_dir(self, kind: str, key: str) -> Path | None:
        """The verified directory of an entry, or ``None``.

        The whole tree is re-hashed on each call (a 540 MB model takes about a second).
        The path stays valid until the entry is replaced, evicted or cleared.
        """
        self._check(kind, key)
        problem: str | None = None
        with self._lock(f"{kind}/{key}", exclusive=False):
            row = self._row(kind, key)
            if row is None:
                self.stats.misses += 1
                return None
            path = self.root / row.path
            if row.format != "dir":
                problem = f"stored as {row.format}, read as dir"
            elif not path.is_dir() or path.is_symlink():
                problem = "directory missing"
            else:
                try:
                    digest, size = _dir_digest(path)
                except _DirProblem as exc:
                    problem = str(exc)
                else:
                    if digest != row.sha256 or size != row.size:
                        problem = "checksum mismatch"
        if problem is not None:
            self.stats.misses += 1
            self._discard_corrupt(kind, key, problem, path=row.path)
            return None
        self._touch(kind, key)
        self.stats.hits += 1
        return path

    def _last_commit_path(self, kind: str, key: str) -> Path:
        path = self.path_for(kind, key)
        if path is None:  # evicted or cleared by another process straight away
            raise FileNotFoundError(f"cache entry {kind}/{key} vanished right after it was written")
        return path

    # ------------------------------------------------------------------ get_or_create
    def get_or_create(
        self, kind: str, key: str, builder: Callable[..., Any], *,
        fmt: Literal["json", "model", "tensors", "dir"] = "json",
        cls: type[BaseModel] | None = None,
    ) -> Any:
        """Return the cached value, building and storing it on a miss.

        ``fmt`` decides the storage: ``json`` (``builder()`` returns a JSON object),
        ``model`` (returns a pydantic model; ``cls`` defaults to its type), ``tensors``
        (returns a dict of tensors or ``(tensors, metadata)``; the result is
        ``(tensors, metadata)``), ``dir`` (``builder(path)`` fills an empty directory; the
        result is the cached directory's path). Concurrent processes asking for the same
        entry build it once: the others wait and then read it.
        """

        def lookup() -> Any:
            if fmt == "json":
                return self.get_json(kind, key)
            if fmt == "model":
                if cls is None:
                    raise ValueError("get_or_create(fmt='model') needs cls=")
                return self.get_model(kind, key, cls)
            if fmt == "tensors":
                return self.get_tensors(kind, key)
            if fmt == "dir":
                return self.get_dir(kind, key)
            raise ValueError(f"unknown fmt {fmt!r}")

        value = lookup()
        if value is not None:
            return value
        claim = self.claim(kind, key, wait=True)
        assert claim is not None
        with claim:
            self.stats.misses -= 1  # the first lookup is counted once, by the re-check below
            value = lookup()
            if value is not None:
                return value
            if fmt == "dir":
                with self.building_dir(kind, key) as staged:
                    builder(staged)
                claim.release(done=True)
                return self._last_commit_path(kind, key)
            built = builder()
            if fmt == "json":
                self.put_json(kind, key, built)
                value = json.loads(json.dumps(built, allow_nan=False))  # same shape as a hit
            elif fmt == "model":
                self.put_model(kind, key, built)
                value = built
            else:
                tensors, metadata = built if isinstance(built, tuple) else (built, {})
                self.put_tensors(kind, key, tensors, metadata)
                value = tensors, dict(metadata)
            claim.release(done=True)
            return value


def open_cache(root: str | os.PathLike[str] | None = None, max_bytes: int | None = None) -> ArtifactCache:
    """Open the cache at ``root`` (default: :func:`default_cache_dir`)."""
    return ArtifactCache(default_cache_dir() if root is None else Path(root), max_bytes=max_bytes)
