"""Causal confirmation: how much of a validated behaviour change do its features cause?

For each *validated* hypothesis with ``source_features`` (dictionary features or MLP
neurons), the tracer's optional :class:`~md_framework.tracing_api.FeatureIntervener`
capability gives the intervention model with those features changed (default: patched back
to the base model's activation on the same input), and the hypothesis' own metric is
measured on held-out prompts on three models: base (B), intervention (I) and intervention
with the features intervened on (A). The *causal share* is

    share = mean_i(I_i - A_i) / mean_i(I_i - B_i)

over the held-out prompts i: the part of the average behavioural effect that goes away when
the features are restored/ablated, as a fraction of the whole average effect (the
"proportion mediated" of causal mediation analysis, VanderWeele 2015, *Explanation in Causal
Inference*, ch. 2; the same ratio of averages as the faithfulness score of activation
patching, Wang et al. 2023 "Interpretability in the Wild", ICLR). Numerator and denominator
are averaged over prompts *before* dividing, because a per-prompt ratio explodes on prompts
whose own effect is near zero. 1 = the features account for the whole effect, 0 = none of
it; values outside [0, 1] are possible (over-correction, or features that mask the effect).

CI: paired percentile bootstrap over prompts (the (B, I, A) triple of a prompt is resampled
together), ``n_bootstrap`` replicates from ``numpy.random.default_rng(seed)``. Near-zero
denominators: when |mean(I - B)| < ``min_denominator`` (default: the metric's ``min_change``,
else 1e-9) there is no effect to apportion and no share is reported (a note says why);
bootstrap replicates whose denominator falls below it are dropped, and with fewer than half
of them left the CI is omitted.

Random-feature control: the same estimate with as many features drawn at random (seeded)
from the same layers among the features that also changed on the traced prompts
(``causal_control_share``). A share well above the control's says the effect is carried by
*these* features, not by disturbing any changed features of those layers.

Readings go through the run's ledger when there is one (``store``): a resumed run serves the
recorded base, intervention and intervened readings instead of measuring them again.

The results are descriptive (they do not touch the FDR decisions). Nothing here imports
torch; docs/causal.md has the details.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from md_framework.hookspecs import hookimpl
from md_framework.runtime import BehaviourMetric, LoadedModel
from md_framework.tracing_api import can_intervene
from md_framework.types import EffectSize, FeatureRef, Hypothesis, TestCase, ValidationResult

__all__ = ["CausalEstimate", "causal_share", "confirm_causally", "control_features",
           "measure_triplet", "share_difference"]

#: issue #15: a causal share is estimated on at least this many held-out prompts
MIN_CAUSAL_PROMPTS = 10


@dataclass
class CausalEstimate:
    """A causal share (``effect`` is None when it could not be estimated: see ``reason``)."""

    effect: EffectSize | None
    n: int
    mean_base: float
    mean_intervention: float
    mean_ablated: float
    reason: str = ""
    dropped_replicates: int = 0


def causal_share(base: Sequence[float], intervention: Sequence[float], ablated: Sequence[float],
                 *, min_denominator: float = 1e-9, n_bootstrap: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> CausalEstimate:
    """``mean(I - A) / mean(I - B)`` with a seeded paired percentile-bootstrap CI."""
    b = np.asarray(base, dtype=float)
    i = np.asarray(intervention, dtype=float)
    a = np.asarray(ablated, dtype=float)
    if not (b.shape == i.shape == a.shape) or b.ndim != 1:
        raise ValueError("base, intervention and ablated need one value per prompt each")
    n = int(b.size)
    if n == 0:
        return CausalEstimate(None, 0, math.nan, math.nan, math.nan, "no held-out prompts")
    num, den = i - a, i - b
    means = (float(b.mean()), float(i.mean()), float(a.mean()))
    threshold = max(float(min_denominator), 0.0)
    d = float(den.mean())
    if abs(d) < threshold or d == 0.0:
        return CausalEstimate(None, n, *means,
                              f"behavioural effect on held-out prompts |{d:.3g}| is below "
                              f"{threshold:.3g}: no effect to apportion")
    estimate = float(num.mean()) / d
    ci_low = ci_high = None
    dropped = 0
    if n >= 2 and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        dens = den[idx].mean(axis=1)
        ok = np.abs(dens) >= max(threshold, 1e-300)
        dropped = int((~ok).sum())
        if ok.sum() >= n_bootstrap / 2:
            ratios = num[idx][ok].mean(axis=1) / dens[ok]
            tail = (1.0 - confidence) / 2.0
            ci_low, ci_high = (float(v) for v in np.quantile(ratios, [tail, 1.0 - tail]))
    return CausalEstimate(EffectSize(name="causal_share", estimate=estimate, ci_low=ci_low,
                                     ci_high=ci_high, confidence=confidence),
                          n, *means, dropped_replicates=dropped)


def share_difference(base: Sequence[float], intervention: Sequence[float],
                     ablated: Sequence[float], control: Sequence[float], *,
                     min_denominator: float = 1e-9, n_bootstrap: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> EffectSize | None:
    """Paired difference ``share(A) - share(C)`` of a feature set's causal share and a
    random control set's, measured on the same prompts: ``(mean(I - A) - mean(I - C)) /
    mean(I - B)`` = ``mean(C - A) / mean(I - B)``, with a paired percentile-bootstrap CI
    (each prompt's (B, I, A, C) resampled together, so the prompts' shared noise cancels).
    None when the effect ``|mean(I - B)|`` is below ``min_denominator``."""
    b, i, a, c = (np.asarray(x, dtype=float) for x in (base, intervention, ablated, control))
    den, num = i - b, c - a
    d = float(den.mean()) if den.size else 0.0
    if den.size == 0 or abs(d) < max(min_denominator, 0.0) or d == 0.0:
        return None
    lo = hi = None
    n = den.size
    if n >= 2 and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        dens = den[idx].mean(axis=1)
        ok = np.abs(dens) >= max(min_denominator, 1e-300)
        if ok.sum() >= n_bootstrap / 2:
            ratios = num[idx][ok].mean(axis=1) / dens[ok]
            tail = (1.0 - confidence) / 2.0
            lo, hi = (float(v) for v in np.quantile(ratios, [tail, 1.0 - tail]))
    return EffectSize(name="causal_share_minus_control", estimate=float(num.mean()) / d,
                      ci_low=lo, ci_high=hi, confidence=confidence)


class _Readings:
    """Metric readings per (model key, case), served from ``store`` (the run ledger: its
    ``cached_readings`` / ``record_readings``) when recorded and recorded before use when not.
    Without a store every call measures."""

    def __init__(self, metric: BehaviourMetric, store: Any = None) -> None:
        self.metric, self.store = metric, store
        self.paired = callable(getattr(metric, "measure_pair", None))

    def _cached(self, key: str, cases: Sequence[TestCase]) -> dict[str, Any]:
        if self.store is None:
            return {}
        return self.store.cached_readings(key, self.metric.name, [c.id for c in cases])

    def _record(self, key: str, cases: Sequence[TestCase], readings: Sequence[Any]) -> None:
        if self.store is not None:
            self.store.record_readings(key, self.metric.name,
                                       [(c.id, c.prompt, r) for c, r in zip(cases, readings)])

    def one(self, key: str, model: LoadedModel, cases: Sequence[TestCase]) -> list[float]:
        got = self._cached(key, cases)
        missing = [c for c in cases if c.id not in got]
        if missing:
            fresh = list(self.metric.measure(model, missing))
            if len(fresh) != len(missing):
                raise ValueError(f'metric "{self.metric.name}" returned the wrong number of readings')
            self._record(key, missing, fresh)
            got.update({c.id: r for c, r in zip(missing, fresh)})
        return [float(got[c.id].value) for c in cases]

    def pair(self, base_key: str, base: LoadedModel, key: str, model: LoadedModel,
             cases: Sequence[TestCase]) -> tuple[list[float], list[float]]:
        """A base-anchored metric's (base, model) readings: measured together."""
        got_b, got_m = self._cached(base_key, cases), self._cached(key, cases)
        missing = [c for c in cases if c.id not in got_b or c.id not in got_m]
        if missing:
            rb, rm = self.metric.measure_pair(base, model, missing)  # type: ignore[attr-defined]
            if not len(rb) == len(rm) == len(missing):
                raise ValueError(f'metric "{self.metric.name}" returned the wrong number of readings')
            self._record(base_key, missing, rb)
            self._record(key, missing, rm)
            for c, b, m in zip(missing, rb, rm):
                got_b.setdefault(c.id, b)
                got_m.setdefault(c.id, m)
        return ([float(got_b[c.id].value) for c in cases], [float(got_m[c.id].value) for c in cases])


def measure_triplet(metric: BehaviourMetric, base: LoadedModel, intervention: LoadedModel,
                    intervene: Callable[[], Any], cases: Sequence[TestCase], *,
                    store: Any = None, intervened_key: str | None = None
                    ) -> tuple[list[float], list[float], list[float]]:
    """The metric on base, intervention and the intervened intervention model.

    ``intervene()`` returns the context manager of ``tracer.intervened_model``. Its hooks sit
    on the modules the intervention model shares, so base and intervention are measured
    *before* the block opens and only the intervened model inside it. A metric with
    ``measure_pair`` (base-anchored) is measured as (base, intervention) and
    (base, intervened), so both intervention-side readings share the base anchor.
    ``store``/``intervened_key``: the ledger and the name the intervened model's readings
    are recorded under (recorded readings are not measured again; the block is not even
    opened when every reading is recorded)."""
    readings = _Readings(metric, store)
    vb, vi = _base_and_intervention(readings, base, intervention, cases)
    va = _intervened(readings, base, intervene, cases,
                     intervened_key or f"{intervention.model_id}|intervened")
    return vb, vi, va


def _base_and_intervention(readings: _Readings, base: LoadedModel, intervention: LoadedModel,
                           cases: Sequence[TestCase]) -> tuple[list[float], list[float]]:
    if readings.paired:
        return readings.pair(base.model_id, base, intervention.model_id, intervention, cases)
    return (readings.one(base.model_id, base, cases),
            readings.one(intervention.model_id, intervention, cases))


def _intervened(readings: _Readings, base: LoadedModel, intervene: Callable[[], Any],
                cases: Sequence[TestCase], key: str) -> list[float]:
    """The intervened model's readings (recorded ones first: then the block never opens)."""
    recorded = readings._cached(key, cases)
    if len(recorded) == len(cases):
        return [float(recorded[c.id].value) for c in cases]
    with intervene() as ablated:
        if readings.paired:
            return readings.pair(base.model_id, base, key, ablated, cases)[1]
        return readings.one(key, ablated, cases)


def control_features(hypothesis: Hypothesis, pool: Mapping[int, Sequence[FeatureRef]],
                     seed: int) -> list[FeatureRef]:
    """As many features per layer as ``hypothesis`` patches, drawn (seeded, without
    replacement) from ``pool[layer]`` minus the hypothesis' own; fewer where the pool is short."""
    own = {(f.layer, f.feature) for f in hypothesis.source_features}
    per_layer: dict[int, int] = {}
    for f in hypothesis.source_features:
        per_layer[f.layer] = per_layer.get(f.layer, 0) + 1
    digest = hashlib.sha256(f"{seed}:{hypothesis.id}".encode()).hexdigest()
    rng = random.Random(int(digest[:16], 16))
    out: list[FeatureRef] = []
    for layer in sorted(per_layer):
        candidates = sorted({(f.layer, f.feature): f for f in pool.get(layer, ())
                             if (f.layer, f.feature) not in own}.items())
        picked = rng.sample(candidates, min(per_layer[layer], len(candidates)))
        out += [f for _, f in sorted(picked)]
    return out


def _features_key(features: Sequence[FeatureRef], mode: str, scale: float) -> str:
    # a direction's dictionary id is its identity (every direction is "layer:0")
    text = ",".join(f"{f.layer}:{f.feature}" + (f"@{f.dictionary_id}" if str(
        f.dictionary_id or "").startswith("direction") else "")
        for f in sorted(features, key=lambda f: (f.layer, f.feature, str(f.dictionary_id))))
    return f"{mode}:{scale:g}:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _fmt(effect: EffectSize) -> str:
    ci = (f" [{effect.ci_low:.2f}, {effect.ci_high:.2f}]"
          if effect.ci_low is not None and effect.ci_high is not None else " (no CI)")
    return f"{effect.estimate:.2f}{ci}"


def confirm_causally(
    results: Sequence[ValidationResult],
    tracer: Any,
    models: Mapping[str, LoadedModel],
    metrics: Mapping[str, BehaviourMetric],
    prompts_for: Callable[[Hypothesis], tuple[Sequence[TestCase], str]] | Callable[[Hypothesis], Sequence[TestCase]],
    *,
    mode: str = "base",
    scale: float = 0.0,
    n_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    min_prompts: int = MIN_CAUSAL_PROMPTS,
    on_measured: Callable[[int], None] | None = None,
    control_pool: Mapping[int, Sequence[FeatureRef]] | None = None,
    store: Any = None,
    search: Callable[[Hypothesis], Mapping[str, Any]] | None = None,
) -> list[ValidationResult]:
    """Fill ``causal_share`` (and ``causal_control_share``) of the validated feature-based
    results (others pass unchanged).

    ``tracer``: a tracer with ``intervened_model`` (without it the results come back as
    they are). ``models``: ``{"base": ..., "intervention": ...}``. ``prompts_for(h)``: the
    held-out test cases for ``h`` (or ``(cases, where they come from)`` for the note).
    ``mode``/``scale``: the intervention (``base``: patch the features back to the base
    model's activation, ``zero``: ablate, ``scale``: multiply by ``scale``). ``on_measured``
    receives the number of behavioural queries each hypothesis cost (3 per prompt, 4 with
    the control). ``control_pool``: candidate features per layer for the random-feature
    control (none: no control). ``store``: the run ledger (readings recorded and reused).
    A hypothesis whose measurement fails gets a note instead of a share; the run goes on.

    ``search(h)``: a feature-set search (e.g. the activation-diff tracer's
    ``search_feature_set``: attribution patching, then an activation-patching sweep, on the
    hypothesis' discovery prompts) returning ``{"features": [...], ...}``; when it finds a
    set, that set is patched instead of ``h.source_features`` (a note names it and the
    search's own numbers), and the control draws as many random features from the same
    layers. With a control, the paired difference share - control share and its interval
    go into the notes (:func:`share_difference`).
    """
    if not can_intervene(tracer):
        return list(results)
    base, intervention = models["base"], models["intervention"]
    out = []
    for k, result in enumerate(results):
        h = result.hypothesis
        if not result.decision or (not h.source_features and search is None) \
                or h.metric not in metrics:
            out.append(result)
            continue
        metric = metrics[h.metric]
        got = prompts_for(h)
        cases, source = got if isinstance(got, tuple) else (got, "held-out prompts")
        # ledger keys: one hypothesis' prompt (its target may be the hypothesis' own)
        first: dict[str, TestCase] = {}
        for c in cases:
            first.setdefault(c.prompt, c)
        cases = [c.model_copy(update={"id": f"causal/{h.id}/" + hashlib.sha256(
            prompt.encode()).hexdigest()[:16]}) for prompt, c in first.items()]
        if len(cases) < min_prompts:
            out.append(result.model_copy(update={"notes": [
                *result.notes, f"causal confirmation skipped: {len(cases)} held-out prompt(s)"
                f" (at least {min_prompts} needed)"]}))
            continue
        search_note = ""
        searched_controls: list[FeatureRef] = []
        if search is not None:
            try:
                found = dict(search(h))
            except Exception as exc:  # noqa: BLE001 - fall back to the named features
                found = {"features": [], "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
            # the search's metric readings are behavioural queries like any other
            if on_measured is not None and found.get("queries"):
                on_measured(int(found["queries"]))
            if found.get("features"):
                sweep = ", ".join(f"{r['set']}: {r['share']:.2f}" for r in found.get("sweep", []))
                search_note = (
                    f"feature set searched ({found.get('kind', 'features')}) by attribution"
                    f" patching + activation-patching sweep"
                    f" (cap {found.get('cap')}, {found.get('n_prompts')} discovery prompts,"
                    f" {found.get('queries', 0)} behavioural queries,"
                    f" passes {found.get('passes')};"
                    f" search share {found.get('search_share', 0.0):.2f}; sweep: {sweep}):"
                    f" {', '.join(f.key for f in found['features'])}")
                h = h.model_copy(update={"source_features": list(found["features"])})
                searched_controls = list(found.get("controls") or [])
            else:
                search_note = (f"feature-set search found nothing ({found.get('reason', '')});"
                               " patching the hypothesis' own features")
        if not h.source_features:
            out.append(result.model_copy(update={"notes": [*result.notes, search_note]}))
            continue
        layers = sorted({f.layer for f in h.source_features})
        what = (f"{mode}-patching {len(h.source_features)} feature(s) at layer(s) "
                f"{', '.join(map(str, layers))}")
        controls = searched_controls or (control_features(h, control_pool, seed)
                                         if control_pool else [])

        def intervene(features: Sequence[FeatureRef]) -> Callable[[], Any]:
            return lambda: tracer.intervened_model(intervention, list(features), mode, scale,
                                                   base=base)

        try:
            readings = _Readings(metric, store)
            vb, vi = _base_and_intervention(readings, base, intervention, cases)
            va = _intervened(readings, base, intervene(h.source_features), cases,
                             f"{intervention.model_id}|{_features_key(h.source_features, mode, scale)}")
            vc = None
            if controls:
                vc = _intervened(readings, base, intervene(controls), cases,
                                 f"{intervention.model_id}|{_features_key(controls, mode, scale)}")
        except Exception as exc:  # noqa: BLE001 - one hypothesis must not end the run
            out.append(result.model_copy(update={"notes": [
                *result.notes, f"causal confirmation failed ({what}): "
                f"{type(exc).__name__}: {str(exc)[:200]}"]}))
            continue
        if on_measured is not None:
            on_measured((4 if vc is not None else 3) * len(cases))
        min_den = float(getattr(metric, "min_change", 0.0) or 0.0) or 1e-9
        est = causal_share(vb, vi, va, min_denominator=min_den, n_bootstrap=n_bootstrap,
                           seed=seed + k, confidence=confidence)
        means = (f"mean {h.metric}: base {est.mean_base:.3g}, intervention "
                 f"{est.mean_intervention:.3g}, intervened {est.mean_ablated:.3g}")
        if est.effect is None:
            note = f"causal share not estimated ({what}, n={est.n} {source}): {est.reason}; {means}"
        else:
            note = (f"causal share {_fmt(est.effect)} ({what}, n={est.n} {source}); {means}")
        update: dict[str, Any] = {"causal_share": est.effect}
        notes = [*result.notes, *([search_note] if search_note else []), note]
        if vc is not None:
            ctrl = causal_share(vb, vi, vc, min_denominator=min_den, n_bootstrap=n_bootstrap,
                                seed=seed + k, confidence=confidence)
            update["causal_control_share"] = ctrl.effect
            if ctrl.effect is not None:
                what_ctrl = ("random direction(s) of the same layers" if searched_controls else
                             "other changed feature(s) of the same layers")
                notes.append(f"random-feature control ({len(controls)} {what_ctrl}):"
                             f" share {_fmt(ctrl.effect)}")
            diff_share = share_difference(vb, vi, va, vc, min_denominator=min_den,
                                          n_bootstrap=n_bootstrap, seed=seed + k,
                                          confidence=confidence)
            if diff_share is not None:
                notes.append(f"share - control share (paired): {_fmt(diff_share)}")
        elif control_pool is not None:
            notes.append("random-feature control skipped: no other changed features in "
                         "these layers")
        out.append(result.model_copy(update={**update, "notes": notes}))
    return out


#: builtin test generators whose prompts are not the family's own: generic probes and
#: perturbations (on the toy model a paraphrase is out of distribution and never refuses)
NOT_FAMILY_PROMPTS = frozenset({"template", "paraphrase"})


def _family_prompt(case: TestCase, scope: set[str]) -> bool:
    return (case.metadata.get("generator") not in NOT_FAMILY_PROMPTS
            and (not scope or case.family in scope))


def held_out_prompts(hypothesis: Hypothesis, hooks: Any, context: Any,
                     used: Sequence[TestCase | str], n: int, *, min_fresh: int = MIN_CAUSAL_PROMPTS
                     ) -> tuple[list[TestCase], str]:
    """Test cases for causal confirmation: fresh ones (confirm split, never the prompts that
    formed ``hypothesis`` nor the ``used`` validation cases), up to ``n``, that are prompts
    of the hypothesis' own families (not template probes or paraphrases: they measure an
    effect the claim is not about; on the toy demo they carried 3 % of the refusal change).
    With fewer than ``min_fresh`` of those, the validation cases themselves, the family's own
    first when there are enough (the returned source says which)."""
    import dataclasses

    from builtin_plugins.pipeline.testgen import generate_tests

    scope = set(hypothesis.families)
    used_cases = [u if isinstance(u, TestCase) else
                  TestCase(id=f"causal-{i}", hypothesis_id=hypothesis.id, prompt=u)
                  for i, u in enumerate(used)]
    fresh: list[TestCase] = []
    if context is not None:
        ctx = dataclasses.replace(context, excluded_prompts=frozenset(context.excluded_prompts)
                                  | frozenset(c.prompt for c in used_cases))
        try:
            fresh = generate_tests(hypothesis, n, hooks=hooks, context=ctx, allow_fewer=True)
        except Exception:  # noqa: BLE001 - no fresh prompts: fall back below
            fresh = []
    fresh = [c for c in fresh if _family_prompt(c, scope)]
    if len(fresh) >= min_fresh:
        return fresh, "fresh held-out prompts of the hypothesis' families (not used for validation)"
    own = [c for c in used_cases if _family_prompt(c, scope)]
    if len(own) >= min_fresh:
        return own, "validation prompts of the hypothesis' families (too few fresh ones)"
    return used_cases, "validation prompts (too few fresh held-out prompts)"


def run_in_analyzer(analyzer: Any, exploration: Any, hooks: Any) -> bool:
    """The analyzer's causal-confirmation step: fills ``causal_share`` in
    ``exploration.results`` and counts the queries in ``exploration.queries``. Returns
    whether interventions ran (not when validation left nothing or the tracer cannot
    intervene)."""
    from md_framework.drivers import create_driver
    from md_framework.errors import MDError

    config = analyzer.config
    validator, pool = getattr(analyzer, "_causal_inputs", (None, None))
    if validator is None:
        return False
    try:
        tracer = create_driver("tracer", config.tracer, analyzer._tracer_options())
    except MDError:
        return False
    if not can_intervene(tracer):
        return False
    n = max(MIN_CAUSAL_PROMPTS, int(config.n_test_prompts_per_hypothesis))
    search = _searcher(analyzer, tracer)

    def prompts_for(h: Hypothesis) -> tuple[list[TestCase], str]:
        ev = validator.evidence.get(h.id)
        observed = {o.test_case_id for o in ev.observations} if ev is not None else set()
        used: list[TestCase | str] = (
            [c for c in pool.tests_for(h) if c.id in observed] if pool is not None
            else [o.prompt for o in ev.observations] if ev is not None else [])
        context = pool._context_for(h) if pool is not None else None
        return held_out_prompts(h, hooks, context, used, n)

    def count(queries: int) -> None:
        exploration.queries += queries

    store = None
    if analyzer.run_dir is not None:
        from md_framework.pipeline.ledger import Ledger

        store = Ledger(analyzer.run_dir, analyzer._fingerprint())
    try:
        exploration.results = confirm_causally(
            exploration.results, tracer, analyzer.models, validator.metrics, prompts_for,
            seed=int(config.seed), on_measured=count,
            control_pool=changed_features_by_layer(getattr(analyzer, "diff", None)), store=store,
            search=search)
    finally:
        if store is not None:
            store.close()
    return True


def changed_features_by_layer(diff: Any) -> dict[int, list[FeatureRef]]:
    """Every feature the graph diff saw change on any traced prompt, by layer (the pool of
    the random-feature control)."""
    pool: dict[int, dict[int, FeatureRef]] = {}
    dictionary_id = getattr(diff, "dictionary_id", None)
    for prompt_diff in getattr(diff, "prompt_diffs", None) or []:
        for change in prompt_diff.feature_changes:
            if change.delta != 0.0:
                pool.setdefault(change.layer, {})[change.feature] = FeatureRef(
                    layer=change.layer, feature=change.feature, dictionary_id=dictionary_id)
    return {layer: [feats[i] for i in sorted(feats)] for layer, feats in sorted(pool.items())}


def _searcher(analyzer: Any, tracer: Any) -> Callable[[Hypothesis], Mapping[str, Any]] | None:
    """The tracer's optional ``search_feature_set(base, intervention, prompts[, metric=])``
    capability over the hypothesis' families' discovery (explore-split) prompts, steered by
    the hypothesis' own metric when the tracer accepts one: the search never sees the
    held-out prompts the share is measured on."""
    method = getattr(tracer, "search_feature_set", None)
    if not callable(method) or not getattr(analyzer, "universe", None):
        return None
    from builtin_plugins.pipeline.testgen import split_universe

    config = analyzer.config
    explore, _ = split_universe(analyzer.universe, config.explore_fraction, config.seed)

    validator = getattr(analyzer, "_causal_inputs", (None, None))[0]

    def search(h: Hypothesis) -> Mapping[str, Any]:
        prompts = [p for f in (h.families or sorted(explore)) for p in explore.get(f, [])]
        metric = getattr(validator, "metrics", {}).get(h.metric)
        try:  # the hypothesis' own metric steers the sweep when the tracer accepts one
            return method(analyzer.models["base"], analyzer.models["intervention"], prompts,
                          metric=metric)
        except TypeError:
            return method(analyzer.models["base"], analyzer.models["intervention"], prompts)

    return search


# --------------------------------------------------------------------------- plugin


@hookimpl
def md_stage_causal(run: Any, hooks: Any, exploration: Any) -> bool:
    return run_in_analyzer(run, exploration, hooks)
