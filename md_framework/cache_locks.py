"""File locks of the artefact cache: striped entry locks and per-key build claims.

* Entry locks (:func:`stripe_lock`): 256 striped ``flock`` files under ``locks/``, shared
  for reads and exclusive for writes of one entry (see :mod:`md_framework.cache`).
* Build claims (:class:`KeyClaim`): one lock file per key under ``locks/keys/``, held by
  the one process that builds that key. Another builder of the same key either skips it
  for now (``wait=False``, to build its other keys first) or waits for the claim, then
  re-reads the cache and finds the entry the first builder stored: concurrent analyses
  on a cold cache trace each graph once. The claim file is removed by the builder once
  the entry is stored; a waiter that then gets the lock on the removed file (or anyone
  who claims a fresh file) re-checks the cache before building, so removal can cause at
  most one repeated build after a failed build, never a wrong entry.

A read-only cache root cannot hold lock files: locking degrades to no locking there,
which is safe because nothing is written to a read-only cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

N_LOCK_STRIPES = 256
_NO_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _open_lock_file(path: Path) -> int | None:
    """A descriptor to ``flock`` on ``path``; ``None`` when the root cannot hold one."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in _NO_WRITE:
                return None
            raise
    except OSError as exc:
        if exc.errno not in _NO_WRITE:
            raise
    try:  # read-only root: an existing lock file can still be locked (flock needs no write)
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


@contextlib.contextmanager
def stripe_lock(root: Path, name: str, exclusive: bool) -> Iterator[None]:
    """Hold striped lock ``name`` (shared or exclusive) of the cache at ``root``."""
    stripe = hashlib.sha256(name.encode()).digest()[0] % N_LOCK_STRIPES
    fd = _open_lock_file(root / "locks" / f"{stripe:02x}.lock")
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class KeyClaim:
    """The right to build one cache entry; :meth:`release` gives it up.

    ``release(done=True)`` after the entry was stored also removes the claim file.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def release(self, done: bool = False) -> None:
        if self._fd is None:
            return
        if done:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> KeyClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def claim_key(root: Path, kind: str, key: str, *, wait: bool) -> KeyClaim | None:
    """Claim the build of ``kind/key``; ``None`` when another process holds it and
    ``wait`` is false. With ``wait``, blocks until the holder releases it. Callers must
    look the entry up again after a claim succeeds: the holder may have stored it."""
    path = root / "locks" / "keys" / kind / key[:2] / f"{key}.lock"
    fd = _open_lock_file(path)
    if fd is None:  # read-only root: nobody can store this entry, so nobody builds it "for us"
        return KeyClaim(path, None)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return KeyClaim(path, fd)
