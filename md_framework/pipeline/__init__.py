"""The analysis pipeline: orchestration of hooks and drivers, torch-free.

Stages: trace (``md_framework.tracing``) → diff (``diff``) → interpretation, patterns and
hypotheses (``discovery``) → targeted validation under online FDR (``validation``,
``explorer``) → report (``analyzer``). Each stage's inputs and outputs are the kernel's
pydantic types, so stages can be run, cached and tested on their own.
"""
