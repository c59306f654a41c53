"""Two-stage tracing for dictionary tracers: a cheap screen first, attribution graphs where
it pays.

Attribution graphs cost tens of forward+backward passes per prompt (circuit-tracer on
SmolLM2: 40-65 s per templated prompt). The screen runs on every seed prompt:

1. the dictionary-free ``screen_tracer`` (default ``activation-diff``: one forward pass per
   prompt and model, top MLP neurons per position) on both models;
2. the answer-aware traces (both models' greedy answers teacher-forced through both, when
   the main tracer offers ``trace_answers``; computed anyway for discovery);
3. the builtin detectors over that cheap diff (output shifts, answer edits and divergences,
   family-specific feature changes, ...): a family is **flagged** when any pattern names it.

Stage two traces attribution graphs only for the seed prompts of flagged families plus
``check_prompts`` prompts of unflagged families (deterministic round-robin), so a family the
screen missed can still show up in the circuit diff. With no flagged family every seed
prompt is traced (the screen found nothing to focus on). Configured by
``AnalysisConfig.two_stage_tracing`` (docs/discovery.md, "Two-stage tracing").

Two caps keep the attribution budget fixed as the universe grows (a LoRA moves MLP
activations on every family, so feature patterns alone name them all: on the SmolLM2
circuits example every family was flagged). ``max_families`` keeps the families that the
most distinct pattern types name, i.e. where the most independent detectors agree (output
shift, answer edit, suppression, emergence, family-specific change, ...), ties broken by the
strongest pattern and then by name; ``prompts_per_family`` traces the first seed prompts of
each kept family (seed prompts are a random draw, so the first ones are one too).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from md_framework.hookspecs import hookimpl


def flagged_families(patterns: Sequence[Any], max_families: int | None = None) -> list[str]:
    """Families any screen pattern names (patterns naming no family flag nothing), sorted by
    name; with ``max_families``, only that many, ranked by :func:`rank_families`."""
    ranked = rank_families(patterns)
    if max_families is not None:
        ranked = ranked[:max_families]
    return sorted(ranked)


def rank_families(patterns: Sequence[Any]) -> list[str]:
    """Families named by the screen's patterns, most distinct pattern types first, then the
    strongest single pattern, then name. Counting types rather than summing strengths keeps
    detectors on different strength scales comparable."""
    types: dict[str, set[str]] = {}
    strongest: dict[str, float] = {}
    for p in patterns:
        for f in p.families:
            types.setdefault(f, set()).add(p.pattern_type)
            strongest[f] = max(strongest.get(f, 0.0), abs(float(p.strength)))
    return sorted(types, key=lambda f: (-len(types[f]), -strongest[f], f))


def choose_prompts(seeds: Sequence[tuple[str, str]], flagged: Sequence[str], check_prompts: int,
                   seed: int, prompts_per_family: int | None = None
                   ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(prompts to trace with attribution, the unflagged check prompts among them), in seed
    order. No flagged family: every seed prompt. ``prompts_per_family`` caps a flagged
    family's traced prompts at its first ones in seed order."""
    if not flagged:
        return list(seeds), []
    flagged_set = set(flagged)
    taken: dict[str, int] = {}
    kept_flagged: set[tuple[str, str]] = set()
    for p, f in seeds:
        if f in flagged_set and (prompts_per_family is None or taken.get(f, 0) < prompts_per_family):
            taken[f] = taken.get(f, 0) + 1
            kept_flagged.add((p, f))
    rest: dict[str, list[tuple[str, str]]] = {}
    for p, f in seeds:
        if f not in flagged_set:
            rest.setdefault(f, []).append((p, f))
    rng = random.Random(f"screen-checks:{seed}")
    queues = {f: rng.sample(items, len(items)) for f, items in sorted(rest.items())}
    checks: list[tuple[str, str]] = []
    while len(checks) < check_prompts and any(queues.values()):
        for f in sorted(queues):
            if queues[f] and len(checks) < check_prompts:
                checks.append(queues[f].pop())
    keep = set(checks)
    chosen = [(p, f) for p, f in seeds if (p, f) in kept_flagged or (p, f) in keep]
    return chosen, [c for c in chosen if c in keep]


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_screen(seeds: Sequence[tuple[str, str]], patterns: Sequence[Any], check_prompts: int,
                    seed: int, max_families: int | None, prompts_per_family: int | None
                    ) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """A family is flagged when a screen pattern names it (at most ``max_families``, ranked by
    :func:`rank_families`); its seed prompts (at most ``prompts_per_family``) get attribution
    graphs, plus ``check_prompts`` round-robin prompts of the unflagged families. (No
    defaults on the caps: pluggy passes a hook implementation only its arguments without
    one.)"""
    flagged = flagged_families(patterns, max_families)
    chosen, checks = choose_prompts(seeds, flagged, check_prompts, seed, prompts_per_family)
    return flagged, chosen, checks
