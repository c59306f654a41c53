"""File-level helpers: atomic text writes, hashing, safetensors header checks, fsync.

Used by the artefact cache (:mod:`md_framework.cache`), the analyzer's run directory and the
plugins that write reports or metadata; standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _DirProblem(Exception):
    pass


def _dir_digest(path: Path) -> tuple[str, int]:
    """sha256 over the sorted (relative path, file sha256) manifest and the total size.

    Symlinks and special files are refused: a cached directory must be self-contained.
    """
    entries: list[tuple[str, str, int]] = []
    for current, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames.sort()
        for name in list(dirnames):
            if os.path.islink(os.path.join(current, name)):
                raise _DirProblem(f"symlink {os.path.join(current, name)}")
        for name in sorted(filenames):
            full = os.path.join(current, name)
            if os.path.islink(full) or not os.path.isfile(full):
                raise _DirProblem(f"not a regular file: {full}")
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            entries.append((rel, _sha256_file(Path(full)), os.path.getsize(full)))
    entries.sort()
    digest = hashlib.sha256()
    for rel, file_sha, size in entries:
        digest.update(f"{rel}\0{file_sha}\0{size}\n".encode())
    return digest.hexdigest(), sum(size for _, _, size in entries)


def _safetensors_header(data: bytes) -> dict[str, Any]:
    """Parse and bounds-check a safetensors header (no tensor data is touched)."""
    if len(data) < 8:
        raise ValueError("shorter than the 8-byte header length")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise ValueError("header length beyond the end of the file")
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    body = len(data) - 8 - header_len
    for name, spec in header.items():
        if name == "__metadata__":
            if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
                raise ValueError("__metadata__ must map strings to strings")
            continue
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"bad tensor entry {name!r}")
        start, end = spec["data_offsets"]
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= body):
            raise ValueError(f"tensor {name!r} data outside the file")
    return header


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for current, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(current, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(current))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a mix.

    A uniquely named temporary file in the same directory (safe with concurrent writers) is
    written, fsynced, given ``mode`` (mkstemp makes 0600; run outputs are meant to be read
    and shared) and ``os.replace``-d over ``path``; it is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
