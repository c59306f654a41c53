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

The results are descriptive (they do not touch the FDR decisions). Nothing here imports
torch; docs/causal.md has the details.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from md_framework.runtime import BehaviourMetric, LoadedModel
from md_framework.tracing_api import can_intervene
from md_framework.types import EffectSize, Hypothesis, TestCase, ValidationResult

__all__ = ["CausalEstimate", "causal_share", "confirm_causally", "measure_triplet"]


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


def _values(readings: Sequence[Any]) -> list[float]:
    return [float(r.value) for r in readings]


def measure_triplet(metric: BehaviourMetric, base: LoadedModel, intervention: LoadedModel,
                    intervene: Callable[[], Any], cases: Sequence[TestCase]
                    ) -> tuple[list[float], list[float], list[float]]:
    """The metric on base, intervention and the intervened intervention model.

    ``intervene()`` returns the context manager of ``tracer.intervened_model``. Its hooks sit
    on the modules the intervention model shares, so base and intervention are measured
    *before* the block opens and only the intervened model inside it. A metric with
    ``measure_pair`` (base-anchored) is measured as (base, intervention) and
    (base, intervened), so both intervention-side readings share the base anchor."""
    paired = callable(getattr(metric, "measure_pair", None))
    if paired:
        rb, ri = metric.measure_pair(base, intervention, cases)  # type: ignore[attr-defined]
    else:
        rb = metric.measure(base, cases)
        ri = metric.measure(intervention, cases)
    with intervene() as ablated:
        if paired:
            _, ra = metric.measure_pair(base, ablated, cases)  # type: ignore[attr-defined]
        else:
            ra = metric.measure(ablated, cases)
    if not len(rb) == len(ri) == len(ra) == len(cases):
        raise ValueError(f'metric "{metric.name}" returned the wrong number of readings')
    return _values(rb), _values(ri), _values(ra)


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
    min_prompts: int = 2,
    on_measured: Callable[[int], None] | None = None,
) -> list[ValidationResult]:
    """Fill ``causal_share`` of the validated feature-based results (others pass unchanged).

    ``tracer``: a tracer with ``intervened_model`` (without it the results come back as
    they are). ``models``: ``{"base": ..., "intervention": ...}``. ``prompts_for(h)``: the
    held-out test cases for ``h`` (or ``(cases, where they come from)`` for the note).
    ``mode``/``scale``: the intervention (``base``: patch the features back to the base
    model's activation, ``zero``: ablate, ``scale``: multiply by ``scale``). ``on_measured``
    receives the number of behavioural queries each hypothesis cost (3 per prompt).
    A hypothesis whose measurement fails gets a note instead of a share; the run goes on.
    """
    if not can_intervene(tracer):
        return list(results)
    base, intervention = models["base"], models["intervention"]
    out = []
    for k, result in enumerate(results):
        h = result.hypothesis
        if not result.decision or not h.source_features or h.metric not in metrics:
            out.append(result)
            continue
        metric = metrics[h.metric]
        got = prompts_for(h)
        cases, source = got if isinstance(got, tuple) else (got, "held-out prompts")
        cases = list(cases)
        layers = sorted({f.layer for f in h.source_features})
        what = (f"{mode}-patching {len(h.source_features)} feature(s) at layer(s) "
                f"{', '.join(map(str, layers))}")
        if len(cases) < min_prompts:
            out.append(result.model_copy(update={"notes": [
                *result.notes, f"causal confirmation skipped: {len(cases)} held-out prompt(s)"]}))
            continue
        try:
            vb, vi, va = measure_triplet(
                metric, base, intervention,
                lambda h=h: tracer.intervened_model(intervention, h.source_features, mode,
                                                    scale, base=base), cases)
        except Exception as exc:  # noqa: BLE001 - one hypothesis must not end the run
            out.append(result.model_copy(update={"notes": [
                *result.notes, f"causal confirmation failed ({what}): "
                f"{type(exc).__name__}: {str(exc)[:200]}"]}))
            continue
        if on_measured is not None:
            on_measured(3 * len(cases))
        min_den = float(getattr(metric, "min_change", 0.0) or 0.0) or 1e-9
        est = causal_share(vb, vi, va, min_denominator=min_den, n_bootstrap=n_bootstrap,
                           seed=seed + k, confidence=confidence)
        means = (f"mean {h.metric}: base {est.mean_base:.3g}, intervention "
                 f"{est.mean_intervention:.3g}, intervened {est.mean_ablated:.3g}")
        if est.effect is None:
            note = f"causal share not estimated ({what}, n={est.n} {source}): {est.reason}; {means}"
        else:
            note = (f"causal share {_fmt(est.effect)} ({what}, n={est.n} {source}); {means}")
        out.append(result.model_copy(update={"causal_share": est.effect,
                                             "notes": [*result.notes, note]}))
    return out


def held_out_prompts(hypothesis: Hypothesis, hooks: Any, context: Any, used: Sequence[str],
                     n: int, *, min_fresh: int = 5) -> tuple[list[TestCase], str]:
    """Fresh test cases for ``hypothesis`` (confirm split, never the prompts that formed it
    nor the ``used`` validation prompts), up to ``n``; with fewer than ``min_fresh`` fresh
    ones, the validation prompts themselves (said so in the returned source)."""
    import dataclasses

    from md_framework.pipeline.testgen import generate_tests

    fresh: list[TestCase] = []
    if context is not None:
        ctx = dataclasses.replace(context, excluded_prompts=frozenset(context.excluded_prompts)
                                  | frozenset(used))
        try:
            fresh = generate_tests(hypothesis, n, hooks=hooks, context=ctx, allow_fewer=True)
        except Exception:  # noqa: BLE001 - no fresh prompts: fall back below
            fresh = []
    if len(fresh) >= min_fresh:
        return fresh, "fresh held-out prompts (confirm split, not used for validation)"
    return ([TestCase(id=f"causal-{i}", hypothesis_id=hypothesis.id, prompt=p)
             for i, p in enumerate(dict.fromkeys(used))],
            "validation prompts (too few fresh held-out prompts)")


def run_in_analyzer(analyzer: Any, exploration: Any, hooks: Any) -> None:
    """The analyzer's causal-confirmation step: fills ``causal_share`` in
    ``exploration.results`` and counts the queries in ``exploration.queries``."""
    from md_framework.drivers import create_driver
    from md_framework.errors import MDError

    config = analyzer.config
    validator, pool = getattr(analyzer, "_causal_inputs", (None, None))
    if validator is None:
        return
    try:
        tracer = create_driver("tracer", config.tracer, analyzer._tracer_options())
    except MDError:
        return
    if not can_intervene(tracer):
        return
    n = int(config.n_test_prompts_per_hypothesis)

    def prompts_for(h: Hypothesis) -> tuple[list[TestCase], str]:
        ev = validator.evidence.get(h.id)
        used = [o.prompt for o in ev.observations] if ev is not None else []
        context = pool._context_for(h) if pool is not None else None
        return held_out_prompts(h, hooks, context, used, n)

    def count(queries: int) -> None:
        exploration.queries += queries

    exploration.results = confirm_causally(
        exploration.results, tracer, analyzer.models, validator.metrics, prompts_for,
        seed=int(config.seed), on_measured=count)
