"""Training helpers for organisms: the toy word-level tokenizer and Llama, and the
supervised fine-tuning loop (loss on answer tokens only) used for base and intervention.
Everything heavy is imported inside functions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def build_toy_tokenizer(words: Sequence[str]) -> Any:
    """A whitespace word-level ``PreTrainedTokenizerFast`` that prepends ``<bos>``."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        pad_token="<pad>", padding_side="right",
    )


def build_toy_llama(vocab_size: int, cfg: Any, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads, max_position_embeddings=128, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        rope_theta=10000.0,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    model.generation_config.bos_token_id = 2
    return model


def encode_examples(tokenizer: Any, examples: Sequence[tuple[str, str]], max_length: int) -> list[tuple[list[int], int]]:
    """(ids, n_prompt_tokens) per (prompt, answer); the prompt is formatted like the metrics do."""
    from builtin_plugins.metrics.core import encode_continuation, encode_prompt

    out = []
    eos = tokenizer.eos_token_id
    for prompt, answer in examples:
        p = encode_prompt(tokenizer, prompt)
        a = encode_continuation(tokenizer, prompt, answer) + [eos]
        ids = (p + a)[:max_length]
        if len(p) < len(ids):
            out.append((ids, len(p)))
    return out


def train_sft(model: Any, tokenizer: Any, examples: Sequence[tuple[str, str]], *, steps: int,
              lr: float, batch_size: int, seed: int, max_length: int = 96,
              weights: Sequence[float] | None = None, log_every: int = 0) -> list[float]:
    """AdamW with linear warm-up and cosine decay; loss on answer tokens (and EOS) only.

    ``weights`` are sampling weights per example. Returns the loss curve (per step).
    """
    import math

    import torch

    encoded = encode_examples(tokenizer, examples, max_length)
    if not encoded:
        raise ValueError("no training examples")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    losses = []
    w = list(weights) if weights is not None else None
    for step in range(steps):
        batch = rng.choices(encoded, weights=w, k=batch_size) if w else rng.choices(encoded, k=batch_size)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (seq, n_prompt) in enumerate(batch):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
            labels[i, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  step {step + 1}/{steps} loss {losses[-1]:.4f}", flush=True)
    model.eval()
    return losses


def save_model_dir(model: Any, tokenizer: Any, out: Path, meta: dict[str, Any],
                   metrics_words: dict[str, list[str]] | None = None) -> str:
    """save_pretrained (safetensors) + tokenizer + md_meta.json with the weights hash."""
    from builtin_plugins.models._util import state_dict_sha256, write_json_atomic

    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    model_id = f"sha256:{state_dict_sha256(model)}"
    write_json_atomic(out / "md_meta.json", {**meta, "model_id": model_id, "dtype": "float32"})
    if metrics_words:
        (out / "md_metrics.json").write_text(json.dumps(metrics_words, indent=2))
    return model_id
