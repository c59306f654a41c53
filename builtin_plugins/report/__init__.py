"""Reports: versioned JSON, terminal summary, self-contained HTML dashboard, plots and
circuit-tracer graph export. See docs/reports.md."""

from __future__ import annotations

from builtin_plugins.report.io import REPORT_FILE, load_report, save_report
from md_framework.run_dir import load_graph_pairs, save_graph_pair

__all__ = [
    "REPORT_FILE", "CircuitVisualizer", "export_graph_pair", "load_graph_pairs", "load_report",
    "print_rich_summary", "render_report", "save_graph_pair", "save_report",
]


def __getattr__(name: str):  # matplotlib/jinja2/rich load only when used
    if name == "CircuitVisualizer":
        from builtin_plugins.report.visualizer import CircuitVisualizer
        return CircuitVisualizer
    if name == "print_rich_summary":
        from builtin_plugins.report.summary import print_rich_summary
        return print_rich_summary
    if name == "render_report":
        from builtin_plugins.report.render import render_report
        return render_report
    if name == "export_graph_pair":
        from builtin_plugins.report.graph_export import export_graph_pair
        return export_graph_pair
    raise AttributeError(name)
