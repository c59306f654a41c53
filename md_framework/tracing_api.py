"""Driver interfaces of tracers and executors. Implementations live in plugins."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

from md_framework.drivers import Driver
from md_framework.runtime import LoadedModel
from md_framework.types import CircuitGraph, FeatureRef

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


InterventionMode = Literal["zero", "scale", "base"]


@runtime_checkable
class FeatureIntervener(Protocol):
    """Optional tracer capability: intervene on the tracer's own features (not abstract;
    a tracer without it is simply skipped by causal confirmation, docs/causal.md).

    ``intervened_model(model, features, mode, scale=0.0, base=None)`` is a context manager
    yielding a :class:`LoadedModel` that shares ``model``'s weights and tokenizer, whose
    forward pass (``model.model(...)`` and ``model.model.generate(...)``, so any behaviour
    metric) has ``features`` changed at every position: ``zero`` sets them to 0, ``scale``
    multiplies them by ``scale``, ``base`` sets them to the base model's activation on the
    same input (``base`` is required then). The yielded model has its own ``model_id``
    (caches keyed by model id never mix it up with ``model``); the change is undone on exit.
    Implementations may hook the modules ``model`` shares, so while the block is open
    ``model`` itself is changed too: measure the unmodified model outside the block.
    ``features`` are :class:`FeatureRef` (layer, feature id) in the tracer's dictionary.
    """

    def intervened_model(self, model: LoadedModel, features: Sequence[FeatureRef],
                         mode: InterventionMode = "zero", scale: float = 0.0,
                         base: LoadedModel | None = None,
                         ) -> AbstractContextManager[LoadedModel]: ...


@runtime_checkable
class FeatureReader(Protocol):
    """Optional tracer capability: read the tracer's own features without attribution.

    ``feature_activations(model, prompts, features)`` returns, per prompt, a dict
    ``{FeatureRef.key: (peak activation, token position)}`` for the requested ``features``
    (plain forward passes of the formatted prompt). ``decoder_directions(model, features)``
    returns ``{FeatureRef.key: vector}``, each feature's output direction in the residual
    stream. Interpreters use them (max-activating contexts, logit lens) and the analyzer
    picks feature-driven test prompts with them; a tracer without them gets neither.
    """

    def feature_activations(self, model: LoadedModel, prompts: Sequence[str],
                            features: Sequence[FeatureRef]) -> list[dict[str, tuple[float, int]]]: ...

    def decoder_directions(self, model: LoadedModel,
                           features: Sequence[FeatureRef]) -> dict[str, list[float]]: ...


def can_read_features(tracer: Any) -> bool:
    """Whether ``tracer`` offers ``feature_activations`` (:class:`FeatureReader`)."""
    return callable(getattr(tracer, "feature_activations", None))


def can_intervene(tracer: Any) -> bool:
    """Whether ``tracer`` offers the optional :class:`FeatureIntervener` capability."""
    return callable(getattr(tracer, "intervened_model", None))


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
