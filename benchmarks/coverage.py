"""Issue 13's yardstick in one table: for every organism the issue names, every method it
asks for, the number of seeds measured against the number asked for, and the scores and
token cost over those seeds (mean and 95 % t-interval; nulls: the share of runs with any
discovery, Wilson interval). What is missing is listed, not hidden.

    python benchmarks/coverage.py [--manifest benchmarks/coverage.json] [--out benchmarks/coverage.md]

The manifest names, per organism, the committed ``bench.json`` directories that hold its
current evidence (optionally which methods to take from each and a label for a method run
with another pipeline config), the seeds the issue asks for, and whether it is a null. Rows
are summarised with ``md bench``'s own ``scoring.summarise``; a seed of one method found in
two sources is an error (count it once), and the rows' build records (``row["build"]``,
written since wave 9) are compared: rows of one organism from two builds are reported, not
averaged silently.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _fmt_tokens(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean'] / 1000:,.0f}k"


def gather(org: str, entry: dict[str, Any], root: Path
           ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The rows of ``org`` from the manifest entry's sources, with their method labels applied;
    a note if they come from two builds (a gap), and one if some rows carry no build record
    (provenance: one build cannot be checked there)."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], str] = {}
    gaps: list[str] = []
    provenance: list[str] = []
    for src in entry["sources"]:
        path = root / src["dir"] / "bench.json"
        data = json.loads(path.read_text())
        wanted = set(src.get("methods") or [])
        renames = src.get("rename") or {}
        for r in data["rows"]:
            if r["organism"] != org or (wanted and r["method"] not in wanted):
                continue
            r = {**r, "method": renames.get(r["method"], r["method"])}
            key = (r["method"], r["seed"])
            if key in seen:
                raise SystemExit(f"{org}: {r['method']} seed {r['seed']} is in {seen[key]} and {src['dir']}; "
                                 "name the methods to take from each source")
            seen[key] = src["dir"]
            rows.append(r)
    builds = {json.dumps(r["build"], sort_keys=True) for r in rows if r.get("build")}
    recorded = sum(1 for r in rows if r.get("build"))
    if len(builds) > 1:
        by_build: dict[str, set[str]] = {}
        for r in rows:
            if r.get("build"):
                by_build.setdefault(r["build"]["intervention_model_id"][7:19], set()).add(r["method"])
        gaps.append("rows from %d builds (intervention model %s)" % (len(builds), "; ".join(
            f"{k}…: {', '.join(sorted(v))}" for k, v in sorted(by_build.items()))))
    elif recorded < len(rows):
        provenance.append(f"build recorded on {recorded} of {len(rows)} rows (older rows carry none)")
    return rows, gaps, provenance


def coverage(manifest: dict[str, Any], root: Path = ROOT
             ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """One line per organism × method (required methods first, then any other measured
    method), the gaps against the manifest's requirements (too few seeds; rows of two
    builds), and provenance notes (rows written before bench rows recorded their build)."""
    from builtin_plugins.organisms.scoring import summarise

    required = manifest["methods"]
    lines: list[dict[str, Any]] = []
    gaps: list[str] = []
    provenance: list[str] = []
    for org, entry in manifest["organisms"].items():
        rows, build_gaps, build_notes = gather(org, entry, root)
        summary = {s["method"]: s for s in summarise(rows)}
        want = entry.get("min_seeds", 1)
        extra = sorted(m for m in summary if m not in required)
        for method in [*required, *extra]:
            s = summary.get(method)
            n = s["seeds"] if s else 0
            if method in required and n < want:
                gaps.append(f"{org}: {method} has {n} of {want} seeds")
            lines.append({"organism": org, "method": method, "required": method in required,
                          "seeds": n, "want": want, "summary": s, "null": bool(entry.get("null"))})
        gaps.extend(f"{org}: {g}" for g in build_gaps)
        provenance.extend(f"{org}: {p}" for p in build_notes)
    return lines, gaps, provenance


def markdown(lines: list[dict[str, Any]], gaps: list[str], provenance: list[str],
             manifest: dict[str, Any]) -> str:
    # the interval and share cells as md bench's own tables write them
    from builtin_plugins.organisms.bench_report import _ci, _share

    out = ["| organism | method | seeds (asked) | planted recall | real-unit recall | precision | FDP "
           "| runs with any discovery | tokens per run |",
           "|---|---|---|---|---|---|---|---|---|"]
    for ln in lines:
        s = ln["summary"]
        name = ln["method"] if ln["required"] else f"*{ln['method']}*"
        seeds = f"{ln['seeds']} ({ln['want']})" if ln["required"] else str(ln["seeds"])
        if ln["seeds"] < ln["want"] and ln["required"]:
            seeds = f"**{seeds}**"
        if not s:
            out.append(f"| {ln['organism']} | {name} | {seeds} | not measured | | | | | |")
            continue
        planted = "—" if ln["null"] else _ci(s.get("planted_recall"))
        real = "—" if ln["null"] else _ci(s.get("real_recall"))
        out.append(f"| {ln['organism']} | {name} | {seeds} | {planted} | {real} | {_ci(s.get('precision'))} "
                   f"| {_ci(s.get('fdp'))} | {_share(s['any_discovery'])} | {_fmt_tokens(s.get('tokens'))} |")
    out += ["", "Required methods: " + ", ".join(manifest["methods"]) + "; methods in *italics* were "
            "measured but are not asked for by issue 13.", ""]
    out += ["**Gaps**" if gaps else "**Gaps**: none", ""]
    out += [f"- {g}" for g in gaps]
    if provenance:
        out += ["", "Provenance (one build cannot be checked where rows carry no build record):", ""]
        out += [f"- {p}" for p in provenance]
    out += ["", "Sources (`benchmarks/coverage.json`):", ""]
    for org, entry in manifest["organisms"].items():
        srcs = ", ".join(f"`{s['dir']}`" + (f" ({', '.join(s['methods'])})" if s.get("methods") else "")
                         for s in entry["sources"])
        out.append(f"- {org}: {srcs}")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", default=str(ROOT / "benchmarks" / "coverage.json"))
    ap.add_argument("--out", default=None, help="write the markdown here (default: print it)")
    args = ap.parse_args()
    manifest = json.loads(Path(args.manifest).read_text())
    lines, gaps, provenance = coverage(manifest)
    md = markdown(lines, gaps, provenance, manifest)
    if args.out:
        Path(args.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
