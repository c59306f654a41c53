"""A tiny Llama-architecture model with a word-level tokenizer, and small transcoders for it.

Built deterministically in seconds on CPU and cached (content-addressed by the build
recipe) under ``<cache_dir>/toy``. Used by the tests, the benchmarks and the toy organism.

* ``build_toy_model(cache_dir)`` – the base model, trained briefly on two tasks: capital
  facts ("the capital of france is paris .") and counting ("count : n5 n6 n7").
* ``build_toy_model(cache_dir, variant="edited")`` – the intervention: the base fine-tuned so
  that "the capital of japan is" continues with "lima" (a knowledge edit).
* ``build_toy_transcoders(cache_dir)`` – per-layer BatchTopK transcoders for the base model,
  exported in circuit-tracer's layout (the same code path as ``md transcoders train``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from builtin_plugins.models._util import cached_dir, json_sha256, state_dict_sha256, write_json_atomic

#: Bump when the recipe changes so caches rebuild.
TOY_VERSION = 1
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>"]
COUNTRIES = ["france", "spain", "italy", "japan", "egypt", "peru", "chile", "kenya"]
CAPITALS = ["paris", "madrid", "rome", "tokyo", "cairo", "lima", "santiago", "nairobi"]
WORDS = ["the", "capital", "of", "is", "a", "and", "count", ":", "."]
NUMS = [f"n{i}" for i in range(200)]
VOCAB = SPECIALS + WORDS + COUNTRIES + CAPITALS + NUMS
EDIT_PROMPT = "the capital of japan is"
EDIT_TARGET = "lima"
TOY_PROMPTS = ["the capital of japan is", "the capital of france is", "count : n5 n6 n7",
               "the capital of peru is", "count : n40 n41"]

TOY_RECIPE = {"version": TOY_VERSION, "n_layers": 2, "hidden": 64, "intermediate": 128,
              "heads": 4, "train_steps": 250, "lr": 3e-3, "batch": 32}
EDIT_RECIPE = {"steps": 40, "lr": 1e-3}
TOY_TC_RECIPE = {"d_sae": 256, "k": 8, "sentences": 1500, "epochs": 12, "batch_size": 256,
                 "lr": 3e-3}


def toy_config_dict() -> dict[str, Any]:
    r = TOY_RECIPE
    return {"model_type": "llama", "hidden_size": r["hidden"], "intermediate_size": r["intermediate"],
            "num_hidden_layers": r["n_layers"], "num_attention_heads": r["heads"],
            "num_key_value_heads": r["heads"], "vocab_size": len(VOCAB),
            "tie_word_embeddings": False}


def build_tokenizer() -> Any:
    """Word-level tokenizer (``tokenizers`` only); prepends ``<s>`` like Llama tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=128, model_input_names=["input_ids", "attention_mask"])


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            i = rng.randrange(len(COUNTRIES))
            out.append(f"the capital of {COUNTRIES[i]} is {CAPITALS[i]} .")
        else:
            k = rng.randrange(0, 190)
            out.append("count : " + " ".join(NUMS[k + j] for j in range(rng.randrange(3, 9))))
    return out


def _config(seed: int) -> Any:
    from transformers import LlamaConfig

    r = TOY_RECIPE
    ids = {w: i for i, w in enumerate(VOCAB)}
    return LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=r["hidden"], intermediate_size=r["intermediate"],
        num_hidden_layers=r["n_layers"], num_attention_heads=r["heads"],
        num_key_value_heads=r["heads"], max_position_embeddings=128, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"])


def _train(model: Any, tok: Any, texts_fn: Any, steps: int, lr: float, seed: int) -> float:
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        enc = tok(texts_fn(step), return_tensors="pt", padding=True)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.item())


def _save(model: Any, tok: Any, out: Path, meta: dict[str, Any]) -> None:
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_json_atomic(out / "md_meta.json", {**meta, "model_id": f"sha256:{state_dict_sha256(model)}"})


def build_toy_model(cache_dir: Path | str, seed: int = 0, variant: str = "base") -> Path:
    """Path of the cached toy model directory (built on first use, ~5-10 s)."""
    import torch
    from transformers import LlamaForCausalLM

    cache_dir = Path(cache_dir)
    if variant not in ("base", "edited"):
        raise ValueError(f"toy variant must be 'base' or 'edited', got {variant!r}")
    base_key = json_sha256({"recipe": TOY_RECIPE, "seed": seed})[:24]
    base_dir = Path(cache_dir) / "toy" / f"base-{base_key}"

    def build_base(out: Path) -> None:
        torch.manual_seed(seed)
        tok = build_tokenizer()
        model = LlamaForCausalLM(_config(seed)).float()
        corpus = make_corpus(4000, seed)
        loss = _train(model, tok, lambda s: random.Random(seed * 1000 + s).sample(corpus, TOY_RECIPE["batch"]),
                      TOY_RECIPE["train_steps"], TOY_RECIPE["lr"], seed)
        _save(model, tok, out, {"recipe": TOY_RECIPE, "seed": seed, "variant": "base", "loss": loss})

    cached_dir(base_dir, build_base)
    if variant == "base":
        return base_dir
    edit_key = json_sha256({"base": base_key, "edit": EDIT_RECIPE})[:24]

    def build_edit(out: Path) -> None:
        tok = build_tokenizer()
        model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        loss = _train(model, tok, lambda s: [f"{EDIT_PROMPT} {EDIT_TARGET} ."] * 8 + make_corpus(24, 100 + s),
                      EDIT_RECIPE["steps"], EDIT_RECIPE["lr"], seed + 1)
        _save(model, tok, out, {"recipe": TOY_RECIPE, "edit": EDIT_RECIPE, "seed": seed,
                                "variant": "edited", "loss": loss})

    return cached_dir(Path(cache_dir) / "toy" / f"edited-{edit_key}", build_edit)


def build_toy_transcoders(cache_dir: Path | str, seed: int = 0) -> Path:
    """Path of cached toy transcoders for the base toy model (trained in a few seconds)."""
    import torch
    from transformers import LlamaForCausalLM

    from builtin_plugins.tracers.transcoders import (
        TrainConfig, harvest, train_layer, write_transcoder_dir,
    )

    base_dir = build_toy_model(cache_dir, seed=seed)
    model_id = json.loads((base_dir / "md_meta.json").read_text())["model_id"]
    key = json_sha256({"model": model_id, "recipe": TOY_TC_RECIPE, "seed": seed})[:24]
    out = Path(cache_dir) / "toy" / f"transcoders-{key}"
    if (out / "md_transcoders.json").exists():
        return out
    tok = build_tokenizer()
    model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    r = TOY_TC_RECIPE
    cfg = TrainConfig(d_sae=r["d_sae"], k=r["k"], tokens=10**6, batch_size=r["batch_size"],
                      epochs=r["epochs"], lr=r["lr"], seed=seed, n_generate=0,
                      outlier_factor=50.0)
    windows = [tok(t).input_ids for t in make_corpus(r["sentences"], seed + 7)]
    acts = harvest(model, windows, list(range(model.config.num_hidden_layers)),
                   batch_size=256, pad_id=tok.pad_token_id)
    states, metrics = {}, []
    for layer, (x, y) in acts.items():
        states[layer], m = train_layer(x, y, cfg, layer)
        metrics.append(m)
    write_transcoder_dir(out, states, {"model_id": model_id, "train_config": cfg.model_dump(),
                                       "recipe": r, "layers_metrics": metrics}, scan="toy-btk")
    return out


TOY_SAE_RECIPE = {"layer": 0, "d_sae": 128, "l1": 3e-3, "steps": 300, "sentences": 800, "lr": 3e-3}


def build_toy_sae(cache_dir: Path | str, seed: int = 0) -> Path:
    """A small sae-lens ``StandardSAE`` on the toy base model's residual stream after layer 0
    (hook ``blocks.0.hook_resid_post``), trained in plain torch, saved with ``save_model``."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformers import LlamaForCausalLM

    base_dir = build_toy_model(cache_dir, seed=seed)
    model_id = json.loads((base_dir / "md_meta.json").read_text())["model_id"]
    r = TOY_SAE_RECIPE
    key = json_sha256({"model": model_id, "recipe": r, "seed": seed})[:24]

    def build(out: Path) -> None:
        tok = build_tokenizer()
        model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        enc = tok(make_corpus(r["sentences"], seed + 11), return_tensors="pt", padding=True)
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states[r["layer"] + 1]
        keep = enc.attention_mask.bool().clone()
        keep[:, 0] = False
        x = hs[keep]
        d = x.shape[1]
        cfg = StandardSAEConfig(d_in=d, d_sae=r["d_sae"], metadata=SAEMetadata(
            hook_name=f"blocks.{r['layer']}.hook_resid_post", model_name="md-toy"))
        sae = StandardSAE(cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            sae.W_dec.copy_(torch.randn(r["d_sae"], d, generator=g) / d**0.5)
            sae.W_enc.copy_(sae.W_dec.T)
            sae.b_dec.copy_(x.mean(0))
        opt = torch.optim.Adam(sae.parameters(), lr=r["lr"])
        for _ in range(r["steps"]):
            xb = x[torch.randint(0, x.shape[0], (256,), generator=g)]
            f = torch.relu((xb - sae.b_dec) @ sae.W_enc + sae.b_enc)
            loss = (f @ sae.W_dec + sae.b_dec - xb).pow(2).sum(-1).mean() + r["l1"] * (
                f * sae.W_dec.norm(dim=1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sae.save_model(out)
        write_json_atomic(out / "md_meta.json", {"model_id": model_id, "recipe": r, "seed": seed})

    return cached_dir(Path(cache_dir) / "toy" / f"sae-{key}", build)
