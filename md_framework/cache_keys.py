"""Keys, constants and records of the artefact cache (see :mod:`md_framework.cache`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Literal

from pydantic import BaseModel

#: Part of every key made by :func:`cache_key`; bump to invalidate all keys at once.
CACHE_KEY_VERSION = 1
#: Environment variable naming the default cache root.
CACHE_DIR_ENV = "MD_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".md-cache")

_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TMP_MAX_AGE_S = 7 * 86400.0  # leftovers of writers whose pid is alive are kept this long
_TENSOR_META_KEY = "md_metadata"

Format = Literal["json", "safetensors", "dir"]
_SUFFIX: dict[str, str] = {"json": ".json", "safetensors": ".safetensors", "dir": ".d"}


# --------------------------------------------------------------------------- keys


def _canonical_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=lambda v: json.dumps(v, default=_canonical_default, sort_keys=True))
    if isinstance(value, bytes):
        return {"__bytes_sha256__": hashlib.sha256(value).hexdigest()}
    raise TypeError(f"cache key part of type {type(value).__name__} is not JSON-serialisable")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, no NaN/inf, UTF-8 kept as is."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
        default=_canonical_default,
    )


def cache_key(**parts: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``parts`` plus :data:`CACHE_KEY_VERSION`.

    Pass everything that determines the artefact: model identity (weights hash or pinned
    revision), dictionary identity, prompt, tracer identity/options, schema version...
    Pydantic models, paths, enums and sets are normalised; order of keyword arguments
    does not matter.
    """
    payload = {"_cache_key_version": CACHE_KEY_VERSION, **parts}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def default_cache_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """The one cache root every command uses: ``$MD_CACHE_DIR`` if set, else ``configured``
    (a config's ``cache_dir`` or a ``--cache-dir``), else the platform's user cache
    directory (``platformdirs.user_cache_dir("md-framework")``, as pip and Hugging Face do;
    ``~/.cache/md-framework`` without platformdirs). Never the working directory by accident:
    a relative ``MD_CACHE_DIR`` or ``configured`` is made absolute once, here."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    if configured is not None and str(configured).strip():
        return Path(configured).expanduser().absolute()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path("~/.cache/md-framework").expanduser()
    return Path(user_cache_dir("md-framework", appauthor=False))


@dataclass
class CacheStats:
    """Counters of one :class:`ArtifactCache` object (this process only)."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0
    evicted: int = 0
    unstored: int = 0  # built but not stored: the cache is read-only

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    key: str
    format: str
    size: int
    created: float
    last_access: float
    sha256: str
    path: str  # relative to the cache root


#: ``PRAGMA user_version`` of the index layout below.
INDEX_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    format TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_access REAL NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS entries_last_access ON entries (last_access);
"""
_COLUMNS = "kind, key, format, size, created, last_access, sha256, path"
