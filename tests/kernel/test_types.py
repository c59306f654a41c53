import math

import pytest
from pydantic import ValidationError

from md_framework.types import (
    AnalysisReport,
    CircuitGraph,
    Costs,
    EffectSize,
    GraphEdge,
    GraphNode,
    Hypothesis,
    HypothesisType,
    Observation,
    ValidationResult,
    feature_node_id,
)


def _graph() -> CircuitGraph:
    node = GraphNode(node_id=feature_node_id(3, 1, 42), kind="feature", layer=3, position=1,
                     feature=42, activation=0.1 + 0.2)
    return CircuitGraph(
        prompt="The cat", model_id="m", tracer="t", nodes=[node],
        edges=[GraphEdge(source=node.node_id, target="L:5", weight=1 / 3)],
    )


def test_graph_json_round_trip_is_exact() -> None:
    graph = _graph()
    again = CircuitGraph.model_validate_json(graph.model_dump_json())
    assert again == graph
    assert again.nodes[0].activation == 0.1 + 0.2  # float repr round-trips bit-exactly


def test_unknown_fields_are_rejected() -> None:
    data = _graph().model_dump()
    data["colour"] = "red"
    with pytest.raises(ValidationError, match="colour"):
        CircuitGraph.model_validate(data)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        Observation(test_case_id="t", hypothesis_id="h", metric="m", base_value=bad,
                    intervention_value=0.0)
    with pytest.raises(ValidationError, match="finite"):
        GraphEdge(source="a", target="b", weight=bad)


def test_hypothesis_accepts_enum_and_plugin_types() -> None:
    builtin = Hypothesis(id="a", hypothesis_type=HypothesisType.BIAS_SHIFT, description="d", metric="m")
    plugin = Hypothesis(id="b", hypothesis_type="tool_use_change", description="d", metric="m")
    assert builtin.hypothesis_type == HypothesisType.BIAS_SHIFT == "bias_shift"
    assert plugin.hypothesis_type == "tool_use_change"


def test_report_round_trip_and_summary() -> None:
    hypothesis = Hypothesis(id="h", hypothesis_type="safety_degradation",
                            description="refuses less", metric="refusal_probability")
    result = ValidationResult(
        hypothesis=hypothesis, test_name="wilcoxon", p_value=0.001, decision=True,
        effect_size=EffectSize(name="d_z", estimate=-1.2, ci_low=-1.6, ci_high=-0.8), n=30,
    )
    report = AnalysisReport(validation_results=[result], costs=Costs(behaviour_queries=60))
    again = AnalysisReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert again.validation_results[0].is_validated()
    text = again.summary_text()
    assert "VALIDATED" in text and "p=0.001" in text and "[-1.60, -0.80]" in text and "n=30" in text


def test_summary_names_the_models_by_source_and_short_id() -> None:
    report = AnalysisReport(
        config={"base_model": {"source": "organism:toy-multi#base"},
                "intervention_model": {"source": "organism:toy-multi#intervention"}},
        base_model_id="sha256:8f8e860a8ff8dbf5d08e", intervention_model_id="sha256:d01f78a9daec7bca")
    first = report.summary_text().splitlines()[0]
    assert first == ("Analysis: organism:toy-multi#base (8f8e860a8ff8) -> "
                     "organism:toy-multi#intervention (d01f78a9daec)")
    assert AnalysisReport(base_model_id="m1").summary_text().startswith("Analysis: m1 -> ?")
