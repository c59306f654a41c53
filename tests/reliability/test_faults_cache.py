"""Cache faults (issue 19, findings 3 and 4): a read-only cache serves its hits and reports
what it cannot store, a full disk is one clear error, corrupt bytes of every artefact
kind are rebuilt identically, concurrent builders of one key build it once."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import faultfs
import pytest

from md_framework.cache import ArtifactCache, CacheWriteError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "executors"))  # the fake loader and tracer


def _graphs(n: int) -> tuple[list[str], list[str]]:
    return [f"prompt number {i} here" for i in range(n)], [f"fam{i % 3}" for i in range(n)]


def _trace(root: Path, prompts, families, **kwargs):
    from md_fake_tracing import fake_plugin_manager, fake_tracer_factory

    from md_framework.tracing import trace_prompts

    return trace_prompts("fake", {}, "fake:base", None, prompts, families, cache=root,
                         plugin_manager_factory=fake_plugin_manager,
                         tracer_factory=fake_tracer_factory, **kwargs)


# ------------------------------------------------------------------- read-only cache


def test_read_only_cache_serves_hits_and_reports_misses(tmp_path: Path, caplog) -> None:
    root = tmp_path / "cache"
    prompts, families = _graphs(6)
    warm = _trace(root, prompts[:4], families[:4])
    assert warm.stats.traced == 4
    faultfs.install(root, errno.EROFS)
    try:
        with caplog.at_level(logging.WARNING, logger="md_framework.cache"):
            cache = ArtifactCache(root)
            again = _trace(cache, prompts, families)
    finally:
        faultfs.uninstall()
    assert cache.read_only
    assert again.stats.cache_hits == 4 and again.stats.traced == 2  # hits served, misses traced
    assert cache.stats.unstored == 2  # ...and reported as not stored
    assert [g.model_dump() for g in again[:4]] == [g.model_dump() for g in warm]
    warned = [r.getMessage() for r in caplog.records if "read-only" in r.getMessage()]
    assert len(warned) == 1 and str(root) in warned[0] and "not stored" in warned[0]
    assert ArtifactCache(root).info()["entries"] == 4  # nothing was written


def test_read_only_cache_refuses_to_build_a_directory_with_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    ArtifactCache(root)
    faultfs.install(root, errno.EROFS)
    try:
        cache = ArtifactCache(root)
        assert cache.put_json("graph", "k", {"a": 1}) is None  # switches it to read-only
        with pytest.raises(CacheWriteError) as info:
            cache.get_or_create("model-hf", "d", lambda d: (d / "f").write_text("x"), fmt="dir")
    finally:
        faultfs.uninstall()
    assert str(info.value).startswith(f"{root.resolve()}: cannot build model-hf/d: the cache is read-only.")


# ------------------------------------------------------------------- full disk


def test_full_disk_under_the_cache_is_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = ArtifactCache(root)
    faultfs.install(root, errno.ENOSPC)
    try:
        with pytest.raises(CacheWriteError) as info:
            cache.put_json("graph", "k1", {"a": 1})
    finally:
        faultfs.uninstall()
    message = str(info.value)
    assert message.startswith(f"{root.resolve()}: cannot store cache entry graph/k1: no space left on device.")
    assert "Free space" in message and "\n" not in message
    assert not any((root / "tmp").iterdir())  # no half-written leftovers
    assert cache.put_json("graph", "k1", {"a": 1}) is not None  # space back: works again


def test_full_disk_while_tracing_keeps_nothing_half_written(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    prompts, families = _graphs(3)
    ArtifactCache(root)
    faultfs.install(root / "tmp", errno.ENOSPC, skip_lock_files=True)
    try:
        with pytest.raises(CacheWriteError, match="no space left on device"):
            _trace(root, prompts, families)
    finally:
        faultfs.uninstall()
    cache = ArtifactCache(root)
    assert cache.verify_all() == [] and cache.info()["entries"] == 0
    assert _trace(root, prompts, families).stats.traced == 3  # and the next run completes


# ------------------------------------------------------------------- corrupt bytes


def _corrupt(path: Path) -> None:
    target = path
    if path.is_dir():
        target = sorted(p for p in path.rglob("*") if p.is_file())[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["graph", "tensors", "dir"])
def test_corrupt_bytes_are_detected_and_rebuilt_identically(tmp_path: Path, kind: str) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    builds = []
    if kind == "graph":
        prompts, families = _graphs(1)
        first = _trace(cache, prompts, families)[0]
        key = cache.entries("graph")[0].key
        _corrupt(cache.path_for("graph", key))
        again = _trace(cache, prompts, families)
        assert again.stats.traced == 1 and again[0].model_dump() == first.model_dump()
    elif kind == "tensors":
        import numpy as np

        def build():
            builds.append(1)
            return {"w": np.arange(64, dtype=np.float32)}, {"m": 1}

        first = cache.get_or_create("activations", "t", build, fmt="tensors")
        _corrupt(cache.path_for("activations", "t"))
        again = cache.get_or_create("activations", "t", build, fmt="tensors")
        assert len(builds) == 2 and (again[0]["w"] == first[0]["w"]).all()
    else:
        def fill(d: Path) -> None:
            builds.append(1)
            (d / "model.safetensors").write_bytes(bytes(range(256)) * 8)

        first = cache.get_or_create("model-hf", "m", fill, fmt="dir")
        content = (first / "model.safetensors").read_bytes()
        _corrupt(first)
        again = cache.get_or_create("model-hf", "m", fill, fmt="dir")
        assert len(builds) == 2 and (again / "model.safetensors").read_bytes() == content
    assert cache.stats.corrupt == 1


# ------------------------------------------------------------------- concurrent builders


def _traced_in_process(root: str, markers: str, barrier, n: int) -> int:
    import md_fake_tracing

    os.environ[md_fake_tracing.MARKERS_ENV] = markers
    slow = md_fake_tracing.FakeTracer.trace

    def trace(self, model, prompts, families=None):
        import time

        time.sleep(0.02 * len(prompts))  # long enough for the others to reach the same keys
        return slow(self, model, prompts, families)

    md_fake_tracing.FakeTracer.trace = trace
    prompts, families = _graphs(n)
    barrier.wait()
    graphs = _trace(Path(root), prompts, families, batch_size=4)
    return graphs.stats.traced


def test_concurrent_builders_trace_each_key_once(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Manager().Barrier(4)
    n = 24
    with ctx.Pool(4) as pool:
        traced = pool.starmap(_traced_in_process,
                              [(str(tmp_path / "cache"), str(markers), barrier, n)] * 4)
    traces = [p for p in markers.iterdir() if p.name.startswith("trace.")]
    assert len(traces) == n, f"{len(traces)} traces for {n} keys (per process: {traced})"
    assert sum(traced) == n
    assert ArtifactCache(tmp_path / "cache").info()["entries"] == n


def test_claims_do_not_outlive_a_build(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    claim = cache.claim("graph", "abc", wait=False)
    assert claim is not None
    assert cache.claim("graph", "abc", wait=False) is None  # held: the others wait
    claim.release(done=True)
    again = cache.claim("graph", "abc", wait=False)
    assert again is not None
    again.release()


def _open_fresh_cache(root: str, barrier, i: int) -> None:
    barrier.wait()
    ArtifactCache(Path(root)).put_json("probe", f"k{i}", {"i": i})


def test_processes_opening_a_new_cache_at_once_share_one_index(tmp_path: Path) -> None:
    # Several processes creating the index at once must all end up on the same one: a
    # process that read the layout half-way through another's creation once took the new
    # index for a corrupt one and moved it aside (entries lost, work redone).
    ctx = multiprocessing.get_context("fork")
    for attempt in range(6):
        root = tmp_path / f"cache{attempt}"
        barrier = ctx.Manager().Barrier(8)
        with ctx.Pool(8) as pool:
            pool.starmap(_open_fresh_cache, [(str(root), barrier, i) for i in range(8)])
        assert not list(root.glob("index.sqlite.corrupt-*")), f"attempt {attempt}: index moved aside"
        assert ArtifactCache(root).info()["entries"] == 8
