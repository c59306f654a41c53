"""Does a feature patch at a sequence's first position change what it carries? (wave 16)

Our transcoders are trained without a sequence's first position
(:mod:`builtin_plugins.tracers.transcoders`), as the crosscoder is; wave 15 found that
crosscoder patches written there broke SmolLM2. Since wave 16 transcoder interventions
leave that position alone (``TranscoderSite.skips_first_position``). This measures both
ways on the same features: for each planted change and each ``--layers`` layer L, every
transcoder feature of L active (> 0, positions after the first) on the planted family's
explore prompts is patched to the base model (``base`` mode), and the planted metric is
measured on the family's confirm prompts (seed-0 split, as ``benchmarks/crosscoder_adl.py``):
share = mean(I - A) / mean(I - B), paired bootstrap CI
(:func:`builtin_plugins.pipeline.causal.causal_share`), once with the first position left
alone (``skip``, shipped) and once written (``write``, before wave 16).

    python benchmarks/transcoder_first_position.py --cache-dir /work/cache/tests \\
        --spec toy-multi --layers 0,1 --out benchmarks/transcoder-first-position/toy-multi.json

``--mode zero`` ablates the features instead (their decoder contribution removed; the
share can exceed 1 or go below 0, as ablation is not a move toward the base model).
``--site neurons`` measures the same for MLP neurons (the activation-diff tracer's features,
which still write at the first position: read there exactly, no dictionary), every neuron of
L patched (its MLP output set to the base model's), by toggling
``NeuronSite.skips_first_position``.

``--transcoders DIR`` takes a trained set (``md transcoders train``); without it the set
``md bench`` trains for its ``pipeline-circuit-tracer`` method is used (trained and cached
on first use; ``--train JSON`` overrides its recipe, as ``md bench --dictionary-config``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def active_features(tracer: Any, model: Any, prompts: list[str], layer: int, width: int) -> list[Any]:
    """The features of ``layer`` whose peak activation (after the first position) on any of
    ``prompts`` is positive."""
    from md_framework.types import FeatureRef

    refs = [FeatureRef(layer=layer, feature=j) for j in range(width)]
    peaks = tracer.feature_activations(model, prompts, refs)
    return [r for r in refs if any(p[r.key][0] > 0 for p in peaks)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".md-cache")
    ap.add_argument("--layers", default=None, help="comma-separated layers (default: every layer)")
    ap.add_argument("--transcoders", type=Path, default=None)
    ap.add_argument("--train", default=None, metavar="JSON")
    ap.add_argument("--n-confirm", type=int, default=8)
    ap.add_argument("--site", choices=("transcoders", "neurons"), default="transcoders")
    ap.add_argument("--mode", choices=("base", "zero"), default="base")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from residual_ceiling import PatchReadings, planted_cases, save_row, share_of, universe_of  # benchmarks/

    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.bench_methods import transcoders_for
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.tracers import _hooks
    from builtin_plugins.tracers._intervene import NeuronSite, TranscoderSite
    from builtin_plugins.tracers.activation_diff import ActivationDiffTracer
    from builtin_plugins.tracers.circuit_tracer import CircuitTracerTracer, _layers_of
    from md_framework.types import FeatureRef

    built = build_organism(args.spec, args.cache_dir / "organisms", log=None)
    base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
    t0 = time.time()
    if args.site == "neurons":
        site: Any = NeuronSite
        tracer: Any = ActivationDiffTracer()
        blocks = _hooks.decoder_layers(inter.model)
        n_layers, label = len(blocks), "mlp-neurons"
    else:
        site = TranscoderSite
        if args.transcoders is None:
            path, _ = transcoders_for(base, universe_of(built)[0], args.cache_dir / "organisms",
                                      json.loads(args.train) if args.train else None)
        else:
            path = args.transcoders
        print(f"transcoders {path} ({time.time() - t0:.0f}s)", flush=True)
        tracer = CircuitTracerTracer({"transcoders": str(path), "cache_dir": str(args.cache_dir)})
        transcoders = _layers_of(tracer._load_transcoders())
        n_layers, label = len(transcoders), Path(path).name
    layers = range(n_layers) if args.layers is None else [int(x) for x in args.layers.split(",")]
    rows: list[dict[str, Any]] = []
    readings = PatchReadings(base, inter, "transcoder_first_position")
    for planted, metric, cases, explore, min_den in planted_cases(built, args.n_confirm, "first-position"):
        for layer in layers:
            t0 = time.time()
            if args.site == "neurons":  # every neuron: the layer's whole MLP output
                feats = [FeatureRef(layer=layer, feature=j)
                         for j in range(int(blocks[layer].mlp.down_proj.in_features))]
            else:
                feats = active_features(tracer, inter, explore, layer, int(transcoders[layer].d_transcoder))
            row: dict[str, Any] = {"organism": built.name, "planted": planted["id"],
                                   "metric": planted["metrics"][0], "site": label, "mode": args.mode,
                                   "layer": layer,
                                   "n_features": len(feats), "n_prompts": len(cases)}
            for arm, skip in (("skip", True), ("write", False)):
                shipped = site.skips_first_position
                site.skips_first_position = skip
                try:
                    patch = lambda: tracer.intervened_model(inter, feats, args.mode, base=base)  # noqa: E731
                    vb, vi, va = readings.triplet(metric, patch, cases,
                                                  f"{planted['id']}:{label}:{args.mode}:{layer}:{arm}")
                finally:
                    site.skips_first_position = shipped
                row[arm] = share_of(vb, vi, va, min_den)
            row.update(mean_base=sum(vb) / len(vb), mean_intervention=sum(vi) / len(vi),
                       seconds=round(time.time() - t0, 1))
            save_row(rows, row, args.out)
    readings.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
