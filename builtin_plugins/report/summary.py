"""Terminal summary of a report with rich."""

from __future__ import annotations

from typing import Any

from md_framework.types import AnalysisReport, ValidationResult


def _stat(result: ValidationResult) -> str:
    if result.p_value is not None:
        return f"p={result.p_value:.3g}"
    if result.e_value is not None:
        return f"e={result.e_value:.3g}"
    return "—"


def _effect(result: ValidationResult) -> str:
    es = result.effect_size
    if es is None:
        return "—"
    ci = ""
    if es.ci_low is not None and es.ci_high is not None:
        ci = f" [{es.ci_low:.2f}, {es.ci_high:.2f}]"
    return f"{es.estimate:+.2f}{ci}"


def summary_renderables(report: AnalysisReport) -> list[Any]:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    costs = report.costs
    head = Text()
    head.append(report.base_model_id or "?", style="bold")
    head.append("  →  ")
    head.append(report.intervention_model_id or "?", style="bold")
    head.append(
        f"\nhypotheses: {len(report.hypotheses)} proposed, {len(report.validation_results)} tested, "
        f"{len(report.validated())} validated"
        f"\nqueries spent: {costs.behaviour_queries}   traced prompts: {costs.traced_prompts}   "
        f"wall time: {costs.wall_time_s:.1f} s"
    )
    out.append(Panel(head, title="md-framework analysis", expand=False))

    for title, results, style in (
        ("Validated hypotheses", report.validated(), "green"),
        ("Not validated", [r for r in report.validation_results if not r.decision], "yellow"),
    ):
        table = Table(title=f"{title} ({len(results)})", title_style=f"bold {style}",
                      show_lines=False, expand=False)
        table.add_column("id", no_wrap=True)
        table.add_column("hypothesis", ratio=1, min_width=24)
        table.add_column("test", no_wrap=True)
        table.add_column("p / e", justify="right", no_wrap=True)
        table.add_column("level", justify="right", no_wrap=True)
        table.add_column("effect [CI]")
        table.add_column("n", justify="right", no_wrap=True)
        for r in results:
            h = r.hypothesis
            what = Text(h.description)
            what.append(f"\n{h.hypothesis_type} · {h.metric}"
                        + (f" · {r.effect_size.name}" if r.effect_size else "")
                        + (f"\nnot validated: {r.reason}" if r.reason else ""), style="dim")
            table.add_row(
                Text(h.id), what, Text(r.test_name + (" (early stop)" if r.stopped_early else "")),
                Text(_stat(r)), Text("—" if r.test_level is None else f"{r.test_level:.3g}"),
                Text(_effect(r)), Text(str(r.n)),
            )
        if results:
            out.append(table)
    tested = {r.hypothesis.id for r in report.validation_results}
    untested = [h for h in report.hypotheses if h.id not in tested]
    if untested:
        out.append(Text(f"Not tested (budget or cap): {', '.join(h.id for h in untested)}", style="dim"))
    for line in report.dropped_text():
        out.append(Text(line, style="dim"))

    stats = dict(report.circuit_statistics)
    diff = report.circuit_diff
    if diff is not None:
        ups = sum(1 for c in diff.systematic_changes if c.mean_delta > 0)
        downs = sum(1 for c in diff.systematic_changes if c.mean_delta < 0)
        stats.setdefault("systematic changes (up / down)", f"{ups} / {downs}")
        stats.setdefault("prompt diffs", len(diff.prompt_diffs))
    if stats:
        table = Table(title="Circuit statistics", title_style="bold", show_header=False)
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for key, value in stats.items():
            table.add_row(Text(str(key)), Text(f"{value:.3g}" if isinstance(value, float) else str(value)))
        out.append(table)
    return out


def print_rich_summary(report: AnalysisReport, console: Any = None) -> None:
    """Print the report's summary to ``console`` (a :class:`rich.console.Console`; stdout by default)."""
    from rich.console import Console

    console = console or Console()
    for renderable in summary_renderables(report):
        console.print(renderable)
