"""``md bench``: run discovery methods on organisms and judge them by measured ground truth.

Methods (each sees only the universe — family names and prompts, with reference answers
where a generator documents them — never the planted list nor the ground truth):

* ``pipeline`` – ``md_framework.pipeline.analyzer.MechanisticBehavioralAnalyzer``
  (circuits → hypotheses → validation) with :data:`DEFAULT_PIPELINE` or
  ``--pipeline-config``; ``pipeline-internal`` / ``pipeline-output`` are its ablations
  (config ``discovery_evidence: internal`` — only patterns read from the models' insides —
  and ``discovery_evidence: output`` — only patterns read from the outputs: next-token
  flips of the traced prompts and answer edits). Each pipeline run gets a fresh artefact cache, so
  no run traces for free from an earlier one.
* ``exhaustive``, ``sequential``, ``bandit``, ``output-screen`` – black-box baselines
  (:mod:`builtin_plugins.organisms.baselines`: fixed-n BH; e-processes with e-BH;
  screen-then-confirm with SAFFRON; output-divergence screen then confirm).

Scoring (:mod:`builtin_plugins.organisms.scoring`): a discovery is true iff its unit
(family, metric, direction) is one of the organism's *real units* — measured on an
evaluation split no method sees (:mod:`builtin_plugins.organisms.ground_truth`) — planted
or not; units are deduplicated, multi-family claims credited family by family.

Costs: one currency for every method and every stage, counted by the models themselves
(:mod:`md_framework.costs`): prompt tokens through forward passes, generated tokens,
backward passes, and their sum in forward-token equivalents (``tokens``); wall time;
behavioural queries as a second column. The generation cache is cleared before each
method, so no method decodes for free what another decoded. Ratios "at equal recall" use
``tokens``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from md_framework.cache_keys import CACHE_DIR_ENV

from builtin_plugins.metrics.core import MAX_NEW_TOKENS_ENV as METRIC_LENGTH_ENV
from builtin_plugins.organisms.baselines import Arms, min_effect  # noqa: F401 - public
from builtin_plugins.organisms.scoring import Discovery, phrase_claims, score, summarise

__all__ = ["BenchConfig", "Discovery", "METHODS", "run_bench", "score", "min_effect", "ratios"]

#: every method ``--methods`` accepts
METHODS = ("pipeline", "pipeline-internal", "pipeline-output", "exhaustive", "sequential",
           "bandit", "output-screen", "adl", "pipeline-crosscoder", "pipeline-circuit-tracer")
DEFAULT_METHODS = ["pipeline", "exhaustive", "sequential", "bandit", "output-screen"]


def discovery_from_validation(result: Any, prompt_family: dict[str, str]) -> Discovery:
    """Convert a kernel ``ValidationResult`` (pipeline output) for the scorer."""
    h = result.hypothesis
    effect = result.effect_size.estimate if result.effect_size is not None else None
    if effect is None and result.examples:
        diffs = [o.intervention_value - o.base_value for o in result.examples]
        effect = sum(diffs) / len(diffs)
    fams = [prompt_family[o.prompt] for o in result.examples if o.prompt in prompt_family]
    return Discovery(families=list(h.families), metric=h.metric, direction=h.direction,
                     effect=effect, prompt_families=fams,
                     label=f"{h.hypothesis_type}:{h.metric}:{','.join(h.families)}")


# --------------------------------------------------------------------------- config


def _default_organism_cache() -> Path:
    from md_framework.cache import default_cache_dir

    return default_cache_dir() / "organisms"


@dataclass
class BenchConfig:
    specs: list[str]
    seeds: int = 1
    first_seed: int = 0
    out_dir: Path = Path("bench-results")
    cache_dir: Path = field(default_factory=lambda: _default_organism_cache())
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    alpha: float = 0.05
    n_prompts: int = 12
    screen_n: int = 3
    query_budget: int | None = None  # bandit; default: the exhaustive design's queries
    metrics: list[str] | None = None  # default: every registered behaviour metric
    threads: int = 2
    #: answer length for every method's generated metrics; ``None`` (the default): each
    #: organism's ``measurement.max_new_tokens``, the length its ground truth was measured
    #: at. Another value is refused: the judge would score a different quantity.
    max_new_tokens: int | None = None
    plots: bool = True
    #: how the fixed-n baselines apply min_change before FDR: ``gate`` (p := 1 when the
    #: estimate is below it, as the ground truth does) or ``shifted`` (a test of |mean| <=
    #: min_change, as the pipeline's validator tests its floor; exact for 0/1 metrics)
    relevance: str = "gate"
    #: AnalysisConfig keys for the pipeline method (models and universe are set per organism)
    pipeline_overrides: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PIPELINE))
    #: training options of the dictionaries the dictionary pipelines train, by kind
    #: (``crosscoder``: CrosscoderTrainConfig, ``transcoders``: TrainConfig); they override
    #: the per-model defaults of :func:`builtin_plugins.organisms.bench_methods.dictionary_settings`
    dictionaries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from md_framework.errors import ConfigError, did_you_mean

        if self.relevance not in ("gate", "shifted"):
            raise ConfigError(f"relevance must be 'gate' or 'shifted', got {self.relevance!r}")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"unknown bench method {m!r}.{did_you_mean(m, METHODS)} "
                                  f"Known: {', '.join(METHODS)}")
        from builtin_plugins.organisms.bench_methods import dictionary_settings

        for kind, options in self.dictionaries.items():
            dictionary_settings(kind, toy=False, options=options)  # refuses unknown kinds/keys


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


def registered_metrics(names: list[str] | None = None) -> list[Any]:
    from md_framework.errors import ConfigError, did_you_mean
    from md_framework.plugins import Hooks, get_plugin_manager

    metrics = {}
    for c in Hooks(get_plugin_manager()).collect("md_behaviour_metrics"):
        metrics.setdefault(c.value.name, c.value)
    if names:
        missing = [n for n in names if n not in metrics]
        if missing:
            raise ConfigError(f"unknown metrics {missing}.{did_you_mean(missing[0], sorted(metrics))}"
                              f" Registered: {sorted(metrics)}")
        return [metrics[n] for n in names]
    return list(metrics.values())


def run_pipeline(spec_ref: str, universe: dict[str, list[str]], cfg: BenchConfig,
                 seed: int, evidence: str = "all") -> dict[str, Any]:
    t0 = time.time()
    try:
        from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer
    except Exception as exc:  # noqa: BLE001 - reported, never faked
        return {"status": "not available", "error": f"{type(exc).__name__}: {exc}"}
    # a fresh artefact cache per run (no run traces for free from an earlier seed's graphs);
    # the organisms directory is shared so nothing is rebuilt
    scratch = Path(tempfile.mkdtemp(prefix="md-bench-"))
    (scratch / "organisms").symlink_to(Path(cfg.cache_dir).resolve(), target_is_directory=True)
    # $MD_CACHE_DIR outranks a config's cache_dir (md_framework.cache.default_cache_dir): left
    # set, every seed would read the graphs an earlier run cached there, uncounted
    env_cache = os.environ.pop(CACHE_DIR_ENV, None)
    try:
        from md_framework.config import AnalysisConfig

        data = {
            "base_model": f"organism:{spec_ref}#base",
            "intervention_model": f"organism:{spec_ref}#intervention",
            "universe": {"organism": spec_ref},
            "seed": seed,
            "cache_dir": str(scratch),
            "threads": cfg.threads,
            **cfg.pipeline_overrides,
        }
        if evidence != "all":
            data["discovery_evidence"] = evidence
        data["statistics"] = {**dict(cfg.pipeline_overrides.get("statistics", {})), "alpha": cfg.alpha}
        config = AnalysisConfig.model_validate(data)
        report = MechanisticBehavioralAnalyzer(config).analyze()
    except Exception as exc:  # noqa: BLE001
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5), "wall_s": time.time() - t0}
    finally:
        if env_cache is not None:
            os.environ[CACHE_DIR_ENV] = env_cache
        shutil.rmtree(scratch, ignore_errors=True)
    prompt_family = {p: f for f, ps in universe.items() for p in ps}
    discoveries = [discovery_from_validation(r, prompt_family) for r in report.validated()]
    tests_of: dict[str, list[dict[str, Any]]] = {}
    for r in report.validation_results:
        tests_of.setdefault(r.hypothesis.id, []).append(decision_detail(r))
    hypotheses = [{"type": h.hypothesis_type, "metric": h.metric, "direction": h.direction,
                   "families": list(h.families), "priority": round(h.priority, 3),
                   "validated": any(t["decision"] for t in tests_of.get(h.id, [])),
                   "tests": tests_of.get(h.id, [])}
                  for h in report.hypotheses]
    return {"status": "ok", "discoveries": discoveries, "hypotheses": hypotheses,
            "queries": report.costs.behaviour_queries,
            "circuit_passes": report.costs.traced_prompts, "wall_s": time.time() - t0,
            # what reached the validator: a null run with no decision tests nothing downstream
            "decisions": len(report.validation_results),
            "not_validated_reasons": sorted(r.reason for r in report.validation_results
                                            if not r.decision and r.reason),
            "answer_tokens": {"generated": report.costs.answer_generated_tokens,
                              "teacher_forced": report.costs.answer_teacher_forced_tokens},
            "tokens_by_stage": dict(report.costs.tokens_by_stage)}


def decision_detail(result: Any) -> dict[str, Any]:
    """What the validator decided on one hypothesis, kept in the bench row so a decision can
    be checked afterwards (p-value against the procedure's level, n, effect)."""
    effect = result.effect_size
    return {"p_value": result.p_value, "level": result.test_level, "n": result.n,
            "decision": result.decision, "reason": result.reason, "test": result.test_name,
            "effect": None if effect is None else
            {"name": effect.name, "estimate": effect.estimate, "ci": [effect.ci_low, effect.ci_high]}}


def organism_answer_length(spec_ref: Any, requested: int | None) -> int:
    """The answer length every method generates on this organism: the one its ground truth
    was measured at (``measurement.max_new_tokens``), so the judge and the methods measure
    the same quantity (a ``length`` read on 24 tokens is not the one measured on 16)."""
    from md_framework.errors import ConfigError

    from builtin_plugins.organisms.build import _spec_and_dir

    measured = _spec_and_dir(spec_ref)[0].measurement.max_new_tokens
    if requested is not None and requested != measured:
        raise ConfigError(f"max_new_tokens={requested}, but {spec_ref}'s ground truth is measured "
                          f"on {measured} generated tokens; the methods must generate as many "
                          "(leave max_new_tokens unset, or change the spec's measurement)")
    return measured


@contextlib.contextmanager
def answer_length(n_tokens: int) -> Iterator[None]:
    """Every generated metric inside (the baselines' and the pipeline's, which read
    ``MD_METRIC_MAX_NEW_TOKENS`` when they measure) generates ``n_tokens``."""
    old = os.environ.get(METRIC_LENGTH_ENV)
    os.environ[METRIC_LENGTH_ENV] = str(n_tokens)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(METRIC_LENGTH_ENV, None)
        else:
            os.environ[METRIC_LENGTH_ENV] = old


def run_method(method: str, spec_ref: str, base: Any, inter: Any,
               cases: dict[str, list[tuple[str, str | None]]], universe: dict[str, list[str]],
               metrics: list[Any], cfg: BenchConfig, seed: int,
               max_new_tokens: int = 24) -> dict[str, Any]:
    from builtin_plugins.organisms import baselines as B

    arms = B.Arms(base, inter, cases, metrics, relevance=cfg.relevance)
    if method == "exhaustive":
        return B.run_exhaustive(arms, cfg.alpha, cfg.n_prompts)
    if method == "sequential":
        return B.run_sequential(arms, cfg.alpha, n_max=max(len(v) for v in cases.values()),
                                max_new_tokens=max_new_tokens)
    if method == "bandit":
        budget = cfg.query_budget or exhaustive_queries(cases, metrics, cfg.n_prompts)
        return B.run_bandit(arms, cfg.alpha, cfg.n_prompts, cfg.screen_n, seed, budget)
    if method == "output-screen":
        return B.run_output_screen(arms, cfg.alpha, cfg.n_prompts, max(cfg.screen_n, 4),
                                   max_new_tokens)
    if method == "adl":
        from builtin_plugins.organisms.bench_methods import run_adl

        return run_adl(arms, cfg.alpha, cfg.n_prompts, max(cfg.screen_n, 4), seed)
    if method in ("pipeline-crosscoder", "pipeline-circuit-tracer"):
        return _run_dictionary_pipeline(method, spec_ref, base, inter, universe, cfg, seed)
    evidence = {"pipeline": "all", "pipeline-internal": "internal",
                "pipeline-output": "output"}[method]
    return run_pipeline(spec_ref, universe, cfg, seed, evidence)


def _run_dictionary_pipeline(method: str, spec_ref: str, base: Any, inter: Any,
                             universe: dict[str, list[str]], cfg: BenchConfig, seed: int) -> dict[str, Any]:
    """The pipeline with the ``crosscoder`` or ``circuit-tracer`` tracer (tracer options from a
    pipeline config that names that tracer; the dictionary is the one trained here); the
    dictionary's training work rides along as ``dictionary_work`` when it was trained by an earlier run
    (run_bench adds it: builtin_plugins.organisms.bench_methods)."""
    import dataclasses

    from builtin_plugins.organisms import bench_methods as M
    from builtin_plugins.organisms.build import _spec_and_dir

    toy = _spec_and_dir(spec_ref)[0].base == "toy"
    # a pipeline config naming this method's tracer gives its options (the dictionary itself
    # is always the one trained here); another tracer's options are not for this tracer
    name = "crosscoder" if method == "pipeline-crosscoder" else "circuit-tracer"
    own = dict(cfg.pipeline_overrides.get("tracer_options") or {}) \
        if cfg.pipeline_overrides.get("tracer") == name else {}
    if method == "pipeline-crosscoder":
        train = M.dictionary_settings("crosscoder", toy, cfg.dictionaries.get("crosscoder"))
        path, recorded = M.crosscoder_for(base, inter, cfg.cache_dir, train)
        tracer = {"tracer": name, "tracer_options": {**own, "crosscoder": str(path)}}
    else:
        train = M.dictionary_settings("transcoders", toy, cfg.dictionaries.get("transcoders"))
        path, recorded = M.transcoders_for(base, universe, cfg.cache_dir, train)
        tracer = {"tracer": name, "tracer_options": {**own, "transcoders": str(path)}}
    sub = dataclasses.replace(cfg, pipeline_overrides={**cfg.pipeline_overrides, **tracer})
    res = run_pipeline(spec_ref, universe, sub, seed)
    res["dictionary"] = str(path)
    if recorded is not None:
        res["dictionary_work"] = recorded
    return res


def charged_work(measured: Any, res: dict[str, Any]) -> Any:
    """The work a method run is charged: what was measured during it plus, for a dictionary
    trained by an earlier run, the work recorded when it was trained (``dictionary_work``)."""
    from md_framework.costs import ModelWork

    if res.get("dictionary_work"):
        return measured + ModelWork(**res["dictionary_work"])
    return measured


def exhaustive_queries(cases: dict[str, list[tuple[str, str | None]]], metrics: list[Any],
                       n: int) -> int:
    """Behavioural queries of the exhaustive design (the bandit's default budget)."""
    from builtin_plugins.organisms.baselines import _call_kind, applicable

    by_name = {m.name: m for m in metrics}
    total = 0
    for items in cases.values():
        kinds = {_call_kind(by_name[m]) for m in applicable(by_name, items)}
        total += 2 * len(kinds) * min(n, len(items))
    return total


# --------------------------------------------------------------------------- driver


def _ground_truth_for_scorer(built: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The only place the planted list and the real units are read (after every method ran).
    An organism built before ground truth v2 has no real units: planted units stand in."""
    gt = built.ground_truth()
    planted = [{"id": p["id"], "family": p["family"], "metrics": p["metrics"],
                "direction": p["direction"], "kind": p["kind"]} for p in gt["planted"]]
    return planted, gt.get("real_units")


def judge_claims(spec_ref: str, built: Any, base: Any, inter: Any,
                 results: dict[str, dict[str, Any]],
                 cache: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Phrase-metric claims of this seed's runs measured by the judge on the evaluation split
    (:func:`builtin_plugins.organisms.ground_truth.judge_phrase_claims`; the judge's model
    passes are charged to no method), cached per organism across seeds."""
    from builtin_plugins.organisms import ground_truth as G
    from builtin_plugins.organisms.build import _spec_and_dir, load_evaluation_cases

    claims = sorted({c for res in results.values() if res["status"] == "ok"
                     for c in phrase_claims(res["discoveries"])} - set(cache))
    if claims:
        spec = _spec_and_dir(spec_ref)[0]
        for record in G.judge_phrase_claims(base, inter, claims, load_evaluation_cases(spec_ref),
                                            built.ground_truth(), spec.measurement):
            cache[(record["family"], record["metric"])] = record
    return cache


def build_identity(built: Any) -> dict[str, str]:
    """Which build a row was judged on: the spec, both models' weights ids and a digest of the
    measured real units. Two builds of one spec can differ (toy-scale-192, the same spec and
    code built on another machine, measured 140 real units where the first build measured
    10), and a re-measured ground truth changes the real units of the same models; rows of
    different builds must not be merged
    (:func:`builtin_plugins.organisms.bench_report.check_one_build`)."""
    from builtin_plugins.models._util import json_sha256

    gt = built.ground_truth()
    units = sorted([u["family"], u["metric"], u["direction"]] for u in gt.get("real_units") or [])
    return {"spec_hash": str(gt.get("spec_hash", "")),
            "base_model_id": str(gt.get("base_model_id", "")),
            "intervention_model_id": str(gt.get("intervention_model_id", "")),
            "real_units_sha256": json_sha256(units)[:16]}


def run_bench(cfg: BenchConfig, log: Any = print) -> dict[str, Any]:
    import torch

    from md_framework import costs

    from builtin_plugins.metrics.core import clear_generation_cache
    from builtin_plugins.organisms.build import (
        build_organism,
        load_dir,
        load_universe_cases,
    )

    torch.set_num_threads(cfg.threads)
    metrics = registered_metrics(cfg.metrics)
    rows = []
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec_ref in cfg.specs:
        t_build = time.time()
        built = build_organism(spec_ref, cfg.cache_dir, log=log)
        build_s = time.time() - t_build
        base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
        n_tokens = organism_answer_length(spec_ref, cfg.max_new_tokens)
        universe_cases = load_universe_cases(spec_ref)
        universe = {f: [p for p, _ in items] for f, items in universe_cases.items()}
        judged_cache: dict[tuple[str, str], dict[str, Any]] = {}
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            rng = random.Random(seed)
            cases = {}
            for f, items in universe_cases.items():
                items = list(items)
                rng.shuffle(items)
                cases[f] = items
            results: dict[str, dict[str, Any]] = {}
            for method in cfg.methods:
                log(f"[bench] {built.name} seed {seed}: {method}")
                clear_generation_cache()  # nobody decodes for free what another decoded
                t0 = time.time()
                with costs.measuring() as work, answer_length(n_tokens):
                    res = run_method(method, spec_ref, base, inter, cases, universe, metrics,
                                     cfg, seed, n_tokens)
                spent = charged_work(work(), res)
                res["work"] = spent.model_dump()
                res["tokens"] = spent.tokens
                res.setdefault("wall_s", time.time() - t0)
                results[method] = res
            planted, real_units = _ground_truth_for_scorer(built)  # scorer only, after all ran
            judged = judge_claims(spec_ref, built, base, inter, results, judged_cache)
            identity = build_identity(built)
            for method, res in results.items():
                row = {"organism": built.name, "seed": seed, "method": method,
                       "status": res["status"], "null": not planted,
                       "families": len(universe), "planted": [p["id"] for p in planted],
                       "build_s": round(build_s, 1), "build": identity}
                if res["status"] == "ok":
                    mine = [judged[c] for c in phrase_claims(res["discoveries"]) if c in judged]
                    row.update(score(res["discoveries"], planted, real_units, mine))
                    if mine:
                        row["judged"] = mine
                    row.update({"queries": res["queries"], "circuit_passes": res["circuit_passes"],
                                "tokens": res["tokens"], **res["work"],
                                "wall_s": round(res["wall_s"], 1)})
                    if res.get("tokens_by_stage"):  # the pipeline's split of its tokens
                        row["tokens_by_stage"] = res["tokens_by_stage"]
                    row["details"] = {k: v for k, v in res.items()
                                      if k not in ("discoveries", "status", "work")}
                else:
                    row["error"] = res.get("error")
                rows.append(row)
            _write(cfg, rows, out_dir, final=False)  # progress survives an interrupted run
    return _write(cfg, rows, out_dir, final=True)


def _write(cfg: BenchConfig, rows: list[dict[str, Any]], out_dir: Path, final: bool) -> dict[str, Any]:
    from builtin_plugins.organisms import bench_report

    summary = summarise(rows)
    ratio_rows = ratios(rows)
    out = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
           "rows": rows, "summary": summary, "ratios": ratio_rows}
    md = bench_report.markdown(rows, summary, ratio_rows)
    if final and cfg.plots:
        plots = bench_report.plots(summary, out_dir)
        out["plots"] = [str(p) for p in plots]
        if plots:
            md += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (out_dir / "bench.json").write_text(json.dumps(out, indent=2, default=str))
    (out_dir / "bench.md").write_text(md)
    out["markdown"] = md
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Token ratios (other / pipeline, and between baselines) on organism-seeds where both
    methods reach the same planted recall; the currency is forward-token equivalents."""
    by_key: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["organism"], r["seed"]), {})[r["method"]] = r
    out = []
    for (org, seed), methods in sorted(by_key.items()):
        names = sorted(methods)
        pairs = [(a, "pipeline") for a in names if a != "pipeline"]
        pairs += [(a, b) for a in names for b in names if a < b and "pipeline" not in (a, b)]
        for num, den in pairs:
            a, b = methods.get(num), methods.get(den)
            if not a or not b:
                continue
            if a["status"] != "ok" or b["status"] != "ok":
                bad = den if b["status"] != "ok" else num
                out.append({"organism": org, "seed": seed, "ratio": f"{num}/{den}", "value": None,
                            "note": f"{bad} {methods[bad]['status']}"})
                continue
            if a.get("recall") != b.get("recall"):
                out.append({"organism": org, "seed": seed, "ratio": f"{num}/{den}", "value": None,
                            "note": f"recall differs ({a.get('recall')} vs {b.get('recall')})"})
                continue
            cost_a, cost_b = a.get("tokens", a.get("queries")), b.get("tokens", b.get("queries"))
            value = cost_a / cost_b if cost_b else None
            out.append({"organism": org, "seed": seed, "ratio": f"{num}/{den}",
                        "value": round(value, 2) if value else None, "note": "equal recall"})
    return out
