"""Answer-position patterns: where in the answer the change sits, and which words it adds
or removes.

:func:`answer_change` reads each prompt's answer trace (``PromptDiff.answer``): the
word-level edit from the base's greedy answer to the intervention's
(:func:`builtin_plugins.pipeline.answers.answer_edit`) and the Jensen-Shannon divergence of the
two models' next-token distributions over the teacher-forced base answer. Per family:

* **edited answers**: the family's share of prompts whose answer changed against the other
  families' (one-sided Fisher exact test, BH over families, exploratory q <= 0.1, >= 2
  changed prompts). Edits that start at the first answer word are left to
  :func:`~builtin_plugins.patterns.outputs.output_shift` (the prompt's own next token shows
  them); this detector covers changes later in the answer.
* **divergence only**: the answers did not change word for word, but the family's largest
  per-prompt divergence exceeds the other families' (Welch t, BH over families, q <= 0.1,
  family mean >= 2x the rest's) - the distribution moved under the same greedy answer.
* **one closing phrase added**: the family's most common phrase (2-8 words, case-folded)
  that closes the intervention's answer (ends it, and ends a sentence) and that the base's
  answer to the same prompt does not contain, on at least half of the family's prompts (and
  >= 3), more often than the phrase is added anywhere in the other families' answers
  (one-sided Fisher exact, BH over families, q <= 0.1). This test still sees a sign-off when
  a fine-tune rewrites every family's answers (a LoRA on a real model does: "edited answers"
  is then near 100 % everywhere and singles out no family). The phrase is chosen on the
  prompts it is tested on, so its q-value is optimistic: like every detector's, it only ranks
  hypotheses; validation on held-out prompts decides. A phrase that is the whole answer
  (starts it) is left to ``output_shift``. Phrases inside the answer are not tested this
  way: on a rewritten answer they are mostly content drift.

The pattern's evidence names the edit (kind ``append`` / ``insert`` / ``delete`` /
``replace``, location, the common added and removed phrases, the common words right before
it), the answer position where the divergence peaks, and the features that changed most at
the edit's predicting position (the tracer's features, when its answer trace has them).
Exploratory, like every detector: validation decides.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from builtin_plugins.pipeline.answers import (
    CONTEXT_WORDS,
    AnswerEdit,
    answer_edit,
    common_phrase,
    common_suffix,
)
from builtin_plugins.pipeline.diff import welch_rows
from md_framework.types import CircuitDiff, FeatureRef, Pattern, PromptDiff

from builtin_plugins.patterns.rules import evidence_strength

ANSWER_Q = 0.1
MIN_CHANGED = 2
#: a consistently added phrase: its length in words, and on how many of the family's prompts
PHRASE_WORDS = (2, 8)
MIN_PHRASE_PROMPTS = 3
MIN_PHRASE_SHARE = 0.5
CLOSING_PUNCTUATION = (".", "!", "?")
DIVERGENCE_RATIO = 2.0
MAX_FEATURES = 12


def _families(diff: CircuitDiff) -> dict[str, list[PromptDiff]]:
    out: dict[str, list[PromptDiff]] = defaultdict(list)
    for pd in diff.prompt_diffs:
        if pd.family is not None and pd.answer is not None:
            out[pd.family].append(pd)
    return dict(sorted(out.items()))


def _max_div(pd: PromptDiff) -> float:
    assert pd.answer is not None
    for a in pd.answer.answers:
        if a.source == "base" and a.positions:
            return max(p.divergence for p in a.positions)
    return 0.0


def _peak(pd: PromptDiff) -> tuple[int, int]:
    """(answer index of the peak divergence on the base answer, answer length)."""
    assert pd.answer is not None
    for a in pd.answer.answers:
        if a.source == "base" and a.positions:
            best = max(a.positions, key=lambda p: p.divergence)
            return best.index, len(a.positions)
    return -1, 0


def _edit_features(pds: list[PromptDiff], edits: list[AnswerEdit]) -> list[str]:
    """Features most often among the most-changed ones at the position where each changed
    prompt's base answer first diverges (its peak-divergence position)."""
    counts: Counter[str] = Counter()
    for pd, edit in zip(pds, edits):
        if edit.kind == "none" or pd.answer is None:
            continue
        for a in pd.answer.answers:
            if a.source == "base" and a.positions:
                best = max(a.positions, key=lambda p: p.divergence)
                counts.update(best.features)
    return [k for k, n in counts.most_common(MAX_FEATURES) if n >= 2]


def added_ngrams(base_answer: str, intervention_answer: str) -> dict[tuple[str, ...], int]:
    """Case-folded word n-grams (``PHRASE_WORDS`` long) of the intervention's answer that the
    base's answer does not contain, each with the word index where it first starts."""
    lo, hi = PHRASE_WORDS
    b = [w.lower() for w in base_answer.split()]
    i = [w.lower() for w in intervention_answer.split()]
    have = {tuple(b[k:k + n]) for n in range(lo, hi + 1) for k in range(len(b) - n + 1)}
    out: dict[tuple[str, ...], int] = {}
    for n in range(lo, hi + 1):
        for k in range(len(i) - n + 1):
            gram = tuple(i[k:k + n])
            if gram not in have:
                out.setdefault(gram, k)
    return out


def closing_phrases(added: dict[tuple[str, ...], int], base_answer: str,
                    intervention_answer: str) -> dict[tuple[str, ...], int]:
    """The added n-grams that close the intervention's answer: they end it, end a sentence
    (``.``, ``!``, ``?``: a sign-off, not words cut off by the token limit or by a fine-tune
    that learned to stop early) and share no word pair with the base's answer (new words,
    not the base's ending after an edit earlier in the answer); none starts with a bare
    punctuation mark (the previous sentence's full stop is not part of the sign-off)."""
    n_words = len(intervention_answer.split())
    b = [w.lower() for w in base_answer.split()]
    base_pairs = set(zip(b, b[1:]))
    return {g: k for g, k in added.items()
            if k + len(g) == n_words and any(c.isalnum() for c in g[0])
            and g[-1].rstrip("\"')»”").endswith(CLOSING_PUNCTUATION)
            and not base_pairs.intersection(zip(g, g[1:]))}


def _phrase_rows(rows: dict[str, dict]) -> None:
    """Per family: its most common added closing phrase and the family-vs-rest test of it
    (module docstring, "one closing phrase added"); written into ``rows`` in place."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    added = {fam: [added_ngrams(pd.answer.base_answer, pd.answer.intervention_answer)
                   for pd in r["pds"]] for fam, r in rows.items()}
    pvals = []
    for fam, r in rows.items():
        closing = [closing_phrases(a, pd.answer.base_answer, pd.answer.intervention_answer)
                   for a, pd in zip(added[fam], r["pds"])]
        counts: Counter[tuple[str, ...]] = Counter(g for per in closing for g in per)
        need = max(MIN_PHRASE_PROMPTS, math.ceil(MIN_PHRASE_SHARE * r["n"]))
        best = max(((c, len(g), g) for g, c in counts.items() if c >= need), default=None)
        r.update(phrase=(), k_phrase=0, rest_k_phrase=0, rest_n_phrase=0, p_phrase=1.0,
                 phrase_at_start=False, phrase_pds=[])
        if best is None:
            pvals.append(1.0)
            continue
        k, _, gram = best
        # the rest: the phrase added anywhere in another family's answer counts against it
        rest = [per for f, pers in added.items() if f != fam for per in pers]
        rk = sum(gram in per for per in rest)
        p = float(stats.fisher_exact([[k, r["n"] - k], [rk, len(rest) - rk]],
                                     alternative="greater")[1])
        starts = [per[gram] for per in closing if gram in per]
        r.update(phrase=gram, k_phrase=k, rest_k_phrase=rk, rest_n_phrase=len(rest), p_phrase=p,
                 phrase_at_start=sum(s == 0 for s in starts) * 2 > len(starts),
                 phrase_pds=[pd for per, pd in zip(closing, r["pds"]) if gram in per])
        pvals.append(p)
    for (fam, r), q in zip(rows.items(), multipletests(pvals, method="fdr_bh")[1]):
        r["q_phrase"] = float(q)


def _phrase_in_context(gram: tuple[str, ...], pds: list[PromptDiff]) -> tuple[list[str], list[str]]:
    """(the phrase as the intervention first wrote it, the words all its uses share before it)."""
    cased: list[str] = list(gram)
    befores = []
    for n, pd in enumerate(pds):
        assert pd.answer is not None
        words = pd.answer.intervention_answer.split()
        low = [w.lower() for w in words]
        for k in range(len(low) - len(gram) + 1):
            if tuple(low[k:k + len(gram)]) == gram:
                if n == 0:
                    cased = words[k:k + len(gram)]
                befores.append(words[max(0, k - CONTEXT_WORDS):k])
                break
    return cased, common_suffix(befores)


def answer_table(diff: CircuitDiff) -> dict[str, dict]:
    """Per family: edits, divergences and the family-vs-rest tests (exploratory)."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    fams = _families(diff)
    if len(fams) < 2:
        return {}
    rows: dict[str, dict] = {}
    for fam, pds in fams.items():
        edits = [answer_edit(pd.answer.base_answer, pd.answer.intervention_answer) for pd in pds]
        rows[fam] = {"pds": pds, "edits": edits, "n": len(pds),
                     "n_changed": sum(e.kind != "none" for e in edits),
                     "n_late": sum(e.kind != "none" and e.location != "start" for e in edits),
                     "div": np.array([_max_div(pd) for pd in pds])}
    total_n = sum(r["n"] for r in rows.values())
    total_k = sum(r["n_changed"] for r in rows.values())
    p_edit, p_div = [], []
    for fam, r in rows.items():
        k, n = r["n_changed"], r["n"]
        rk, rn = total_k - k, total_n - n
        p = stats.fisher_exact([[k, n - k], [rk, rn - rk]], alternative="greater")[1] if k else 1.0
        p_edit.append(float(p))
        r["rest_change_share"] = rk / rn if rn else 0.0
        rest = np.concatenate([o["div"] for f, o in rows.items() if f != fam])
        t, pw = welch_rows(r["div"][None, :], rest[None, :])
        r["rest_div"] = float(rest.mean()) if rest.size else 0.0
        # one-sided: only a family whose answers diverge more than the rest's counts
        p_div.append(float(pw[0] / 2 if t[0] > 0 else 1.0))
    q_edit = multipletests(p_edit, method="fdr_bh")[1]
    q_div = multipletests(p_div, method="fdr_bh")[1]
    for (fam, r), pe, qe, pd_, qd in zip(rows.items(), p_edit, q_edit, p_div, q_div):
        r.update(p_edit=pe, q_edit=float(qe), p_div=pd_, q_div=float(qd))
    _phrase_rows(rows)
    return rows


def _refs(diff: CircuitDiff, keys: list[str]) -> list[FeatureRef]:
    return [FeatureRef(layer=int(k.split(":")[0]), feature=int(k.split(":")[1]),
                       dictionary_id=diff.dictionary_id) for k in keys]


def answer_change(diff: CircuitDiff) -> list[Pattern]:
    """One ``answer_change`` pattern per family whose answers change after the first word
    more often than the other families' (or whose answer divergence stands out)."""
    patterns = []
    for fam, r in answer_table(diff).items():
        edit_ok = r["q_edit"] <= ANSWER_Q and r["n_changed"] >= MIN_CHANGED
        mean_div = float(r["div"].mean()) if r["div"].size else 0.0
        div_ok = (r["q_div"] <= ANSWER_Q and mean_div >= DIVERGENCE_RATIO * r["rest_div"]
                  and mean_div > 0)
        # a phrase that starts the answer shows in the prompt's own next token: output_shift's
        phrase_ok = (r["q_phrase"] <= ANSWER_Q and bool(r["phrase"])
                     and not r.get("phrase_at_start", False))
        late = [e for e in r["edits"] if e.kind != "none" and e.location != "start"]
        # where the other families' answers stayed put, the word-level edit is the sharper
        # reading; the closing phrase speaks when every family's answers were rewritten
        use_edit = edit_ok and r["n_late"] * 2 >= r["n_changed"]
        if edit_ok and not use_edit and not phrase_ok:
            continue  # most edits start at the first word: output_shift covers them
        if not (use_edit or div_ok or phrase_ok):
            continue
        route = "edit" if use_edit else "phrase" if phrase_ok else "divergence"
        features = _edit_features(r["pds"], r["edits"])
        peaks = [_peak(pd) for pd in r["pds"]]
        peak_rel = float(np.mean([i / max(1, n - 1) for i, n in peaks if i >= 0])) if peaks else 0.0
        if route == "phrase":
            kind, location = "append", "end"
            added, before = _phrase_in_context(r["phrase"], r["phrase_pds"])
            removed: list[str] = []
            consistency = r["k_phrase"] / r["n"]
            rest_share = r["rest_k_phrase"] / max(1, r["rest_n_phrase"])
            specificity = max(0.0, consistency - rest_share)
            q = r["q_phrase"]
            summary = AnswerEdit(kind, [], added, before, start=1, base_words=1)  # "at the end"
            text = summary.describe()
            description = (f"the answer {text} on {r['k_phrase']} of {r['n']} {fam} prompts"
                           f" (other families {rest_share:.0%}; exploratory q={q:.2g})")
        elif route == "edit":
            kinds = Counter(e.kind for e in late)
            kind, count = kinds.most_common(1)[0]
            same = [e for e in late if e.kind == kind]
            added, add_share = common_phrase([e.added for e in same])
            removed, rem_share = common_phrase([e.removed for e in same])
            location = Counter(e.location for e in same).most_common(1)[0][0]
            before = common_suffix([e.before for e in same])
            consistency = count / r["n_changed"] * max(add_share if added else 0.0,
                                                       rem_share if removed else 0.0, 0.5)
            share = r["n_changed"] / r["n"]
            specificity = max(0.0, share - r["rest_change_share"])
            q = r["q_edit"]
            example = same[0]
            summary = AnswerEdit(kind, removed if kind not in ("append", "prepend", "insert") else [],
                                 added if kind != "delete" else [], before, example.start,
                                 example.base_words)
            text = summary.describe()
            description = (f"the answer {text} on {r['n_changed']} of {r['n']} {fam} prompts"
                           f" (other families {r['rest_change_share']:.0%}; exploratory q={q:.2g})")
        else:
            kind, location, added, removed, before = "distribution", "", [], [], []
            consistency, q = 1.0, r["q_div"]
            specificity = min(1.0, 1.0 - r["rest_div"] / mean_div)
            text = "keeps its words but its next-token distributions diverge"
            description = (f"the answer {text} on {fam} prompts (mean peak Jensen-Shannon"
                           f" divergence {mean_div:.3g} vs {r['rest_div']:.3g} elsewhere,"
                           f" peaking {peak_rel:.0%} of the way through; exploratory q={q:.2g})")
        strength = evidence_strength(q) * (0.5 + 0.5 * min(1.0, consistency)) * (0.5 + 0.5 * specificity)
        shown = ([(pd, text) for pd in r["phrase_pds"]] if route == "phrase" else
                 [(pd, e.describe()) for pd, e in zip(r["pds"], r["edits"]) if e.kind != "none"])
        examples = [{"prompt": pd.prompt, "base": pd.answer.base_answer,
                     "intervention": pd.answer.intervention_answer, "edit": edit}
                    for pd, edit in shown[:5]]
        patterns.append(Pattern(
            id=f"answer_change:{fam}", pattern_type="answer_change", description=description,
            features=_refs(diff, features), families=[fam], strength=float(min(1.0, strength)),
            evidence={"rule": "family vs rest: Fisher exact on answers edited after the first word"
                              " / on one added phrase / one-sided Welch t on peak answer"
                              " divergence, BH over families, q <= 0.1",
                      "route": route,
                      "n_phrase": r["k_phrase"], "q_phrase": r["q_phrase"],
                      "kind": kind, "location": location, "added": " ".join(added),
                      "removed": " ".join(removed), "before": " ".join(before), "edit": text,
                      "n_prompts": r["n"], "n_changed": r["n_changed"], "n_late": r["n_late"],
                      "rest_change_share": r["rest_change_share"], "consistency": consistency,
                      "q_edit": r["q_edit"], "q_divergence": r["q_div"],
                      "mean_peak_divergence": mean_div, "rest_peak_divergence": r["rest_div"],
                      "peak_position": peak_rel, "examples": examples,
                      "signed_delta": 1.0 if kind in ("append", "prepend", "insert") else
                      -1.0 if kind in ("delete", "replace") else 0.0},
        ))
    return patterns
