"""How much of a planted change the residual stream after one layer carries (issue 18).

For each planted change of an organism and each ``--layers`` layer L, the intervention
model runs with its whole residual stream after L replaced by the base model's on the same
tokens (the base runs in lock-step, KV caches on both sides, so generation works), and the
planted metric is measured on the family's confirm prompts (seed-0 split, as
``benchmarks/crosscoder_adl.py``): share = mean(I - A) / mean(I - B), paired bootstrap CI
(:func:`builtin_plugins.pipeline.causal.causal_share`). No dictionary at layer L can carry
more of the change by patching that layer alone than this share (its reconstruction error
stays in place; its latents are a part of the residual), so it is the ceiling against which
a crosscoder's patching share is read, and it says at which layers to train one.

    python benchmarks/residual_ceiling.py --cache-dir /work/cache/tests \\
        --spec examples/organisms/smollm2-safety.yaml --layers 0,4,8,12,15,18,21,24,27,29 \\
        --out benchmarks/crosscoder-adl-smollm2-late/residual-ceiling.json

``--keep-first`` leaves a sequence's first position unpatched (as crosscoder patches do).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@contextlib.contextmanager
def residual_of_base(base: Any, inter: Any, layers: list[int], keep_first: bool = False) -> Any:
    """``inter`` with its residual stream after ``layers`` replaced by ``base``'s."""
    from builtin_plugins.tracers import _hooks
    from builtin_plugins.tracers._intervene import first_positions, keep_first_positions, run_in_lockstep

    state: dict[str, Any] = {"cache": None, "resid": {}, "first": None}

    def run_partner(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state["first"] = first_positions(kwargs)
        run_in_lockstep(base.model, args, kwargs, state)

    def reader(layer: int) -> Any:
        return lambda m, a, o: state["resid"].__setitem__(layer, (o[0] if isinstance(o, tuple) else o).detach())

    def patcher(layer: int) -> Any:
        def hook(m: Any, a: Any, o: Any) -> Any:
            h = o[0] if isinstance(o, tuple) else o
            new = state["resid"][layer]
            if keep_first:
                new = keep_first_positions(h, new, state["first"])
            return (new, *o[1:]) if isinstance(o, tuple) else new
        return hook

    handles = [inter.model.register_forward_pre_hook(run_partner, with_kwargs=True)]
    try:
        for layer in layers:
            handles.append(_hooks.decoder_layers(base.model)[layer].register_forward_hook(reader(layer)))
            handles.append(_hooks.decoder_layers(inter.model)[layer].register_forward_hook(patcher(layer)))
        yield dataclasses.replace(inter, model_id=f"{inter.model_id}|residual-of-base@{layers}:{keep_first}")
    finally:
        for h in handles:
            h.remove()


def universe_of(built: Any) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The organism's universe ({family: prompts}) and each prompt's target."""
    from builtin_plugins.organisms.build import load_universe_cases

    spec = built.root / "spec.json"
    cases_of = load_universe_cases(spec if spec.exists() else built.name)
    return ({f: [p for p, _ in items] for f, items in cases_of.items()},
            {p: t for items in cases_of.values() for p, t in items})


def planted_cases(built: Any, n_confirm: int, label: str, seed: int = 0
                  ) -> Iterator[tuple[dict[str, Any], Any, list[Any], list[str], float]]:
    """Per planted change: (its ground-truth record, its first metric, the planted family's
    first ``n_confirm`` confirm prompts as test cases, the family's explore prompts, the
    metric's smallest denominator for a share), on the ``seed`` explore/confirm split."""
    from builtin_plugins.organisms.bench import registered_metrics
    from builtin_plugins.pipeline.testgen import split_universe
    from md_framework.types import TestCase

    universe, target = universe_of(built)
    explore, confirm = split_universe(universe, 0.5, seed)
    for planted in built.ground_truth()["planted"]:
        fam = planted["family"]
        (metric,) = registered_metrics([planted["metrics"][0]])
        cases = [TestCase(id=f"{fam}:{i}", hypothesis_id=label, prompt=p, family=fam, target=target.get(p))
                 for i, p in enumerate(confirm[fam][:n_confirm])]
        yield planted, metric, cases, explore[fam], float(getattr(metric, "min_change", 0) or 1e-9)


class PatchReadings:
    """Metric readings of base, intervention and each patched intervention model, each
    measured once: a temporary run ledger (:class:`md_framework.pipeline.ledger.Ledger`)
    serves the base and intervention readings to every later patch, so a script that
    patches many ways measures the two models once per planted change, not once per patch.
    ``key`` names the patch (unique per patched model)."""

    def __init__(self, base: Any, inter: Any, label: str) -> None:
        import tempfile

        from md_framework.pipeline.ledger import Ledger

        self.base, self.inter = base, inter
        self._dir = tempfile.mkdtemp(prefix="md-patch-readings-")
        self._store = Ledger(self._dir, {"script": label})

    def triplet(self, metric: Any, patch: Any, cases: list[Any], key: str
                ) -> tuple[list[float], list[float], list[float]]:
        from builtin_plugins.pipeline.causal import measure_triplet

        return measure_triplet(metric, self.base, self.inter, patch, cases, store=self._store,
                               intervened_key=f"{self.inter.model_id}|patched|{key}")

    def close(self) -> None:
        import shutil

        self._store.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def share_of(vb: list[float], vi: list[float], va: list[float], min_den: float) -> dict[str, Any]:
    """The patched mean and the share mean(I - A) / mean(I - B) with its paired bootstrap CI."""
    from builtin_plugins.pipeline.causal import causal_share

    est = causal_share(vb, vi, va, min_denominator=min_den, seed=0)
    return {"mean_patched": sum(va) / len(va),
            "share": None if est.effect is None else round(est.effect.estimate, 3),
            "ci": None if est.effect is None else [round(est.effect.ci_low, 3), round(est.effect.ci_high, 3)]}


def save_row(rows: list[dict[str, Any]], row: dict[str, Any], out: Path) -> None:
    """Append ``row``, print it, and rewrite ``out`` with every row so far."""
    rows.append(row)
    print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".md-cache")
    ap.add_argument("--layers", required=True, help="comma-separated layer indices, each patched alone")
    ap.add_argument("--n-confirm", type=int, default=8)
    ap.add_argument("--keep-first", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.build import load_dir
    from builtin_plugins.tracers import _hooks

    built = build_organism(args.spec, args.cache_dir / "organisms", log=None)
    base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
    n_layers = len(_hooks.decoder_layers(inter.model))
    layers = [int(x) for x in args.layers.split(",")]
    if any(not 0 <= layer < n_layers for layer in layers):
        ap.error(f"--layers must lie in 0..{n_layers - 1}")
    rows: list[dict[str, Any]] = []
    readings = PatchReadings(base, inter, "residual_ceiling")
    for planted, metric, cases, _, min_den in planted_cases(built, args.n_confirm, "ceiling"):
        for layer in layers:
            t0 = time.time()
            vb, vi, va = readings.triplet(metric, lambda: residual_of_base(base, inter, [layer], args.keep_first),
                                          cases, f"residual:{layer}:{args.keep_first}")
            save_row(rows, {"organism": built.name, "planted": planted["id"], "metric": planted["metrics"][0],
                            "layer": layer, "keep_first": args.keep_first, "n_prompts": len(cases),
                            "mean_base": sum(vb) / len(vb), "mean_intervention": sum(vi) / len(vi),
                            **share_of(vb, vi, va, min_den), "seconds": round(time.time() - t0, 1)}, args.out)
    readings.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
