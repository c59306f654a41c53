"""``CircuitVisualizer``: the seed README's plotting API, on top of :mod:`.plots`.

Every method returns the saved :class:`~pathlib.Path` when ``save_path`` is given, otherwise
the matplotlib :class:`~matplotlib.figure.Figure`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from md_framework.types import AnalysisReport, CircuitDiff, CircuitGraph, SystematicChange

from builtin_plugins.report import plots


class CircuitVisualizer:
    def __init__(self, output_dir: str | os.PathLike[str] | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None

    def _finish(self, fig: Any, save_path: str | os.PathLike[str] | None) -> Any:
        if save_path is None:
            return fig
        path = Path(save_path)
        if not path.is_absolute() and self.output_dir is not None:
            path = self.output_dir / path
        return plots.save_figure(fig, path)

    def visualize_circuit_difference(
        self, diff: CircuitDiff | Sequence[SystematicChange], save_path: str | os.PathLike[str] | None = None,
        per_layer: int = 10, title: str | None = None,
    ) -> Any:
        """Signed layer × feature heatmap (red = increase, blue = decrease)."""
        return self._finish(plots.plot_circuit_heatmap(diff, per_layer=per_layer, title=title), save_path)

    def create_summary_dashboard(
        self, report: AnalysisReport, save_path: str | os.PathLike[str] | None = None,
    ) -> Any:
        """Hypothesis validation dashboard: effect sizes with CIs, evidence vs FDR level, decisions."""
        return self._finish(plots.plot_validation_dashboard(report.validation_results), save_path)

    def create_circuit_network_graph(
        self, diff_or_graphs: CircuitDiff | tuple[CircuitGraph, CircuitGraph],
        save_path: str | os.PathLike[str] | None = None, max_edges: int = 40, title: str | None = None,
    ) -> Any:
        """Network of changed nodes/edges from a ``CircuitDiff`` or a ``(base, intervention)`` graph pair."""
        if isinstance(diff_or_graphs, CircuitDiff):
            data = plots.network_from_diff(diff_or_graphs, max_edges=max_edges)
        else:
            base, intervention = diff_or_graphs
            data = plots.network_from_graphs(base, intervention, max_edges=max_edges)
        return self._finish(plots.plot_network(data, title=title), save_path)

    def create_fdr_plot(self, report: AnalysisReport, save_path: str | os.PathLike[str] | None = None) -> Any:
        return self._finish(plots.plot_fdr_trace(report.fdr_trace), save_path)

    def create_bandit_plot(self, report: AnalysisReport, save_path: str | os.PathLike[str] | None = None) -> Any:
        return self._finish(plots.plot_bandit_pulls(report.bandit_rounds), save_path)

    def create_sample_efficiency_plot(self, bench_results: Any, save_path: str | os.PathLike[str] | None = None) -> Any:
        """``bench_results``: rows ``{method, organism, seed, recall, precision, queries}``."""
        return self._finish(plots.plot_sample_efficiency(bench_results), save_path)
