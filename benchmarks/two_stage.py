"""Two-stage tracing: circuit-stage cost per seed prompt, relative to a forward+backward pass
of both models (docs/discovery.md, "Two-stage tracing").

Runs ``md analyze``'s analyzer on a config twice (after a discarded warm-up run) with a fresh
artefact cache each time: with
``two_stage_tracing`` off (attribution graphs for every seed prompt) and on (screen with the
activation-diff tracer and the answer traces, attribution graphs for flagged families plus
check prompts). The circuit stage's cost is the attribution tracer's own tracing time (both
models); amortised per seed prompt (all seed prompts, traced or not). The reference is one
forward+backward pass (sum of the last position's logits) of each model on each seed prompt,
timed here on the same machine. ``total_ratio`` adds the screen's own time (its tracer and
detectors; the answer traces run in both modes and are left out of both).

    python benchmarks/two_stage.py examples/configs/toy-saffron.yaml --out benchmarks/two-stage-toy-saffron.json

Each run gets a fresh artefact cache, so ``$MD_CACHE_DIR`` must be unset (it outranks a
config's ``cache_dir``); organisms already built elsewhere are reused through
``--organisms-dir`` (linked into each fresh cache as ``organisms/``). ``--warmup two-stage``
warms up with the cheaper mode, for tracers whose one-stage run takes many minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def fwd_bwd_seconds(model, prompts, repeats: int = 3) -> float:
    """Median over ``repeats`` of the total forward+backward time over ``prompts``."""
    import torch

    from builtin_plugins.tracers._common import encode_prompt, tracing_text

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for p in prompts:
            ids = encode_prompt(model.tokenizer, tracing_text(model.tokenizer, p))
            out = model.model(input_ids=torch.tensor([ids])).logits[0, -1].sum()
            out.backward()
            model.model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _seed_recorder():
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    class SeedRecorder(MechanisticBehavioralAnalyzer):
        """Remembers the seed prompts: the first prompts screened (two-stage) or traced."""

        seeds_seen: list | None = None

        def screen(self, seeds, answers, hooks):
            self.seeds_seen = list(seeds)
            return super().screen(seeds, answers, hooks)

        def trace(self, prompts, *args, **kwargs):
            if self.seeds_seen is None:
                self.seeds_seen = list(prompts)
            return super().trace(prompts, *args, **kwargs)

    return SeedRecorder


def run(config_path: str, two_stage: bool, organisms_dir: str | None = None) -> dict:
    from md_framework.config import load_config
    _SeedRecorder = _seed_recorder()
    config = load_config(config_path)
    with tempfile.TemporaryDirectory() as cache:
        if organisms_dir:
            (Path(cache) / "organisms").symlink_to(Path(organisms_dir).resolve())
        config = config.model_copy(update={"two_stage_tracing": two_stage, "cache_dir": cache,
                                           "causal_confirmation": False})
        an = _SeedRecorder(config)
        t = time.perf_counter()
        report = an.analyze()
        wall = time.perf_counter() - t
    circuit_s = an.trace_stats["base"]["trace_seconds"] + an.trace_stats["intervention"]["trace_seconds"]
    return {"two_stage": two_stage, "seed_prompts": len(an.seeds_seen),
            "attribution_prompts": report.circuit_statistics["traced_prompts"],
            "circuit_seconds": circuit_s, "wall_s": wall,
            "screen": report.circuit_statistics.get("two_stage"),
            "validated": [f"{r.hypothesis.hypothesis_type}:{r.hypothesis.metric}:"
                          f"{','.join(r.hypothesis.families)}" for r in report.validated()],
            "answer_tokens": {"generated": report.costs.answer_generated_tokens,
                              "teacher_forced": report.costs.answer_teacher_forced_tokens},
            "models": an.models, "seeds": an.seeds_seen}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--out", default=None)
    ap.add_argument("--organisms-dir", default=None,
                    help="built organisms to reuse (linked into each run's fresh cache)")
    ap.add_argument("--warmup", choices=["one-stage", "two-stage", "none"], default="one-stage",
                    help="mode of the discarded warm-up run; none: the first run's setup "
                         "(loading dictionaries) is counted in its time")
    ap.add_argument("--modes", default="one-stage,two-stage",
                    help="comma-separated runs to time, in order")
    args = ap.parse_args()
    import os

    import torch

    if os.environ.get("MD_CACHE_DIR"):
        raise SystemExit("unset MD_CACHE_DIR: it outranks the fresh per-run cache")
    torch.set_num_threads(1)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"one-stage", "two-stage"}:
        raise SystemExit(f"--modes takes one-stage and/or two-stage, not {args.modes!r}")
    if args.warmup != "none":  # the first call loads dictionaries and builds graphs' setup
        run(args.config, args.warmup == "two-stage", args.organisms_dir)
    rows = [run(args.config, m == "two-stage", args.organisms_dir) for m in modes]
    models = rows[0]["models"]
    # the reference pass runs on every seed prompt (the screened ones included)
    prompts = [p for p, _ in rows[0]["seeds"]]
    for r in rows:
        r.pop("models"), r.pop("seeds")
    ref = sum(fwd_bwd_seconds(m, prompts) for m in (models["base"], models["intervention"])) / len(prompts)
    for r in rows:
        r["circuit_s_per_seed_prompt"] = r["circuit_seconds"] / r["seed_prompts"]
        r["fwd_bwd_both_models_s_per_prompt"] = ref
        r["ratio"] = r["circuit_s_per_seed_prompt"] / ref
        # the screen's own tracing and detectors are part of what two-stage costs
        screen_s = (r["screen"] or {}).get("screen_seconds", 0.0) if r["two_stage"] else 0.0
        r["total_s_per_seed_prompt"] = (r["circuit_seconds"] + screen_s) / r["seed_prompts"]
        r["total_ratio"] = r["total_s_per_seed_prompt"] / ref
        print(json.dumps(r))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
