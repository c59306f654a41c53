"""Local executors: ``serial`` (in this process) and ``process`` (worker processes)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import Field

from md_framework.tracing_api import Executor
from md_framework.types import StrictModel

T = TypeVar("T")
R = TypeVar("R")


def _progress(items: list[Any], description: str, enabled: bool) -> Any:
    if not enabled or not description:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False)


class SerialOptions(StrictModel):
    progress: bool = True


class SerialExecutor(Executor):
    """Runs every item in this process, in order. The reference the others must match."""

    Options = SerialOptions
    description = "run work items one after another in this process"

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str = "") -> list[R]:
        items = list(items)
        return [fn(item) for item in _progress(items, description, self.options.progress)]


class ProcessOptions(StrictModel):
    n_workers: int = Field(default=2, ge=1)
    #: torch threads per worker; one thread per worker avoids oversubscribing the cores
    threads_per_worker: int = Field(default=1, ge=1)
    start_method: str = "spawn"
    progress: bool = True


def _init_worker(threads: int) -> None:
    """Limit a worker's threads. torch reads OMP_NUM_THREADS when it is first imported, so
    work that imports torch later gets ``threads`` without paying the ~3 s torch import in
    workers whose work never needs it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


class ProcessExecutor(Executor):
    """Runs items in a pool of local worker processes (``spawn``: safe with torch)."""

    Options = ProcessOptions
    description = "run work items in local worker processes"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._pool: Any = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            import concurrent.futures
            import multiprocessing

            context = multiprocessing.get_context(self.options.start_method)
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.options.n_workers, mp_context=context,
                initializer=_init_worker, initargs=(self.options.threads_per_worker,),
            )
        return self._pool

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str = "") -> list[R]:
        items = list(items)
        if not items:
            return []
        pool = self._get_pool()
        futures = [pool.submit(fn, item) for item in items]
        results: list[R] = []
        for future in _progress(futures, description, self.options.progress):
            results.append(future.result())
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
