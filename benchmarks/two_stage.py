"""Two-stage tracing: circuit-stage cost per seed prompt, relative to a forward+backward pass
of both models (docs/discovery.md, "Two-stage tracing").

Runs ``md analyze``'s analyzer on a config twice (after a discarded warm-up run) with a fresh
artefact cache each time: with
``two_stage_tracing`` off (attribution graphs for every seed prompt) and on (screen with the
activation-diff tracer and the answer traces, attribution graphs for flagged families plus
check prompts). The circuit stage's cost is the attribution tracer's own tracing time (both
models); amortised per seed prompt (all seed prompts, traced or not). The reference is one
forward+backward pass (sum of the last position's logits) of each model on each seed prompt,
timed here on the same machine.

    python benchmarks/two_stage.py examples/configs/toy-saffron.yaml --out benchmarks/two-stage-toy-saffron.json
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


def run(config_path: str, two_stage: bool) -> dict:
    from md_framework.config import load_config
    from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

    config = load_config(config_path)
    with tempfile.TemporaryDirectory() as cache:
        config = config.model_copy(update={"two_stage_tracing": two_stage, "cache_dir": cache,
                                           "causal_confirmation": False})
        an = MechanisticBehavioralAnalyzer(config)
        t = time.perf_counter()
        report = an.analyze()
        wall = time.perf_counter() - t
    seeds = report.circuit_statistics.get("two_stage", {}).get("seed_prompts") or \
        report.circuit_statistics["traced_prompts"]
    circuit_s = an.trace_stats["base"]["trace_seconds"] + an.trace_stats["intervention"]["trace_seconds"]
    prompts = [pd.prompt for pd in report.circuit_diff.prompt_diffs]
    return {"two_stage": two_stage, "seed_prompts": seeds,
            "attribution_prompts": report.circuit_statistics["traced_prompts"],
            "circuit_seconds": circuit_s, "wall_s": wall,
            "screen": report.circuit_statistics.get("two_stage"),
            "validated": [f"{r.hypothesis.hypothesis_type}:{r.hypothesis.metric}:"
                          f"{','.join(r.hypothesis.families)}" for r in report.validated()],
            "answer_tokens": {"generated": report.costs.answer_generated_tokens,
                              "teacher_forced": report.costs.answer_teacher_forced_tokens},
            "models": an.models, "prompts": prompts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    run(args.config, False)  # warm-up: the first call loads dictionaries and builds graphs' setup
    rows = [run(args.config, False), run(args.config, True)]
    models, prompts = rows[0].pop("models"), rows[0].pop("prompts")
    rows[1].pop("models"), rows[1].pop("prompts")
    ref = sum(fwd_bwd_seconds(m, prompts) for m in (models["base"], models["intervention"])) / len(prompts)
    for r in rows:
        r["circuit_s_per_seed_prompt"] = r["circuit_seconds"] / r["seed_prompts"]
        r["fwd_bwd_both_models_s_per_prompt"] = ref
        r["ratio"] = r["circuit_s_per_seed_prompt"] / ref
        print(json.dumps(r))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
