"""A third-party detector with a new pattern type, installed with pip, yields its own
hypothesis on the demo and appears in the report with its provenance (issue #14).

The example package ``plugins/md-example-detector`` is pip-installed into a private
directory (the kit's ``md_installed`` fixture), and ``md analyze`` runs the demo config in a
fresh interpreter that discovers it through its entry point, exactly as a user's would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_with_example(artefact_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from md_framework.testing import InstalledDistributions

    root = tmp_path_factory.mktemp("third-party")
    installed = InstalledDistributions(root)
    installed.install(REPO / "plugins" / "md-example-detector")
    data = yaml.safe_load((REPO / "examples" / "configs" / "demo.yaml").read_text())
    # only this third-party plugin besides the builtins (other installed examples stay out)
    data.update(cache_dir=str(artefact_cache_dir), threads=1, plugins={"enable": ["example-detector"]})
    config = root / "demo.yaml"
    config.write_text(yaml.safe_dump(data))
    out = root / "run"
    run = installed.run_md("analyze", str(config), "--out", str(out), cwd=root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    plugins = installed.run_md("plugins", "list", cwd=root)
    return json.loads((out / "report.json").read_text()), out, plugins


@pytest.mark.slow
def test_example_pattern_yields_its_own_hypothesis_in_the_report(demo_with_example) -> None:
    report, out, _ = demo_with_example
    ours = [p for p in report["patterns"] if p["pattern_type"] == "top_answer_demotion"]
    assert ours and all(p["detector"] == "example-detector" for p in ours)
    tested = [r["hypothesis"] for r in report["validation_results"]
              if r["hypothesis"]["hypothesis_type"] == "answer_demotion"]
    assert tested, "the example's hypothesis was not tested"
    for h in tested:
        assert {"example-detector", "hypothesis-templates"} <= set(h["provenance"])
        assert set(h["source_patterns"]) & {p["id"] for p in ours}
        assert h["metric"] == "target_logprob" and h["direction"] == "decrease"
    assert report["unregistered_pattern_types"] == []
    summary = (out / "summary.txt").read_text()
    html = (out / "report.html").read_text()
    assert "answer_demotion" in summary and "answer_demotion" in html
    assert "example-detector" in html  # provenance shown on the hypothesis card


@pytest.mark.slow
def test_the_report_names_every_dropped_hypothesis_with_its_reason(demo_with_example) -> None:
    report, out, _ = demo_with_example
    tested = {r["hypothesis"]["id"] for r in report["validation_results"]}
    for d in report["dropped_hypotheses"]:
        assert d["reason"] in ("below_floor", "over_cap") and d["hypothesis"]["id"] not in tested
        if d["reason"] == "below_floor":
            assert d["hypothesis"]["priority"] < d["limit"]
    html = (out / "report.html").read_text()
    if report["dropped_hypotheses"]:
        assert 'id="dropped"' in html
        assert "hypotheses not tested" in (out / "summary.txt").read_text()


@pytest.mark.slow
def test_plugins_list_shows_the_installed_detector(demo_with_example) -> None:
    _, _, plugins = demo_with_example
    assert plugins.returncode == 0 and "example-detector" in plugins.stdout
