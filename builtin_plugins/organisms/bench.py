"""``md bench``: run discovery methods on organisms and score them against planted changes.

Methods (each sees only the universe — family names and prompts, with reference answers
where a generator documents them — never the planted list):

* ``pipeline`` – ``md_framework.pipeline.analyzer.MechanisticBehavioralAnalyzer``
  (circuits → hypotheses → validation). Imported lazily; when it is missing or fails the
  method is reported as not available with the error, never with made-up numbers.
* ``exhaustive`` – every family × every registered behaviour metric × ``n_prompts`` prompts,
  measured on both models; paired test per arm (``mcnemar`` for binary metrics, else
  ``wilcoxon``), Benjamini-Hochberg (``bh`` driver) at ``alpha`` over all arms.
* ``bandit`` – black-box bandit over the same family × metric arms, no circuit information.
  Screening: the bandit strategy (``ucb`` driver) pulls arms ``screen_n`` prompts at a time,
  rewarded with the observed |mean difference| (scaled to [0, 1]); an arm whose screening
  shows a difference is *confirmed* on ``n_prompts`` fresh prompts (never the screening
  ones, so the fixed-n test stays valid), tested like exhaustive and decided by the online
  FDR procedure (``saffron``) in confirmation order. It stops when the best remaining arm
  showed no difference or the query budget is spent.

Practical relevance (both baselines): a rejected arm is validated only when its mean
difference reaches :func:`min_effect` (5 % of a bounded metric's range, 0.5 nats of
``target_logprob``, 1 token of ``length``): any fine-tune moves log-probabilities by tiny,
consistent amounts that a paired test detects but that are no behaviour change. Dropping
rejections never raises the false discovery rate.

Scoring rule (the same for all methods; :func:`score`): a planted change is **recovered**
when a validated result names its family (or ≥ 50 % of the result's test prompts come from
it), its metric is one of the planted change's metrics, and its direction matches the
planted direction (the hypothesis direction, or the sign of the measured effect when the
hypothesis says "change"; a planted "change" accepts either). **Precision** = validated
results that recover some planted change / all validated results. On a null organism every
validated result is a false discovery. **Behavioural queries** count one metric
measurement of one prompt on one model (both models counted; generated metrics that share
one decoding are still counted once per metric). **Circuit-analysis passes** count traced
prompts (both models), from the pipeline's report.
"""

from __future__ import annotations

import json
import math
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from md_framework.types import StrictModel


# --------------------------------------------------------------------------- scoring


class Discovery(StrictModel):
    """A validated result in the scorer's terms."""

    families: list[str] = []
    metric: str
    direction: str = "change"
    effect: float | None = None
    prompt_families: list[str] = []
    label: str = ""


def discovery_direction(d: Discovery) -> str:
    if d.direction in ("increase", "decrease"):
        return d.direction
    if d.effect is None or d.effect == 0 or not math.isfinite(d.effect):
        return "change"
    return "increase" if d.effect > 0 else "decrease"


def recovers(d: Discovery, planted: dict[str, Any]) -> bool:
    fam = planted["family"]
    names_family = fam in d.families
    if not names_family and d.prompt_families:
        names_family = sum(f == fam for f in d.prompt_families) / len(d.prompt_families) >= 0.5
    # a metric made from what the diff saw (``signoff:<phrase>``) is its builtin metric
    if not names_family or d.metric.partition(":")[0] not in planted["metrics"]:
        return False
    want = planted.get("direction", "change")
    return want == "change" or discovery_direction(d) == want


def score(discoveries: Sequence[Discovery], planted: Sequence[dict[str, Any]]) -> dict[str, Any]:
    recovered = sorted({p["id"] for p in planted for d in discoveries if recovers(d, p)})
    true_pos = [d for d in discoveries if any(recovers(d, p) for p in planted)]
    n = len(discoveries)
    return {
        "validated": n,
        "recovered": recovered,
        "recall": (len(recovered) / len(planted)) if planted else None,
        "precision": (len(true_pos) / n) if n else None,
        "false_discoveries": n - len(true_pos),
        "false_discovery_labels": [d.label for d in discoveries
                                   if not any(recovers(d, p) for p in planted)],
    }


def discovery_from_validation(result: Any, prompt_family: dict[str, str]) -> Discovery:
    """Convert a kernel ``ValidationResult`` (pipeline output) for the scorer."""
    h = result.hypothesis
    effect = result.effect_size.estimate if result.effect_size is not None else None
    if effect is None and result.examples:
        diffs = [o.intervention_value - o.base_value for o in result.examples]
        effect = sum(diffs) / len(diffs)
    fams = [prompt_family[o.prompt] for o in result.examples if o.prompt in prompt_family]
    return Discovery(families=list(h.families), metric=h.metric, direction=h.direction,
                     effect=effect, prompt_families=fams, label=f"{h.hypothesis_type}:{h.metric}:{','.join(h.families)}")


# --------------------------------------------------------------------------- config


@dataclass
class BenchConfig:
    specs: list[str]
    seeds: int = 1
    out_dir: Path = Path("bench-results")
    cache_dir: Path = Path(".md-cache/organisms")
    methods: list[str] = field(default_factory=lambda: ["pipeline", "exhaustive", "bandit"])
    alpha: float = 0.05
    n_prompts: int = 12
    screen_n: int = 3
    query_budget: int | None = None  # bandit; default: the exhaustive method's cost
    metrics: list[str] | None = None  # default: every registered behaviour metric
    threads: int = 2
    #: AnalysisConfig keys for the pipeline method (models and universe are set per organism)
    pipeline_overrides: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PIPELINE))


#: The pipeline settings of the README demo: dictionary-free tracing, so an organism needs
#: no trained transcoders; pass --pipeline-config to bench another tracer or budget.
DEFAULT_PIPELINE: dict[str, Any] = {
    "tracer": "activation-diff",
    "n_seed_prompts": 96,
    "n_test_prompts_per_hypothesis": 20,
    "max_hypotheses_to_test": 8,
    "exploration": {"method": "ucb", "batch_size": 4, "query_budget": 800},
}


# --------------------------------------------------------------------------- helpers


def registered_metrics(names: Sequence[str] | None = None) -> list[Any]:
    from md_framework.plugins import Hooks, get_plugin_manager

    metrics = {}
    for c in Hooks(get_plugin_manager()).collect("md_behaviour_metrics"):
        metrics.setdefault(c.value.name, c.value)
    if names:
        missing = [n for n in names if n not in metrics]
        if missing:
            raise KeyError(f"unknown metrics {missing}; registered: {sorted(metrics)}")
        return [metrics[n] for n in names]
    return list(metrics.values())


def _paired_test_name(metric: Any) -> str:
    return "mcnemar" if metric.outcome == "binary" else "wilcoxon"


class _Arms:
    """Measures family × metric arms on both models, counting queries."""

    def __init__(self, base: Any, inter: Any, cases: dict[str, list[tuple[str, str | None]]],
                 metrics: list[Any]) -> None:
        self.base, self.inter, self.cases, self.metrics = base, inter, cases, {m.name: m for m in metrics}
        self.queries = 0
        self._tests: dict[str, Any] = {}

    def measure(self, family: str, metric: str, items: Sequence[tuple[str, str | None]]) -> tuple[list[float], list[float]]:
        from md_framework.types import TestCase

        cases = [TestCase(id=f"{family}:{metric}:{i}", hypothesis_id=f"{family}:{metric}",
                          prompt=p, family=family, target=t) for i, (p, t) in enumerate(items)]
        m = self.metrics[metric]
        if hasattr(m, "measure_pair"):  # same readings the pipeline's validator uses
            base_readings, inter_readings = m.measure_pair(self.base, self.inter, cases)
            b = [r.value for r in base_readings]
            i = [r.value for r in inter_readings]
        else:
            b = [r.value for r in m.measure(self.base, cases)]
            i = [r.value for r in m.measure(self.inter, cases)]
        self.queries += 2 * len(cases)
        return b, i

    def test(self, metric: str, b: list[float], i: list[float]) -> float:
        from md_framework.drivers import create_driver

        name = _paired_test_name(self.metrics[metric])
        if name not in self._tests:
            self._tests[name] = create_driver("paired_test", name)
        return float(self._tests[name].test(b, i).p_value)


def _mean_diff(b: Sequence[float], i: Sequence[float]) -> float:
    return sum(y - x for x, y in zip(b, i)) / len(b) if b else 0.0


def _scale(metric: Any) -> float:
    if metric.bounds:
        return float(metric.bounds[1] - metric.bounds[0]) or 1.0
    return 0.0


def min_effect(metric: Any) -> float:
    """Smallest mean difference that counts as a behaviour change (same for every method):
    the metric's own ``min_change`` (the pipeline's validator uses the same), else 5 % of
    the range for bounded/binary metrics, 0.5 nats for target_logprob, 1 otherwise."""
    declared = getattr(metric, "min_change", None)
    if declared is not None:
        return float(declared)
    s = _scale(metric)
    if s:
        return 0.05 * s
    return 0.5 if metric.name == "target_logprob" else 1.0


def _reward(metric: Any, diff: float) -> float:
    if abs(diff) < min_effect(metric):
        return 0.0
    s = _scale(metric)
    if s:
        return min(1.0, abs(diff) / s)
    return abs(diff) / (abs(diff) + 1.0)


# --------------------------------------------------------------------------- methods


def run_exhaustive(arms: _Arms, cfg: BenchConfig) -> dict[str, Any]:
    from md_framework.drivers import create_driver

    t0 = time.time()
    records = []
    for family, items in arms.cases.items():
        chosen = items[: cfg.n_prompts]
        for metric in arms.metrics:
            b, i = arms.measure(family, metric, chosen)
            records.append({"family": family, "metric": metric, "p": arms.test(metric, b, i),
                            "effect": _mean_diff(b, i), "n": len(b)})
    bh = create_driver("fdr_procedure", "bh", {}, alpha=cfg.alpha)
    decisions = bh.test_many([r["p"] for r in records])
    discoveries = []
    for r, d in zip(records, decisions):
        r["rejected"] = d.rejected and abs(r["effect"]) >= min_effect(arms.metrics[r["metric"]])
        if r["rejected"]:
            discoveries.append(Discovery(families=[r["family"]], metric=r["metric"],
                                         effect=r["effect"], label=f"{r['family']}:{r['metric']}"))
    return {"status": "ok", "discoveries": discoveries, "queries": arms.queries,
            "circuit_passes": 0, "wall_s": time.time() - t0, "arms": len(records),
            "fdr": "bh", "records": records}


class _FallbackUCB:
    """UCB1 used only when the ``ucb`` bandit driver cannot be created (reported)."""

    def __init__(self, c: float = 1.0) -> None:
        self.c, self._arms = c, {}

    def add_arm(self, arm_id: str, embedding: Any = None) -> None:
        self._arms[arm_id] = {"pulls": 0, "sum": 0.0, "active": True}

    def deactivate_arm(self, arm_id: str) -> None:
        self._arms[arm_id]["active"] = False

    def select(self, k: int = 1) -> list[str]:
        active = [a for a, s in self._arms.items() if s["active"]]
        total = sum(s["pulls"] for s in self._arms.values()) + 1

        def ucb(a: str) -> float:
            s = self._arms[a]
            if s["pulls"] == 0:
                return math.inf
            return s["sum"] / s["pulls"] + self.c * math.sqrt(2 * math.log(total) / s["pulls"])

        return sorted(active, key=ucb, reverse=True)[:k]

    def update(self, arm_id: str, reward: float) -> None:
        self._arms[arm_id]["pulls"] += 1
        self._arms[arm_id]["sum"] += reward


def _make_bandit(seed: int) -> tuple[Any, str]:
    from md_framework.drivers import create_driver

    errors = []
    for options in ({"seed": seed}, {}):
        try:
            return create_driver("bandit_strategy", "ucb", options), f"ucb driver {options}"
        except Exception as exc:  # noqa: BLE001 - reported in the results
            errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
    return _FallbackUCB(), f"builtin UCB1 fallback (ucb driver unavailable: {errors[-1]})"


def run_bandit(arms: _Arms, cfg: BenchConfig, seed: int, budget: int) -> dict[str, Any]:
    from md_framework.drivers import create_driver

    t0 = time.time()
    bandit, bandit_name = _make_bandit(seed)
    fdr = create_driver("fdr_procedure", "saffron", {}, alpha=cfg.alpha)
    arm_ids = [f"{f}|{m}" for f in arms.cases for m in arms.metrics]
    for a in arm_ids:
        bandit.add_arm(a)
    mean_reward: dict[str, float] = {}
    decided: list[dict[str, Any]] = []
    discoveries: list[Discovery] = []
    confirm_cost = 2 * cfg.n_prompts
    while arms.queries < budget:
        picks = bandit.select(1)
        if not picks:
            break
        arm = picks[0]
        family, metric = arm.split("|", 1)
        items = arms.cases[family]
        if arm not in mean_reward:  # screening pull (fresh prompts from the end of the pool)
            chosen = items[len(items) - cfg.screen_n:]
            b, i = arms.measure(family, metric, chosen)
            r = _reward(arms.metrics[metric], _mean_diff(b, i))
            mean_reward[arm] = r
            bandit.update(arm, r)
            continue
        if mean_reward[arm] <= 0.0:
            break  # the best remaining arm showed no difference at all: stop
        if arms.queries + confirm_cost > budget:
            break
        chosen = items[: cfg.n_prompts]  # confirmation prompts never overlap screening ones
        b, i = arms.measure(family, metric, chosen)
        p = arms.test(metric, b, i)
        decision = fdr.test(p)
        bandit.update(arm, _reward(arms.metrics[metric], _mean_diff(b, i)))
        bandit.deactivate_arm(arm)
        decided.append({"family": family, "metric": metric, "p": p, "level": decision.level,
                        "rejected": decision.rejected, "effect": _mean_diff(b, i)})
        relevant = abs(_mean_diff(b, i)) >= min_effect(arms.metrics[metric])
        if decision.rejected and relevant:
            discoveries.append(Discovery(families=[family], metric=metric, effect=_mean_diff(b, i),
                                         label=f"{family}:{metric}"))
    return {"status": "ok", "discoveries": discoveries, "queries": arms.queries,
            "circuit_passes": 0, "wall_s": time.time() - t0, "arms": len(arm_ids),
            "confirmed": len(decided), "bandit": bandit_name, "fdr": "saffron",
            "records": decided, "budget": budget}


def run_pipeline(spec_ref: str, universe: dict[str, list[str]], cfg: BenchConfig,
                 seed: int) -> dict[str, Any]:
    t0 = time.time()
    try:
        from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer
    except Exception as exc:  # noqa: BLE001 - reported, never faked
        return {"status": "not available", "error": f"{type(exc).__name__}: {exc}"}
    try:
        from md_framework.config import AnalysisConfig

        data = {
            "base_model": f"organism:{spec_ref}#base",
            "intervention_model": f"organism:{spec_ref}#intervention",
            "universe": {"organism": spec_ref},
            "seed": seed,
            "cache_dir": str(Path(cfg.cache_dir).parent),
            "threads": cfg.threads,
            **cfg.pipeline_overrides,
        }
        data["statistics"] = {**dict(cfg.pipeline_overrides.get("statistics", {})), "alpha": cfg.alpha}
        fields = set(AnalysisConfig.model_fields)
        config = AnalysisConfig.model_validate({k: v for k, v in data.items() if k in fields or k in ("base_model", "intervention_model")})
        report = MechanisticBehavioralAnalyzer(config).analyze()
    except Exception as exc:  # noqa: BLE001
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5), "wall_s": time.time() - t0}
    prompt_family = {p: f for f, ps in universe.items() for p in ps}
    discoveries = [discovery_from_validation(r, prompt_family) for r in report.validated()]
    hypotheses = [{"type": h.hypothesis_type, "metric": h.metric, "direction": h.direction,
                   "families": list(h.families), "priority": round(h.priority, 3),
                   "validated": any(r.hypothesis.id == h.id and r.decision
                                    for r in report.validation_results)}
                  for h in report.hypotheses]
    return {"status": "ok", "discoveries": discoveries, "hypotheses": hypotheses,
            "queries": report.costs.behaviour_queries,
            "circuit_passes": report.costs.traced_prompts, "wall_s": time.time() - t0,
            "answer_tokens": {"generated": report.costs.answer_generated_tokens,
                              "teacher_forced": report.costs.answer_teacher_forced_tokens}}


# --------------------------------------------------------------------------- driver


def _planted_for_scorer(built: Any) -> list[dict[str, Any]]:
    """The only place the planted list is read (after every method has finished)."""
    return [{"id": p["id"], "family": p["family"], "metrics": p["metrics"],
             "direction": p["direction"], "kind": p["kind"]} for p in built.ground_truth()["planted"]]


def run_bench(cfg: BenchConfig, log: Any = print) -> dict[str, Any]:
    import torch

    from builtin_plugins.organisms.build import build_organism, load_dir, load_universe_cases

    torch.set_num_threads(cfg.threads)
    metrics = registered_metrics(cfg.metrics)
    rows = []
    for spec_ref in cfg.specs:
        t_build = time.time()
        built = build_organism(spec_ref, cfg.cache_dir, log=log)
        build_s = time.time() - t_build
        base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
        universe_cases = load_universe_cases(spec_ref)
        universe = {f: [p for p, _ in items] for f, items in universe_cases.items()}
        for seed in range(cfg.seeds):
            rng = random.Random(seed)
            cases = {}
            for f, items in universe_cases.items():
                items = list(items)
                rng.shuffle(items)
                cases[f] = items
            results: dict[str, dict[str, Any]] = {}
            exhaustive_queries = len(cases) * len(metrics) * 2 * cfg.n_prompts
            for method in cfg.methods:
                log(f"[bench] {built.name} seed {seed}: {method}")
                if method == "exhaustive":
                    results[method] = run_exhaustive(_Arms(base, inter, cases, metrics), cfg)
                elif method == "bandit":
                    budget = cfg.query_budget or exhaustive_queries
                    results[method] = run_bandit(_Arms(base, inter, cases, metrics), cfg, seed, budget)
                elif method == "pipeline":
                    results[method] = run_pipeline(spec_ref, universe, cfg, seed)
                else:
                    results[method] = {"status": "not available", "error": f"unknown method {method!r}"}
            planted = _planted_for_scorer(built)  # scorer only, after all methods ran
            for method, res in results.items():
                row = {"organism": built.name, "seed": seed, "method": method,
                       "status": res["status"], "null": not planted,
                       "planted": [p["id"] for p in planted], "build_s": round(build_s, 1)}
                if res["status"] == "ok":
                    row.update(score(res["discoveries"], planted))
                    row.update({"queries": res["queries"], "circuit_passes": res["circuit_passes"],
                                "wall_s": round(res["wall_s"], 1)})
                    row["details"] = {k: v for k, v in res.items()
                                      if k not in ("discoveries", "status")}
                else:
                    row["error"] = res.get("error")
                rows.append(row)
    summary = ratios(rows)
    out = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
           "rows": rows, "ratios": summary}
    md = markdown(rows, summary)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(out, indent=2, default=str))
    (out_dir / "bench.md").write_text(md)
    out["markdown"] = md
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Query ratios (other / reference) on organism-seeds where both reach the same recall."""
    by_key: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["organism"], r["seed"]), {})[r["method"]] = r
    out = []
    for (org, seed), methods in sorted(by_key.items()):
        for num, den in (("exhaustive", "pipeline"), ("bandit", "pipeline"), ("exhaustive", "bandit")):
            a, b = methods.get(num), methods.get(den)
            if not a or not b:
                continue
            if a["status"] != "ok" or b["status"] != "ok":
                out.append({"organism": org, "seed": seed, "ratio": f"{num}/{den}", "value": None,
                            "note": f"{den if b['status'] != 'ok' else num} {b['status'] if b['status'] != 'ok' else a['status']}"})
                continue
            if a.get("recall") != b.get("recall"):
                out.append({"organism": org, "seed": seed, "ratio": f"{num}/{den}", "value": None,
                            "note": f"recall differs ({a.get('recall')} vs {b.get('recall')})"})
                continue
            value = a["queries"] / b["queries"] if b["queries"] else None
            out.append({"organism": org, "seed": seed, "ratio": f"{num}/{den}",
                        "value": round(value, 2) if value else None, "note": "equal recall"})
    return out


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown(rows: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> str:
    lines = ["| organism | seed | method | status | recall | precision | validated | false disc. "
             "| queries | circuit passes | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "ok":
            lines.append(
                f"| {r['organism']} | {r['seed']} | {r['method']} | ok | {_fmt(r['recall'])} | "
                f"{_fmt(r['precision'])} | {r['validated']} | {r['false_discoveries']} | {r['queries']} | "
                f"{r['circuit_passes']} | {_fmt(r['wall_s'], 1)} |")
        else:
            err = (r.get("error") or "").replace("|", "/").splitlines()[0][:90] if r.get("error") else ""
            lines.append(f"| {r['organism']} | {r['seed']} | {r['method']} | {r['status']}: {err} "
                         "| — | — | — | — | — | — | — |")
    pipeline = [r for r in rows if r["method"] == "pipeline" and r["status"] == "ok"
                and (r.get("details") or {}).get("hypotheses") is not None]
    if pipeline:  # what discovery proposed, planted or null, before any validation
        lines += ["", "| organism | seed | pipeline hypotheses | max priority | top hypothesis |",
                  "|---|---|---|---|---|"]
        for r in pipeline:
            hyps = r["details"]["hypotheses"]
            top = max(hyps, key=lambda h: h["priority"]) if hyps else None
            label = (f"{top['type']} / {top['metric']} / {','.join(top['families'])}"
                     if top else "—")
            lines.append(f"| {r['organism']} | {r['seed']} | {len(hyps)} | "
                         f"{_fmt(top['priority']) if top else '—'} | {label} |")
    lines += ["", "| organism | seed | ratio | value | note |", "|---|---|---|---|---|"]
    for r in ratio_rows:
        lines.append(f"| {r['organism']} | {r['seed']} | {r['ratio']} | {_fmt(r['value'])} | {r['note']} |")
    return "\n".join(lines) + "\n"
