"""Per-layer transcoder training in plain PyTorch, exported in circuit-tracer's on-disk layout.

sae-lens cannot train transcoders (its training step reconstructs its own input), so this is
our own small trainer:

* harvest MLP-in (``post_attention_layernorm`` output = circuit-tracer's ``mlp.hook_in``) and
  MLP-out (``mlp`` output = ``mlp.hook_out``) with forward hooks, dropping padding and
  position 0 (circuit-tracer zeroes position 0 during attribution);
* normalise inputs and targets by their median token norm and leave out outlier tokens
  (norm above ``outlier_factor`` x median: e.g. SmolLM2 layer 11 has tokens 446x the median
  which otherwise take the whole dictionary);
* train BatchTopK (or TopK) transcoders; export as JumpReLU with the BatchTopK threshold
  (the running mean of the smallest kept pre-activation) with the normalisation folded into
  the weights, so circuit-tracer loads them as ordinary JumpReLU transcoders.

Layout written to ``out``: ``layer_{i}.safetensors`` (W_enc [d_sae, d_model], W_dec
[d_sae, d_model], b_enc, b_dec, activation_function.threshold), ``config.yaml``
(circuit-tracer's transcoder-set config) and ``md_transcoders.json`` (training config,
per-layer FVU / L0 / dead share, the dictionary id).
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from md_framework.errors import ConfigError
from md_framework.types import StrictModel

from builtin_plugins.models._util import atomic_dir, file_sha256, require, write_json_atomic

META_FILE = "md_transcoders.json"
GEN_QUESTIONS = [
    "What is the capital of France?", "Write a short poem about the sea.",
    "Explain how a bicycle works.", "Give me three tips for learning Python.",
    "What is photosynthesis?", "Tell me a story about a dragon.",
    "How do I bake bread?", "What are prime numbers?", "Summarise the history of Rome.",
    "Why is the sky blue?", "How can I stay healthy?", "What is machine learning?",
    "Describe a cat to a child.", "What should I pack for a trip to the mountains?",
    "Translate 'good morning' into Spanish and French.", "What is 17 times 23?",
]


class TrainConfig(StrictModel):
    layers: list[int] | None = None  # None = all
    d_sae: int = Field(default=4608, ge=1)
    k: int = Field(default=32, ge=1)
    kind: str = Field(default="batchtopk", pattern="^(batchtopk|topk)$")
    tokens: int = Field(default=100_000, ge=100)
    seq_len: int = Field(default=128, ge=8)
    batch_size: int = Field(default=256, ge=8)
    epochs: int = Field(default=1, ge=1)
    lr: float = 1e-3
    outlier_factor: float = 10.0
    heldout_fraction: float = 0.05
    n_generate: int = Field(default=32, ge=0)
    generate_tokens: int = Field(default=64, ge=1)
    seed: int = 0
    max_harvest_gb: float = 8.0


# --------------------------------------------------------------------------- corpus


def stdlib_docstrings(max_chars: int = 5_000_000) -> list[str]:
    """Docstrings of the standard library, read with ``ast`` (no module is imported),
    in a stable file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(p in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for p in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    texts.append(doc)
                    total += len(doc)
                    if total >= max_chars:
                        return texts
    return texts


def generated_texts(model: Any, tokenizer: Any, n: int, max_new_tokens: int, seed: int,
                    questions_pool: Sequence[str] = GEN_QUESTIONS) -> list[str]:
    """Chat answers sampled from the model itself (with its chat template when it has one)
    to ``n`` questions drawn with replacement from ``questions_pool``."""
    if n <= 0:
        return []
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    questions = [rng.choice(questions_pool) for _ in range(n)]
    if getattr(tokenizer, "chat_template", None):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in questions]
    else:
        prompts = questions
    out: list[str] = []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, n, 32):
            chunk = prompts[start:start + 32]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True,
                                     temperature=0.8, top_p=0.95,
                                     pad_token_id=tokenizer.pad_token_id)
            for prompt, ids in zip(chunk, gen[:, enc.input_ids.shape[1]:]):
                out.append(prompt + tokenizer.decode(ids, skip_special_tokens=False)
                           .replace(tokenizer.pad_token or "\0", ""))
    finally:
        tokenizer.padding_side = old_side
    return out


def token_windows(tokenizer: Any, texts: Sequence[str], seq_len: int, max_tokens: int) -> list[list[int]]:
    """Split the corpus into windows of ``seq_len`` ids, each starting with BOS when the
    tokenizer has one (as circuit-tracer's ``attribute`` does)."""
    bos = tokenizer.bos_token_id
    body = seq_len - (1 if bos is not None else 0)
    windows: list[list[int]] = []
    n = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        for start in range(0, len(ids), body):
            piece = ids[start:start + body]
            if len(piece) < 4:
                continue
            windows.append(([bos] if bos is not None else []) + piece)
            n += len(piece)
            if n >= max_tokens:
                return windows
    return windows


# --------------------------------------------------------------------------- harvest


def padded_batches(windows: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> Iterator[tuple[Any, Any]]:
    """Right-padded ``(input_ids, attention_mask)`` batches of token windows, in order."""
    import torch

    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        width = max(len(w) for w in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, w in enumerate(chunk):
            ids[row, :len(w)] = torch.tensor(list(w))
            mask[row, :len(w)] = 1
        yield ids, mask


def harvest(model: Any, windows: Sequence[Sequence[int]], layers: Sequence[int],
            batch_size: int = 16, pad_id: int = 0) -> dict[int, tuple[Any, Any]]:
    """MLP-in / MLP-out activations (fp16) of ``layers`` for every non-pad position > 0."""
    import torch

    blocks = model.model.layers
    ins: dict[int, list[Any]] = {i: [] for i in layers}
    outs: dict[int, list[Any]] = {i: [] for i in layers}
    keep_mask: list[Any] = []
    handles = []
    for i in layers:
        handles.append(blocks[i].post_attention_layernorm.register_forward_hook(
            lambda m, a, o, i=i: ins[i].append(o.detach())))
        handles.append(blocks[i].mlp.register_forward_hook(
            lambda m, a, o, i=i: outs[i].append(o.detach())))
    try:
        for ids, mask in padded_batches(windows, batch_size, pad_id):
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            keep = mask.bool().clone()
            keep[:, 0] = False
            for i in layers:
                ins[i][-1] = ins[i][-1][keep].to(torch.float16)
                outs[i][-1] = outs[i][-1][keep].to(torch.float16)
            keep_mask.append(keep)
    finally:
        for h in handles:
            h.remove()
    return {i: (torch.cat(ins[i]), torch.cat(outs[i])) for i in layers}


# --------------------------------------------------------------------------- training


def train_layer(x: Any, y: Any, cfg: TrainConfig, layer: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one transcoder on ``x -> y``; return (circuit-tracer state dict, metrics)."""
    import torch

    t0 = time.time()
    x = x.float()
    y = y.float()
    g = torch.Generator().manual_seed(cfg.seed * 1000 + layer)
    xn, yn = x.norm(dim=1), y.norm(dim=1)
    s_in = xn.median().clamp_min(1e-6)
    s_out = yn.median().clamp_min(1e-6)
    inlier = (xn <= cfg.outlier_factor * s_in) & (yn <= cfg.outlier_factor * s_out)
    n_outliers = int((~inlier).sum())
    perm = torch.randperm(x.shape[0], generator=g)
    n_held = max(1, int(cfg.heldout_fraction * x.shape[0]))
    held, train = perm[:n_held], perm[n_held:]
    train = train[inlier[train]]
    xt, yt = x[train] / s_in, y[train] / s_out
    d, m = x.shape[1], cfg.d_sae
    W_dec = torch.randn(m, d, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec = torch.nn.Parameter(W_dec)
    W_enc = torch.nn.Parameter(W_dec.detach().clone() * 0.5)
    b_enc = torch.nn.Parameter(torch.zeros(m))
    b_dec = torch.nn.Parameter(yt.mean(0).clone())
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=cfg.lr)
    steps = max(1, cfg.epochs * xt.shape[0] // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, 2.0 * (1 - s / steps) + 0.05))
    var = (yt - yt.mean(0)).pow(2).sum(-1).mean()
    thr_sum, thr_n = 0.0, 0
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(xt.shape[0], generator=g)
        for start in range(0, xt.shape[0] - cfg.batch_size + 1, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            pre = torch.relu(xt[idx] @ W_enc.T + b_enc)
            if cfg.kind == "batchtopk":
                flat = pre.flatten()
                vals, pos = flat.topk(cfg.k * idx.shape[0])
                f = torch.zeros_like(flat).scatter(0, pos, vals).view_as(pre)
                kth = vals[-1].item()
            else:
                vals, pos = pre.topk(cfg.k, dim=-1)
                f = torch.zeros_like(pre).scatter(-1, pos, vals)
                kth = vals[:, -1].mean().item()
            if step >= steps // 4:  # threshold from the later, more settled part of training
                thr_sum += kth
                thr_n += 1
            rec = f @ W_dec + b_dec
            loss = (rec - yt[idx]).pow(2).sum(-1).mean() / var
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            step += 1
    threshold = thr_sum / max(thr_n, 1)
    with torch.no_grad():
        state = {
            "W_enc": (W_enc / s_in).contiguous(),
            "W_dec": (W_dec * s_out).contiguous(),
            "b_enc": b_enc.detach().clone(),
            "b_dec": (b_dec * s_out).contiguous(),
            "activation_function.threshold": torch.full((m,), float(threshold)),
        }
        metrics = evaluate(state, x[held[inlier[held]]], y[held[inlier[held]]])
        all_metrics = evaluate(state, x[held], y[held])
    metrics.update({
        "layer": layer, "fvu_with_outliers": all_metrics["fvu"], "n_train_tokens": int(xt.shape[0]),
        "n_heldout_tokens": int(n_held), "n_outlier_tokens": n_outliers,
        "input_median_norm": float(s_in), "output_median_norm": float(s_out),
        "threshold": float(threshold), "steps": step, "seconds": round(time.time() - t0, 2),
    })
    return {k: v.detach().float().contiguous() for k, v in state.items()}, metrics


def evaluate(state: dict[str, Any], x: Any, y: Any) -> dict[str, float]:
    """FVU, L0 and dead-feature share of the exported JumpReLU transcoder on (x, y)."""
    import torch

    pre = x.float() @ state["W_enc"].T + state["b_enc"]
    f = pre * (pre > state["activation_function.threshold"])
    rec = f @ state["W_dec"] + state["b_dec"]
    yf = y.float()
    fvu = ((rec - yf).pow(2).sum() / (yf - yf.mean(0)).pow(2).sum().clamp_min(1e-12)).item()
    active = f > 0
    return {"fvu": round(fvu, 5), "l0": round(active.sum(-1).float().mean().item(), 3),
            "dead_share": round(1.0 - active.any(0).float().mean().item(), 5)}


# --------------------------------------------------------------------------- export / load


def write_transcoder_dir(out: Path, states: dict[int, dict[str, Any]], meta: dict[str, Any],
                         scan: str) -> str:
    """Write layer files + config.yaml + md_transcoders.json atomically; return dictionary id."""
    from safetensors.torch import save_file
    import yaml

    with atomic_dir(Path(out)) as tmp:
        hashes = []
        for layer in sorted(states):
            path = tmp / f"layer_{layer}.safetensors"
            save_file(states[layer], str(path))
            hashes.append(f"{layer}:{file_sha256(path)}")
        dictionary_id = "tc:" + hashlib.sha256("|".join(hashes).encode()).hexdigest()[:32]
        (tmp / "config.yaml").write_text(yaml.safe_dump({
            "model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in",
            "feature_output_hook": "mlp.hook_out", "scan": scan,
            "transcoders": [f"layer_{layer}.safetensors" for layer in sorted(states)],
        }))
        write_json_atomic(tmp / META_FILE, {**meta, "dictionary_id": dictionary_id,
                                            "layers": sorted(states), "scan": scan})
    return dictionary_id


def dictionary_id_of(path: Path) -> str:
    path = Path(path)
    meta = path / META_FILE
    if meta.exists():
        return json.loads(meta.read_text())["dictionary_id"]
    files = sorted(path.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise ConfigError(f"{path} holds no layer_<i>.safetensors transcoder files")
    hashes = [f"{p.stem.split('_')[1]}:{file_sha256(p)}" for p in files]
    return "tc:" + hashlib.sha256("|".join(hashes).encode()).hexdigest()[:32]


def load_transcoder_dir(path: Path, device: str = "cpu", dtype: str = "float32") -> Any:
    """Load a transcoder directory (our layout or circuit-tracer's cache layout) offline."""
    torch = require("torch", "loading transcoders")
    require("circuit_tracer", "loading transcoders", extra="models")
    import yaml
    from circuit_tracer.transcoder import load_transcoder_set

    path = Path(path)
    cfg_file = path / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
    files = {int(p.stem.split("_")[1]): str(p) for p in path.glob("layer_*.safetensors")}
    if not files:
        raise ConfigError(f"transcoder directory {path} holds no layer_<i>.safetensors files")
    return load_transcoder_set(
        files, scan=cfg.get("scan", path.name),
        feature_input_hook=cfg.get("feature_input_hook", "mlp.hook_in"),
        feature_output_hook=cfg.get("feature_output_hook", "mlp.hook_out"),
        device=torch.device(device), dtype=getattr(torch, dtype),
        lazy_encoder=False, lazy_decoder=False)


# --------------------------------------------------------------------------- driver


def train_transcoders(model: Any, tokenizer: Any, cfg: TrainConfig, out: Path, *,
                      model_id: str = "", texts: Sequence[str] | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Harvest, train every layer of ``cfg.layers`` and write ``out``; returns the report."""
    import torch

    t0 = time.time()
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers)) if cfg.layers is None else list(cfg.layers)
    if any(layer < 0 or layer >= n_layers for layer in layers):
        raise ConfigError(f"layers must lie in 0..{n_layers - 1}, got {layers}")
    if texts is None:
        gen = generated_texts(model, tokenizer, cfg.n_generate, cfg.generate_tokens, cfg.seed)
        log(f"generated {len(gen)} samples ({time.time() - t0:.0f}s)")
        texts = gen + stdlib_docstrings()
        rng = random.Random(cfg.seed)
        texts = list(texts)
        head, tail = texts[:len(gen)], texts[len(gen):]
        rng.shuffle(tail)
        texts = head + tail
    windows = token_windows(tokenizer, texts, cfg.seq_len, cfg.tokens)
    n_tokens = sum(len(w) - 1 for w in windows)
    per_layer_gb = n_tokens * model.config.hidden_size * 2 * 2 / 2**30
    per_pass = max(1, int(cfg.max_harvest_gb // max(per_layer_gb, 1e-9)))
    log(f"{len(windows)} windows, {n_tokens} tokens; {per_pass} layers per harvest pass")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    states: dict[int, dict[str, Any]] = {}
    metrics: list[dict[str, Any]] = []
    for start in range(0, len(layers), per_pass):
        group = layers[start:start + per_pass]
        th = time.time()
        acts = harvest(model, windows, group, pad_id=pad)
        log(f"harvested layers {group[0]}..{group[-1]} in {time.time() - th:.0f}s")
        for layer in group:
            x, y = acts.pop(layer)
            states[layer], m = train_layer(x, y, cfg, layer)
            metrics.append(m)
            log(f"layer {layer:>3}: FVU {m['fvu']:.3f}  L0 {m['l0']:.1f}  dead {m['dead_share']:.2f}"
                f"  outliers {m['n_outlier_tokens']}  ({m['seconds']:.0f}s)")
            del x, y
        del acts
    report = {
        "model_id": model_id, "train_config": cfg.model_dump(), "n_tokens": n_tokens,
        "layers": metrics, "seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "summary": summarise(metrics),
    }
    report["dictionary_id"] = write_transcoder_dir(
        Path(out), states, report, scan=f"md-{cfg.kind}-{cfg.d_sae}-k{cfg.k}")
    return report


def summarise(metrics: Sequence[dict[str, Any]]) -> dict[str, float]:
    if not metrics:
        return {}
    fvu = sorted(m["fvu"] for m in metrics)
    return {"fvu_median": fvu[len(fvu) // 2], "fvu_min": fvu[0], "fvu_max": fvu[-1],
            "l0_mean": round(sum(m["l0"] for m in metrics) / len(metrics), 2),
            "dead_share_mean": round(sum(m["dead_share"] for m in metrics) / len(metrics), 4)}


def report_table(report: dict[str, Any]) -> str:
    lines = ["layer    FVU  FVU(all)     L0   dead  outliers  seconds"]
    for m in report["layers"]:
        lines.append(f"{m['layer']:>5} {m['fvu']:>6.3f} {m['fvu_with_outliers']:>9.3f} "
                     f"{m['l0']:>6.1f} {m['dead_share']:>6.2f} {m['n_outlier_tokens']:>9} "
                     f"{m['seconds']:>8.1f}")
    s = report.get("summary", {})
    if s:
        lines.append(f"median FVU {s['fvu_median']:.3f} (min {s['fvu_min']:.3f}, max "
                     f"{s['fvu_max']:.3f}); mean L0 {s['l0_mean']}; mean dead share "
                     f"{s['dead_share_mean']:.2f}")
    return "\n".join(lines)


def config_hash(cfg: TrainConfig, model_id: str) -> str:
    return hashlib.sha256(f"{model_id}|{cfg.model_dump_json()}".encode()).hexdigest()[:32]


