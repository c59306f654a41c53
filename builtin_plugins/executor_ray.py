"""The ``ray`` executor: work items as Ray tasks, on a local instance or an existing cluster.

Ray is imported and started only when the first ``map`` runs. Without ``address`` a local
instance is started with ``num_cpus`` CPUs (no dashboard) and shut down by ``close()``;
with ``address`` (``"auto"``, ``"ray://host:10001"``...) an existing cluster is joined and
left running. If Ray is already initialised in this process, that session is used as is.

Results come back in input order. At most ``n_workers`` tasks are in flight at once.
Each task first extends the worker's ``sys.path`` with the driver's (so functions from
modules importable here - tests, scripts - import there as they do for the ``process``
executor), then unpickles the function and item with Ray's cloudpickle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import Field

from md_framework.errors import MissingDependencyError
from md_framework.tracing_api import Executor
from md_framework.types import StrictModel

T = TypeVar("T")
R = TypeVar("R")


class RayOptions(StrictModel):
    #: tasks in flight at once (default: num_cpus, or the cluster's CPU count)
    n_workers: int | None = Field(default=None, ge=1)
    #: CPUs of the local instance we start (default: n_workers, else all cores)
    num_cpus: int | None = Field(default=None, ge=1)
    #: join an existing cluster instead of starting a local instance
    address: str | None = None
    #: CPUs Ray reserves per task (1 keeps one task per core)
    cpus_per_task: float = Field(default=1.0, gt=0)
    #: torch/OMP threads inside each task
    threads_per_worker: int = Field(default=1, ge=1)
    #: copy the driver's sys.path into workers (needed for local modules)
    propagate_sys_path: bool = True
    object_store_memory: int | None = Field(default=None, ge=78_643_200)
    log_to_driver: bool = False
    progress: bool = True


def _apply(sys_path: list[str], threads: int, blob: bytes) -> Any:
    """Runs inside a Ray worker: prepare the process, then call ``fn(item)``."""
    for entry in sys_path:
        if entry not in sys.path:
            sys.path.append(entry)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    from ray import cloudpickle

    fn, item = cloudpickle.loads(blob)
    if "torch" in sys.modules and torch is None:  # fn's import brought torch in
        sys.modules["torch"].set_num_threads(threads)
    return fn(item)


class RayExecutor(Executor):
    """Runs items as Ray tasks; identical results to ``serial`` for deterministic ``fn``."""

    Options = RayOptions
    description = "run work items as Ray tasks (local instance or an existing cluster)"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._ray: Any = None
        self._started = False
        self._remote: Any = None

    def _ensure(self) -> Any:
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("ray", extra="ray", purpose="the ray executor") from None
        opts = self.options
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False, "log_to_driver": opts.log_to_driver,
                "configure_logging": True, "logging_level": "WARNING",
            }
            if opts.address:
                kwargs["address"] = opts.address
            else:
                kwargs["num_cpus"] = opts.num_cpus or opts.n_workers or os.cpu_count() or 1
                if opts.object_store_memory:
                    kwargs["object_store_memory"] = opts.object_store_memory
            ray.init(**kwargs)
            self._started = not opts.address
        self._remote = ray.remote(num_cpus=opts.cpus_per_task, max_retries=0)(_apply)
        self._ray = ray
        return ray

    def _window(self, ray: Any) -> int:
        if self.options.n_workers:
            return self.options.n_workers
        cpus = ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.options.cpus_per_task))

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str = "") -> list[R]:
        items = list(items)
        if not items:
            return []
        ray = self._ensure()
        from ray import cloudpickle

        sys_path = [p for p in sys.path if p] if self.options.propagate_sys_path else []
        path_ref = ray.put(sys_path)
        window = self._window(ray)
        results: list[Any] = [None] * len(items)
        index_of: dict[Any, int] = {}
        pending: list[Any] = []
        next_item = 0
        bar = None
        if self.options.progress and description:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc=description, leave=False)
        try:
            while next_item < len(items) or pending:
                while next_item < len(items) and len(pending) < window:
                    blob = cloudpickle.dumps((fn, items[next_item]))
                    ref = self._remote.remote(path_ref, self.options.threads_per_worker, blob)
                    index_of[ref] = next_item
                    pending.append(ref)
                    next_item += 1
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[index_of.pop(ref)] = ray.get(ref)  # re-raises the task's error
                    if bar is not None:
                        bar.update(1)
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return results

    def close(self) -> None:
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray = None
        self._remote = None
        self._started = False
