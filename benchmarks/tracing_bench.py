"""Per-prompt tracing time and peak memory for each tracer, next to a plain forward+backward
pass of the same model on the same prompt.

    python benchmarks/tracing_bench.py --models toy smollm2 \
        --smollm2-transcoders .md-cache/transcoders/smollm2-btk1536-k32 --threads 1 \
        --json out/tracing_bench.json

Memory is the peak resident-set growth over the process's RSS just before the call, sampled
every 5 ms in a thread (torch's CPU allocator is invisible to tracemalloc). Setup (building
the ReplacementModel, loading dictionaries) is timed separately from the per-prompt figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = {"toy": "the capital of japan is", "smollm2": "The capital of France is"}
SOURCES = {"toy": "toy", "smollm2": "smollm2-135m-instruct"}


class PeakRSS:
    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    times, mems = [], []
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        mems.append(mem.growth_mb)
    return {"seconds": round(statistics.median(times), 4), "seconds_min": round(min(times), 4),
            "peak_rss_growth_mb": round(max(mems), 1), "repeats": repeats}


def forward_backward(model: Any, ids: list[int]) -> None:
    import torch

    x = torch.tensor([ids])
    model.zero_grad(set_to_none=True)
    out = model(input_ids=x, labels=x)
    out.loss.backward()
    model.zero_grad(set_to_none=True)


def random_sae(cache: Path, d_in: int, layer: int, d_sae: int) -> Path:
    """An untrained sae-lens SAE: enough to time the sae tracer where none is published."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    out = cache / f"bench-random-sae-{d_in}-{layer}-{d_sae}"
    if not (out / "cfg.json").exists():
        import torch

        torch.manual_seed(0)
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(
            hook_name=f"blocks.{layer}.hook_resid_post")))
        with torch.no_grad():
            sae.W_enc.normal_(0, d_in ** -0.5)
            sae.W_dec.copy_(sae.W_enc.T)
        sae.save_model(out)
    return out


def bench_model(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from md_framework.drivers import create_driver
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model
    from builtin_plugins.tracers._common import encode_prompt

    cache = Path(args.cache_dir)
    t0 = time.perf_counter()
    loaded = load_model(ModelSpec(source=SOURCES[name]), ModelLoadOptions(cache_dir=cache))
    load_s = time.perf_counter() - t0
    prompt = args.prompt or PROMPTS[name]
    ids = encode_prompt(loaded.tokenizer, prompt)
    rows = []
    fb = measure(lambda: forward_backward(loaded.model, ids), args.repeats)
    rows.append({"model": name, "what": "forward+backward", "n_tokens": len(ids), **fb,
                 "setup_seconds": round(load_s, 2)})
    print(json.dumps(rows[-1]), flush=True)
    tracer_opts: dict[str, dict[str, Any]] = {
        "activation-diff": {},
        "sae": {"saes": ["toy"], "cache_dir": str(cache)},
        "circuit-tracer": {"transcoders": "toy", "cache_dir": str(cache), "batch_size": 32},
    }
    if name == "smollm2":
        cfg = loaded.model.config
        tracer_opts["sae"]["saes"] = [str(random_sae(cache, cfg.hidden_size, 15, 4608))]
        if args.smollm2_transcoders and Path(args.smollm2_transcoders).is_dir():
            tracer_opts["circuit-tracer"].update(
                transcoders=args.smollm2_transcoders, max_feature_nodes=args.max_feature_nodes)
        else:
            tracer_opts.pop("circuit-tracer")
            print("skipping circuit-tracer on smollm2: pass --smollm2-transcoders DIR", flush=True)
    for tracer_name in args.tracers:
        if tracer_name not in tracer_opts:
            continue
        tracer = create_driver("tracer", tracer_name, tracer_opts[tracer_name])
        with PeakRSS() as first_mem:
            t0 = time.perf_counter()
            first = tracer.trace(loaded, [prompt])[0]  # includes setup (dictionary, wrapping)
            first_s = time.perf_counter() - t0
        result = measure(lambda: tracer.trace(loaded, [prompt]), args.repeats)
        f = first.faithfulness
        row = {"model": name, "what": tracer_name, "n_tokens": len(ids), **result,
               "first_call_seconds": round(first_s, 2),
               "first_call_peak_rss_growth_mb": round(first_mem.growth_mb, 1),
               "ratio_to_forward_backward": round(result["seconds"] / max(fb["seconds"], 1e-9), 1),
               "n_nodes": len(first.nodes), "n_edges": len(first.edges),
               "graph_json_kb": round(len(first.model_dump_json()) / 1024, 1),
               "replacement_score": f.replacement_score, "completeness_score": f.completeness_score,
               "error_node_share": f.error_node_share,
               "n_active_features": first.metadata.get("n_active_features")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del tracer
    del loaded
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| model | what | tokens | s / prompt | x fwd+bwd | peak RSS growth MB | first call s (MB) | nodes | edges | replacement | completeness | error share |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
        out.append(f"| {r['model']} | {r['what']} | {r['n_tokens']} | {r['seconds']:.3f} | "
                   f"{r.get('ratio_to_forward_backward') or ''} | {r['peak_rss_growth_mb']} | "
                   f"{fmt(r.get('first_call_seconds'))} ({fmt(r.get('first_call_peak_rss_growth_mb'))}) | "
                   f"{fmt(r.get('n_nodes'))} | "
                   f"{fmt(r.get('n_edges'))} | {fmt(r.get('replacement_score'))} | "
                   f"{fmt(r.get('completeness_score'))} | {fmt(r.get('error_node_share'))} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["toy", "smollm2"], choices=sorted(SOURCES))
    p.add_argument("--tracers", nargs="+", default=["activation-diff", "sae", "circuit-tracer"])
    p.add_argument("--prompt", default=None)
    p.add_argument("--smollm2-transcoders", default=None)
    p.add_argument("--max-feature-nodes", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=".md-cache")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows.extend(bench_model(name, args))
    meta = {"threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}
    print(markdown(rows))
    print(json.dumps(meta))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"rows": rows, "meta": meta}, indent=2))


if __name__ == "__main__":
    main()
