"""Re-score ``md bench`` runs against an organism's current ground truth.

For runs whose organism was measured again on the *same models* (a measurement-only spec
change reuses the built models: ``ground_truth.json`` ``training.models_from``, same
``intervention_model_id``; docs/organisms.md). The methods never read the ground truth, so
what they claimed does not change; only the judge does.

Claimed units come from each row's ``claimed_unit_labels`` (rows written since 2026-12-06)
or, for older rows, from the baselines' per-arm ``details.records``: the rejected arms, the
direction being the sign of the arm's effect, exactly as the baselines turn them into claims
(``builtin_plugins.organisms.baselines._discovery``). An older pipeline row cannot be
re-scored from its validated hypotheses when each names one family and a signed direction;
otherwise (a "change" claim keeps no sign) it is left out and said so, unless it claimed
nothing. The scoring rule is the bench's own
(``builtin_plugins.organisms.scoring.score``).

    python benchmarks/rescore.py OUT_DIR --organism SPEC --cache-dir DIR RUN_DIR...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def claims(row: dict[str, Any]) -> list[Any] | None:
    """The row's claims as scorer Discoveries; None when they cannot be recovered."""
    from builtin_plugins.organisms.scoring import Discovery

    if "claimed_unit_labels" in row:
        # a unit claimed through a phrase metric the judge measured keeps that metric
        phrase = {(j["family"], j["metric"].partition(":")[0], j["direction"]): j["metric"]
                  for j in row.get("judged") or [] if j.get("real")}
        out = []
        for label in row["claimed_unit_labels"]:
            family, metric, direction = label.split("|")
            metric = phrase.get((family, metric, direction), metric)
            out.append(Discovery(families=[] if family == "(no family)" else [family],
                                 metric=metric, direction=direction, label=label))
        return out
    details = row.get("details") or {}
    if row["method"].startswith("pipeline"):
        validated = [h for h in details.get("hypotheses", []) if h.get("validated")]
        exact = all(len(h["families"]) == 1 and h["direction"] in ("increase", "decrease")
                    for h in validated)
        if not row.get("claimed_units"):
            return []
        if not validated or not exact:
            return None
        return [Discovery(families=h["families"], metric=h["metric"], direction=h["direction"],
                          label=h["type"]) for h in validated]
    records = details.get("records")
    if records is None:
        return None
    return [Discovery(families=[r["family"]], metric=r["metric"], effect=r["effect"],
                      direction="increase" if r["effect"] > 0 else "decrease",
                      label=f"{r['family']}:{r['metric']}")
            for r in records if r.get("rejected")]


def main() -> None:
    from builtin_plugins.organisms import bench_report, find_built
    from builtin_plugins.organisms.bench import _ground_truth_for_scorer, build_identity
    from builtin_plugins.organisms.scoring import score

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--organism", required=True, help="the organism spec, as built now")
    ap.add_argument("--cache-dir", required=True)
    args = ap.parse_args()
    built = find_built(args.organism, args.cache_dir)
    if built is None:
        raise SystemExit(f"{args.organism} is not built in {args.cache_dir}")
    gt = built.ground_truth()
    planted, real_units = _ground_truth_for_scorer(built)
    print(f"ground truth of {built.root.name}: intervention {gt['intervention_model_id'][:19]}, "
          f"models from {gt.get('training', {}).get('models_from', built.root.name)}, "
          f"{len(real_units or [])} real units")
    rows, left_out = [], []
    for run in args.runs:
        for row in json.loads((Path(run) / "bench.json").read_text())["rows"]:
            if row.get("organism") != built.name or row.get("status") != "ok":
                continue
            models = (row.get("build") or {}).get("intervention_model_id")
            if models and models != gt["intervention_model_id"]:  # another build's models
                left_out.append(f"{run}: seed {row['seed']} {row['method']} (other models)")
                continue
            found = claims(row)
            if found is None:
                left_out.append(f"{run}: seed {row['seed']} {row['method']}")
                continue
            was = {k: row.get(k) for k in ("real_units", "real_recall", "precision",
                                           "false_discoveries")}
            row.update(score(found, planted, real_units, row.get("judged")))
            row["rescored"] = {"ground_truth": built.root.name, "before": was}
            row["build"] = build_identity(built)
            (row.get("details") or {}).pop("records", None)
            rows.append(row)
    note = ("\nLeft out (claims not recoverable): " + "; ".join(left_out) + "\n") if left_out else ""
    md = bench_report.write_rows(Path(args.out), rows, {"runs": args.runs, "organism": built.root.name,
                                                        "left_out": left_out}, note)
    print(md)


if __name__ == "__main__":
    main()
