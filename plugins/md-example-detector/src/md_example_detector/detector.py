"""``top_answer_demotion``: the base model's top next token loses probability on a family.

For each prompt with logit targets in both graphs, the change in probability of the base
model's top next token (``intervention - base``; a token the intervention's targets do not
list counts as probability 0, so the drop is an upper bound). A family shows the pattern
when at least ``MIN_PROMPTS`` of its prompts were read, at least ``MIN_SHARE`` of them lost
``DEMOTION`` or more, and the mean change is negative. Strength = the share of demoted
prompts. The evidence carries the one-sided exact sign-test p-value of that many demotions
among the prompts that moved (a screening number: the prompts are the discovery prompts,
not held-out ones; validation tests the hypothesis on fresh prompts under online FDR).

The pattern reads the models' outputs (level ``output``), its direction is the sign of
``mean_delta``, and it suggests a hypothesis type of this plugin's own,
``answer_demotion``, measured by ``target_logprob`` (the base model's answer's
log-probability, which should decrease).
"""

from __future__ import annotations

import math
from collections import defaultdict

from md_framework import hookimpl
from md_framework.types import CircuitDiff, HypothesisTypeSpec, LogitTarget, Pattern, PatternType

PATTERN_TYPE = "top_answer_demotion"
HYPOTHESIS_TYPE = "answer_demotion"
MIN_PROMPTS = 3
MIN_SHARE = 0.5
DEMOTION = 0.1


def _top(targets: list[LogitTarget]) -> LogitTarget | None:
    return max(targets, key=lambda t: t.probability) if targets else None


def sign_test_p(k: int, n: int) -> float:
    """One-sided exact binomial sign test: P(X >= k), X ~ Binomial(n, 1/2)."""
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n


def top_answer_demotion(diff: CircuitDiff) -> list[Pattern]:
    by_family: dict[str, list[float]] = defaultdict(list)
    for pd in diff.prompt_diffs:
        top = _top(pd.base_logit_targets)
        if pd.family is None or top is None or not pd.intervention_logit_targets:
            continue
        after = next((t.probability for t in pd.intervention_logit_targets if t.token_id == top.token_id), 0.0)
        by_family[pd.family].append(after - top.probability)
    patterns = []
    for family, deltas in sorted(by_family.items()):
        if len(deltas) < MIN_PROMPTS:
            continue
        demoted = sum(d <= -DEMOTION for d in deltas)
        share = demoted / len(deltas)
        mean = sum(deltas) / len(deltas)
        if share < MIN_SHARE or mean >= 0:
            continue
        moved = sum(d != 0 for d in deltas)
        patterns.append(Pattern(
            id=f"{PATTERN_TYPE}:{family}", pattern_type=PATTERN_TYPE, families=[family],
            description=(f"the base model's top next token lost {-mean:.2f} probability on average"
                         f" on '{family}' prompts ({demoted} of {len(deltas)} lost >= {DEMOTION})"),
            strength=share,
            evidence={"mean_delta": mean, "share_demoted": share, "n_prompts": len(deltas),
                      "sign_test_p": sign_test_p(sum(d < 0 for d in deltas), moved)},
        ))
    return patterns


@hookimpl
def md_pattern_types() -> list[PatternType]:
    return [PatternType(name=PATTERN_TYPE, level="output", hypothesis_type=HYPOTHESIS_TYPE,
                        sign_key="mean_delta", weight=0.5,
                        description="the base model's top next token loses probability on a family")]


@hookimpl
def md_hypothesis_types() -> list[HypothesisTypeSpec]:
    return [HypothesisTypeSpec(name=HYPOTHESIS_TYPE,
                               description="the intervention model gives the base model's answer a lower probability",
                               default_metrics=["target_logprob"], default_direction="decrease")]


@hookimpl
def md_detect_patterns(diff: CircuitDiff) -> list[Pattern]:
    return top_answer_demotion(diff)
