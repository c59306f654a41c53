"""Quick start: the design document's Basic Usage on the toy organism pair.

Run from the repository root: ``python examples/quickstart.py``. The organism is built and
cached on first use (about a minute on 2 cores) in the one cache location: ``$MD_CACHE_DIR``
or the user cache directory (docs/cache.md). No prompt universe is given, so the
organism's own prompt families are used (the summary says so). The design document names a
transcoder set; without trained transcoders for the organism this uses activation
differences (``tracer="activation-diff"``); docs/api.md shows the circuit-tracer version.
"""

from pathlib import Path

from md_framework import AnalysisConfig, MechanisticBehavioralAnalyzer, TestingProcedure

config = AnalysisConfig(
    base_model_name="organism:toy-multi#base",
    intervention_model_name="organism:toy-multi#intervention",
    tracer="activation-diff",
    n_seed_prompts=100,
    focus_areas=["safety", "capabilities"],
    statistical_config=TestingProcedure(alpha=0.05, method="saffron", min_effect_size=0.2),
)
# a second run of this script resumes the first (same decisions, no new model queries):
# a run directory is never overwritten
analyzer = MechanisticBehavioralAnalyzer(config, run_dir="runs/quickstart",
                                         resume=Path("runs/quickstart/ledger.sqlite").is_file())
report = analyzer.analyze()

report.print_summary()
for result in report.validated():
    print(f"{result.hypothesis.hypothesis_type:<20} effect {result.effect_size:+.2f} "
          f"({result.effect_size}) families={result.hypothesis.families}")
    for example in result.examples[:2]:
        print(f"    {example.prompt!r}: base {example.base_output!r} -> "
              f"intervention {example.intervention_output!r}")
print("dashboard: runs/quickstart/report.html")
