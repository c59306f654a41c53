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

The pattern's evidence names the edit (kind ``append`` / ``insert`` / ``delete`` /
``replace``, location, the common added and removed phrases, the common words right before
it), the answer position where the divergence peaks, and the features that changed most at
the edit's predicting position (the tracer's features, when its answer trace has them).
Exploratory, like every detector: validation decides.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from builtin_plugins.pipeline.answers import AnswerEdit, answer_edit, common_phrase, common_suffix
from builtin_plugins.pipeline.diff import welch_rows
from md_framework.types import CircuitDiff, FeatureRef, Pattern, PromptDiff

from builtin_plugins.patterns.rules import evidence_strength

ANSWER_Q = 0.1
MIN_CHANGED = 2
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
        late = [e for e in r["edits"] if e.kind != "none" and e.location != "start"]
        if edit_ok and r["n_late"] * 2 < r["n_changed"]:
            continue  # most edits start at the first word: output_shift covers them
        if not (edit_ok or div_ok):
            continue
        features = _edit_features(r["pds"], r["edits"])
        peaks = [_peak(pd) for pd in r["pds"]]
        peak_rel = float(np.mean([i / max(1, n - 1) for i, n in peaks if i >= 0])) if peaks else 0.0
        if edit_ok:
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
        examples = [{"prompt": pd.prompt, "base": pd.answer.base_answer,
                     "intervention": pd.answer.intervention_answer, "edit": e.describe()}
                    for pd, e in zip(r["pds"], r["edits"]) if e.kind != "none"][:5]
        patterns.append(Pattern(
            id=f"answer_change:{fam}", pattern_type="answer_change", description=description,
            features=_refs(diff, features), families=[fam], strength=float(min(1.0, strength)),
            evidence={"rule": "family vs rest: Fisher exact on answers edited after the first word"
                              " / one-sided Welch t on peak answer divergence, BH over families,"
                              " q <= 0.1",
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
