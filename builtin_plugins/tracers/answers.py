"""Answer-aware tracing: each prompt with both models' own greedy answers, teacher-forced.

Tracers see the prompt; the change an intervention makes may only show later in the
answer (a sign-off appended, one word of a sentence replaced). For each prompt this module

1. decodes the base's and the intervention's greedy answers (the behaviour metrics'
   decoding and formatting, :func:`builtin_plugins.metrics.core.generate_answer_ids`, so the
   answers are the ones the metrics will see; the end-of-sequence token ends an answer that
   stopped);
2. teacher-forces each answer through **both** models (same tokens, so positions align);
3. per answer position: the Jensen-Shannon divergence between the two models' next-token
   distributions, each model's log-probability of the answer's token, the tokens whose
   probability moved most, and (with a ``feature_reader``) the features whose activation
   changed most at the predicting position;
4. per feature, the largest activation over the answer positions on each model (the diff's
   systematic-change statistics add these to the prompt positions').

Cost is counted: generated tokens (both models' decodings) and teacher-forced tokens (every
token of every forward pass made here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from md_framework.runtime import LoadedModel
from md_framework.types import AnswerDiff, AnswerPosition, AnswerTrace, TokenShift

#: (model, token ids) -> {layer: activations [positions, features]} for the tracer's features
FeatureReader = Callable[[LoadedModel, Sequence[int]], dict[int, Any]]


def js_divergence(logp: Any, logq: Any) -> Any:
    """Row-wise Jensen-Shannon divergence (nats) of two log-probability tensors:
    ``JS(P, Q) = (KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2`` (Lin 1991,
    "Divergence measures based on the Shannon entropy"); symmetric, bounded by log 2."""
    import torch

    p, q = logp.exp(), logq.exp()
    logm = torch.log((p + q) / 2.0 + 1e-30)
    kl_p = (p * (logp - logm)).sum(-1)
    kl_q = (q * (logq - logm)).sum(-1)
    return ((kl_p + kl_q) / 2.0).clamp(min=0.0)


def neuron_reader(layers: Sequence[int] | None = None) -> FeatureReader:
    """Feature reader of the activation-diff tracer: MLP neurons (the input of ``down_proj``)."""

    def read(model: LoadedModel, ids: Sequence[int]) -> dict[int, Any]:
        from builtin_plugins.tracers.activation_diff import run_with_activations

        _, neurons, _ = run_with_activations(model, ids, layers)
        return neurons

    return read


def _forward(model: LoadedModel, ids: Sequence[int]) -> Any:
    import torch

    hf = model.model
    device = next(hf.parameters()).device
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([list(ids)], device=device)).logits[0]
    return torch.log_softmax(logits.float(), -1)


def trace_answers(
    base: LoadedModel,
    intervention: LoadedModel,
    prompts: Sequence[str],
    families: Sequence[str | None] | None = None,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 8,
    top_moved: int = 5,
    feature_top_k: int = 8,
    feature_reader: FeatureReader | None = None,
    dictionary_id: str | None = None,
) -> list[AnswerTrace]:
    """One :class:`AnswerTrace` per prompt (module docstring). ``feature_reader`` maps a
    model and token ids to per-layer activations ``[positions, features]``; without one the
    traces carry divergences and token shifts only."""
    import torch

    from builtin_plugins.metrics.core import encode_prompt, generate_answer_ids

    families = list(families) if families is not None else [None] * len(prompts)
    tok = base.tokenizer
    eos = tok.eos_token_id
    ans_b = generate_answer_ids(base, prompts, max_new_tokens, batch_size)
    ans_i = generate_answer_ids(intervention, prompts, max_new_tokens, batch_size)
    out: list[AnswerTrace] = []
    for prompt, family, (text_b, ids_b), (text_i, ids_i) in zip(prompts, families, ans_b, ans_i):
        prefix = encode_prompt(tok, prompt)
        generated = len(ids_b) + len(ids_i)
        forced = 0
        feats: dict[str, dict[str, float]] = {"base": {}, "intervention": {}}
        answers = []
        token_lists = {}
        for source, ids in (("base", ids_b), ("intervention", ids_i)):
            answer_ids = list(ids) + ([eos] if eos is not None and len(ids) < max_new_tokens else [])
            token_lists[source] = [tok.decode([t]) for t in answer_ids]
            if not answer_ids:
                answers.append(AnswerDiff(source=source))
                continue
            seq = prefix + answer_ids
            lp_b, lp_i = _forward(base, seq), _forward(intervention, seq)
            forced += 2 * len(seq)
            start = len(prefix) - 1  # logits at position t predict token t + 1
            rows = torch.arange(start, start + len(answer_ids))
            targets = torch.tensor(answer_ids)
            pb, pi = lp_b[rows], lp_i[rows]
            div = js_divergence(pb, pi)
            acts_b = acts_i = None
            if feature_reader is not None:
                acts_b, acts_i = feature_reader(base, seq), feature_reader(intervention, seq)
                forced += 2 * len(seq)
            positions = []
            for k, t in enumerate(answer_ids):
                row = start + k
                moved_all = (pi[k].exp() - pb[k].exp())
                idx = moved_all.abs().topk(min(top_moved, moved_all.numel())).indices.tolist()
                moved = [TokenShift(token=tok.decode([j]),
                                    base_probability=float(min(1.0, max(0.0, pb[k, j].exp()))),
                                    intervention_probability=float(min(1.0, max(0.0, pi[k, j].exp()))))
                         for j in idx]
                changed: list[str] = []
                if acts_b is not None and acts_i is not None:
                    scored = []
                    for layer in sorted(acts_b):
                        a_b, a_i = acts_b[layer][row], acts_i[layer][row]
                        d = (a_i - a_b).abs()
                        for f in d.topk(min(feature_top_k, d.numel())).indices.tolist():
                            scored.append((float(d[f]), f"{layer}:{f}"))
                        # the features active here on either model, for the systematic table
                        top = torch.maximum(a_b.abs(), a_i.abs())
                        for f in top.topk(min(feature_top_k, top.numel())).indices.tolist():
                            key = f"{layer}:{f}"
                            for name, acts in (("base", a_b), ("intervention", a_i)):
                                value = float(acts[f])
                                feats[name][key] = max(feats[name].get(key, 0.0), value)
                    changed = [key for _, key in sorted(scored, key=lambda s: -s[0])[:feature_top_k]]
                positions.append(AnswerPosition(
                    index=k, token=tok.decode([t]), divergence=float(div[k]),
                    base_logprob=max(-1e4, float(pb[k, t])),
                    intervention_logprob=max(-1e4, float(pi[k, t])),
                    base_top=tok.decode([int(pb[k].argmax())]),
                    intervention_top=tok.decode([int(pi[k].argmax())]),
                    moved=moved, features=changed))
            answers.append(AnswerDiff(source=source, tokens=token_lists[source], positions=positions))
        # features listed on one model only are active on the other too: fill both sides
        keys = set(feats["base"]) | set(feats["intervention"])
        out.append(AnswerTrace(
            prompt=prompt, family=family, base_answer=text_b, intervention_answer=text_i,
            base_tokens=token_lists.get("base", []),
            intervention_tokens=token_lists.get("intervention", []), answers=answers,
            base_features={k: feats["base"].get(k, 0.0) for k in sorted(keys)},
            intervention_features={k: feats["intervention"].get(k, 0.0) for k in sorted(keys)},
            dictionary_id=dictionary_id if feature_reader is not None else None,
            generated_tokens=generated, teacher_forced_tokens=forced))
    return out


def answer_cost(traces: Sequence[AnswerTrace]) -> dict[str, int]:
    return {"generated_tokens": sum(t.generated_tokens for t in traces),
            "teacher_forced_tokens": sum(t.teacher_forced_tokens for t in traces)}


def max_divergence(trace: AnswerTrace, source: str = "base") -> tuple[float, int]:
    """(largest divergence, its answer index) over one answer of ``trace``; (0, -1) if empty."""
    for a in trace.answers:
        if a.source == source and a.positions:
            best = max(a.positions, key=lambda p: p.divergence)
            return best.divergence, best.index
    return 0.0, -1


__all__ = ["FeatureReader", "answer_cost", "js_divergence", "max_divergence", "neuron_reader",
           "trace_answers"]
