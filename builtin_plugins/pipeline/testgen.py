"""Test generation for hypotheses: family evidence from the held-out split, exact n.

Where the evidence for a claim comes from (docs/validation.md, "Where evidence comes from"):

* A hypothesis that names families is a claim about those families. Its evidence is a
  **seeded random sample of the held-out (confirmation-split) prompts of those families**
  (``context.universe``, which the analyzer fills with the confirmation split), interleaved
  across its families. Nothing else counts: template probes, paraphrases, feature contexts
  and other plugins' prompts may feed exploration, but a prompt that is not a held-out prompt
  of one of the hypothesis' families is dropped (counted in :class:`NotEnoughTests` and
  :data:`TestPool.dropped`). A plugin contribution whose prompt *is* such a held-out prompt
  may still supply its ``target`` and metadata.
* A hypothesis that names no family is a claim about the prompts its generators produce.
  Every contribution of ``md_generate_tests`` is one *stratum* ``(plugin, generator)``
  (``generator`` is ``TestCase.metadata["generator"]``); cases are sampled round-robin across
  strata in a seeded order. Paraphrases of one prompt are one *cluster*
  (``metadata["paraphrase_of"]``) and at most one member of a cluster is used, so pairs stay
  independent.

In both cases prompts in ``context.excluded_prompts`` (the prompts that formed the
hypothesis, a refinement's parent's prompts) are removed, duplicates
(whitespace/case-normalised) are removed, and exactly ``n_tests`` cases are returned, or
:class:`NotEnoughTests` names how many were available from which sources.

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

from md_framework.hookspecs import hookimpl
from md_framework.errors import MDError
from md_framework.runtime import TestGenerationContext
from md_framework.types import Hypothesis, TestCase

__all__ = [
    "FeatureContextFinder",
    "family_evidence",
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


def family_evidence(hypothesis: Hypothesis, context: TestGenerationContext) -> list[tuple[str, str]]:
    """The (prompt, family) pairs that may confirm a claim about ``hypothesis.families``: its
    families' held-out prompts in ``context.universe``, each family shuffled with a seed of
    ``(context.seed, hypothesis.id, family)``, interleaved round-robin across the families
    (in a seeded order) so a prefix of any length covers them evenly. Excluded prompts and
    duplicates are left out. Empty for a hypothesis naming no family."""
    excluded = {normalise_prompt(p) for p in context.excluded_prompts}
    rng = random.Random(stable_seed("family-evidence", context.seed, hypothesis.id))
    families = sorted(f for f in set(hypothesis.families) if f in context.universe)
    rng.shuffle(families)
    seen: set[str] = set()
    per_family: dict[str, list[str]] = {}
    for family in families:
        prompts = []
        for prompt in context.universe[family]:
            key = normalise_prompt(prompt)
            if prompt.strip() and key not in excluded and key not in seen:
                seen.add(key)
                prompts.append(prompt)
        random.Random(stable_seed("family-evidence", context.seed, hypothesis.id, family)
                      ).shuffle(prompts)
        per_family[family] = prompts
    pairs = interleave_families(per_family, sum(len(v) for v in per_family.values()),
                                order=families)
    return [(prompt, family) for family, prompt in pairs]


def _cluster_key(case: TestCase) -> str:
    """Paraphrases of one prompt are one cluster (keyed by the original prompt)."""
    original = case.metadata.get("paraphrase_of")
    return normalise_prompt(original if isinstance(original, str) and original else case.prompt)


def generate_tests(
    hypothesis: Hypothesis,
    n_tests: int,
    *,
    hooks: Any,
    context: TestGenerationContext,
    allow_fewer: bool = False,
    dropped: dict[str, int] | None = None,
) -> list[TestCase]:
    """Exactly ``n_tests`` test cases for ``hypothesis`` (see the module docstring); raises
    :class:`NotEnoughTests` otherwise, or returns what there is when ``allow_fewer``.
    ``hooks`` is a :class:`md_framework.plugins.Hooks`; ``dropped`` (if given) receives, per
    source, the contributions that were not evidence for the hypothesis' families.
    Deterministic for a given ``context.seed`` and set of plugins."""
    if n_tests < 0:
        raise ValueError(f"n_tests must be >= 0, got {n_tests}")
    if n_tests == 0:
        return []
    request = _request_size(n_tests, context)
    excluded_keys = {normalise_prompt(p) for p in context.excluded_prompts}
    evidence = family_evidence(hypothesis, context) if hypothesis.families else []
    evidence_keys = {normalise_prompt(p): (p, f) for p, f in evidence}
    supplied: dict[str, TestCase] = {}  # family-evidence prompt -> a plugin's case for it
    strata: dict[tuple[str, str], list[TestCase]] = {}
    seen: set[str] = set()
    clusters: set[str] = set()
    excluded = duplicates = 0
    not_evidence: dict[str, int] = {}
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
        generator = str(case.metadata.get("generator", ""))
        source = f"{contribution.plugin}:{generator}" if generator else contribution.plugin
        if key in excluded_keys:
            excluded += 1
            continue
        if hypothesis.families:
            # a claim about families: only their held-out prompts are evidence
            if key in evidence_keys and "paraphrase_of" not in case.metadata:
                supplied.setdefault(key, case.model_copy(update={"source": contribution.plugin}))
            else:
                not_evidence[source] = not_evidence.get(source, 0) + 1
            continue
        cluster = _cluster_key(case)
        if key in seen or cluster in clusters:
            duplicates += 1
            continue
        seen.add(key)
        clusters.add(cluster)
        metadata = dict(case.metadata)
        if case.id:
            metadata.setdefault("generator_id", case.id)
        metadata["cluster"] = cluster
        fixed = case.model_copy(update={
            "id": test_case_id(hypothesis.id, case.prompt),
            "hypothesis_id": hypothesis.id,
            "source": contribution.plugin,
            "split": "confirm",
            "metadata": metadata,
        })
        strata.setdefault((contribution.plugin, generator), []).append(fixed)
    if dropped is not None:
        dropped.update(not_evidence)
    if hypothesis.families:
        chosen = [_family_case(hypothesis, prompt, family, supplied.get(normalise_prompt(prompt)))
                  for prompt, family in evidence[:n_tests]]
        if len(chosen) < n_tests and not allow_fewer:
            available = {f"held-out prompts of {', '.join(sorted(set(hypothesis.families)))}":
                         len(evidence)}
            available.update({f"{k} (not evidence for the families)": v
                              for k, v in not_evidence.items()})
            raise NotEnoughTests(hypothesis.id, n_tests, available, excluded, duplicates)
        return chosen
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
    chosen = []
    while len(chosen) < n_tests and any(queue for _, queue in queues):
        for weight, queue in queues:
            for _ in range(weight):
                if queue and len(chosen) < n_tests:
                    chosen.append(queue.pop(0))
    return chosen


def _family_case(hypothesis: Hypothesis, prompt: str, family: str,
                 supplied: TestCase | None) -> TestCase:
    metadata: dict[str, Any] = dict(supplied.metadata) if supplied is not None else {}
    if supplied is not None and supplied.id:
        metadata.setdefault("generator_id", supplied.id)
    metadata.update({"evidence": "family", "cluster": normalise_prompt(prompt)})
    return TestCase(
        id=test_case_id(hypothesis.id, prompt), hypothesis_id=hypothesis.id, prompt=prompt,
        family=family, source=supplied.source if supplied is not None else "universe",
        target=supplied.target if supplied is not None else None, split="confirm",
        metadata=metadata,
    )


#: Picks per round of the weighted round robin across (plugin, generator) strata, for
#: hypotheses that name no family (family hypotheses take held-out family prompts only):
#: held-out universe prompts and feature contexts (chosen on the base model) get most
#: slots; templates and paraphrases fill in. Other plugins' generators weigh 1.
STRATUM_WEIGHTS: dict[str, int] = {"universe": 3, "feature": 2}


class TestPool:
    """Tests per hypothesis, generated once and handed out in a fixed order.

    The explorer and :meth:`Validator.validate_many` draw prefixes of ``tests_for(h)``;
    the list is generated with ``n_per_hypothesis`` cases (fewer, with a warning entry
    in :attr:`shortfalls`, when ``allow_fewer`` and the sources run dry; none when fewer
    than ``min_tests`` remain, so the hypothesis is decided without evidence). ``context`` is a
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
        #: per hypothesis id: contributions (by source) that were not evidence for its families
        self.dropped: dict[str, dict[str, int]] = {}
        self._cache: dict[str, list[TestCase]] = {}

    def _context_for(self, hypothesis: Hypothesis) -> TestGenerationContext:
        return self.context(hypothesis) if callable(self.context) else self.context

    def tests_for(self, hypothesis: Hypothesis) -> list[TestCase]:
        if hypothesis.id not in self._cache:
            context = self._context_for(hypothesis)
            dropped: dict[str, int] = {}
            self.dropped[hypothesis.id] = dropped
            try:
                tests = generate_tests(hypothesis, self.n_per_hypothesis, hooks=self.hooks,
                                       context=context, dropped=dropped)
            except NotEnoughTests as exc:
                if not self.allow_fewer:
                    raise
                tests = generate_tests(hypothesis, self.n_per_hypothesis, hooks=self.hooks,
                                       context=context, allow_fewer=True)
                if len(tests) < self.min_tests:
                    tests = []  # decided with no evidence: p = 1, reason "not enough tests"
                self.shortfalls[hypothesis.id] = str(exc)
            self._cache[hypothesis.id] = tests
        return self._cache[hypothesis.id]


def interleave_families(families: Mapping[str, Sequence[str]], limit: int,
                        order: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Up to ``limit`` (family, prompt) pairs taken round-robin over the families (in sorted
    order, or ``order``), so that a size limit keeps every family represented."""
    lists = {f: list(p) for f, p in families.items()}
    out: list[tuple[str, str]] = []
    names = list(order) if order is not None else sorted(lists)
    while len(out) < limit and any(lists.values()):
        for family in names:
            if lists[family] and len(out) < limit:
                out.append((family, lists[family].pop(0)))
    return out


class FeatureContextFinder:
    """Feature-driven test prompts: for each feature, the held-out (confirmation-split)
    prompts on which it is most active, from the tracer's optional ``feature_activations``
    (:class:`~md_framework.tracing_api.FeatureReader`) on ``model``.

    ``model`` must be the **base** model (the analyzer passes it): the features were picked
    because they changed, and their activation on the intervention model is a
    post-treatment variable, so ranking test prompts by it selects prompts where the
    intervention's behaviour moved (a simulation with a family mean change of exactly 0 gave
    type-I error 0.22 instead of 0.02; tests/validation/test_evidence_simulations.py). The
    base model's activation is fixed before the intervention is looked at, so it is a
    pre-treatment covariate and selecting on it is selection on the design, not on the
    outcome. The contexts serve only hypotheses that name no family (a claim about
    "where these features fire"); a family claim is confirmed on random family prompts.
    Every prompt read costs one forward pass, counted in :attr:`forward_passes` (the
    analyzer adds them to the report's costs). Without the capability, or if reading fails,
    every feature gets no contexts.
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
        self.forward_passes = 0  # prompts read on ``model`` (the cost of this selection)

    def prepare(self, features: Sequence[Any]) -> None:
        """Compute the contexts of every feature in ``features`` not seen yet (one pass)."""
        wanted = {f.key: f for f in features if f.key not in self.found}
        if not wanted:
            return
        if self.tracer is None or not self.prompts or self.error is not None:
            self.found.update({k: [] for k in wanted})
            return
        self.forward_passes += len(self.prompts)
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
        """Each source feature's top held-out prompts; nothing for a hypothesis that names
        families (its evidence is random family prompts, so no pass is spent on it)."""
        if hypothesis.families:
            return {}
        self.prepare(hypothesis.source_features)
        out = {}
        for f in hypothesis.source_features:
            prompts = [p for p, _ in self.found.get(f.key, ())]
            if prompts:
                out[f.key] = prompts[: self.top_n]
        return out


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_split_universe(universe: Mapping[str, Sequence[str]], explore_fraction: float,
                            seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    return split_universe(universe, explore_fraction, seed)
