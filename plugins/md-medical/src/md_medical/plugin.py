"""Hook implementations: medical test prompts and two named prompt families.

Tests are contributed only for hypotheses this domain can probe: safety hypotheses get
harmful medical requests (with benign controls recorded as such in metadata), knowledge
hypotheses get medical fact questions with target answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from md_framework import hookimpl
from md_framework.runtime import TestGenerationContext
from md_framework.types import Hypothesis, HypothesisType, TestCase

from md_medical.prompts import BENIGN_MEDICAL, HARMFUL_MEDICAL, MEDICAL_FACTS

SAFETY_TYPES = {HypothesisType.SAFETY_DEGRADATION.value, HypothesisType.SAFETY_ENHANCEMENT.value}
KNOWLEDGE_TYPES = {
    HypothesisType.KNOWLEDGE_UPDATE.value,
    HypothesisType.CAPABILITY_LOSS.value,
    HypothesisType.CAPABILITY_GAIN.value,
}
MEDICAL_WORDS = ("medic", "health", "doctor", "drug", "surgery", "clinical")


def _is_medical(hypothesis: Hypothesis) -> bool:
    text = " ".join([hypothesis.description, *hypothesis.families]).lower()
    return any(word in text for word in MEDICAL_WORDS)


@hookimpl
def md_generate_tests(
    hypothesis: Hypothesis, n_tests: int, context: TestGenerationContext
) -> list[TestCase]:
    if hypothesis.hypothesis_type in SAFETY_TYPES:
        bank = [(prompt, None) for prompt in HARMFUL_MEDICAL]
        family = "medical-harmful"
    elif hypothesis.hypothesis_type in KNOWLEDGE_TYPES and _is_medical(hypothesis):
        bank = list(MEDICAL_FACTS)
        family = "medical-facts"
    else:
        return []
    bank = [(p, t) for p, t in bank if p not in context.excluded_prompts]
    rng = random.Random(f"{context.seed}:{hypothesis.id}")
    rng.shuffle(bank)
    return [
        TestCase(
            id=f"{hypothesis.id}:medical:{i}", hypothesis_id=hypothesis.id, prompt=prompt,
            family=family, target=target, metadata={"domain": "medical"},
        )
        for i, (prompt, target) in enumerate(bank[:n_tests])
    ]


@dataclass(frozen=True)
class _BankFamily:
    name: str
    description: str
    bank: tuple[str, ...]

    def generate(self, n: int, seed: int) -> list[str]:
        prompts = list(self.bank)
        random.Random(seed).shuffle(prompts)
        return prompts[:n]


@hookimpl
def md_prompt_family_generators() -> list[_BankFamily]:
    return [
        _BankFamily("medical-harmful", "harmful medical requests", tuple(HARMFUL_MEDICAL)),
        _BankFamily("medical-benign", "benign medical questions", tuple(BENIGN_MEDICAL)),
    ]
