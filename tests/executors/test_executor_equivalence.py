"""serial, process and ray executors give identical results on the same work.

One Ray session for the whole module (starting Ray costs ~6 s here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # workers import the helpers by this path too

from md_fake_tracing import (  # noqa: E402
    MARKERS_ENV,
    boom,
    fake_plugin_manager,
    fake_tracer_factory,
    pid_of,
    slow_identity,
    square,
)
from md_framework.cache import ArtifactCache  # noqa: E402
from md_framework.drivers import create_driver, load_driver_class  # noqa: E402
from md_framework.tracing import clear_worker_state, trace_pair, trace_prompts  # noqa: E402

pytest.importorskip("ray")

PROMPTS = [f"prompt number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(8)]
FAMILIES = ["a" if i % 3 else None for i in range(8)]
FAKE = dict(plugin_manager_factory=fake_plugin_manager, tracer_factory=fake_tracer_factory)


@pytest.fixture(scope="module")
def executors():
    made = {
        "serial": create_driver("executor", "serial", {"progress": False}),
        "process": create_driver("executor", "process", {"n_workers": 2, "progress": False}),
        "ray": create_driver("executor", "ray", {"num_cpus": 2, "progress": False}),
    }
    yield made
    for executor in made.values():
        executor.close()
    import ray

    assert not ray.is_initialized()  # the executor that started Ray shut it down


@pytest.fixture(autouse=True)
def _fresh_worker_state(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(MARKERS_ENV, str(tmp_path))
    clear_worker_state()
    yield
    clear_worker_state()


def test_ray_driver_is_registered() -> None:
    cls = load_driver_class("executor", "ray")
    assert cls.__name__ == "RayExecutor" and cls.name == "ray"


def test_map_identical_and_ordered(executors) -> None:
    items = list(range(20))
    expected = [square(x) for x in items]
    for name, executor in executors.items():
        assert executor.map(square, items) == expected, name
        assert executor.map(square, []) == [], name
    # later items finish first: the order of results must still be the input order
    delays = [0.3, 0.2, 0.1, 0.0]
    for name, executor in executors.items():
        assert executor.map(slow_identity, delays) == delays, name


def test_errors_propagate_with_their_type(executors) -> None:
    for name, executor in executors.items():
        with pytest.raises(ValueError, match="item 3 is bad"):
            executor.map(boom, range(5))
        assert executor.map(square, [2]) == [4], name  # still usable afterwards


def test_remote_executors_leave_the_process(executors) -> None:
    assert set(executors["serial"].map(pid_of, range(4))) == {os.getpid()}
    for name in ("process", "ray"):
        pids = set(executors[name].map(pid_of, range(4)))
        assert os.getpid() not in pids, name


def test_tracing_workload_identical(executors, tmp_path: Path) -> None:
    results = {}
    for name, executor in executors.items():
        clear_worker_state()
        out = trace_prompts("fake", {"n_features": 5, "scale": 0.7}, "fake:base", None, PROMPTS,
                            FAMILIES, executor=executor, batch_size=3, **FAKE)
        assert out.stats.traced == len(PROMPTS) and out.stats.tasks == 3
        results[name] = [g.model_dump_json() for g in out]
    assert results["process"] == results["serial"]
    assert results["ray"] == results["serial"]


def test_trace_pair_on_ray_with_shared_cache(executors, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    on_ray = trace_pair("fake", {}, "fake:base", "fake:tuned", None, PROMPTS, FAMILIES,
                        cache=cache, executor=executors["ray"], **FAKE)
    assert on_ray.stats.traced == 2 * len(PROMPTS)
    assert os.getpid() not in on_ray.stats.worker_pids
    serial = trace_pair("fake", {}, "fake:base", "fake:tuned", None, PROMPTS, FAMILIES,
                        executor=executors["serial"], **FAKE)
    assert [g.model_dump_json() for g in on_ray.base] == [g.model_dump_json() for g in serial.base]
    assert [g.model_dump_json() for g in on_ray.intervention] == [
        g.model_dump_json() for g in serial.intervention]
    # the graphs Ray produced are now served from the cache, bit for bit
    again = trace_pair("fake", {}, "fake:base", "fake:tuned", None, PROMPTS, FAMILIES,
                       cache=cache, executor=executors["process"], **FAKE)
    assert again.stats.traced == 0 and again.stats.cache_hits == 2 * len(PROMPTS)
    assert list(again.base) == list(on_ray.base)


def test_ray_reuses_a_running_session(executors) -> None:
    import ray

    executors["ray"].map(square, [1])
    assert ray.is_initialized()
    guest = create_driver("executor", "ray", {"n_workers": 1, "progress": False})
    assert guest.map(square, [1, 2, 3]) == [1, 4, 9]
    guest.close()  # it did not start Ray, so it must not stop it
    assert ray.is_initialized()
    assert executors["ray"].map(square, [3]) == [9]
