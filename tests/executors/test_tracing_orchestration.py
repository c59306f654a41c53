"""trace_prompts / trace_pair / analyze_prompts_parallel with a fake tracer and loader."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # workers import the helpers by this path too

from md_fake_tracing import (  # noqa: E402
    MARKERS_ENV,
    FakeTracer,
    fake_plugin_manager,
    fake_tracer_factory,
)
from md_framework.cache import ArtifactCache  # noqa: E402
from md_framework.errors import ConfigError, MDError
from md_framework.runtime import ModelSpec
from md_framework.tracing import (
    GRAPH_KIND,
    analyze_prompts_parallel,
    clear_worker_state,
    graph_cache_key,
    load_model,
    trace_pair,
    trace_prompts,
)
from md_framework.types import CircuitGraph

PROMPTS = ["The capital of France is", "2 + 2 =", "Tell me a joke", "The capital of France is"]
FAMILIES = ["geo", "math", "chat", "geo"]
FAKE = dict(plugin_manager_factory=fake_plugin_manager, tracer_factory=fake_tracer_factory)


@pytest.fixture(autouse=True)
def markers(tmp_path: Path, monkeypatch) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    monkeypatch.setenv(MARKERS_ENV, str(directory))
    clear_worker_state()
    yield directory
    clear_worker_state()


def count(markers: Path, what: str) -> int:
    return sum(1 for p in markers.iterdir() if p.name.startswith(what + "."))


def test_trace_prompts_caches_and_counts(tmp_path: Path, markers: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    first = trace_prompts("fake", {"n_features": 4}, "fake:base", None, PROMPTS, FAMILIES,
                          cache=cache, **FAKE)
    assert [g.prompt for g in first] == PROMPTS and [g.family for g in first] == FAMILIES
    assert all(isinstance(g, CircuitGraph) for g in first)
    assert first[0] == first[3]  # duplicate (prompt, family) traced once
    s = first.stats
    assert (s.prompts, s.cache_hits, s.cache_misses, s.traced, s.tasks) == (4, 0, 4, 3, 3)
    assert s.model_loads == 1 and count(markers, "load") == 1 and count(markers, "trace") == 3
    assert first.model_id.startswith("fake-base@")
    assert cache.info()["by_kind"][GRAPH_KIND]["entries"] == 3

    # second call: everything from the cache; the model stays loaded in this "worker"
    second = trace_prompts("fake", {"n_features": 4}, "fake:base", None, PROMPTS, FAMILIES,
                           cache=cache, **FAKE)
    assert [g.model_dump_json() for g in second] == [g.model_dump_json() for g in first]
    assert (second.stats.cache_hits, second.stats.traced, second.stats.model_loads) == (4, 0, 0)
    assert count(markers, "trace") == 3

    # a known model id skips loading entirely on a full hit
    clear_worker_state()
    third = trace_prompts("fake", {"n_features": 4}, "fake:base", None, PROMPTS, FAMILIES,
                          cache=cache, model_id=first.model_id, **FAKE)
    assert third.stats.model_loads == 0 and count(markers, "load") == 1
    assert list(third) == list(first)


def test_cache_keys_depend_on_tracer_options_family_and_model(tmp_path: Path, markers: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    trace_prompts("fake", {}, "fake:base", None, PROMPTS[:1], ["geo"], cache=cache, **FAKE)
    for call in (
        dict(tracer_options={"n_features": 5}, model_spec="fake:base", families=["geo"]),
        dict(tracer_options={}, model_spec="fake:base", families=["other"]),
        dict(tracer_options={}, model_spec="fake:tuned", families=["geo"]),
    ):
        out = trace_prompts("fake", call["tracer_options"], call["model_spec"], None, PROMPTS[:1],
                            call["families"], cache=cache, **FAKE)
        assert out.stats.cache_misses == 1 and out.stats.traced == 1
    assert count(markers, "trace") == 4
    identity = FakeTracer({}).identity()
    model_id = load_model(ModelSpec(source="fake:base"), __import__(
        "md_framework.runtime", fromlist=["ModelLoadOptions"]).ModelLoadOptions(),
        fake_plugin_manager()).model_id
    key = graph_cache_key(model_id, identity, PROMPTS[0], "geo")
    assert cache.get_model(GRAPH_KIND, key, CircuitGraph).prompt == PROMPTS[0]


def test_corrupt_cached_graph_is_retraced(tmp_path: Path, markers: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    first = trace_prompts("fake", {}, "fake:base", None, PROMPTS[:2], cache=cache, **FAKE)
    entry = cache.entries(GRAPH_KIND)[0]
    path = cache.path_for(GRAPH_KIND, entry.key)
    path.write_text(path.read_text().replace("0.", "9.", 1))
    again = trace_prompts("fake", {}, "fake:base", None, PROMPTS[:2], cache=cache, **FAKE)
    assert again.stats.cache_hits == 1 and again.stats.traced == 1 and cache.stats.corrupt == 1
    assert list(again) == list(first)


def test_batching_and_no_cache(markers: Path) -> None:
    out = trace_prompts("fake", {}, "fake:base", None, PROMPTS[:3], batch_size=2, **FAKE)
    assert out.stats.tasks == 2 and out.stats.traced == 3 and len(out) == 3
    assert [g.prompt for g in out] == PROMPTS[:3]
    assert trace_prompts("fake", {}, "fake:base", None, [], **FAKE) == []


def test_trace_pair_aligns_and_uses_same_options(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    pair = trace_pair("fake", {"n_features": 3}, "fake:base", "fake:tuned", None, PROMPTS[:3],
                      FAMILIES[:3], cache=cache, **FAKE)
    assert len(pair.base) == len(pair.intervention) == 3
    for b, i in pair.pairs():
        assert b.prompt == i.prompt and b.family == i.family
        assert b.dictionary_id == i.dictionary_id and len(b.nodes) == len(i.nodes) == 4
        assert b.model_id != i.model_id
    assert pair.stats.traced == 6 and pair.stats.model_loads == 2
    again = trace_pair("fake", {"n_features": 3}, "fake:base", "fake:tuned", None, PROMPTS[:3],
                       FAMILIES[:3], cache=cache, **FAKE)
    assert again.stats.cache_hits == 6 and again.stats.traced == 0


def test_errors_are_clear(markers: Path) -> None:
    with pytest.raises(ConfigError, match='no model loader recognised model source "nowhere"'):
        trace_prompts("fake", {}, "nowhere", None, ["x"], **FAKE)
    with pytest.raises(ConfigError, match="2 families given for 1 prompts"):
        trace_prompts("fake", {}, "fake:base", None, ["x"], ["a", "b"], **FAKE)
    with pytest.raises(ConfigError, match="invalid options"):
        trace_prompts("fake", {"bogus": 1}, "fake:base", None, ["x"], **FAKE)


def test_analyze_prompts_parallel_matches_serial(tmp_path: Path, markers: Path) -> None:
    serial = trace_prompts("fake", {}, "fake:base", None, PROMPTS, FAMILIES, **FAKE)
    parallel = analyze_prompts_parallel(
        PROMPTS, n_workers=2, tracer_name="fake", model_spec="fake:base", families=FAMILIES,
        cache=tmp_path / "cache", **FAKE,
    )
    assert [g.model_dump_json() for g in parallel] == [g.model_dump_json() for g in serial]
    assert os.getpid() not in parallel.stats.worker_pids
    assert parallel.stats.traced == 3
    one = analyze_prompts_parallel(PROMPTS, n_workers=1, tracer_name="fake", model_spec="fake:base",
                                   families=FAMILIES, cache=tmp_path / "cache", **FAKE)
    assert one.stats.cache_hits == 4 and list(one) == list(serial)


def test_tracer_returning_wrong_count_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(FakeTracer, "trace", lambda self, model, prompts, families=None: [])
    with pytest.raises(MDError, match="returned 0 graphs for 1 prompts"):
        trace_prompts("fake", {}, "fake:base", None, ["x"], **FAKE)


def test_tracer_must_keep_order_and_prompt(monkeypatch) -> None:
    original = FakeTracer.trace
    monkeypatch.setattr(FakeTracer, "trace",
                        lambda self, model, prompts, families=None: original(self, model, prompts[::-1]))
    with pytest.raises(MDError, match="graphs must be in input order"):
        trace_prompts("fake", {}, "fake:base", None, ["a", "b"], batch_size=2, **FAKE)


def test_tracer_without_family_gets_it_filled(monkeypatch) -> None:
    original = FakeTracer.trace
    monkeypatch.setattr(FakeTracer, "trace",
                        lambda self, model, prompts, families=None: original(self, model, prompts))
    out = trace_prompts("fake", {}, "fake:base", None, ["a", "b"], ["f1", None], **FAKE)
    assert [g.family for g in out] == ["f1", None]


def test_cached_graph_under_a_foreign_key_is_not_served(tmp_path: Path, caplog) -> None:
    """An index edited so that a valid graph answers another key is caught by content."""
    import sqlite3

    cache = ArtifactCache(tmp_path / "cache")
    first = trace_prompts("fake", {}, "fake:base", None, ["a", "b"], cache=cache, **FAKE)
    key_a, key_b = (graph_cache_key(first.model_id, FakeTracer({}).identity(), p, None) for p in "ab")
    path_a, path_b = (cache.path_for(GRAPH_KIND, k) for k in (key_a, key_b))
    path_b.write_bytes(path_a.read_bytes())  # b's file now holds a's graph...
    db = sqlite3.connect(cache.root / "index.sqlite")  # ...and b's row a's checksum
    db.execute("UPDATE entries SET sha256=(SELECT sha256 FROM entries WHERE key=?),"
               " size=(SELECT size FROM entries WHERE key=?) WHERE key=?", (key_a, key_a, key_b))
    db.commit()
    db.close()
    again = trace_prompts("fake", {}, "fake:base", None, ["a", "b"], cache=cache, **FAKE)
    # both entries passed their checksums, but b's content is a's graph: b is retraced
    assert again.stats.cache_hits == 1 and again.stats.traced == 1
    assert [g.prompt for g in again] == ["a", "b"]
    assert "does not belong to its key" in caplog.text
    assert again[1] == first[1]


def test_preloaded_model_is_not_loaded_again(markers: Path) -> None:
    from md_framework.runtime import ModelLoadOptions

    loaded = load_model(ModelSpec(source="fake:base"), ModelLoadOptions(), fake_plugin_manager())
    assert count(markers, "load") == 1
    out = trace_prompts("fake", {}, "fake:base", None, PROMPTS[:2], model=loaded, **FAKE)
    assert out.stats.model_loads == 0 and count(markers, "load") == 1
    assert out.model_id == loaded.model_id and out.stats.traced == 2
    pair = trace_pair("fake", {}, "fake:base", "fake:tuned", None, PROMPTS[:2], base_model=loaded,
                      plugin_manager_factory=fake_plugin_manager, tracer_factory=fake_tracer_factory)
    assert pair.base.stats.model_loads == 0 and pair.intervention.stats.model_loads == 1


def test_partial_factories_are_recognised_across_pickling(tmp_path: Path, markers: Path) -> None:
    import functools
    import pickle

    from md_framework.tracing import _callable_key

    factory = functools.partial(fake_plugin_manager, extra_blocked=("fdr-commands",))
    clone = pickle.loads(pickle.dumps(factory))
    assert clone is not factory and _callable_key(clone) == _callable_key(factory)
    assert _callable_key(factory) != _callable_key(fake_plugin_manager)
    out = analyze_prompts_parallel(
        PROMPTS * 2, n_workers=2, tracer_name="fake", model_spec="fake:base",
        families=FAMILIES * 2, plugin_manager_factory=factory, tracer_factory=fake_tracer_factory,
    )
    # one load per worker process at most (plus none here), not one per task
    assert out.stats.tasks == 3 and out.stats.model_loads <= 2
    assert count(markers, "load") == out.stats.model_loads
