"""Builtin statistics of md-framework: online FDR procedures, paired tests and
e-processes, effect sizes, power analysis, meta-analysis and bandit strategies.

The drivers (``fdr``, ``paired_tests``, ``bandits``) are registered through entry points
in md-framework's ``pyproject.toml``; the helper modules (``effect_sizes``, ``power``,
``meta``) are plain functions. Importing this package imports nothing heavy.
"""

from __future__ import annotations

__all__ = ["bandits", "commands", "effect_sizes", "fdr", "meta", "paired_tests", "power"]
