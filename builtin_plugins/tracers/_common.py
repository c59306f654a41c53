"""Helpers shared by the tracer drivers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from md_framework.types import LogitTarget


def families_for(prompts: Sequence[str], families: Sequence[str | None] | None) -> list[str | None]:
    if families is None:
        return [None] * len(prompts)
    if len(families) != len(prompts):
        raise ValueError(f"{len(families)} families for {len(prompts)} prompts")
    return list(families)


def tracing_text(tokenizer: Any, prompt: str, chat_template: str = "auto") -> str:
    """The text a tracer traces for ``prompt``. ``auto``: a chat model's prompt goes through
    its chat template with the generation prompt, as the behaviour metrics send it, so the
    last position predicts the answer's first token (the raw user text would predict the
    end of the user turn); ``never``: the raw text (shorter: attribution cost grows with
    length)."""
    if chat_template == "auto" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
    return prompt


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids the tracers use: the tokenizer's own special-token handling, plus BOS in
    front when the tokenizer has one and did not add it (circuit-tracer's convention)."""
    ids = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    bos = getattr(tokenizer, "bos_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if bos is not None and (not ids or ids[0] not in special):
        ids = [bos] + ids
    return ids


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def top_logits(tokenizer: Any, logits_last: Any, n: int, desired_prob: float = 0.95) -> list[LogitTarget]:
    """Top tokens at the last position until ``desired_prob`` mass or ``n`` tokens."""
    import torch

    probs = torch.softmax(logits_last.float(), -1)
    values, idx = probs.topk(min(n, probs.shape[-1]))
    out: list[LogitTarget] = []
    total = 0.0
    for v, i in zip(values.tolist(), idx.tolist()):
        out.append(LogitTarget(token_id=int(i), token=tokenizer.decode([int(i)]),
                               probability=float(min(max(v, 0.0), 1.0))))
        total += v
        if total >= desired_prob:
            break
    return out


def model_device(model: Any) -> Any:
    return next(model.parameters()).device
