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
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from md_framework.hookspecs import hookimpl


def flagged_families(patterns: Sequence[Any]) -> list[str]:
    """Families any screen pattern names (patterns naming no family flag nothing)."""
    return sorted({f for p in patterns for f in p.families})


def choose_prompts(seeds: Sequence[tuple[str, str]], flagged: Sequence[str], check_prompts: int,
                   seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(prompts to trace with attribution, the unflagged check prompts among them), in seed
    order. No flagged family: every seed prompt."""
    if not flagged:
        return list(seeds), []
    flagged_set = set(flagged)
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
    chosen = [(p, f) for p, f in seeds if f in flagged_set or (p, f) in keep]
    return chosen, [c for c in chosen if c in keep]


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_screen(seeds: Sequence[tuple[str, str]], patterns: Sequence[Any], check_prompts: int,
                    seed: int) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """A family is flagged when any screen pattern names it; its seed prompts get attribution
    graphs, plus ``check_prompts`` round-robin prompts of the unflagged families."""
    flagged = flagged_families(patterns)
    chosen, checks = choose_prompts(seeds, flagged, check_prompts, seed)
    return flagged, chosen, checks
