"""One cost currency for model work: tokens through forward passes, generated tokens,
backward passes — counted at the model, so every stage of every method pays in it.

Why at the model: the pipeline's stages (tracing, screening, feature reading, validation,
refinement, causal confirmation) and every baseline run their models through a handful of
code paths (``model(...)``, ``model.generate(...)``, ``loss.backward()`` /
``torch.autograd.grad``). Counting there, once, needs no edit in any stage and cannot miss
a stage that forgot to report its queries. Cache hits (generation cache, artefact cache)
run no model and cost nothing, which is what they really cost.

The columns (:class:`ModelWork`):

* ``prompt_tokens`` – token positions processed by forward passes outside generation, plus
  the prompt positions of each ``generate`` call (non-padding positions);
* ``generated_tokens`` – tokens produced by ``generate`` (per row, up to and including its
  first EOS);
* ``forward_passes`` – forward calls outside generation, plus one per ``generate`` call;
* ``backward_passes`` / ``backward_tokens`` – backward passes and their token positions.

:func:`token_cost` folds the columns into one number, *forward-token equivalents*:
``prompt + generated + 2 × backward tokens`` (a backward pass costs about twice the FLOPs
of a forward pass: Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1,
C ≈ 2N per token forward, 4N backward).

Who counts: the kernel keeps the process-wide totals (:func:`record`, :func:`snapshot`,
:func:`measuring`, :class:`StageWork`); the model stack counts. The builtin loader attaches
a counter to every torch module it returns (``builtin_plugins.models.cost_counting``:
forward hooks and a ``generate`` wrapper); a loader or tracer that runs another engine, or
another copy of the weights, records its work with :func:`record` (the circuit-tracer tracer
does, for its attribution passes). Work in other processes is not counted (the default
executor is serial). Standard library only.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

from md_framework.types import StrictModel

_LOCK = threading.Lock()


class ModelWork(StrictModel):
    """Counted model work (a counter's totals, or the difference of two snapshots)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0
    backward_passes: int = 0
    backward_tokens: int = 0

    def __add__(self, other: ModelWork) -> ModelWork:
        return ModelWork(**{k: getattr(self, k) + getattr(other, k) for k in ModelWork.model_fields})

    def __sub__(self, other: ModelWork) -> ModelWork:
        return ModelWork(**{k: getattr(self, k) - getattr(other, k) for k in ModelWork.model_fields})

    @property
    def tokens(self) -> int:
        """Forward-token equivalents (module docstring): the one currency."""
        return token_cost(self)


def token_cost(work: ModelWork) -> int:
    """``prompt + generated + 2 × backward tokens`` (Kaplan et al. 2020: backward ≈ 2× forward)."""
    return work.prompt_tokens + work.generated_tokens + 2 * work.backward_tokens


_GLOBAL = ModelWork()


def record(**delta: int) -> None:
    """Add model work to the process-wide totals (``ModelWork`` field names as keywords).

    Called by whatever counts a model's work — the builtin loader's per-module counters
    (``builtin_plugins.models.cost_counting``), or a third-party loader or tracer counting its
    own engine's work — so every method pays in one currency."""
    with _LOCK:
        for key, value in delta.items():
            setattr(_GLOBAL, key, getattr(_GLOBAL, key) + int(value))


def snapshot() -> ModelWork:
    """The process-wide totals so far (subtract two snapshots to cost a span of work)."""
    with _LOCK:
        return _GLOBAL.model_copy()


@contextmanager
def measuring() -> Any:
    """``with measuring() as cost: ...`` then ``cost()`` is the work done inside the block
    (and after it, until read, if read later: read it after the block)."""
    start = snapshot()
    end: list[ModelWork] = []

    def cost() -> ModelWork:
        return (end[0] if end else snapshot()) - start

    try:
        yield cost
    finally:
        end.append(snapshot())


class StageWork:
    """Model work per pipeline stage, from process-wide snapshots: ``enter(stage)`` ends the
    previous stage's span and starts the next; :meth:`tokens` is forward-token equivalents
    per stage. Work in other processes is not seen (as for :func:`measuring`)."""

    def __init__(self) -> None:
        self.work: dict[str, ModelWork] = {}
        self._stage: str | None = None
        self._start = ModelWork()

    def enter(self, stage: str | None) -> None:
        now = snapshot()
        if self._stage is not None:
            self.work[self._stage] = self.work.get(self._stage, ModelWork()) + (now - self._start)
        self._stage, self._start = stage, now

    def tokens(self) -> dict[str, int]:
        self.enter(self._stage)  # close the running span (it stays open)
        return {stage: work.tokens for stage, work in self.work.items()}
