"""Test generation for hypotheses: sampling across generator plugins, held-out split, exact n.

Every contribution of ``md_generate_tests`` is one *stratum* ``(plugin, generator)``
(``generator`` is ``TestCase.metadata["generator"]`` when a plugin reports sub-generators,
as the builtin ``test-generators`` plugin does). :func:`generate_tests` then

1. calls every plugin (asking for a margin above ``n_tests`` so that exclusions and
   duplicates can be absorbed),
2. fills ``TestCase.source`` with the plugin name (provenance) and the hypothesis id,
3. removes prompts in ``context.excluded_prompts`` (the prompts that formed the hypothesis
   are never used to confirm it) and duplicates (whitespace/case-normalised prompt),
4. samples round-robin across strata in a seeded order, so that no single generator
   dominates, and returns exactly ``n_tests`` cases, or raises :class:`NotEnoughTests`
   naming how many were available from which sources.

Test-case ids are rebuilt as ``<hypothesis id>/t/<sha1(prompt)[:12]>``: stable across
processes and runs, which the run ledger relies on (a resumed run finds its recorded
queries by test id).

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from md_framework.errors import MDError
from md_framework.runtime import TestGenerationContext
from md_framework.types import Hypothesis, TestCase

__all__ = [
    "FeatureContextFinder",
    "interleave_families",
    "NotEnoughTests",
    "TestPool",
    "generate_tests",
    "normalise_prompt",
    "split_universe",
    "stable_seed",
    "test_case_id",
]


class NotEnoughTests(MDError):
    """The generators could not provide ``n_tests`` distinct, non-excluded test prompts."""

    def __init__(self, hypothesis_id: str, wanted: int, available: Mapping[str, int],
                 excluded: int = 0, duplicates: int = 0) -> None:
        self.hypothesis_id = hypothesis_id
        self.wanted = wanted
        self.available = dict(available)
        self.excluded = excluded
        self.duplicates = duplicates
        total = sum(self.available.values())
        sources = ", ".join(f"{k}: {v}" for k, v in sorted(self.available.items())) or "none"
        super().__init__(
            f'hypothesis "{hypothesis_id}": {wanted} test prompts wanted but only {total}'
            f" distinct usable prompts available (by source: {sources}; {excluded} removed"
            f" because they formed the hypothesis, {duplicates} duplicates). Add prompts to the"
            " universe families the hypothesis names, install a generator plugin for its type,"
            " or lower n_test_prompts_per_hypothesis"
        )


def stable_seed(*parts: Any) -> int:
    """A process-independent 64-bit seed from ``parts`` (``hash()`` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def normalise_prompt(prompt: str) -> str:
    """What counts as "the same prompt" for exclusion and de-duplication."""
    return " ".join(prompt.split()).casefold()


def test_case_id(hypothesis_id: str, prompt: str) -> str:
    digest = hashlib.sha1(normalise_prompt(prompt).encode("utf-8")).hexdigest()[:12]
    return f"{hypothesis_id}/t/{digest}"


test_case_id.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def split_universe(
    universe: Mapping[str, Sequence[str]], explore_fraction: float, seed: int
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Seeded per-family split of the prompt universe into (explore, confirm) halves.

    Discovery traces only the explore part; tests confirm hypotheses on the confirm part.
    Each family is shuffled with a seed derived from ``(seed, family)`` (so adding a family
    does not reshuffle the others) and cut at ``round(len * explore_fraction)``; a family
    with at least two prompts keeps at least one on each side. Duplicates within a family
    are dropped first, and a prompt never lands on both sides.
    """
    if not 0.0 <= explore_fraction <= 1.0:
        raise ValueError(f"explore_fraction must lie in [0, 1], got {explore_fraction!r}")
    explore: dict[str, list[str]] = {}
    confirm: dict[str, list[str]] = {}
    for family in sorted(universe):
        seen: set[str] = set()
        prompts = []
        for prompt in universe[family]:
            key = normalise_prompt(prompt)
            if key not in seen:
                seen.add(key)
                prompts.append(prompt)
        random.Random(stable_seed("split", seed, family)).shuffle(prompts)
        cut = round(len(prompts) * explore_fraction)
        if len(prompts) >= 2 and 0.0 < explore_fraction < 1.0:
            cut = min(max(cut, 1), len(prompts) - 1)
        explore[family] = prompts[:cut]
        confirm[family] = prompts[cut:]
    return explore, confirm


def _request_size(n_tests: int, context: TestGenerationContext) -> int:
    # ask for a margin: exclusions and cross-generator duplicates are removed afterwards
    return n_tests + max(8, n_tests // 2) + min(len(context.excluded_prompts), 4 * n_tests)


def generate_tests(
    hypothesis: Hypothesis,
    n_tests: int,
    *,
    hooks: Any,
    context: TestGenerationContext,
    allow_fewer: bool = False,
) -> list[TestCase]:
    """Exactly ``n_tests`` test cases for ``hypothesis`` from every ``md_generate_tests``
    plugin (see the module docstring); raises :class:`NotEnoughTests` otherwise, or returns
    what there is when ``allow_fewer``. ``hooks`` is a :class:`md_framework.plugins.Hooks`.
    Deterministic for a given ``context.seed`` and set of plugins."""
    if n_tests < 0:
        raise ValueError(f"n_tests must be >= 0, got {n_tests}")
    if n_tests == 0:
        return []
    request = _request_size(n_tests, context)
    excluded_keys = {normalise_prompt(p) for p in context.excluded_prompts}
    strata: dict[tuple[str, str], list[TestCase]] = {}
    seen: set[str] = set()
    excluded = duplicates = 0
    for contribution in hooks.collect(
        "md_generate_tests", hypothesis=hypothesis, n_tests=request, context=context
    ):
        case = contribution.value
        if not isinstance(case, TestCase):
            from md_framework.errors import PluginError

            raise PluginError(contribution.plugin, None,
                              f"md_generate_tests returned {type(case).__name__}, not TestCase")
        if not case.prompt.strip():
            continue
        key = normalise_prompt(case.prompt)
        if key in excluded_keys:
            excluded += 1
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        generator = str(case.metadata.get("generator", ""))
        metadata = dict(case.metadata)
        if case.id:
            metadata.setdefault("generator_id", case.id)
        fixed = case.model_copy(update={
            "id": test_case_id(hypothesis.id, case.prompt),
            "hypothesis_id": hypothesis.id,
            "source": contribution.plugin,
            "split": "confirm",
            "metadata": metadata,
        })
        strata.setdefault((contribution.plugin, generator), []).append(fixed)
    available = {
        (f"{plugin}:{gen}" if gen else plugin): len(cases)
        for (plugin, gen), cases in strata.items()
    }
    total = sum(available.values())
    if total < n_tests and not allow_fewer:
        raise NotEnoughTests(hypothesis.id, n_tests, available, excluded, duplicates)
    rng = random.Random(stable_seed("testgen", context.seed, hypothesis.id))
    order = sorted(strata)
    rng.shuffle(order)
    queues = [(STRATUM_WEIGHTS.get(gen, 1), list(strata[(plugin, gen)])) for plugin, gen in order]
    chosen: list[TestCase] = []
    while len(chosen) < n_tests and any(queue for _, queue in queues):
        for weight, queue in queues:
            for _ in range(weight):
                if queue and len(chosen) < n_tests:
                    chosen.append(queue.pop(0))
    return chosen


#: Picks per round of the weighted round robin across (plugin, generator) strata. A
#: hypothesis that names families is a claim about those families, so prompts drawn from
#: them (held-out universe prompts) and from its features' own contexts get most slots;
#: generic templates and paraphrases fill in. Other plugins' generators weigh 1.
STRATUM_WEIGHTS: dict[str, int] = {"universe": 3, "feature": 2}


class TestPool:
    """Tests per hypothesis, generated once and handed out in a fixed order.

    The explorer and :meth:`Validator.validate_many` draw prefixes of ``tests_for(h)``;
    the list is generated with ``n_per_hypothesis`` cases (fewer, with a warning entry
    in :attr:`shortfalls`, when ``allow_fewer`` and the sources run dry). ``context`` is a
    :class:`TestGenerationContext` or a callable building one per hypothesis (e.g. to set
    ``excluded_prompts`` to the prompts that formed it).
    """

    __test__ = False

    def __init__(
        self,
        hooks: Any,
        context: TestGenerationContext | Callable[[Hypothesis], TestGenerationContext],
        n_per_hypothesis: int,
        *,
        allow_fewer: bool = True,
        min_tests: int = 2,
    ) -> None:
        self.hooks = hooks
        self.context = context
        self.n_per_hypothesis = n_per_hypothesis
        self.allow_fewer = allow_fewer
        self.min_tests = min_tests
        self.shortfalls: dict[str, str] = {}
        self._cache: dict[str, list[TestCase]] = {}

    def _context_for(self, hypothesis: Hypothesis) -> TestGenerationContext:
        return self.context(hypothesis) if callable(self.context) else self.context

    def tests_for(self, hypothesis: Hypothesis) -> list[TestCase]:
        if hypothesis.id not in self._cache:
            context = self._context_for(hypothesis)
            try:
                tests = generate_tests(hypothesis, self.n_per_hypothesis, hooks=self.hooks,
                                       context=context)
            except NotEnoughTests as exc:
                if not self.allow_fewer:
                    raise
                tests = generate_tests(hypothesis, self.n_per_hypothesis, hooks=self.hooks,
                                       context=context, allow_fewer=True)
                if len(tests) < self.min_tests:
                    # too few to test (e.g. a refinement whose family's held-out prompts its
                    # parent used up): no evidence, so no claim (p = 1), and the note says why
                    tests = []
                self.shortfalls[hypothesis.id] = str(exc)
            self._cache[hypothesis.id] = tests
        return self._cache[hypothesis.id]


def interleave_families(families: Mapping[str, Sequence[str]], limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (family, prompt) pairs taken round-robin over the families in sorted
    order, so that a size limit keeps every family represented."""
    lists = {f: list(p) for f, p in families.items()}
    out: list[tuple[str, str]] = []
    while len(out) < limit and any(lists.values()):
        for family in sorted(lists):
            if lists[family] and len(out) < limit:
                out.append((family, lists[family].pop(0)))
    return out


class FeatureContextFinder:
    """Feature-driven test prompts: for each feature, the held-out (confirmation-split)
    prompts on which it is most active, from the tracer's optional ``feature_activations``
    (:class:`~md_framework.tracing_api.FeatureReader`) on ``model``.

    The prompts are chosen by a feature's activation, never by a behavioural reading, so
    testing on them asks "where this feature fires, does behaviour differ?" without
    selecting on the outcome. A hypothesis that names families gets only its families'
    prompts: its claim is about them, and a feature that also fires on another family
    (where the change may be larger) must not lend that family's effect to the claim.
    One forward pass per prompt covers every feature asked for at once; features are
    computed on first request and kept (refinements reuse them). Without the capability,
    or if reading fails, every feature gets no contexts.
    """

    def __init__(self, tracer: Any, model: Any, universe: Mapping[str, Sequence[str]], *,
                 top_n: int = 8, max_prompts: int = 200) -> None:
        from md_framework.tracing_api import can_read_features

        self.tracer = tracer if can_read_features(tracer) else None
        self.model = model
        self.top_n = top_n
        picked = interleave_families(universe, max_prompts)
        self.family_of: dict[str, str] = {}
        for family, prompt in picked:
            self.family_of.setdefault(prompt, family)
        self.prompts = list(dict.fromkeys(prompt for _, prompt in picked))
        self.found: dict[str, list[tuple[str, str]]] = {}  # key -> [(prompt, family)] by activation
        self.error: str | None = None

    def prepare(self, features: Sequence[Any]) -> None:
        """Compute the contexts of every feature in ``features`` not seen yet (one pass)."""
        wanted = {f.key: f for f in features if f.key not in self.found}
        if not wanted:
            return
        if self.tracer is None or not self.prompts or self.error is not None:
            self.found.update({k: [] for k in wanted})
            return
        try:
            rows = self.tracer.feature_activations(self.model, self.prompts, list(wanted.values()))
        except Exception as exc:  # noqa: BLE001 - no feature contexts is not fatal
            self.error = f"{type(exc).__name__}: {exc}"
            self.found.update({k: [] for k in wanted})
            return
        for key in wanted:
            scored = []
            for prompt, row in zip(self.prompts, rows):
                value = row.get(key)
                act = value[0] if isinstance(value, (tuple, list)) else value
                if act is not None and float(act) > 0:
                    scored.append((-float(act), prompt))
            self.found[key] = [(prompt, self.family_of[prompt]) for _, prompt in sorted(scored)]

    def contexts_for(self, hypothesis: Hypothesis) -> dict[str, list[str]]:
        self.prepare(hypothesis.source_features)
        scope = set(hypothesis.families)
        out = {}
        for f in hypothesis.source_features:
            prompts = [p for p, family in self.found.get(f.key, ()) if not scope or family in scope]
            if prompts:
                out[f.key] = prompts[: self.top_n]
        return out
