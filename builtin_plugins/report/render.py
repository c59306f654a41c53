"""Render everything a report supports into a directory: PNG plots, the HTML dashboard and
circuit-tracer graph exports, recorded in ``report.artefacts`` (paths relative to the
directory)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from md_framework.types import AnalysisReport

from builtin_plugins.report import plots as _plots
from builtin_plugins.report.graph_export import EXPORT_DIR, export_graph_pair
from builtin_plugins.report.html import render_html, write_html
from md_framework.run_dir import load_graph_pairs

HTML_FILE = "report.html"
PLOTS_DIR = "plots"
#: ``md bench`` results picked up automatically when present in the report directory.
BENCH_FILES = ("bench.json", "bench-results.json")
MAX_GRAPH_PLOTS = 3


def find_bench(directory: Path) -> Path | None:
    for name in BENCH_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def render_report(
    report: AnalysisReport,
    out_dir: str | os.PathLike[str],
    *,
    source_dir: str | os.PathLike[str] | None = None,
    bench: Any = None,
) -> dict[str, str]:
    """Write plots, ``report.html`` and graph exports into ``out_dir``; returns (and merges
    into ``report.artefacts``) name -> relative path.

    ``source_dir`` is where stored graph pairs (``graphs/``) and ``bench.json`` are looked
    for (default ``out_dir``); ``bench`` is a path to, or the parsed content of, ``md bench``
    results.
    """
    out = Path(out_dir)
    source = Path(source_dir) if source_dir is not None else out
    out.mkdir(parents=True, exist_ok=True)
    artefacts: dict[str, str] = {}

    try:
        import matplotlib  # noqa: F401  (optional: pip install md-framework[report])
        have_plots = True
    except ImportError:
        warnings.warn("matplotlib is not installed: report.html is rendered without plots"
                      " (pip install 'md-framework[report]')", stacklevel=2)
        have_plots = False
    figures = _plots.all_report_figures(report) if have_plots else {}
    if bench is None:
        bench = find_bench(source)
    if bench is not None and have_plots:
        data = json.loads(Path(bench).read_text(encoding="utf-8")) if isinstance(bench, (str, os.PathLike)) else bench
        figures["sample_efficiency"] = _plots.plot_sample_efficiency(data)

    pairs = load_graph_pairs(source)
    exports: list[str] = []
    for i, (name, base, intervention) in enumerate(pairs):
        paths = export_graph_pair(base, intervention, out / EXPORT_DIR, name, report.interpretations)
        for kind, path in zip(("base", "intervention"), paths):
            rel = path.relative_to(out).as_posix()
            exports.append(rel)
            artefacts[f"circuit-tracer:{name}:{kind}"] = rel
        if i < MAX_GRAPH_PLOTS and have_plots:
            figures[f"graph_{name}"] = _plots.plot_network(
                _plots.network_from_graphs(base, intervention),
                title=f"Base vs intervention graph: {base.prompt}")
    if exports:
        artefacts["circuit-tracer:metadata"] = f"{EXPORT_DIR}/graph-metadata.json"

    pngs: dict[str, bytes] = {}
    files: dict[str, str] = {}
    for name, fig in figures.items():
        path = _plots.save_figure(fig, out / PLOTS_DIR / f"{name}.png")
        pngs[name] = path.read_bytes()
        files[name] = path.relative_to(out).as_posix()
        artefacts[f"plot:{name}"] = files[name]
    html_text = render_html(report, plots=pngs, plot_files=files, exports=exports, export_dir=EXPORT_DIR)
    write_html(out / HTML_FILE, html_text)
    artefacts["html"] = HTML_FILE
    report.artefacts = {**report.artefacts, **artefacts}
    return artefacts
