"""Scaling-study figures from a merged ``bench.json`` (``benchmarks/organisms-merge.py``).

Writes next to it, per method, against the number of families in the universe:

* ``scaling_cost.png``   – tokens (left) and behavioural queries (right), log-log;
* ``scaling_recall.png`` – planted recall (left) and real-unit recall (right);
* ``scaling_recall_cost.png`` – planted recall against tokens, one line per method joining
  the universe sizes (marker size grows with the universe).

Points are means over seeds; bars are the 95 % t-intervals that ``scoring.summarise`` wrote
(none for a single seed). Reads JSON only and writes PNG only.

    python benchmarks/scaling_plots.py benchmarks/scaling-toy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _series(summary, method, stat):
    pts = sorted((e["families"], e[stat]) for e in summary
                 if e["method"] == method and e.get("families") and e[stat]["mean"] is not None)
    xs = [p[0] for p in pts]
    ys = [p[1]["mean"] for p in pts]
    lo = [y - (p[1]["lo"] if p[1]["lo"] is not None else y) for y, p in zip(ys, pts)]
    hi = [(p[1]["hi"] if p[1]["hi"] is not None else y) - y for y, p in zip(ys, pts)]
    return xs, ys, [lo, hi]


def _panel(ax, summary, methods, stat, ylabel, log_y):
    for m in methods:
        xs, ys, err = _series(summary, m, stat)
        if xs:
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    sizes = sorted({e["families"] for e in summary if e.get("families")})
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())  # log-axis minor labels overprint the sizes
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("families in the universe")
    ax.set_ylabel(ylabel)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser()
    ap.add_argument("merged", help="folder holding a merged bench.json")
    args = ap.parse_args()
    out = Path(args.merged)
    summary = json.loads((out / "bench.json").read_text())["summary"]
    methods = sorted({e["method"] for e in summary})

    for name, panels in (("scaling_cost", [("tokens", "tokens (forward-token equivalents)", True),
                                           ("queries", "behavioural queries", True)]),
                         ("scaling_recall", [("planted_recall", "planted recall", False),
                                             ("real_recall", "real-unit recall", False)])):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, (stat, label, log_y) in zip(axes, panels):
            _panel(ax, summary, methods, stat, label, log_y)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{name.replace('_', ' ')}: mean over seeds, 95 % CI", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        print(out / f"{name}.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        es = sorted((e for e in summary if e["method"] == m and e.get("families")
                     and e["tokens"]["mean"] and e["planted_recall"]["mean"] is not None),
                    key=lambda e: e["families"])
        if es:
            line, = ax.plot([e["tokens"]["mean"] for e in es],
                            [e["planted_recall"]["mean"] for e in es], label=m)
            ax.scatter([e["tokens"]["mean"] for e in es], [e["planted_recall"]["mean"] for e in es],
                       s=[10 + 3 * e["families"] ** 0.75 for e in es], color=line.get_color())
            for e in es:
                ax.annotate(str(e["families"]), (e["tokens"]["mean"], e["planted_recall"]["mean"]),
                            fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("tokens (mean over seeds)")
    ax.set_ylabel("planted recall (mean over seeds)")
    ax.set_title("recall against cost; labels: families in the universe", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scaling_recall_cost.png", dpi=110)
    plt.close(fig)
    print(out / "scaling_recall_cost.png")


if __name__ == "__main__":
    main()
