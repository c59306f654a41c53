"""Why the activation-difference lens misses the planted family on the toy organisms
(issue 18; diagnostics only, not part of any method: it runs the intervention model on
family prompts, which the lens never does).

For one explore split (seed 0) it prints, per organism: the cosine of the lens direction δ
(residual after layer 1) with the mean over families of the per-family activation
differences d_f = mean(h^I − h^B) on 8 explore prompts per family (the drift shared by all
families), then per family |d_f|, cos(δ, d_f), cos(δ, d_f − mean d) and the lens's z score;
and the rank of the planted family under the lens's mapping for layers 0/1 and windows of
1/5 positions.

    python benchmarks/adl_drift.py --cache-dir /work/cache/tests --specs toy-safety,toy-style,toy-null
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="toy-safety,toy-style,toy-null")
    ap.add_argument("--cache-dir", type=Path, default=Path(".md-cache"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from md_framework.config import ActivationDifferenceLensConfig as C
    from builtin_plugins.pipeline.testgen import split_universe

    from builtin_plugins.adl.lens import _ids, _residuals, activation_difference_lens
    from builtin_plugins.metrics.core import format_prompt
    from builtin_plugins.organisms import build_organism
    from builtin_plugins.organisms.build import load_dir

    def cos(a: object, b: object) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    for spec in args.specs.split(","):
        built = build_organism(spec, args.cache_dir / "organisms", log=None)
        base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
        planted = {p["family"] for p in built.ground_truth()["planted"]}
        explore, _ = split_universe(built.universe, 0.5, 0)
        for layers in ([0], [1]):
            for k in (1, 5):
                r = activation_difference_lens(base, inter, explore, C(enabled=True, layers=layers, k_tokens=k,
                                                                       steer_prompts=0), seed=0)
                ranked = sorted(r.family_scores, key=lambda f: -r.family_scores[f])
                print(f"{spec} layer {layers[0]} k {k}: planted ranks "
                      f"{sorted(ranked.index(f) + 1 for f in planted)} of {len(ranked)}; top {ranked[0]}")
        r = activation_difference_lens(base, inter, explore, C(enabled=True, steer_prompts=0), seed=0)
        delta = torch.tensor(r.directions[0].direction)
        layer, tok, d = r.layer, base.tokenizer, {}
        for fam, prompts in explore.items():
            rows = []
            for p in prompts[:8]:
                ids = _ids(tok, format_prompt(tok, p))
                hb = _residuals(base.model, ids, [layer])[layer][1:]
                hi = _residuals(inter.model, ids, [layer])[layer][1:]
                rows.append((hi - hb).mean(0))
            d[fam] = torch.stack(rows).mean(0)
        common = torch.stack(list(d.values())).mean(0)
        print(f"{spec}: planted {sorted(planted)}; cos(delta, shared drift) = {cos(delta, common):.2f}")
        for fam in sorted(d, key=lambda f: -float(d[f].norm())):
            print(f"  {fam:<16} |d_f| {float(d[fam].norm()):.3f}  cos(delta, d_f) {cos(delta, d[fam]):.2f}  "
                  f"cos(delta, d_f - drift) {cos(delta, d[fam] - common):.2f}  z {r.family_scores[fam]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
