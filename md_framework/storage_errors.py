"""Disk, permission and corruption faults as one clear message: ``<path>: <cause>. <next step>``.

Every write path of a run (run directory, ledger, artefact cache, report, organism build)
turns the ``OSError`` / ``sqlite3`` error it meets into a :class:`StorageError`, which the
``md`` command line prints as a single ``Error:`` line with exit code 2. The cause is a
short human phrase (``no space left on device``, ``read-only file system``...), the next
step says what to do (free space and ``--resume``, choose another directory...).
Standard library only.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from md_framework.errors import MDError

#: errno -> the phrase used in messages (strerror is platform-worded; these are stable).
_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EFBIG: "file too large",
}
#: errnos that mean "this location cannot be written at all" (as opposed to "is full").
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: errnos that mean "out of space" (the fix is freeing space, then resuming).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageError(MDError):
    """A file or directory could not be read or written; ``str()`` is the one-line message.

    ``path`` is the file or directory concerned, ``cause`` a short phrase, ``advice`` the
    next step. ``errno`` is the underlying OS error number when there is one.
    """

    def __init__(self, path: str | os.PathLike[str] | None, cause: str, advice: str = "",
                 *, errno_: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.cause = cause
        self.advice = advice
        self.errno = errno_
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.path}: {self.cause}" if self.path else self.cause
        text = text.rstrip(".") + "."
        return f"{text} {self.advice}".strip()

    def with_advice(self, advice: str) -> StorageError:
        """The same fault with another next step (callers that know the run directory)."""
        self.advice = advice
        self.args = (self._render(),)
        return self

    @property
    def read_only(self) -> bool:
        return self.errno in READ_ONLY_ERRNOS

    @property
    def no_space(self) -> bool:
        return self.errno in NO_SPACE_ERRNOS


class DamagedFileError(StorageError):
    """A file's content is not what it must be (checksum, format, database image)."""


def os_cause(exc: OSError) -> str:
    """``no space left on device`` etc. for an ``OSError`` (falls back to its strerror)."""
    if exc.errno in _CAUSES:
        return _CAUSES[exc.errno]
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def sqlite_cause(exc: sqlite3.Error) -> tuple[str, int | None]:
    """A phrase and the matching errno for an SQLite error (full disk, read-only, I/O...)."""
    text = str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return f"no space left on device ({text})", errno.ENOSPC
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return f"read-only ({text})", errno.EROFS
    if name.startswith("SQLITE_CANTOPEN") or "unable to open database" in text:
        return f"cannot open the database ({text})", errno.EACCES
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text \
            or "not a database" in text:
        return f"damaged database ({text})", None
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return f"input/output error ({text})", errno.EIO
    return text, None


def advice_for(errno_: int | None, *, what: str = "it") -> str:
    """A default next step for a fault on ``what``."""
    if errno_ in NO_SPACE_ERRNOS:
        return f"Free space on the disk that holds {what}, then run the command again"
    if errno_ in READ_ONLY_ERRNOS:
        return f"Make {what} writable or choose another location"
    return f"Check {what} and run the command again"


def from_os_error(exc: OSError, path: str | os.PathLike[str] | None = None,
                  advice: str | None = None, *, what: str = "it") -> StorageError:
    """A :class:`StorageError` for ``exc`` naming ``path`` (default: the path in ``exc``)."""
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    if isinstance(where, bytes):
        where = os.fsdecode(where)
    return StorageError(where, os_cause(exc),
                        advice if advice is not None else advice_for(exc.errno, what=what),
                        errno_=exc.errno)


def from_sqlite_error(exc: sqlite3.Error, path: str | os.PathLike[str],
                      advice: str | None = None, *, what: str = "it") -> StorageError:
    cause, number = sqlite_cause(exc)
    cls = DamagedFileError if number is None and cause.startswith("damaged") else StorageError
    return cls(path, cause, advice if advice is not None else advice_for(number, what=what),
               errno_=number)


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing parent (what a permission check can look at)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
