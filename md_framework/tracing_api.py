"""Driver interfaces of tracers and executors. Implementations live in plugins."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from md_framework.drivers import Driver
from md_framework.runtime import LoadedModel
from md_framework.types import CircuitGraph

T = TypeVar("T")
R = TypeVar("R")


class Tracer(Driver):
    """Turns a model and prompts into :class:`~md_framework.types.CircuitGraph` objects.

    Both models of a pair are traced by the same tracer instance, so features share one
    dictionary and align by node identity. ``identity()`` goes into cache keys and must
    change whenever options or the dictionary change.
    """

    needs_dictionary: ClassVar[bool] = True

    @abstractmethod
    def trace(
        self, model: LoadedModel, prompts: Sequence[str], families: Sequence[str | None] | None = None
    ) -> list[CircuitGraph]:
        """Trace each prompt on ``model``; one graph per prompt, in order."""

    def identity(self) -> str:
        return f"{self.name}:{self.options.model_dump_json()}"


class Executor(Driver):
    """Runs independent work items; ``fn`` must be importable (a module-level function)
    for executors that leave the process."""

    @abstractmethod
    def map(
        self, fn: Callable[[T], R], items: Iterable[T], description: str = ""
    ) -> list[R]:
        """Apply ``fn`` to every item and return results in input order."""

    def close(self) -> None:
        """Release workers. Safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
