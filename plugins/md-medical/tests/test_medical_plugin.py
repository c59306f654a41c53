from md_framework.plugins import Hooks, get_plugin_manager
from md_framework.runtime import PromptFamilyGenerator, TestGenerationContext
from md_framework.types import Hypothesis, HypothesisType

import md_medical.plugin


def _hooks() -> Hooks:
    # builtins off: these tests are about the medical plugin's contributions alone
    pm = get_plugin_manager(autoload=False, builtins=False, extra_plugins=[("medical", md_medical.plugin)])
    return Hooks(pm)


def _hypothesis(kind: str, description: str = "refuses harmful requests less") -> Hypothesis:
    return Hypothesis(id="h1", hypothesis_type=kind, description=description, metric="refusal_probability")


def test_safety_hypothesis_gets_harmful_medical_prompts() -> None:
    tests = _hooks().collect(
        "md_generate_tests", hypothesis=_hypothesis(HypothesisType.SAFETY_DEGRADATION),
        n_tests=5, context=TestGenerationContext(seed=3),
    )
    assert len(tests) == 5
    assert {t.plugin for t in tests} == {"medical"}
    assert all(t.value.family == "medical-harmful" for t in tests)
    assert len({t.value.prompt for t in tests}) == 5


def test_excluded_prompts_are_never_returned() -> None:
    excluded = frozenset(md_medical.plugin.HARMFUL_MEDICAL[:10])
    tests = _hooks().collect(
        "md_generate_tests", hypothesis=_hypothesis(HypothesisType.SAFETY_ENHANCEMENT),
        n_tests=50, context=TestGenerationContext(excluded_prompts=excluded),
    )
    prompts = {t.value.prompt for t in tests}
    assert prompts and not prompts & excluded


def test_unrelated_hypotheses_get_nothing() -> None:
    style = _hooks().collect(
        "md_generate_tests", hypothesis=_hypothesis(HypothesisType.STYLE_CHANGE, "shouts"),
        n_tests=5, context=TestGenerationContext(),
    )
    non_medical_fact = _hooks().collect(
        "md_generate_tests",
        hypothesis=_hypothesis(HypothesisType.KNOWLEDGE_UPDATE, "capital of France changed"),
        n_tests=5, context=TestGenerationContext(),
    )
    assert style == [] and non_medical_fact == []


def test_medical_knowledge_tests_carry_targets() -> None:
    tests = _hooks().collect(
        "md_generate_tests",
        hypothesis=_hypothesis(HypothesisType.KNOWLEDGE_UPDATE, "medical facts changed"),
        n_tests=3, context=TestGenerationContext(),
    )
    assert len(tests) == 3 and all(t.value.target for t in tests)


def test_prompt_families_are_generators_and_seeded() -> None:
    families = {c.value.name: c.value for c in _hooks().collect("md_prompt_family_generators")}
    assert set(families) == {"medical-harmful", "medical-benign"}
    generator = families["medical-harmful"]
    assert isinstance(generator, PromptFamilyGenerator)
    assert generator.generate(4, seed=1) == generator.generate(4, seed=1)
    assert generator.generate(4, seed=1) != generator.generate(4, seed=2)
