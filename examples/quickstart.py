"""Quick start: analyse the toy organism pair from Python and look at what was found.

Run from the repository root: ``python examples/quickstart.py`` (the organism is built and
cached under .md-cache on first use, about a minute on 2 cores).
"""

from md_framework.config import load_config
from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer

config = load_config("examples/configs/demo.yaml")
analyzer = MechanisticBehavioralAnalyzer(config, run_dir="runs/quickstart")
report = analyzer.analyze()

report.print_summary()
for result in report.validation_results:
    hypothesis = result.hypothesis
    print(f"{hypothesis.hypothesis_type:<20} validated={result.is_validated()!s:<5} "
          f"effect={result.effect_size.estimate if result.effect_size else None} "
          f"families={hypothesis.families} features={[f.key for f in hypothesis.source_features][:5]}")
print("circuit statistics:", report.circuit_statistics)
print("dashboard: runs/quickstart/report.html")
