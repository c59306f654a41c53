"""Inspection and housekeeping of the artefact cache: listing, clearing, verifying, evicting.

A mixin of :class:`md_framework.cache.ArtifactCache` (split out to keep modules short).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from md_framework.cache_keys import _COLUMNS, _KEY_RE, _KIND_RE, _SUFFIX, CacheEntry

logger = logging.getLogger("md_framework.cache")


class CacheHousekeeping:
    """``contains``, ``entries``, ``delete``, ``info``, ``clear``, ``verify_all``, ``evict``."""

    # ------------------------------------------------------------------ housekeeping
    def contains(self, kind: str, key: str) -> bool:
        """Whether the index lists the entry (no verification, no access-time update)."""
        self._check(kind, key)
        return self._row(kind, key) is not None

    def __contains__(self, item: tuple[str, str]) -> bool:  # (kind, key) in cache
        return self.contains(*item)

    def entries(self, kind: str | None = None) -> list[CacheEntry]:
        sql = f"SELECT {_COLUMNS} FROM entries"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind=?"
            args = (kind,)
        return [CacheEntry(*row) for row in self._db().execute(sql + " ORDER BY kind, key", args)]

    def delete(self, kind: str, key: str) -> bool:
        """Remove one entry; returns whether it existed."""
        self._check(kind, key)
        return self._delete(kind, key)

    def total_bytes(self) -> int:
        return int(self._db().execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0])

    def info(self) -> dict[str, Any]:
        """Entries and bytes, in total and per kind."""
        by_kind: dict[str, dict[str, int]] = {}
        for kind, count, size in self._db().execute(
            "SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM entries GROUP BY kind ORDER BY kind"
        ):
            by_kind[kind] = {"entries": int(count), "bytes": int(size)}
        return {
            "root": str(self.root),
            "entries": sum(v["entries"] for v in by_kind.values()),
            "bytes": sum(v["bytes"] for v in by_kind.values()),
            "max_bytes": self.max_bytes,
            "by_kind": by_kind,
        }

    def clear(self, kind: str | None = None) -> int:
        """Remove every entry (of ``kind``, if given); returns how many were removed."""
        if kind is not None and not _KIND_RE.match(kind):
            raise ValueError(f"invalid cache kind {kind!r}")
        removed = sum(self._delete(e.kind, e.key) for e in self.entries(kind))
        if kind is None:
            self._remove_orphans()
        return removed

    def clear_old_entries(
        self, days: float, *, by: Literal["last_access", "created"] = "last_access",
        kind: str | None = None,
    ) -> int:
        """Remove entries not accessed (or, with ``by="created"``, created) in ``days`` days,
        optionally only of ``kind``; returns how many were removed."""
        if days < 0:
            raise ValueError("days must be >= 0")
        if kind is not None and not _KIND_RE.match(kind):
            raise ValueError(f"invalid cache kind {kind!r}")
        column = "last_access" if by == "last_access" else "created"
        cutoff = time.time() - days * 86400.0
        sql = f"SELECT kind, key FROM entries WHERE {column} < ?"
        args: tuple[Any, ...] = (cutoff,)
        if kind is not None:
            sql += " AND kind = ?"
            args += (kind,)
        rows = self._db().execute(sql, args).fetchall()
        return sum(self._delete(kind, key) for kind, key in rows)

    def verify_all(self) -> list[tuple[str, str]]:
        """Check every entry's checksum; discards and returns the bad ones."""
        bad: list[tuple[str, str]] = []
        for entry in self.entries():
            before = self.stats.corrupt
            if entry.format == "dir":
                self.get_dir(entry.kind, entry.key)
            else:
                self._read_bytes(entry.kind, entry.key, entry.format)
            if self.stats.corrupt > before:
                bad.append((entry.kind, entry.key))
        self._remove_orphans()
        return bad

    def _remove_orphans(self) -> int:
        """Delete object files the index does not point at (left by a crash between writing
        an object and indexing it, or between un-indexing and deleting it)."""
        known = {e.path for e in self.entries()}
        removed = 0
        objects = self.root / "objects"
        for kind_dir in objects.iterdir() if objects.exists() else []:
            for shard in kind_dir.iterdir() if kind_dir.is_dir() else []:
                for item in shard.iterdir() if shard.is_dir() else []:
                    rel = item.relative_to(self.root).as_posix()
                    if rel in known:
                        continue
                    name = item.name
                    for suffix in _SUFFIX.values():
                        if name.endswith(suffix):
                            name = name[: -len(suffix)]
                            break
                    key = name.rsplit(".", 1)[0]
                    if not _KIND_RE.match(kind_dir.name) or not _KEY_RE.match(key):
                        continue  # not ours: leave it alone
                    with self._lock(f"{kind_dir.name}/{key}", exclusive=True):
                        row = self._row(kind_dir.name, key)
                        if row is None or row.path != rel:
                            self._trash(item)
                            removed += 1
        return removed

    def _evict(self, keep: tuple[str, str] | None = None) -> int:
        """Delete least-recently-accessed entries until the total fits ``max_bytes``."""
        if self.max_bytes is None:
            return 0
        evicted = 0
        total = self.total_bytes()
        if total <= self.max_bytes:
            return 0
        candidates = self._db().execute(
            "SELECT kind, key, size FROM entries ORDER BY last_access ASC, created ASC"
        ).fetchall()
        for kind, key, size in candidates:
            if total <= self.max_bytes:
                break
            if keep is not None and (kind, key) == keep:
                continue
            if self._delete(kind, key):
                total -= size
                evicted += 1
                logger.debug("md cache: evicted %s/%s (%d bytes)", kind, key, size)
        self.stats.evicted += evicted
        return evicted

    def evict(self) -> int:
        """Apply the size limit now; returns the number of entries evicted."""
        return self._evict()
