"""Fault injection for the fault tests: writes under a path fail with a chosen errno.

The suite runs as root in CI containers, where ``chmod 0o555`` does not stop a write, and
cannot mount a full or read-only file system; so the faults are injected at the calls
every write path goes through:

* ``os.open`` with a write flag, ``open``/``io.open`` in a write mode, ``os.mkdir``,
  ``os.replace``/``os.rename``, ``os.fsync`` of a descriptor opened under the path: raise
  ``OSError(errno, strerror, path)`` exactly as the kernel would (``ENOSPC``, ``EROFS``...).
* SQLite, whose writes happen in C: ``sqlite3.connect`` of a database under the path
  returns a connection that fails as the real fault would: ``EROFS`` opens it read-only
  (``mode=ro``: "attempt to write a readonly database"), ``ENOSPC`` caps it at its current
  size plus ``sqlite_pages`` pages (``PRAGMA max_page_count``: "database or disk is full").

``install(prefix, errno)`` patches the process (``uninstall()`` undoes it); in a
subprocess, ``python faultfs.py PREFIX ERRNO -m md_framework ARGS`` runs ``md`` with the
fault installed.
"""

from __future__ import annotations

import builtins
import errno as errno_mod
import io
import os
import runpy
import sqlite3
import sys
from pathlib import Path

_saved: dict[str, object] = {}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _under(path: object, prefix: str) -> bool:
    if isinstance(path, int):
        return False
    try:
        text = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    return text == prefix or text.startswith(prefix.rstrip("/") + "/")


def install(prefix: str | os.PathLike[str], err: int, *, sqlite_pages: int = 0,
            skip_lock_files: bool = False) -> None:
    """Make writes under ``prefix`` fail with ``err``. ``skip_lock_files``: lock files
    (``*.lock``) still open, so a fault can be placed behind a lock that was taken."""
    uninstall()
    prefix = os.path.abspath(os.fspath(prefix))
    message = os.strerror(err)
    real = {"os.open": os.open, "open": builtins.open, "io.open": io.open, "os.mkdir": os.mkdir,
            "os.replace": os.replace, "os.rename": os.rename, "sqlite3.connect": sqlite3.connect}
    _saved.update(real)

    def fail(path: object) -> None:
        raise OSError(err, message, os.fsdecode(path) if not isinstance(path, int) else path)

    def skip(path: object) -> bool:
        return skip_lock_files and os.fsdecode(path).endswith(".lock")

    def fake_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS and _under(path, prefix) and not skip(path):
            fail(path)
        return real["os.open"](path, flags, mode, dir_fd=dir_fd)

    def make_open(original):
        def fake_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and _under(file, prefix) and not skip(file):
                fail(file)
            return original(file, mode, *args, **kwargs)
        return fake_open

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if _under(path, prefix):
            if os.path.isdir(path) and err == errno_mod.ENOSPC:
                raise FileExistsError(errno_mod.EEXIST, os.strerror(errno_mod.EEXIST), path)
            fail(path)
        return real["os.mkdir"](path, mode, dir_fd=dir_fd)

    def make_rename(original):
        def fake_rename(src, dst, *args, **kwargs):
            if _under(dst, prefix) or _under(src, prefix):
                fail(dst)
            return original(src, dst, *args, **kwargs)
        return fake_rename

    def fake_connect(database, *args, **kwargs):
        if isinstance(database, (str, os.PathLike)) and not str(database).startswith("file:") \
                and _under(database, prefix):
            if err in (errno_mod.EROFS, errno_mod.EACCES, errno_mod.EPERM):
                kwargs["uri"] = True
                return real["sqlite3.connect"](f"{Path(database).absolute().as_uri()}?mode=ro",
                                               *args, **kwargs)
            conn = real["sqlite3.connect"](database, *args, **kwargs)
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(pages, 1) + sqlite_pages}")
            return conn
        return real["sqlite3.connect"](database, *args, **kwargs)

    os.open = fake_os_open
    builtins.open = make_open(real["open"])
    io.open = make_open(real["io.open"])
    os.mkdir = fake_mkdir
    os.replace = make_rename(real["os.replace"])
    os.rename = make_rename(real["os.rename"])
    sqlite3.connect = fake_connect


def uninstall() -> None:
    if not _saved:
        return
    os.open = _saved["os.open"]
    builtins.open = _saved["open"]
    io.open = _saved["io.open"]
    os.mkdir = _saved["os.mkdir"]
    os.replace = _saved["os.replace"]
    os.rename = _saved["os.rename"]
    sqlite3.connect = _saved["sqlite3.connect"]
    _saved.clear()


def main() -> None:
    prefix, name = sys.argv[1], sys.argv[2]
    pages = int(os.environ.get("FAULTFS_SQLITE_PAGES", "0"))
    install(prefix, getattr(errno_mod, name), sqlite_pages=pages,
            skip_lock_files=os.environ.get("FAULTFS_SKIP_LOCKS") == "1")
    assert sys.argv[3] == "-m"
    module = sys.argv[4]
    sys.argv = [module, *sys.argv[5:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
