from __future__ import annotations

import numpy as np
import pytest

from builtin_plugins.report import CircuitVisualizer
from builtin_plugins.report import plots
from builtin_plugins.report.synthetic import synthetic_bench_results, synthetic_graph_pair
from md_framework.types import CircuitDiff, FeatureRef, SystematicChange


def _change(layer, feature, delta):
    return SystematicChange(feature=FeatureRef(layer=layer, feature=feature), mean_delta=delta, n_prompts=5)


def _cell_rgb(fig, row, col):
    """RGB of a heatmap cell, sampled away from its centred label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    ax = fig.axes[0]
    x, y = ax.transData.transform((col - 0.35, row + 0.3))
    return pixels[int(round(pixels.shape[0] - y)), int(round(x)), :3].astype(int)


def test_heatmap_sign_increase_is_red_decrease_is_blue(tmp_path):
    changes = [_change(3, 42, 1.5), _change(1, 7, -1.5), _change(2, 9, 0.2)]
    fig = plots.plot_circuit_heatmap(changes)
    layout = plots.heatmap_layout(changes)
    r, g, b = _cell_rgb(fig, *layout.cell_of[(3, 42)])
    assert r - b > 45 and r - g > 45, (r, g, b)  # increase colour: red/warm
    r, g, b = _cell_rgb(fig, *layout.cell_of[(1, 7)])
    assert b - r > 45 and b - g > 30, (r, g, b)  # decrease colour: blue/cool
    colorbar = fig.axes[-1]
    assert "increase" in colorbar.get_ylabel() and "red" in colorbar.get_ylabel()


def test_heatmap_png_has_the_increase_colour(tmp_path):
    from PIL import Image

    changes = [_change(0, 1, 2.0), _change(1, 2, -0.1)]
    fig = plots.plot_circuit_heatmap(changes)
    row, col = plots.heatmap_layout(changes).cell_of[(0, 1)]
    path = plots.save_figure(fig, tmp_path / "h.png")
    x, y = fig.axes[0].transData.transform((col - 0.35, row + 0.3))
    image = Image.open(path).convert("RGB")
    r, g, b = image.getpixel((int(round(x)), int(round(image.height - y))))
    assert r - b > 45 and r - g > 45, (r, g, b)


def test_visualizer_methods(tmp_path, report):
    viz = CircuitVisualizer(output_dir=tmp_path)
    assert viz.visualize_circuit_difference(report.circuit_diff, save_path="heat.png") == tmp_path / "heat.png"
    assert viz.create_summary_dashboard(report, save_path="dash.png").stat().st_size > 10_000
    assert viz.create_circuit_network_graph(report.circuit_diff, save_path="net.png").is_file()
    fig = viz.create_circuit_network_graph(synthetic_graph_pair())
    assert fig.axes and not (tmp_path / "none.png").exists()
    assert viz.create_sample_efficiency_plot(synthetic_bench_results(), save_path="se.png").is_file()
    assert viz.create_fdr_plot(report) is not None and viz.create_bandit_plot(report) is not None


def test_network_from_diff_pools_edges(report):
    data = plots.network_from_diff(report.circuit_diff)
    statuses = {e[3] for e in data.edges}
    assert statuses == {"new", "removed", "reweighted"}
    assert data.nodes["F:2:1187"]["delta"] > 0 and data.nodes["F:4:2210"]["delta"] < 0


def test_plots_survive_mathtext_and_empty_inputs():
    fig = plots.plot_circuit_heatmap([])
    assert fig.axes
    plots.save_figure(plots.plot_network(plots.network_from_diff(
        CircuitDiff(base_model_id="a", intervention_model_id="b"))), "/dev/null")
    from md_framework.types import Hypothesis, ValidationResult

    h = Hypothesis(id="$x$", hypothesis_type="style_change", description="costs $5 and $$ ^_ {", metric="m")
    fig = plots.plot_validation_dashboard([ValidationResult(hypothesis=h, test_name="t", p_value=0.5,
                                                            decision=False, n=3, test_level=0.01)])
    from io import BytesIO

    fig.savefig(BytesIO(), format="png")  # would raise on a mathtext parse error


def test_bench_reader():
    rows = plots.read_bench_results({"results": synthetic_bench_results()})
    assert {r["method"] for r in rows} == {"circuit-guided", "behavioural-only", "random"}
    with pytest.raises(ValueError, match="lacks recall"):
        plots.read_bench_results([{"method": "x", "queries": 3}])
