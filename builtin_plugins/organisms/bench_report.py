"""``md bench`` output: markdown tables with intervals, and the plots (cost against universe
size per method, recall against cost) written next to ``bench.json`` / ``bench.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 1e4 else str(x)
    return str(x)


def _ci(stat: dict[str, Any], digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    if stat.get("lo") is None:
        return _fmt(stat["mean"], digits)
    return f"{_fmt(stat['mean'], digits)} [{_fmt(stat['lo'], digits)}, {_fmt(stat['hi'], digits)}]"


def _share(stat: dict[str, Any]) -> str:
    if not stat or stat.get("share") is None:
        return "—"
    return f"{stat['k']}/{stat['n']} = {stat['share']:.2f} [{stat['lo']:.2f}, {stat['hi']:.2f}]"


def summary_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = ["Means over seeds with 95 % t-intervals (clipped to the statistic's range); shares "
             "with 95 % Wilson intervals. "
             "`tokens` = prompt + generated + 2 × backward tokens (md_framework.costs).", "",
             "| organism | families | method | seeds | planted recall | real-unit recall | precision "
             "| FDP | runs with a false discovery | runs with any discovery | tokens | queries "
             "| wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        lines.append(
            f"| {e['organism']} | {e.get('families') or '—'} | {e['method']} | {e['seeds']} "
            f"| {_ci(e['planted_recall'])} | {_ci(e['real_recall'])} | {_ci(e['precision'])} "
            f"| {_ci(e['fdp'])} | {_share(e['any_false'])} | {_share(e['any_discovery'])} "
            f"| {_ci(e['tokens'], 0)} | {_ci(e['queries'], 0)} | {_ci(e['wall_s'], 1)} |")
    return lines


def run_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| organism | seed | method | status | planted recall | real recall | precision "
             "| claimed units | false | tokens | prompt tok | generated tok | backward | queries "
             "| circuit passes | wall s |", "|" + "---|" * 16]
    for r in rows:
        if r["status"] == "ok":
            lines.append(
                f"| {r['organism']} | {r['seed']} | {r['method']} | ok | {_fmt(r['planted_recall'])} "
                f"| {_fmt(r['real_recall'])} | {_fmt(r['precision'])} | {r['claimed_units']} "
                f"| {r['false_discoveries']} | {_fmt(r['tokens'])} | {_fmt(r['prompt_tokens'])} "
                f"| {_fmt(r['generated_tokens'])} | {r['backward_passes']} | {_fmt(r['queries'])} "
                f"| {r['circuit_passes']} | {_fmt(r['wall_s'], 1)} |")
        else:
            err = (r.get("error") or "").replace("|", "/").splitlines()[0][:90] if r.get("error") else ""
            lines.append(f"| {r['organism']} | {r['seed']} | {r['method']} | {r['status']}: {err} "
                         + "| — " * 12 + "|")
    return lines


def ratio_table(ratio_rows: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in ratio_rows:
        groups.setdefault((r["organism"], r["ratio"]), []).append(r)
    lines = ["Token ratios at equal planted recall (seeds where both methods reached the same "
             "recall; the others are counted, not averaged).", "",
             "| organism | ratio | seeds at equal recall | mean ratio | min | max |",
             "|---|---|---|---|---|---|"]
    for (org, name), rs in sorted(groups.items()):
        vals = [r["value"] for r in rs if r["value"] is not None]
        lines.append(f"| {org} | {name} | {len(vals)}/{len(rs)} | "
                     f"{_fmt(sum(vals) / len(vals)) if vals else '—'} | "
                     f"{_fmt(min(vals)) if vals else '—'} | {_fmt(max(vals)) if vals else '—'} |")
    return lines


STAGES = ("load", "trace", "discover", "validate", "causal", "examples")


def stage_table(rows: list[dict[str, Any]]) -> list[str]:
    """Mean tokens per pipeline stage (the analyzer's ``Costs.tokens_by_stage``), per
    organism and method, with each stage's share of the method's counted tokens."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("tokens_by_stage"):
            groups.setdefault((r["organism"], r["method"]), []).append(r)
    if not groups:
        return ["(no pipeline run recorded a per-stage split)"]
    lines = ["| organism | method | runs | " + " | ".join(STAGES) + " | total counted |",
             "|---|---|---|" + "---|" * len(STAGES) + "---|"]
    for (org, method), rs in sorted(groups.items()):
        total = sum(r["tokens"] for r in rs) / len(rs)
        cells = []
        for stage in STAGES:
            mean = sum(r["tokens_by_stage"].get(stage, 0) for r in rs) / len(rs)
            cells.append(f"{mean / 1000:.1f}k ({mean / total:.0%})" if total else f"{mean / 1000:.1f}k")
        lines.append(f"| {org} | {method} | {len(rs)} | " + " | ".join(cells) + f" | {total / 1000:.1f}k |")
    return lines


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
             ratio_rows: list[dict[str, Any]]) -> str:
    lines = ["## Summary", ""] + summary_table(summary) + ["", "## Runs", ""] + run_table(rows)
    lines += ["", "## Cost ratios", ""] + ratio_table(ratio_rows)
    lines += ["", "## Pipeline tokens by stage (mean per run; share of the method's tokens)", ""]
    lines += stage_table(rows)
    return "\n".join(lines) + "\n"


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, layout, PNG at 110 dpi, figure closed: the tail every bench plot shares."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(summary: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``scaling.png`` (mean tokens against families per method, when the bench covered more
    than one universe size) and ``recall_cost.png`` (planted recall against tokens)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    methods = sorted({e["method"] for e in summary})
    sizes = sorted({e["families"] for e in summary if e.get("families")})
    if len(sizes) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            # by size only: two organisms of one size would otherwise compare token dicts
            pts = sorted(((e["families"], e["tokens"]) for e in summary
                          if e["method"] == m and e.get("families") and e["tokens"]["mean"] is not None),
                         key=lambda p: p[0])
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1]["mean"] for p in pts]
            err = [[p[1]["mean"] - (p[1]["lo"] if p[1]["lo"] is not None else p[1]["mean"]) for p in pts],
                   [(p[1]["hi"] if p[1]["hi"] is not None else p[1]["mean"]) - p[1]["mean"] for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("families in the universe")
        ax.set_ylabel("tokens (forward-token equivalents)")
        ax.set_title("cost against universe size (mean, 95 % CI)")
        written.append(_save(fig, ax, Path(out_dir) / "scaling.png"))
    pts = [e for e in summary if e["planted_recall"]["mean"] is not None and e["tokens"]["mean"]]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            es = [e for e in pts if e["method"] == m]
            if es:
                ax.scatter([e["tokens"]["mean"] for e in es], [e["planted_recall"]["mean"] for e in es],
                           label=m)
                for e in es:
                    ax.annotate(f"{e['organism']}", (e["tokens"]["mean"], e["planted_recall"]["mean"]),
                                fontsize=5)
        ax.set_xscale("log")
        ax.set_xlabel("tokens (forward-token equivalents, mean over seeds)")
        ax.set_ylabel("planted recall (mean over seeds)")
        ax.set_title("recall against cost")
        written.append(_save(fig, ax, Path(out_dir) / "recall_cost.png"))
    return written


def check_one_build(rows: list[dict[str, Any]]) -> None:
    """ValueError if rows of one organism name come from different builds (other models or
    other real units, ``row["build"]`` of :func:`builtin_plugins.organisms.bench.build_identity`):
    a summary over seeds of two builds would average two different organisms. Rows written
    before bench rows carried their build (no ``build`` key) cannot be checked and pass."""
    first: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for r in rows:
        build = r.get("build")
        if not build:
            continue
        seen = first.setdefault(r["organism"], (r, build))
        if seen[1] != build:
            differ = sorted(k for k in set(build) | set(seen[1]) if build.get(k) != seen[1].get(k))
            raise ValueError(
                f"{r['organism']}: seed {seen[0]['seed']} {seen[0]['method']} and seed {r['seed']} "
                f"{r['method']} come from different builds ({', '.join(differ)} differ); "
                "merge each build's rows separately")


def write_rows(out_dir: Path, rows: list[dict[str, Any]], header: dict[str, Any],
               note: str = "") -> str:
    """``bench.json`` / ``bench.md`` and the plots for rows gathered from earlier runs (the
    merge and re-score scripts in benchmarks/): summary over seeds, token ratios, ``note``
    appended to the markdown, ``header`` as the JSON's first keys. Returns the markdown."""
    import json

    from builtin_plugins.organisms.bench import ratios
    from builtin_plugins.organisms.scoring import summarise

    check_one_build(rows)
    rows.sort(key=lambda r: (r["organism"], r["seed"], r["method"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, ratio_rows = summarise(rows), ratios(rows)
    md = markdown(rows, summary, ratio_rows) + note
    paths = plots(summary, out_dir)
    if paths:
        md += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in paths) + "\n"
    (out_dir / "bench.json").write_text(json.dumps(
        {**header, "rows": rows, "summary": summary, "ratios": ratio_rows,
         "plots": [str(p) for p in paths]}, indent=2, default=str))
    (out_dir / "bench.md").write_text(md)
    return md
