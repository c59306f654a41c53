"""Tracing orchestration: cache look-ups, fan-out over an executor, result collection.

Independent of which tracer runs: it talks to tracers only through
:class:`md_framework.tracing_api.Tracer` and to model loaders only through the
``md_load_model`` hook. Work that leaves the process travels as a picklable
:class:`TraceTask` (specs and names, never live models); each worker process rebuilds the
plugin manager, the model and the tracer from it and keeps them for the next task
(:func:`clear_worker_state` drops them).

Flow of :func:`trace_prompts`:

1. build the tracer here (cheap: tracers load dictionaries lazily) for its ``identity()``;
2. resolve the model's identity (``LoadedModel.model_id``) - pass ``model_id`` when you know
   it, otherwise one task loads the model on a worker, which keeps it for step 4;
3. look every (prompt, family) up in the cache under
   ``cache_key(artifact="circuit-graph", schema, model_id, tracer identity, prompt, family)``;
4. trace only the misses (deduplicated, in batches of ``batch_size``) on the executor;
5. store the new graphs and return all graphs in input order with :class:`TraceStats`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from md_framework.errors import ConfigError, MDError
from md_framework.runtime import LoadedModel, ModelLoadOptions, ModelSpec
from md_framework.types import SCHEMA_VERSION, CircuitGraph

if TYPE_CHECKING:
    from md_framework.cache import ArtifactCache
    from md_framework.plugins import MDPluginManager
    from md_framework.tracing_api import Executor, Tracer

logger = logging.getLogger(__name__)

#: Cache kind of traced graphs.
GRAPH_KIND = "graph"
#: How many loaded models one worker process keeps (a base/intervention pair).
WORKER_MODEL_SLOTS = int(os.environ.get("MD_WORKER_MODEL_SLOTS", "2"))

PluginManagerFactory = Callable[[], "MDPluginManager"]
TracerFactory = Callable[[str, Mapping[str, Any]], "Tracer"]


# --------------------------------------------------------------------------- factories


def default_plugin_manager() -> MDPluginManager:
    """The normal plugin manager (entry points, honouring ``MD_DISABLE_PLUGIN_AUTOLOAD``)."""
    from md_framework.plugins import get_plugin_manager

    return get_plugin_manager()


def default_tracer_factory(name: str, options: Mapping[str, Any]) -> Tracer:
    """Instantiate the tracer driver ``name`` with validated ``options``."""
    from md_framework.drivers import create_driver

    return create_driver("tracer", name, dict(options))


def load_model(
    spec: ModelSpec, options: ModelLoadOptions, pm: MDPluginManager | None = None
) -> LoadedModel:
    """Load ``spec`` through the first ``md_load_model`` implementation that accepts it."""
    from md_framework.plugins import Hooks

    pm = pm if pm is not None else default_plugin_manager()
    found = Hooks(pm).first("md_load_model", spec=spec, options=options)
    if found is None:
        loaders = sorted({impl.plugin_name for impl in pm.hook.md_load_model.get_hookimpls()})
        raise ConfigError(
            f'no model loader recognised model source "{spec.source}"'
            f" (loaders tried: {', '.join(loaders) or 'none installed'})"
        )
    model = found.value
    if not isinstance(model, LoadedModel):
        raise MDError(f"model loader {found.plugin} returned {type(model).__name__}, not LoadedModel")
    if not model.loader:
        model.loader = found.plugin
    return model


# --------------------------------------------------------------------------- tasks & workers


@dataclass(frozen=True)
class TraceTask:
    """Everything a worker needs to rebuild the model and tracer and trace some prompts.

    Picklable: specs are pydantic models, factories must be module-level functions.
    """

    tracer_name: str
    tracer_options: dict[str, Any]
    model_spec: ModelSpec
    load_options: ModelLoadOptions
    prompts: tuple[str, ...] = ()
    families: tuple[str | None, ...] = ()
    plugin_manager_factory: PluginManagerFactory = default_plugin_manager
    tracer_factory: TracerFactory = default_tracer_factory


@dataclass
class TaskResult:
    """What a worker sends back: graphs as JSON (exact, class-independent) and facts."""

    model_id: str
    graphs_json: list[str]
    pid: int
    model_loaded: bool
    seconds: float


_state_lock = threading.Lock()
_worker_models: OrderedDict[tuple[Any, ...], LoadedModel] = OrderedDict()
_worker_tracers: dict[tuple[Any, ...], Tracer] = {}
_worker_pms: dict[str, MDPluginManager] = {}


def _canonical(options: Mapping[str, Any]) -> str:
    from md_framework.cache import canonical_json

    return canonical_json(dict(options))


def _callable_key(fn: Any) -> str:
    """A stable identity for a factory, equal across pickling (``functools.partial`` of a
    module-level function included), so workers recognise what they already built."""
    if isinstance(fn, functools.partial):
        return f"partial({_callable_key(fn.func)}, {fn.args!r}, {sorted(fn.keywords.items())!r})"
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(fn)


def _model_key(task: TraceTask) -> tuple[str, str, str]:
    return (
        task.model_spec.model_dump_json(), task.load_options.model_dump_json(),
        _callable_key(task.plugin_manager_factory),
    )


def _seed_model(task: TraceTask, model: LoadedModel) -> None:
    """Make an already loaded model this process's copy for ``task`` (no second load when
    the executor runs in this process)."""
    with _state_lock:
        _worker_models[_model_key(task)] = model
        _worker_models.move_to_end(_model_key(task))
        while len(_worker_models) > max(1, WORKER_MODEL_SLOTS):
            _worker_models.popitem(last=False)


def _worker_model(task: TraceTask) -> tuple[LoadedModel, bool]:
    """The task's model, loaded at most once per process (LRU of WORKER_MODEL_SLOTS)."""
    key = _model_key(task)
    pm_key = _callable_key(task.plugin_manager_factory)
    with _state_lock:
        model = _worker_models.get(key)
        if model is not None:
            _worker_models.move_to_end(key)
            return model, False
        pm = _worker_pms.get(pm_key)
        if pm is None:
            pm = _worker_pms[pm_key] = task.plugin_manager_factory()
        model = load_model(task.model_spec, task.load_options, pm)
        _worker_models[key] = model
        while len(_worker_models) > max(1, WORKER_MODEL_SLOTS):
            _worker_models.popitem(last=False)
        return model, True


def _worker_tracer(task: TraceTask) -> Tracer:
    key = (task.tracer_name, _canonical(task.tracer_options), _callable_key(task.tracer_factory))
    with _state_lock:
        tracer = _worker_tracers.get(key)
        if tracer is None:
            tracer = _worker_tracers[key] = task.tracer_factory(task.tracer_name, task.tracer_options)
        return tracer


def clear_worker_state() -> None:
    """Forget the models, tracers and plugin managers this process keeps for tracing."""
    with _state_lock:
        _worker_models.clear()
        _worker_tracers.clear()
        _worker_pms.clear()


def resolve_model_id_task(task: TraceTask) -> TaskResult:
    """Worker function: load (and keep) the model, report its identity."""
    start = time.perf_counter()
    model, loaded = _worker_model(task)
    return TaskResult(model.model_id, [], os.getpid(), loaded, time.perf_counter() - start)


def trace_task(task: TraceTask) -> TaskResult:
    """Worker function: trace ``task.prompts`` and return the graphs as JSON."""
    start = time.perf_counter()
    model, loaded = _worker_model(task)
    tracer = _worker_tracer(task)
    families = list(task.families) if task.families else None
    graphs = tracer.trace(model, list(task.prompts), families)
    if len(graphs) != len(task.prompts):
        raise MDError(
            f'tracer "{task.tracer_name}" returned {len(graphs)} graphs for {len(task.prompts)} prompts'
        )
    out = []
    for graph, prompt, family in zip(graphs, task.prompts, task.families or [None] * len(graphs)):
        if not isinstance(graph, CircuitGraph):
            raise MDError(f'tracer "{task.tracer_name}" returned {type(graph).__name__}, not CircuitGraph')
        if graph.prompt != prompt:
            raise MDError(
                f'tracer "{task.tracer_name}" returned a graph for prompt {graph.prompt!r} where'
                f" {prompt!r} was asked (graphs must be in input order, prompt unchanged)"
            )
        if graph.family is None and family is not None:
            graph.family = family
        elif graph.family != family:
            raise MDError(f'tracer "{task.tracer_name}" changed the family of {prompt!r}')
        out.append(graph.model_dump_json())
    return TaskResult(model.model_id, out, os.getpid(), loaded, time.perf_counter() - start)


# --------------------------------------------------------------------------- results


@dataclass
class TraceStats:
    """What one call did. ``traced`` counts prompts actually traced (cache misses, deduplicated)."""

    prompts: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    traced: int = 0
    tasks: int = 0
    model_loads: int = 0
    worker_pids: list[int] = field(default_factory=list)
    trace_seconds: float = 0.0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __iadd__(self, other: TraceStats) -> TraceStats:
        for name in ("prompts", "cache_hits", "cache_misses", "traced", "tasks", "model_loads"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.worker_pids = sorted(set(self.worker_pids) | set(other.worker_pids))
        self.trace_seconds += other.trace_seconds
        self.wall_seconds += other.wall_seconds
        return self


class GraphList(list):  # type: ignore[type-arg]
    """A plain list of :class:`CircuitGraph` with the call's :class:`TraceStats` and ids."""

    stats: TraceStats
    model_id: str
    tracer_identity: str


@dataclass
class PairTrace:
    base: GraphList
    intervention: GraphList
    tracer_identity: str

    @property
    def stats(self) -> TraceStats:
        total = TraceStats()
        total += self.base.stats
        total += self.intervention.stats
        return total

    def pairs(self) -> list[tuple[CircuitGraph, CircuitGraph]]:
        return list(zip(self.base, self.intervention))


def graph_cache_key(model_id: str, tracer_identity: str, prompt: str, family: str | None) -> str:
    from md_framework.cache import cache_key

    return cache_key(
        artifact="circuit-graph", schema_version=SCHEMA_VERSION, model_id=model_id,
        tracer=tracer_identity, prompt=prompt, family=family,
    )


# --------------------------------------------------------------------------- orchestration


def _open_cache(cache: ArtifactCache | str | os.PathLike[str] | None) -> ArtifactCache | None:
    if cache is None:
        return None
    from md_framework.cache import ArtifactCache

    return cache if isinstance(cache, ArtifactCache) else ArtifactCache(Path(cache))


def _run(executor: Executor | None, fn: Callable[[TraceTask], TaskResult],
         tasks: list[TraceTask], description: str) -> list[TaskResult]:
    if executor is None:
        return [fn(task) for task in tasks]
    return executor.map(fn, tasks, description=description)


def _families(prompts: Sequence[str], families: Sequence[str | None] | None) -> list[str | None]:
    if families is None:
        return [None] * len(prompts)
    if len(families) != len(prompts):
        raise ConfigError(f"{len(families)} families given for {len(prompts)} prompts")
    return list(families)


def trace_prompts(
    tracer_name: str,
    tracer_options: Mapping[str, Any] | None,
    model_spec: ModelSpec | str,
    load_options: ModelLoadOptions | None,
    prompts: Sequence[str],
    families: Sequence[str | None] | None = None,
    cache: ArtifactCache | str | os.PathLike[str] | None = None,
    executor: Executor | None = None,
    *,
    model: LoadedModel | None = None,
    model_id: str | None = None,
    batch_size: int = 1,
    plugin_manager_factory: PluginManagerFactory = default_plugin_manager,
    tracer_factory: TracerFactory = default_tracer_factory,
) -> GraphList:
    """Trace ``prompts`` on one model; graphs in input order, cached graphs reused.

    ``executor`` ``None`` runs everything in this process. With a process or Ray executor,
    ``plugin_manager_factory`` and ``tracer_factory`` must be picklable: module-level
    functions or ``functools.partial`` of one, e.g.
    ``partial(get_plugin_manager, blocked=[...])`` to give workers the run's plugin set.
    Pass ``model`` (already loaded from ``model_spec``) to avoid loading it again in this
    process (in-process and ``serial`` execution; worker processes load their own) and to
    take its ``model_id``. The result is a list with ``.stats`` (:class:`TraceStats`),
    ``.model_id`` and ``.tracer_identity``.
    """
    wall = time.perf_counter()
    spec = model_spec if isinstance(model_spec, ModelSpec) else ModelSpec(source=model_spec)
    load_options = load_options or ModelLoadOptions()
    options = dict(tracer_options or {})
    prompts = list(prompts)
    fams = _families(prompts, families)
    if batch_size < 1:
        raise ConfigError("batch_size must be >= 1")
    store = _open_cache(cache)
    stats = TraceStats(prompts=len(prompts))
    base_task = TraceTask(
        tracer_name, options, spec, load_options,
        plugin_manager_factory=plugin_manager_factory, tracer_factory=tracer_factory,
    )
    if model is not None:
        _seed_model(base_task, model)
        model_id = model_id or model.model_id
    tracer = tracer_factory(tracer_name, options)
    identity = tracer.identity()

    result = GraphList()
    result.tracer_identity = identity
    if not prompts:
        result.stats, result.model_id = stats, model_id or ""
        return result

    if model_id is None:
        (resolved,) = _run(executor, resolve_model_id_task, [base_task], "")
        model_id = resolved.model_id
        stats.model_loads += int(resolved.model_loaded)
        stats.worker_pids.append(resolved.pid)

    keys = [graph_cache_key(model_id, identity, p, f) for p, f in zip(prompts, fams)]
    found: dict[str, CircuitGraph] = {}
    expected = dict(zip(keys, zip(prompts, fams)))
    for key, (prompt, family) in expected.items():
        graph = _cached_graph(store, key, prompt, family) if store is not None else None
        if graph is not None:
            found[key] = graph
    stats.cache_hits = sum(1 for k in keys if k in found)
    stats.cache_misses = len(keys) - stats.cache_hits

    todo: dict[str, tuple[str, str | None]] = {}
    for key, prompt, family in zip(keys, prompts, fams):
        if key not in found:
            todo.setdefault(key, (prompt, family))

    def trace_keys(todo_keys: list[str]) -> None:
        tasks = [
            TraceTask(
                tracer_name, options, spec, load_options,
                prompts=tuple(todo[k][0] for k in chunk), families=tuple(todo[k][1] for k in chunk),
                plugin_manager_factory=plugin_manager_factory, tracer_factory=tracer_factory,
            )
            for chunk in (todo_keys[i : i + batch_size] for i in range(0, len(todo_keys), batch_size))
        ]
        if not tasks:
            return
        outputs = _run(executor, trace_task, tasks, f"tracing {spec.source}")
        stats.tasks += len(tasks)
        chunks = (todo_keys[i : i + batch_size] for i in range(0, len(todo_keys), batch_size))
        for chunk, output in zip(chunks, outputs):
            if output.model_id != model_id:
                raise MDError(
                    f"model {spec.source} changed identity during tracing"
                    f" ({model_id} -> {output.model_id}); rerun to retrace"
                )
            stats.model_loads += int(output.model_loaded)
            stats.trace_seconds += output.seconds
            stats.worker_pids.append(output.pid)
            for key, text in zip(chunk, output.graphs_json):
                graph = CircuitGraph.model_validate_json(text)
                found[key] = graph
                if store is not None:
                    store.put_model(GRAPH_KIND, key, graph)
        stats.traced += len(todo_keys)

    if store is None:
        trace_keys(list(todo))
    else:
        _trace_claimed(store, list(todo), found, trace_keys,
                       lambda key: _cached_graph(store, key, *todo[key]))

    result.extend(found[k] for k in keys)
    stats.worker_pids = sorted(set(stats.worker_pids))
    stats.wall_seconds = time.perf_counter() - wall
    result.stats, result.model_id = stats, model_id
    return result


def _cached_graph(store: ArtifactCache, key: str, prompt: str, family: str | None) -> CircuitGraph | None:
    graph = store.get_model(GRAPH_KIND, key, CircuitGraph)
    if graph is None:
        return None
    if graph.prompt != prompt or graph.family != family:
        # the checksum held, so the index itself was altered: do not trust it
        logger.warning("md cache: graph %s does not belong to its key; retracing", key)
        if not store.read_only:
            store.delete(GRAPH_KIND, key)
        return None
    return graph


#: keys claimed at once (one open lock file each). Small enough that processes racing
#: through the same prompts share the tracing (each claims the next unclaimed chunk)
#: instead of one claiming everything while the others wait.
_CLAIM_CHUNK = 32


def _trace_claimed(store: ArtifactCache, todo_keys: list[str], found: dict[str, CircuitGraph],
                   trace_keys: Callable[[list[str]], None],
                   lookup: Callable[[str], CircuitGraph | None]) -> None:
    """Trace ``todo_keys`` so that concurrent processes trace each key once.

    Each key is claimed (:meth:`ArtifactCache.claim`) before it is traced. Keys another
    process is tracing are skipped at first; after this process traced its own, it waits
    for each of those claims in turn and reads the graph the other process stored (tracing
    it only if that process failed). No claim is held while waiting for another, so two
    processes cannot deadlock.
    """
    deferred: list[str] = []
    for start in range(0, len(todo_keys), _CLAIM_CHUNK):
        claims = {}
        try:
            for key in todo_keys[start:start + _CLAIM_CHUNK]:
                claim = store.claim(GRAPH_KIND, key, wait=False)
                if claim is None:
                    deferred.append(key)
                    continue
                graph = lookup(key)  # stored by another process between our miss and the claim
                if graph is not None:
                    claim.release()
                    found[key] = graph
                else:
                    claims[key] = claim
            trace_keys(list(claims))
            for claim in claims.values():
                claim.release(done=True)
        finally:
            for claim in claims.values():
                claim.release()
    for key in deferred:
        claim = store.claim(GRAPH_KIND, key, wait=True)
        assert claim is not None
        with claim:
            graph = lookup(key)
            if graph is not None:
                found[key] = graph
                continue
            trace_keys([key])
            claim.release(done=True)


def trace_pair(
    tracer_name: str,
    tracer_options: Mapping[str, Any] | None,
    base_spec: ModelSpec | str,
    intervention_spec: ModelSpec | str,
    load_options: ModelLoadOptions | None,
    prompts: Sequence[str],
    families: Sequence[str | None] | None = None,
    cache: ArtifactCache | str | os.PathLike[str] | None = None,
    executor: Executor | None = None,
    *,
    base_model: LoadedModel | None = None,
    intervention_model: LoadedModel | None = None,
    base_model_id: str | None = None,
    intervention_model_id: str | None = None,
    batch_size: int = 1,
    plugin_manager_factory: PluginManagerFactory = default_plugin_manager,
    tracer_factory: TracerFactory = default_tracer_factory,
) -> PairTrace:
    """Trace base and intervention on the same prompts with the same tracer and options.

    Graph ``i`` of both lists belongs to prompt ``i``. Raises if the two runs used
    different dictionaries (their features would not align by identity).
    """
    common = dict(
        families=families, cache=_open_cache(cache), executor=executor, batch_size=batch_size,
        plugin_manager_factory=plugin_manager_factory, tracer_factory=tracer_factory,
    )
    base = trace_prompts(tracer_name, tracer_options, base_spec, load_options, prompts,
                         model=base_model, model_id=base_model_id, **common)  # type: ignore[arg-type]
    intervention = trace_prompts(tracer_name, tracer_options, intervention_spec, load_options,
                                 prompts, model=intervention_model, model_id=intervention_model_id,
                                 **common)  # type: ignore[arg-type]
    if base.tracer_identity != intervention.tracer_identity:
        raise MDError("base and intervention were traced with different tracer identities")
    dictionaries = {g.dictionary_id for g in [*base, *intervention]}
    if len(dictionaries) > 1:
        raise MDError(
            f"base and intervention graphs use different dictionaries {sorted(map(str, dictionaries))};"
            " features would not align by identity"
        )
    return PairTrace(base, intervention, base.tracer_identity)


def analyze_prompts_parallel(
    prompts: Sequence[str],
    n_workers: int = 2,
    *,
    tracer_name: str,
    model_spec: ModelSpec | str,
    tracer_options: Mapping[str, Any] | None = None,
    load_options: ModelLoadOptions | None = None,
    families: Sequence[str | None] | None = None,
    cache: ArtifactCache | str | os.PathLike[str] | None = None,
    threads_per_worker: int = 1,
    plugin_manager_factory: PluginManagerFactory = default_plugin_manager,
    tracer_factory: TracerFactory = default_tracer_factory,
) -> GraphList:
    """Trace ``prompts`` on ``n_workers`` local worker processes (the ``process`` executor).

    ``n_workers=1`` runs in this process. Each worker loads the model once; budget memory
    for ``n_workers`` copies of it.
    """
    if n_workers < 1:
        raise ConfigError("n_workers must be >= 1")
    call = dict(
        families=families, cache=cache, plugin_manager_factory=plugin_manager_factory,
        tracer_factory=tracer_factory,
    )
    if n_workers == 1:
        return trace_prompts(tracer_name, tracer_options, model_spec, load_options, prompts,
                             **call)  # type: ignore[arg-type]
    from md_framework.drivers import create_driver

    with create_driver(
        "executor", "process",
        {"n_workers": n_workers, "threads_per_worker": threads_per_worker, "progress": False},
    ) as executor:
        return trace_prompts(tracer_name, tracer_options, model_spec, load_options, prompts,
                             executor=executor, **call)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- answers

#: Cache kind of answer-aware traces.
ANSWER_KIND = "answer-trace"


def answer_cache_key(base_id: str, intervention_id: str, tracer_identity: str, prompt: str,
                     family: str | None, max_new_tokens: int) -> str:
    from md_framework.cache import cache_key

    return cache_key(
        artifact="answer-trace", schema_version=SCHEMA_VERSION, base=base_id,
        intervention=intervention_id, tracer=tracer_identity, prompt=prompt, family=family,
        max_new_tokens=max_new_tokens,
    )


def trace_answer_pairs(
    tracer: Tracer,
    base: LoadedModel,
    intervention: LoadedModel,
    prompts: Sequence[str],
    families: Sequence[str | None] | None = None,
    cache: ArtifactCache | str | os.PathLike[str] | None = None,
    *,
    max_new_tokens: int = 24,
) -> list[Any] | None:
    """Answer-aware traces (:class:`~md_framework.types.AnswerTrace`, one per prompt, in
    order) from the tracer's optional ``trace_answers(base, intervention, prompts, families,
    max_new_tokens=...)`` capability; ``None`` when the tracer has none. Cached per (model
    pair, tracer identity, prompt, family, max_new_tokens); a cached trace reports 0 cost
    (nothing was run for it)."""
    from md_framework.types import AnswerTrace

    method = getattr(tracer, "trace_answers", None)
    if not callable(method):
        return None
    fams = _families(prompts, families)
    store = _open_cache(cache)
    identity = tracer.identity()
    keys = [answer_cache_key(base.model_id, intervention.model_id, identity, p, f, max_new_tokens)
            for p, f in zip(prompts, fams)]
    found: dict[str, AnswerTrace] = {}
    if store is not None:
        for key, prompt, family in zip(keys, prompts, fams):
            trace = store.get_model(ANSWER_KIND, key, AnswerTrace)
            if trace is not None and trace.prompt == prompt and trace.family == family:
                found[key] = trace.model_copy(update={"generated_tokens": 0,
                                                      "teacher_forced_tokens": 0})
    todo = [(k, p, f) for k, p, f in zip(keys, prompts, fams) if k not in found]
    todo = list({k: (k, p, f) for k, p, f in todo}.values())
    if todo:
        traces = method(base, intervention, [p for _, p, _ in todo], [f for _, _, f in todo],
                        max_new_tokens=max_new_tokens)
        for (key, _, _), trace in zip(todo, traces):
            trace = trace if isinstance(trace, AnswerTrace) else AnswerTrace.model_validate(trace)
            found[key] = trace
            if store is not None:
                store.put_model(ANSWER_KIND, key, trace)
    out = []
    seen: set[str] = set()
    for key in keys:
        trace = found[key]
        if key in seen:  # a repeated prompt costs nothing the second time
            trace = trace.model_copy(update={"generated_tokens": 0, "teacher_forced_tokens": 0})
        seen.add(key)
        out.append(trace)
    return out
