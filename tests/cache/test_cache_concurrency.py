"""Several processes share one cache root: same keys, different keys, directories,
get_or_create builds and eviction, all at once."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from pathlib import Path

import pytest

from md_framework.cache import ArtifactCache

N_PROCS = 4
N_KEYS = 25


def _payload(name: str) -> dict:
    return {"name": name, "floats": [0.1 * i for i in range(200)], "text": "é" * 50}


def _writer(root: str, worker: int, barrier) -> dict:
    cache = ArtifactCache(root)
    barrier.wait()
    builds = Path(root).parent / "builds"
    for i in range(N_KEYS):
        shared = f"shared-{i}"
        cache.put_json("graph", shared, _payload(shared))
        assert cache.get_json("graph", shared) == _payload(shared)
        own = f"w{worker}-{i}"
        cache.put_json("graph", own, _payload(own))
        assert cache.get_json("graph", own) == _payload(own)

        def build(key: str = f"built-{i}") -> dict:
            (builds / f"{key}.{uuid.uuid4().hex}").touch()
            return _payload(key)

        assert cache.get_or_create("graph", f"built-{i}", build) == _payload(f"built-{i}")
        if i % 5 == 0:  # directories replaced concurrently under the same key
            def fill(d: Path, i: int = i) -> None:
                (d / "config.json").write_text(f'{{"i": {i}}}')
                (d / "weights.bin").write_bytes(os.urandom(10) * 100)

            src = Path(root).parent / f"src-{worker}-{i}"
            src.mkdir()
            fill(src)
            cache.put_dir("model-hf", f"dir-{i}", src)
            # another process may replace it right away (and remove this version's files)
            assert cache.get_dir("model-hf", f"dir-{i}") is not None
    return cache.stats.as_dict()


def _evicting_writer(root: str, worker: int, barrier) -> int:
    cache = ArtifactCache(root, max_bytes=20_000)
    barrier.wait()
    for i in range(40):
        key = f"e{worker}-{i}"
        cache.put_json("graph", key, "x" * 1000)
        value = cache.get_json("graph", key)
        assert value in (None, "x" * 1000)  # may already be evicted by another process
        cache.get_json("graph", f"e{(worker + 1) % N_PROCS}-{i}")
    return cache.stats.evicted


def _run(target, root: Path) -> list:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(N_PROCS)
    with ctx.Pool(N_PROCS) as pool:
        return pool.starmap(target, [(str(root), w, barrier) for w in range(N_PROCS)])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "builds").mkdir()
    return tmp_path / "cache"


def test_concurrent_writers_same_and_different_keys(root: Path) -> None:
    ArtifactCache(root)  # create the index before the race, as a run would
    stats = _run(_writer, root)
    cache = ArtifactCache(root)
    assert cache.verify_all() == []
    graphs = {e.key for e in cache.entries("graph")}
    expected = {f"shared-{i}" for i in range(N_KEYS)} | {f"built-{i}" for i in range(N_KEYS)}
    expected |= {f"w{w}-{i}" for w in range(N_PROCS) for i in range(N_KEYS)}
    assert graphs == expected
    for key in expected:
        assert cache.get_json("graph", key) == _payload(key)
    assert len(cache.entries("model-hf")) == N_KEYS // 5
    for i in range(0, N_KEYS, 5):
        assert (cache.get_dir("model-hf", f"dir-{i}") / "config.json").read_text() == f'{{"i": {i}}}'
    # get_or_create: each entry built by exactly one process
    built = [p.name.split(".")[0] for p in (root.parent / "builds").iterdir()]
    assert sorted(built) == sorted(f"built-{i}" for i in range(N_KEYS))
    assert sum(s["corrupt"] for s in stats) == 0
    assert list((root / "tmp").iterdir()) == []
    assert cache.total_bytes() == sum(e.size for e in cache.entries())


def test_concurrent_writers_with_eviction(root: Path) -> None:
    evicted = _run(_evicting_writer, root)
    cache = ArtifactCache(root, max_bytes=20_000)
    assert sum(evicted) > 0
    assert cache.verify_all() == []
    assert cache.total_bytes() <= 20_000 + N_PROCS * 1100
    listed = {cache.root / e.path for e in cache.entries()}
    on_disk = {p for p in (root / "objects").rglob("*.json")}
    assert listed == on_disk  # no orphans, no dangling rows
