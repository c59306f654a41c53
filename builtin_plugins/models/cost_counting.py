"""Counting a torch model's work in the token currency (:mod:`md_framework.costs`).

What one :class:`CostCounter` (attached by the builtin loader to every model it returns,
:func:`attach`) counts:

* ``prompt_tokens`` – token positions processed by forward passes outside generation, plus
  the prompt positions of each ``generate`` call (non-padding positions: attention mask);
* ``generated_tokens`` – tokens produced by ``generate`` (per row, up to and including its
  first EOS; the KV-cached decoding steps are counted here, not as prompt tokens);
* ``forward_passes`` – calls of the model's ``forward`` outside generation, plus one per
  ``generate`` call;
* ``backward_passes`` / ``backward_tokens`` – forward passes whose output logits later
  received a gradient (``backward`` or ``autograd.grad``), and their token positions.

Limits (documented, not hidden): work done by a *different* module object than the one the
loader returned (e.g. the copy of the weights a circuit tracer loads) is counted only if
that code calls :func:`attach` on it; a backward pass that starts inside the network (from a
hidden activation rather than the logits) is not seen by the hooks, so code that starts one
records it with :meth:`CostCounter.add` (the circuit-tracer tracer does, for its attribution
passes). torch is imported only when a counter is attached.
"""

from __future__ import annotations

import threading
from typing import Any

from md_framework import costs
from md_framework.costs import ModelWork

_ATTR = "_md_cost_counter"
_LOCK = threading.Lock()


class CostCounter:
    """Counts one model's work; adds every increment to the process-wide totals too
    (:func:`md_framework.costs.record`)."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.work = ModelWork()
        self._in_generate = 0

    def add(self, **delta: int) -> None:
        """Add work (``ModelWork`` field names as keywords) to this counter and to the
        process-wide totals: the hooks call it, and so does code recording work the hooks
        cannot see, e.g. backward passes a tracer starts inside the network."""
        with _LOCK:
            for key, value in delta.items():
                setattr(self.work, key, getattr(self.work, key) + int(value))
        costs.record(**delta)


def counter_of(module: Any) -> CostCounter | None:
    return getattr(module, _ATTR, None)


def _token_positions(args: tuple, kwargs: dict) -> int:
    mask = kwargs.get("attention_mask")
    if mask is not None and hasattr(mask, "sum"):
        return int(mask.sum())
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is not None and hasattr(ids, "numel"):
        return int(ids.numel())
    embeds = kwargs.get("inputs_embeds")
    if embeds is not None and hasattr(embeds, "shape") and len(embeds.shape) >= 2:
        return int(embeds.shape[0] * embeds.shape[1])
    return 0


def _logits_of(output: Any) -> Any:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if logits is None and hasattr(output, "requires_grad"):
        logits = output
    return logits


def attach(module: Any, label: str = "") -> CostCounter:
    """Attach a counter to a torch module (idempotent: a module keeps its first counter)."""
    existing = counter_of(module)
    if existing is not None:
        return existing
    import torch

    counter = CostCounter(label)

    def pre_hook(mod: Any, args: tuple, kwargs: dict) -> None:
        if counter._in_generate:
            return  # decoding steps are counted by the generate wrapper
        n = _token_positions(args, kwargs)
        counter.add(prompt_tokens=n, forward_passes=1)
        mod._md_cost_last_tokens = n

    def post_hook(mod: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if counter._in_generate or not torch.is_grad_enabled():
            return
        logits = _logits_of(output)
        if logits is None or not getattr(logits, "requires_grad", False):
            return
        n = getattr(mod, "_md_cost_last_tokens", 0)
        seen = [False]

        def on_grad(grad: Any) -> None:
            if not seen[0]:  # one backward pass per forward, however many grads flow
                seen[0] = True
                counter.add(backward_passes=1, backward_tokens=n)

        logits.register_hook(on_grad)

    module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    module.register_forward_hook(post_hook, with_kwargs=True)
    generate = getattr(module, "generate", None)
    if callable(generate):
        def counted_generate(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs.get("input_ids", args[0] if args else None)
            prompt = _token_positions(args, kwargs)
            counter._in_generate += 1
            try:
                out = generate(*args, **kwargs)
            finally:
                counter._in_generate -= 1
            seqs = getattr(out, "sequences", out)
            new = 0
            if ids is not None and hasattr(seqs, "shape") and len(seqs.shape) == 2:
                gen = seqs[:, ids.shape[-1]:]
                eos = kwargs.get("eos_token_id", getattr(getattr(module, "generation_config", None),
                                                         "eos_token_id", None))
                eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
                for row in gen.tolist():
                    n = len(row)
                    for k, t in enumerate(row):
                        if t in eos_ids:
                            n = k + 1
                            break
                    new += n
            counter.add(prompt_tokens=prompt, generated_tokens=new, forward_passes=1)
            return out

        module.generate = counted_generate
    setattr(module, _ATTR, counter)
    return counter
