"""Matplotlib plots of a report. Figures are built without pyplot (no global state, no GUI
backend): each function returns a :class:`matplotlib.figure.Figure` that
:func:`save_figure` writes as PNG with the Agg canvas.

Colour convention everywhere: **increase = red (warm), decrease = blue (cool)**, on the
diverging ``RdBu_r`` map centred at 0 with a symmetric range.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from md_framework.types import (
    AnalysisReport,
    BanditRound,
    CircuitDiff,
    CircuitGraph,
    DecisionRecord,
    SystematicChange,
    ValidationResult,
)

CMAP = "RdBu_r"
INCREASE_COLOUR = "#c0392b"
DECREASE_COLOUR = "#2e6fb5"
VALIDATED_COLOUR = "#1e8449"
REJECTED_COLOUR = "#7f8c8d"
DPI = 110


def _has_display() -> bool:
    """Whether a browser window could open: a desktop OS, or X11/Wayland on Linux."""
    import sys

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_png(path: Path, *, title: str = "md-framework figure") -> Path:
    """Show a saved PNG: open it in the web browser when a display exists, otherwise print
    where it is (a headless machine has nothing to show it on). Returns the path."""
    if _has_display():
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    else:
        print(f"{title}: saved to {path} (no display to open it on)")
    return path


def _figure_class() -> Any:
    from matplotlib.figure import Figure

    class MDFigure(Figure):
        """A matplotlib figure that can be shown without pyplot: :meth:`show` saves a PNG
        (in a temporary directory unless a path is given) and opens it in the browser when
        a display exists, else prints the path; :meth:`save` writes a PNG."""

        def save(self, path: str | os.PathLike[str]) -> Path:
            return save_figure(self, path)

        def show(self, path: str | os.PathLike[str] | None = None, warn: bool = True) -> Path:  # noqa: ARG002
            import tempfile

            if path is None:
                folder = Path(tempfile.mkdtemp(prefix="md-figure-"))
                path = folder / "figure.png"
            return show_png(save_figure(self, path))

    return MDFigure


_FIGURE_CLASS: Any = None


def _figure(width: float, height: float) -> Any:
    global _FIGURE_CLASS
    if _FIGURE_CLASS is None:
        _FIGURE_CLASS = _figure_class()
    return _FIGURE_CLASS(figsize=(width, height), dpi=DPI, layout="constrained")


def _txt(text: Any, limit: int = 60) -> str:
    """Plain text for matplotlib: no mathtext (``$``), shortened to ``limit`` characters."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG (Agg) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def _norm(values: Iterable[float]) -> Any:
    from matplotlib.colors import CenteredNorm

    half = max((abs(v) for v in values), default=0.0)
    return CenteredNorm(vcenter=0.0, halfrange=half if half > 0 else 1.0)


def _empty(fig: Any, ax: Any, message: str) -> Any:
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555",
            transform=ax.transAxes)
    return fig


# --------------------------------------------------------------------------- heatmap


@dataclass
class HeatmapLayout:
    """Rows are layers (low to high), columns the k-th largest |change| within the layer."""

    layers: list[int]
    n_cols: int
    values: list[list[float | None]]
    labels: list[list[str]]
    cell_of: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)


def heatmap_layout(changes: Sequence[SystematicChange], per_layer: int = 10) -> HeatmapLayout:
    by_layer: dict[int, list[SystematicChange]] = defaultdict(list)
    for change in changes:
        by_layer[change.feature.layer].append(change)
    if not by_layer:
        return HeatmapLayout([], 0, [], [])
    layers = list(range(min(by_layer), max(by_layer) + 1))
    n_cols = min(per_layer, max(len(v) for v in by_layer.values()))
    values: list[list[float | None]] = []
    labels: list[list[str]] = []
    cell_of: dict[tuple[int, int], tuple[int, int]] = {}
    for row, layer in enumerate(layers):
        ranked = sorted(by_layer.get(layer, []), key=lambda c: -abs(c.mean_delta))[:n_cols]
        values.append([c.mean_delta for c in ranked] + [None] * (n_cols - len(ranked)))
        labels.append([f"#{c.feature.feature}\n{c.mean_delta:+.2f}" for c in ranked]
                      + [""] * (n_cols - len(ranked)))
        for col, c in enumerate(ranked):
            cell_of[(layer, c.feature.feature)] = (row, col)
    return HeatmapLayout(layers, n_cols, values, labels, cell_of)


def plot_circuit_heatmap(
    changes: Sequence[SystematicChange] | CircuitDiff, per_layer: int = 10, title: str | None = None
) -> Any:
    """Signed layer × feature heatmap of systematic activation changes (red up, blue down)."""
    import numpy as np

    if isinstance(changes, CircuitDiff):
        changes = changes.systematic_changes
    layout = heatmap_layout(changes, per_layer)
    fig = _figure(max(6.0, 1.0 + 0.95 * layout.n_cols), max(3.0, 1.4 + 0.55 * len(layout.layers)))
    ax = fig.add_subplot()
    if not layout.layers:
        return _empty(fig, ax, "No systematic feature changes")
    data = np.ma.masked_invalid(np.array(
        [[np.nan if v is None else v for v in row] for row in layout.values], dtype=float))
    norm = _norm(v for row in layout.values for v in row if v is not None)
    from matplotlib import colormaps

    cmap = colormaps[CMAP].with_extremes(bad="#f2f2f2")
    image = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto", origin="lower",
                      interpolation="nearest")
    for row, row_labels in enumerate(layout.labels):
        for col, label in enumerate(row_labels):
            if label:
                value = layout.values[row][col] or 0.0
                strong = abs(norm(value) - 0.5) > 0.3
                ax.text(col, row, label, ha="center", va="center", fontsize=7.5,
                        color="white" if strong else "#222")
    ax.set_yticks(range(len(layout.layers)), [str(layer) for layer in layout.layers])
    ax.set_xticks(range(layout.n_cols), [str(k + 1) for k in range(layout.n_cols)])
    ax.set_ylabel("layer")
    ax.set_xlabel("k-th largest |change| in the layer (cell: feature #, mean Δ)")
    ax.set_title(title or "Systematic feature changes (intervention − base)", fontsize=11)
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("mean activation change\nred = increase · blue = decrease")
    return fig


# --------------------------------------------------------------------------- validation


def _evidence(result: ValidationResult) -> tuple[float | None, float | None, str]:
    """(strength, threshold, label) on one 'higher is stronger' log scale."""
    level = result.test_level
    if result.p_value is not None:
        strength = -math.log10(max(result.p_value, 1e-300))
        threshold = -math.log10(level) if level else None
        return strength, threshold, f"p={result.p_value:.2g}"
    if result.e_value is not None:
        strength = math.log10(max(result.e_value, 1e-300))
        threshold = math.log10(1 / level) if level else None
        return strength, threshold, f"e={result.e_value:.2g}"
    return None, None, "no test"


def _result_labels(results: Sequence[ValidationResult], limit: int = 48) -> list[str]:
    """Row labels that tell hypotheses apart: type and families (a refinement's split names
    fewer families than its parent), numbered when two would still read the same."""
    labels = []
    for r in results:
        h = r.hypothesis
        families = ", ".join(h.families) or "all families"
        label = _txt(f"{str(h.hypothesis_type).replace('_', ' ')} · {families}", limit)
        if "/split:" in h.id:
            label = _txt(f"{str(h.hypothesis_type).replace('_', ' ')} · {families} (split)", limit)
        labels.append(label)
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return out


def plot_validation_dashboard(results: Sequence[ValidationResult]) -> Any:
    """Left: effect sizes with CIs; right: evidence vs the FDR test level; decision coloured."""
    fig = _figure(10.0, max(2.8, 1.3 + 0.55 * len(results)))
    if not results:
        return _empty(fig, fig.add_subplot(), "No hypotheses were validated or rejected")
    ax_eff, ax_ev = fig.subplots(1, 2, sharey=True, width_ratios=[3, 2])
    rows = list(range(len(results)))[::-1]
    names = _result_labels(results)
    for y, result in zip(rows, results):
        colour = VALIDATED_COLOUR if result.decision else REJECTED_COLOUR
        es = result.effect_size
        if es is not None:
            lo = es.estimate - es.ci_low if es.ci_low is not None else 0.0
            hi = es.ci_high - es.estimate if es.ci_high is not None else 0.0
            ax_eff.errorbar(es.estimate, y, xerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o" if result.decision else "s",
                            color=colour, ecolor=colour, capsize=4, markersize=7,
                            markerfacecolor=colour if result.decision else "white")
            ax_eff.annotate(_txt(es.name, 24), (es.estimate, y), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=7, color="#555")
        strength, threshold, label = _evidence(result)
        if strength is not None:
            ax_ev.barh(y, strength, color=colour, alpha=0.85, height=0.55)
            ax_ev.text(strength, y, f" {label}", va="center", fontsize=8)
        if threshold is not None:
            ax_ev.plot([threshold, threshold], [y - 0.38, y + 0.38], color="#c0392b", lw=2)
    ax_eff.axvline(0, color="#444", lw=0.8, ls="--")
    ax_eff.set_yticks(rows, names, fontsize=8)
    ax_eff.set_xlabel("effect size (intervention − base) with CI")
    ax_eff.set_title("Effect sizes", fontsize=11)
    ax_ev.set_xlabel("−log10 p  or  log10 e  (red tick = level)")
    ax_ev.set_title("Evidence vs FDR level", fontsize=11)
    top = max([_evidence(r)[0] or 0.0 for r in results] + [_evidence(r)[1] or 0.0 for r in results])
    ax_ev.set_xlim(0, max(1.0, top) * 1.35)
    from matplotlib.lines import Line2D

    ax_eff.legend(handles=[
        Line2D([], [], marker="o", color=VALIDATED_COLOUR, ls="", label="validated"),
        Line2D([], [], marker="s", color=REJECTED_COLOUR, markerfacecolor="white", ls="",
               label="not validated"),
    ], loc="lower right", fontsize=8, frameon=False)
    ax_eff.margins(y=0.15)
    return fig


# --------------------------------------------------------------------------- network graph


@dataclass
class NetworkData:
    nodes: dict[str, dict[str, Any]]  # key -> {layer, label, delta[, interp]}
    edges: list[tuple[str, str, float, str]]  # source, target, change, status
    note: str = ""  # what was left out (shown under the plot)


def _node_key(node_id: str) -> tuple[str, int | None, str]:
    """Collapse a positional node id to (key, layer, label) so prompts can be pooled."""
    parts = node_id.split(":")
    kind = parts[0]
    if kind == "F" and len(parts) == 4:
        return f"F:{parts[1]}:{parts[3]}", int(parts[1]), f"L{parts[1]}#{parts[3]}"
    if kind == "E" and len(parts) == 3:
        return f"E:{parts[1]}", int(parts[1]), f"err L{parts[1]}"
    if kind == "T" and len(parts) == 3:
        return f"T:{parts[2]}", None, f"tok {parts[2]}"
    if kind == "L" and len(parts) == 2:
        return f"L:{parts[1]}", None, f"logit {parts[1]}"
    return node_id, None, node_id


def _interp_label(interpretations: Mapping[str, Any] | None, layer: int, feature: int,
                  limit: int = 24) -> str:
    for item in (interpretations or {}).get(f"{layer}:{feature}", []) or []:
        text = getattr(item, "description", None) or (item.get("description") if isinstance(item, Mapping) else None)
        if text:
            return _txt(text, limit)
    return ""


def network_from_diff(diff: CircuitDiff, max_edges: int = 24, *, max_nodes: int = 12,
                      interpretations: Mapping[str, Any] | None = None) -> NetworkData:
    """The top ``max_nodes`` changed features (screened changes first, then by |mean
    change|), labelled with their interpretations, and the ``max_edges`` largest pooled
    edge changes touching them (their other endpoints are added: tokens, logits, features).
    Everything else is left out so the plot stays readable; ``data.note`` says how much."""
    ranked = sorted(diff.systematic_changes,
                    key=lambda c: (not (c.q_value is not None and c.q_value <= 0.1), -abs(c.mean_delta)))
    nodes: dict[str, dict[str, Any]] = {}
    for change in ranked[:max_nodes]:
        f = change.feature
        nodes[f"F:{f.layer}:{f.feature}"] = {
            "layer": f.layer, "label": f"L{f.layer}#{f.feature}", "delta": change.mean_delta,
            "interp": _interp_label(interpretations, f.layer, f.feature)}
    if not nodes:  # no systematic changes: the largest per-prompt feature changes
        pooled_nodes: dict[str, list[float]] = defaultdict(list)
        meta: dict[str, tuple[int | None, str]] = {}
        for prompt_diff in diff.prompt_diffs:
            for fc in prompt_diff.feature_changes:
                key, layer, label = _node_key(fc.node_id)
                pooled_nodes[key].append(fc.delta)
                meta[key] = (layer, label)
        top = sorted(pooled_nodes, key=lambda k: -abs(sum(pooled_nodes[k]) / len(pooled_nodes[k])))
        for key in top[:max_nodes]:
            layer, label = meta[key]
            parts = key.split(":")
            interp = _interp_label(interpretations, int(parts[1]), int(parts[2])) if len(parts) == 3 else ""
            nodes[key] = {"layer": layer, "label": label, "interp": interp,
                          "delta": sum(pooled_nodes[key]) / len(pooled_nodes[key])}
    pooled: dict[tuple[str, str], list[float]] = defaultdict(list)
    statuses: dict[tuple[str, str], set[str]] = defaultdict(set)
    labels: dict[str, tuple[int | None, str]] = {}
    n_edges = 0
    for prompt_diff in diff.prompt_diffs:
        for ec in prompt_diff.edge_changes:
            if ec.status == "unchanged":
                continue
            n_edges += 1
            (src, sl, slab), (tgt, tl, tlab) = _node_key(ec.source), _node_key(ec.target)
            if src not in nodes and tgt not in nodes:
                continue
            labels[src], labels[tgt] = (sl, slab), (tl, tlab)
            pooled[(src, tgt)].append(ec.intervention_weight - ec.base_weight)
            statuses[(src, tgt)].add(ec.status)
    edges = []
    for (src, tgt), deltas in pooled.items():
        status = next(iter(statuses[(src, tgt)])) if len(statuses[(src, tgt)]) == 1 else "reweighted"
        edges.append((src, tgt, sum(deltas) / len(deltas), status))
    edges.sort(key=lambda e: -abs(e[2]))
    edges = edges[:max_edges]
    for src, tgt, _, _ in edges:
        for key in (src, tgt):
            if key not in nodes:
                layer, label = labels[key]
                nodes[key] = {"layer": layer, "label": label, "delta": 0.0, "interp": ""}
    total = len(diff.systematic_changes)
    note = (f"top {min(total, max_nodes)} of {total} changed features" if total else "")
    if n_edges == 0:
        note += ("; " if note else "") + "the tracer recorded no edges (activation differences only)"
    elif len(edges) < n_edges:
        note += ("; " if note else "") + f"{len(edges)} largest edge changes touching them"
    return NetworkData(nodes, edges, note)


def network_from_graphs(base: CircuitGraph, intervention: CircuitGraph, max_edges: int = 40) -> NetworkData:
    bmap, imap = base.node_map(), intervention.node_map()
    nodes: dict[str, dict[str, Any]] = {}
    for nid in set(bmap) | set(imap):
        key, layer, label = _node_key(nid)
        node = imap.get(nid) or bmap[nid]
        if node.kind == "token" and node.token:
            label = _txt(repr(node.token), 14)
        elif node.kind == "logit" and node.token:
            label = "→ " + _txt(repr(node.token), 12)
        b = (bmap[nid].activation or 0.0) if nid in bmap else 0.0
        i = (imap[nid].activation or 0.0) if nid in imap else 0.0
        nodes[key] = {"layer": layer, "label": label, "delta": i - b}
    bw = {(e.source, e.target): e.weight for e in base.edges}
    iw = {(e.source, e.target): e.weight for e in intervention.edges}
    edges = []
    for pair in set(bw) | set(iw):
        status = "new" if pair not in bw else "removed" if pair not in iw else "reweighted"
        delta = iw.get(pair, 0.0) - bw.get(pair, 0.0)
        if status == "reweighted" and abs(delta) < 1e-12:
            continue
        edges.append((_node_key(pair[0])[0], _node_key(pair[1])[0], delta, status))
    edges.sort(key=lambda e: -abs(e[2]))
    edges = edges[:max_edges]
    used = {e[0] for e in edges} | {e[1] for e in edges}
    changed = sorted((k for k, v in nodes.items() if abs(v["delta"]) > 1e-12),
                     key=lambda k: -abs(nodes[k]["delta"]))
    keep = used | set(changed[:12])
    left = len(set(changed) - keep)
    nodes = {k: v for k, v in nodes.items() if k in keep}
    return NetworkData(nodes, edges, f"{left} smaller node changes not drawn" if left else "")


_EDGE_STYLE = {"new": (INCREASE_COLOUR, "-"), "removed": (DECREASE_COLOUR, "--"),
               "reweighted": ("#8e44ad", ":")}


def plot_network(data: NetworkData, title: str | None = None) -> Any:
    """Layered graph: x = layer (tokens left, logits right), node colour = activation change,
    edge colour = new (red) / removed (blue, dashed) / reweighted (purple, dotted); each
    feature labelled with its id and interpretation beside the node."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    layers = [n["layer"] for n in data.nodes.values() if n["layer"] is not None]
    lo, hi = (min(layers), max(layers)) if layers else (0, 0)

    def column(key: str, node: Mapping[str, Any]) -> float:
        if key.startswith("T:"):
            return lo - 1
        if key.startswith("L:"):
            return hi + 1
        return float(node["layer"]) if node["layer"] is not None else hi + 0.5

    columns: dict[float, list[str]] = defaultdict(list)
    for key, node in sorted(data.nodes.items(), key=lambda kv: (-abs(kv[1]["delta"]), kv[0])):
        columns[column(key, node)].append(key)
    tallest = max((len(v) for v in columns.values()), default=1)
    width = min(12.0, max(8.0, 1.8 * len(columns) + 1.5))
    fig = _figure(width, max(4.5, 0.85 * tallest + 2.2))
    ax = fig.add_subplot()
    if not data.nodes:
        return _empty(fig, ax, "No changed circuit nodes")
    pos: dict[str, tuple[float, float]] = {}
    for c, (x, keys) in enumerate(sorted(columns.items())):
        for i, key in enumerate(keys):  # largest change at the top; odd columns staggered
            pos[key] = (x, -float(i) - (0.45 if c % 2 else 0.0))
    widths = [abs(e[2]) for e in data.edges] or [1.0]
    wmax = max(widths) or 1.0
    for src, tgt, delta, status in data.edges:
        if src not in pos or tgt not in pos:
            continue
        colour, style = _EDGE_STYLE.get(status, ("#999", "-"))
        ax.add_patch(FancyArrowPatch(pos[src], pos[tgt], arrowstyle="-|>", mutation_scale=11,
                                     color=colour, lw=0.8 + 3.2 * abs(delta) / wmax, ls=style,
                                     alpha=0.75, shrinkA=9, shrinkB=9,
                                     connectionstyle="arc3,rad=0.08", zorder=1))
    norm = _norm(n["delta"] for n in data.nodes.values())
    from matplotlib import colormaps

    cmap = colormaps[CMAP]
    keys = list(pos)
    scat = ax.scatter([pos[k][0] for k in keys], [pos[k][1] for k in keys],
                      c=[data.nodes[k]["delta"] for k in keys], cmap=cmap, norm=norm, s=260,
                      edgecolors="#333", linewidths=0.8, zorder=2)
    for k in keys:
        node = data.nodes[k]
        text = _txt(node["label"], 18)
        if abs(node["delta"]) > 1e-12:
            text += f"  Δ{node['delta']:+.2f}"
        if node.get("interp"):
            text += "\n" + node["interp"]
        ax.annotate(text, pos[k], textcoords="offset points", xytext=(0, -11), ha="center",
                    va="top", fontsize=7.5, zorder=3, linespacing=1.1,
                    bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.85})
    xs = sorted(columns)
    ax.set_xticks(xs, ["tokens" if x == lo - 1 else "logits" if x == hi + 1 else
                       f"layer {int(x)}" if float(x).is_integer() else "" for x in xs])
    ax.set_yticks([])
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-tallest - 0.3, 0.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(scat, ax=ax, shrink=0.8)
    bar.set_label("activation change\nred = increase · blue = decrease")
    if data.edges:
        fig.legend(handles=[Line2D([], [], color=c, ls=st, lw=2, label=f"{name} edge")
                            for name, (c, st) in _EDGE_STYLE.items()],
                   loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    heading = title or "Changed circuit: largest feature changes and their edges"
    import textwrap

    note = "\n".join(textwrap.wrap(f"({data.note})", int(width * 9))) if data.note else ""
    ax.set_title(heading + (f"\n{note}" if note else ""), fontsize=10)
    return fig


# --------------------------------------------------------------------------- FDR and bandit


def plot_fdr_trace(trace: Sequence[DecisionRecord]) -> Any:
    """Test level per decision (what the online procedure spends) with the observed values
    (p, or 1/e for e-values), rejections filled; below, cumulative discoveries."""
    fig = _figure(8.0, 4.6)
    if not trace:
        return _empty(fig, fig.add_subplot(), "No online FDR decisions recorded")
    ax, ax_cum = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    trace = sorted(trace, key=lambda d: d.index)
    idx = [d.index for d in trace]
    levels = [max(d.level, 1e-12) for d in trace]
    pvals = [max(min(d.value if d.value_kind == "p" else 1 / max(d.value, 1e-12), 1.0), 1e-12)
             for d in trace]
    ax.step(idx, levels, where="mid", color="#c0392b", lw=2, label="test level αₜ")
    for d, p in zip(trace, pvals):
        colour = VALIDATED_COLOUR if d.rejected else REJECTED_COLOUR
        ax.scatter([d.index], [p], s=60, marker="o" if d.value_kind == "p" else "D",
                   color=colour if d.rejected else "white", edgecolors=colour, zorder=3)
        ax.annotate(_txt(d.hypothesis_id, 12), (d.index, p), textcoords="offset points",
                    xytext=(6, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("p-value or 1/e (log)")
    ax.set_title("Online FDR: levels and decisions over time", fontsize=11)
    from matplotlib.lines import Line2D

    ax.legend(handles=[
        Line2D([], [], color="#c0392b", lw=2, label="test level αₜ"),
        Line2D([], [], marker="o", ls="", color=VALIDATED_COLOUR, label="rejected null (discovery)"),
        Line2D([], [], marker="o", ls="", color=REJECTED_COLOUR, markerfacecolor="white", label="not rejected"),
        Line2D([], [], marker="D", ls="", color="#555", markerfacecolor="white", label="e-value (as 1/e)"),
    ], fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    cum, total = [], 0
    for d in trace:
        total += int(d.rejected)
        cum.append(total)
    ax_cum.step(idx, cum, where="post", color=VALIDATED_COLOUR, lw=2)
    ax_cum.fill_between(idx, cum, step="post", color=VALIDATED_COLOUR, alpha=0.15)
    ax_cum.set_ylabel("discoveries")
    ax_cum.set_xlabel("decision index")
    ax_cum.set_xticks(idx)
    return fig


def plot_bandit_pulls(rounds: Sequence[BanditRound]) -> Any:
    """Top: which arm was pulled in which round (cell colour = reward). Bottom: cumulative pulls."""
    import numpy as np

    fig = _figure(8.0, 5.0)
    if not rounds:
        return _empty(fig, fig.add_subplot(), "No exploration rounds recorded")
    arms = sorted({a for r in rounds for a in r.pulled} | {a for r in rounds for a in r.rewards})
    ax, ax_cum = fig.subplots(2, 1, sharex=True, height_ratios=[max(1.0, 0.35 * len(arms)), 2])
    xs = [r.round for r in rounds]
    grid = np.full((len(arms), len(rounds)), np.nan)
    for j, r in enumerate(rounds):
        for arm in r.pulled:
            grid[arms.index(arm), j] = r.rewards.get(arm, 0.0)
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="#f4f4f4")
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest",
                      extent=(min(xs) - 0.5, max(xs) + 0.5, len(arms) - 0.5, -0.5))
    ax.set_yticks(range(len(arms)), [_txt(a, 16) for a in arms], fontsize=8)
    ax.set_title("Bandit pulls per round (colour = reward)", fontsize=11)
    fig.colorbar(image, ax=ax, shrink=0.9).set_label("reward")
    counts = {a: 0 for a in arms}
    series: dict[str, list[int]] = {a: [] for a in arms}
    for r in rounds:
        for arm in r.pulled:
            counts[arm] += 1
        for arm in arms:
            series[arm].append(counts[arm])
    for arm in arms:
        ax_cum.step(xs, series[arm], where="post", lw=2, label=_txt(arm, 16))
    ax_cum.set_ylabel("cumulative pulls")
    ax_cum.set_xlabel("round")
    ax_cum.legend(fontsize=7.5, frameon=False, ncols=min(4, len(arms)))
    return fig


# --------------------------------------------------------------------------- sample efficiency


BENCH_FIELDS = ("method", "organism", "seed", "recall", "precision", "queries")


def read_bench_results(data: Any) -> list[dict[str, Any]]:
    """Rows of an ``md bench`` results JSON: a list of objects, or ``{"results": [...]}``.

    Each row needs ``method`` (str), ``queries`` (number) and ``recall`` (0..1);
    ``organism``, ``seed`` and ``precision`` are optional.
    """
    if isinstance(data, Mapping):
        data = data.get("results", [])
    if not isinstance(data, list):
        raise ValueError("bench results must be a list of rows or {'results': [...]}")
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, Mapping):
            raise ValueError(f"bench row {i} is not an object")
        missing = [k for k in ("method", "queries", "recall") if k not in row]
        if missing:
            raise ValueError(f"bench row {i} lacks {', '.join(missing)}")
        rows.append({"method": str(row["method"]), "organism": row.get("organism"),
                     "seed": row.get("seed"), "recall": float(row["recall"]),
                     "precision": None if row.get("precision") is None else float(row["precision"]),
                     "queries": float(row["queries"])})
    return rows


def plot_sample_efficiency(results: Any) -> Any:
    """Recall against behaviour queries per method: runs as dots, mean ± sd per budget as a line."""
    rows = read_bench_results(results)
    fig = _figure(7.5, 4.4)
    ax = fig.add_subplot()
    if not rows:
        return _empty(fig, ax, "No benchmark results")
    by_method: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_method[row["method"]][row["queries"]].append(row["recall"])
    for method in sorted(by_method):
        budgets = sorted(by_method[method])
        means = [sum(v) / len(v) for v in (by_method[method][q] for q in budgets)]
        sds = [math.sqrt(sum((x - m) ** 2 for x in v) / max(len(v) - 1, 1))
               for m, v in zip(means, (by_method[method][q] for q in budgets))]
        line = ax.errorbar(budgets, means, yerr=sds, marker="o", capsize=3, lw=2, label=_txt(method, 24))
        colour = line[0].get_color()
        pts = [(q, r) for q in budgets for r in by_method[method][q]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.3, color=colour)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("behaviour queries (log)")
    ax.set_ylabel("recall of planted changes")
    ax.set_title("Sample efficiency (mean ± sd over organisms and seeds)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    return fig


def all_report_figures(report: AnalysisReport) -> dict[str, Any]:
    """Name -> figure for every plot a report supports (skips those without data)."""
    figures: dict[str, Any] = {}
    diff = report.circuit_diff
    if diff is not None and diff.systematic_changes:
        figures["circuit_heatmap"] = plot_circuit_heatmap(diff)
    if diff is not None and (diff.systematic_changes or diff.prompt_diffs):
        figures["circuit_network"] = plot_network(
            network_from_diff(diff, interpretations=report.interpretations))
    if report.validation_results:
        figures["validation"] = plot_validation_dashboard(report.validation_results)
    if report.fdr_trace:
        figures["fdr_trace"] = plot_fdr_trace(report.fdr_trace)
    if report.bandit_rounds:
        figures["bandit_pulls"] = plot_bandit_pulls(report.bandit_rounds)
    return figures
