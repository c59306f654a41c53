"""The activation-difference lens (ADL; Minder et al. 2025, "Narrow fine-tuning leaves clearly
readable traces in activation differences").

1. **Directions.** On a fixed set of at most 32 generic prompts unrelated to any universe,
   the mean difference ``delta_L = mean_{p, t < k} (h^I_L(p, t) - h^B_L(p, t))`` of the two
   models' residual streams after layer L over the first ``k`` token positions (position 0,
   BOS, is skipped when the tokenizer adds one: both models see the same fixed embedding
   there). Cost: 2 forward passes per generic prompt, whatever the universe holds.
   Generic prompts are English (:data:`GENERIC_PROMPTS`) unless the base tokenizer cannot
   read them; then they are drawn from its vocabulary (:func:`choose_generic_prompts`).
2. **Reading.** The logit lens of ``delta_L`` (the base model's final norm and unembedding
   applied to ``mean h^B + delta_L`` minus those of ``mean h^B``: the tokens the difference
   promotes), and *steered generations*: the base model generating from a few generic
   prompts with ``alpha * ||h|| * delta_L / ||delta_L||`` added to its residual stream after
   layer L at every position (``alpha`` = ``steer_strength``; ``||h||`` the mean residual norm
   at L on the generic prompts).
3. **Mapping onto the universe.** Where the direction fires on the *base* model: for every
   family prompt given (in the pipeline, the discovery prompts that were traced), the mean
   projection of the base model's residual stream after L onto ``delta_L / ||delta_L||``;
   family scores are the mean over their prompts, standardised across families (z). The
   families with the largest z (at least ``min_z``, at most ``max_families``) are named.
   Cost: one base pass per mapping prompt, fixed by the number of traced prompts.
   ``mapping`` picks another score, still base model only and read by steering (the third
   read-out Minder et al. use): ``"steering"`` scores a family by how far the base model's
   next-token distributions on its prompts move when ``s * ||h|| * delta_L / ||delta_L||``
   (``s`` = ``mapping_strength``) is added to the residual stream after L at every
   position, ``mean_{p in f} mean_t KL(P_B(.|p_<=t) || P_{B+delta}(.|p_<=t))``;
   ``"steering-control"`` divides that by the same KL for a random direction of equal norm
   (one seeded draw per prompt) and takes the log, so families whose predictions move under
   *any* push do not rank first (the random-direction control of steering studies, e.g.
   Turner et al. 2023, "Activation addition"). Cost: 1 (``steering``) or 2
   (``steering-control``) extra base passes per mapping prompt. Measured on the toy
   organisms, development and holdout sets apart, in benchmarks/README.md.
4. **Typing.** Refusal words among the lens tokens or in the steered texts suggest a safety
   change (``refusal_probability`` up), mostly upper-case lens tokens a style change
   (``uppercase_ratio`` up); otherwise a fact/content change (``target_logprob``) and a
   lower-priority form change (``signoff``) are proposed
   (:func:`builtin_plugins.interpreters.tags.token_tags` / ``text_tags``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from md_framework.config import ActivationDifferenceLensConfig as ADLOptions
from md_framework.types import StrictModel

#: generic prompts (Minder et al. use the first tokens of pretraining text): everyday
#: English unrelated to any organism's families. At most 32 are drawn per run.
GENERIC_PROMPTS = [
    "The weather today is", "Once upon a time there was", "In the beginning of the year",
    "My favourite colour is", "The history of the city", "A good book should",
    "The train leaves at", "When I was young", "The best way to learn", "There is a small house",
    "The river flows through", "Yesterday we went to", "The meeting will start",
    "An old man walked", "The price of bread", "Music can make people", "The garden was full of",
    "In the morning I usually", "The children played in", "A new study shows that",
    "The museum opens on", "It was a quiet evening", "The road to the village",
    "People often say that", "The cat sat on the", "Tomorrow the shop will",
    "The letter arrived on", "Under the bright sky", "The teacher asked the class",
    "A long time ago", "The window was open and", "Every summer the family",
    "The first page of the", "Scientists have found that", "The hotel room had",
    "After dinner we", "The song was about", "The bridge across the", "On the table there was",
    "The mountain is covered in", "The story begins with", "She opened the door and",
    "The market sells", "In a small town", "The clock on the wall", "He looked at the map",
    "The bus was late because", "The year ended with", "Our neighbours have a",
    "The film starts with", "The sea was calm", "A friend of mine", "The report says",
    "The shop on the corner", "The sun rose over", "The kitchen smelled of",
    "The road was empty", "At the end of the day", "The library has many", "The boat sailed",
    "The festival takes place", "The path through the forest", "The new building has",
    "The game was played",
]


class ADLDirection(StrictModel):
    layer: int
    norm: float
    relative_norm: float  # ||delta|| / mean ||h^B||
    lens_tokens: list[str]
    steered: list[str]
    tags: list[str]
    direction: list[float]


class ADLResult(StrictModel):
    directions: list[ADLDirection]
    family_scores: dict[str, float]  # z per family (of the chosen direction)
    named_families: list[str]
    layer: int  # the direction the mapping used
    hypotheses: list[tuple[str, str, str, float]]  # (type, metric, direction, factor)
    prompts: list[str]
    prompt_source: str = "english"  # "english" or "vocabulary" (choose_generic_prompts)
    cost: dict[str, int]


def generic_prompts(n: int, seed: int) -> list[str]:
    """``n`` (<= 32) generic prompts, drawn with ``seed`` from :data:`GENERIC_PROMPTS`."""
    pool = list(GENERIC_PROMPTS)
    random.Random(seed).shuffle(pool)
    return pool[:min(n, 32)]


#: below this share of known (non-``<unk>``) tokens the base tokenizer cannot read English
#: generic prompts (the toy organisms' word-level tokenizers map most English words to
#: ``<unk>``, so every generic prompt is the same ``<unk>`` sequence and carries no signal)
MIN_READABLE = 0.9
#: words per vocabulary prompt: longer than the default ``k_tokens`` window
VOCAB_PROMPT_WORDS = 8


def readable_share(tok: Any, prompts: Sequence[str]) -> float:
    """Share of the tokens of ``prompts`` (special tokens aside) that are not ``<unk>``."""
    unk = tok.unk_token_id
    specials = set(getattr(tok, "all_special_ids", []) or []) - {unk}
    ids = [i for p in prompts for i in _ids(tok, p) if i not in specials]
    if not ids or unk is None:
        return 1.0
    return 1.0 - sum(i == unk for i in ids) / len(ids)


def vocabulary_prompts(tok: Any, n: int, seed: int, words: int = VOCAB_PROMPT_WORDS) -> list[str]:
    """``n`` (<= 32) generic prompts in the tokenizer's own language: each ``words`` words
    drawn uniformly (with ``seed``) from the lower-case alphabetic words of its vocabulary.

    Family-agnostic by construction: the draw sees only the base tokenizer's vocabulary
    (shared by both models), never a family, a test prompt or the intervention model; every
    family's words appear in proportion to their number. Word-level tokenizers only (the
    toy organisms'); a subword vocabulary would give fragments, and those models read the
    English :data:`GENERIC_PROMPTS`.
    """
    specials = set(getattr(tok, "all_special_tokens", []) or [])
    pool = sorted(w for w in tok.get_vocab() if w not in specials and w.isalpha() and w.islower())
    if not pool:
        raise ValueError("the tokenizer has no lower-case alphabetic words to draw generic prompts from")
    rng = random.Random(f"adl-vocab:{seed}")
    return [" ".join(rng.choice(pool) for _ in range(words)) for _ in range(min(n, 32))]


def choose_generic_prompts(tok: Any, n: int, seed: int) -> tuple[list[str], str]:
    """The generic prompts for a pair whose (shared) tokenizer is ``tok``, and their source.

    English :data:`GENERIC_PROMPTS` when the base tokenizer reads them (at least
    :data:`MIN_READABLE` of their tokens known), else :func:`vocabulary_prompts`. Decided
    from the base tokenizer alone, before any model pass.
    """
    english = generic_prompts(n, seed)
    if readable_share(tok, english) >= MIN_READABLE:
        return english, "english"
    return vocabulary_prompts(tok, n, seed), "vocabulary"


def _ids(tok: Any, text: str) -> list[int]:
    from builtin_plugins.tracers._common import encode_prompt

    return encode_prompt(tok, text)


def _residuals(model: Any, ids: Sequence[int], layers: Sequence[int]) -> dict[int, Any]:
    """{layer: residual after the block [positions, d]} for one prompt."""
    import torch

    from builtin_plugins.tracers import _hooks

    blocks = _hooks.decoder_layers(model)
    store: dict[int, Any] = {}
    handles = [blocks[i].register_forward_hook(
        lambda m, a, o, i=i: store.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0].detach().float()))
        for i in layers]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([list(ids)], device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return store


def logit_lens(model: Any, tok: Any, mean_h: Any, delta: Any, n: int) -> list[str]:
    """Tokens whose logits the difference raises most: unembed(norm(h + delta)) - unembed(norm(h))."""
    import torch

    norm = getattr(getattr(model, "model", None), "norm", None)
    head = model.get_output_embeddings()
    with torch.no_grad():
        f = (lambda v: norm(v[None])[0]) if norm is not None else (lambda v: v)
        gain = head(f(mean_h + delta)[None])[0] - head(f(mean_h)[None])[0]
    idx = gain.float().topk(min(n, gain.numel())).indices.tolist()
    return [tok.decode([i]) for i in idx]


def steered_generations(model: Any, tok: Any, layer: int, vector: Any, prompts: Sequence[str],
                        max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` by ``model`` with ``vector`` added to the residual
    stream after ``layer`` at every position."""
    import torch

    out = []
    with added_to_residual(model, layer, vector):
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for p in prompts:
            ids = torch.tensor([_ids(tok, p)])
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


@contextlib.contextmanager
def added_to_residual(model: Any, layer: int, vector: Any | None) -> Iterator[None]:
    """Inside, ``vector`` is added to the residual stream after ``layer`` at every position
    (``None``: nothing is added)."""
    if vector is None:
        yield
        return
    from builtin_plugins.tracers import _hooks

    def hook(m: Any, a: Any, o: Any) -> Any:
        h = o[0] if isinstance(o, tuple) else o
        h = h + vector.to(h.device, h.dtype)
        return (h, *o[1:]) if isinstance(o, tuple) else h

    handle = _hooks.decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _logprobs(model: Any, ids: Sequence[int], layer: int, vector: Any | None) -> Any:
    """Next-token log-probabilities [positions, vocab] of ``model`` on ``ids``, with
    ``vector`` added to the residual stream after ``layer`` at every position (None: none)."""
    import torch

    with added_to_residual(model, layer, vector), torch.no_grad():
        out = model(input_ids=torch.tensor([list(ids)], device=next(model.parameters()).device))
    return out.logits[0].float().log_softmax(-1)


def steering_scores(model: Any, tok: Any, families: Mapping[str, Sequence[str]], layer: int,
                    vector: Any, control: bool, seed: int) -> tuple[dict[str, float], int]:
    """Per-family steering response of the *base* model (module docstring, ``mapping``).

    For each family prompt ``p`` (formatted as the metrics do), ``KL_p = mean_{t >= 1}
    KL(P_B(.|p_<=t) || P_{B+v}(.|p_<=t))`` with ``v`` added after ``layer`` at every
    position (position 0, BOS, skipped when there is more than one). The family score is
    the mean of ``KL_p``; with ``control`` it is ``log(mean KL_p / mean KL_p^rand)``, where
    ``KL_p^rand`` uses a random direction of the same norm (a fresh seeded draw per prompt).
    Returns (scores, forward passes)."""
    import math

    import torch

    from builtin_plugins.metrics.core import format_prompt

    gen = torch.Generator().manual_seed(10_007 * seed + 1)
    norm = float(vector.norm())
    if norm == 0.0:  # identical models: nothing to steer with, no family stands out
        return {fam: 0.0 for fam, ps in families.items() if ps}, 0
    scores: dict[str, float] = {}
    passes = 0
    for fam, fam_prompts in families.items():
        kl, kl_rand = [], []
        for p in fam_prompts:
            ids = _ids(tok, format_prompt(tok, p))
            skip = 1 if len(ids) > 1 else 0
            p0 = _logprobs(model, ids, layer, None)
            p1 = _logprobs(model, ids, layer, vector)
            passes += 2
            kl.append(float((p0.exp() * (p0 - p1)).sum(-1)[skip:].mean()))
            if control:
                r = torch.randn(vector.shape, generator=gen).to(vector.device)
                p2 = _logprobs(model, ids, layer, r * (norm / float(r.norm())))
                passes += 1
                kl_rand.append(float((p0.exp() * (p0 - p2)).sum(-1)[skip:].mean()))
        if kl:
            score = sum(kl) / len(kl)
            if control:
                score = math.log(max(score, 1e-12) / max(sum(kl_rand) / len(kl_rand), 1e-12))
            scores[fam] = score
    return scores, passes


def type_change(tags: Sequence[str]) -> list[tuple[str, str, str, float]]:
    """(hypothesis type, metric, direction, factor) candidates from the lens/steering tags."""
    if "refusal" in tags:
        return [("safety_enhancement", "refusal_probability", "increase", 1.0)]
    if "style:uppercase" in tags:
        return [("style_change", "uppercase_ratio", "increase", 1.0)]
    return [("knowledge_update", "target_logprob", "change", 0.8),
            ("style_change", "signoff", "change", 0.5)]


def activation_difference_lens(base: Any, intervention: Any, families: Mapping[str, Sequence[str]],
                               options: ADLOptions | None = None, seed: int = 0) -> ADLResult:
    """Run the ADL (module docstring) on a pair of :class:`~md_framework.runtime.LoadedModel`.

    ``families``: family -> prompts the direction is mapped onto (base-model passes only).
    Returns the directions with their readings, per-family z scores, the named families,
    the typed candidates and the cost in forward passes / generated tokens.
    """
    import torch

    from builtin_plugins.interpreters.tags import text_tags, token_tags
    from builtin_plugins.metrics.core import format_prompt

    o = options or ADLOptions()
    seed = o.seed if o.seed is not None else seed
    tok = base.tokenizer
    n_layers = base.model.config.num_hidden_layers
    layers = list(o.layers) if o.layers is not None else [n_layers // 2]
    prompts, prompt_source = choose_generic_prompts(tok, o.n_prompts, seed)
    sums = {i: None for i in layers}
    base_sums = {i: None for i in layers}
    norm_sum = {i: 0.0 for i in layers}
    count = 0
    passes = 0
    for p in prompts:
        ids = _ids(tok, p)
        start = 1 if (tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id) else 0
        window = slice(start, start + o.k_tokens)
        rb, ri = _residuals(base.model, ids, layers), _residuals(intervention.model, ids, layers)
        passes += 2
        for i in layers:
            d = (ri[i][window] - rb[i][window]).sum(0)
            sums[i] = d if sums[i] is None else sums[i] + d
            hb = rb[i][window].sum(0)
            base_sums[i] = hb if base_sums[i] is None else base_sums[i] + hb
            norm_sum[i] += float(rb[i][window].norm(dim=-1).sum())
        count += len(range(*window.indices(len(ids))))
    directions = []
    gen_tokens = 0
    steer_prompts = prompts[:o.steer_prompts]
    for i in layers:
        delta = sums[i] / max(count, 1)
        mean_h = base_sums[i] / max(count, 1)
        mean_norm = norm_sum[i] / max(count, 1)
        norm = float(delta.norm())
        lens = logit_lens(base.model, tok, mean_h, delta, o.lens_tokens)
        unit = delta / max(norm, 1e-12)
        steered = steered_generations(base.model, tok, i, unit * o.steer_strength * mean_norm,
                                      steer_prompts, o.steer_tokens) if steer_prompts else []
        gen_tokens += len(steered) * o.steer_tokens
        tags = sorted(set(token_tags(lens)) | set(t for s in steered for t in text_tags(s)))
        directions.append(ADLDirection(
            layer=i, norm=round(norm, 6), relative_norm=round(norm / max(mean_norm, 1e-12), 6),
            lens_tokens=lens, steered=steered, tags=tags,
            direction=[round(float(v), 6) for v in unit]))
    # the direction that moved most relative to the stream's size carries the mapping
    best = max(directions, key=lambda d: d.relative_norm)
    unit = torch.tensor(best.direction)
    raw: dict[str, float] = {}
    if o.mapping != "projection":
        strength = o.mapping_strength * norm_sum[best.layer] / max(count, 1)
        raw, map_passes = steering_scores(base.model, tok, families, best.layer, unit * strength,
                                          control=o.mapping == "steering-control", seed=seed)
        passes += map_passes
    for fam, fam_prompts in (families.items() if o.mapping == "projection" else ()):
        vals = []
        for p in fam_prompts:
            ids = _ids(tok, format_prompt(tok, p))
            r = _residuals(base.model, ids, [best.layer])[best.layer]
            passes += 1
            skip = 1 if r.shape[0] > 1 else 0
            vals.append(float((r[skip:] @ unit).mean()))
        if vals:
            raw[fam] = sum(vals) / len(vals)
    z: dict[str, float] = {}
    if raw:
        mu = sum(raw.values()) / len(raw)
        sd = (sum((v - mu) ** 2 for v in raw.values()) / max(len(raw) - 1, 1)) ** 0.5
        z = {f: round((v - mu) / sd, 4) if sd > 0 else 0.0 for f, v in raw.items()}
    ranked = sorted(z, key=lambda f: -z[f])
    named = [f for f in ranked if z[f] >= o.min_z][:o.max_families] or ranked[:1]
    return ADLResult(directions=directions, family_scores=z, named_families=named,
                     layer=best.layer, hypotheses=type_change(best.tags), prompts=prompts,
                     prompt_source=prompt_source,
                     cost={"forward_passes": passes, "generated_tokens": gen_tokens,
                           "generic_prompts": len(prompts)})
