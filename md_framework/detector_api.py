"""Public helpers for pattern detectors (``md_detect_patterns``): what every detector needs.

* :func:`exploratory_changes` — the exploratory screen of a diff's systematic changes: a
  feature "changed" when its BH q-value (its p-value when no q-value was computed) is at
  most :data:`EXPLORATORY_Q` and its mean delta is not zero. A screening level for ranking
  what to test, not a confirmatory claim; validation spends the real FDR budget (Benjamini
  & Hochberg 1995 for the q-values, docs/discovery.md).
* :func:`affected_families` — the prompt families a change shows on.
* :func:`evidence_strength` — an exploratory q-value mapped to a pattern strength in [0, 1).

The builtin detectors use exactly these, so a third-party detector built on them screens
and scores like the builtins. Torch-free.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from md_framework.types import CircuitDiff, SystematicChange

#: exploratory screening level shared by the builtin detectors (docs/discovery.md)
EXPLORATORY_Q = 0.1
#: families of a change without per-prompt data: same sign and >= this share of the largest
FAMILY_SHARE = 0.5

__all__ = ["EXPLORATORY_Q", "FAMILY_SHARE", "affected_families", "evidence_strength",
           "exploratory_changes", "has_family_contrasts", "q_of"]


def q_of(change: SystematicChange) -> float:
    """The change's q-value, else its p-value, else 1."""
    if change.q_value is not None:
        return change.q_value
    return change.p_value if change.p_value is not None else 1.0


def exploratory_changes(diff: CircuitDiff, q_max: float = EXPLORATORY_Q) -> list[SystematicChange]:
    """The systematic changes that pass the exploratory screen (q <= ``q_max``, non-zero
    mean delta), in the diff's order."""
    return [c for c in diff.systematic_changes if q_of(c) <= q_max and c.mean_delta != 0]


def evidence_strength(q: float) -> float:
    """Map an exploratory q-value to [0, 1): s/(s+2) with s = -log10 q (q=0.1 -> 0.33,
    0.01 -> 0.5, 1e-4 -> 0.67, 1e-8 -> 0.8)."""
    s = -math.log10(max(q, 1e-12))
    return s / (s + 2.0)


@functools.cache
def _graph_diff() -> Any:
    """The graph-diff plugin's module (entry point ``graph-diff``): family contrasts are its
    statistics (a weighted Welch test per feature x family, BH over all of them). Reached
    through the entry point, as any plugin is: the kernel never imports builtin plugins."""
    from importlib.metadata import entry_points

    from md_framework.plugins import ENTRY_POINT_GROUP

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "graph-diff"]
    if not found:
        from md_framework.errors import PluginError

        raise PluginError("graph-diff", None, "the essential graph-diff plugin is not installed;"
                                              " reinstall md-framework (pip install -e .)")
    return found[0].load()


def has_family_contrasts(diff: CircuitDiff | None) -> bool:
    """Whether ``diff`` has per-prompt data over at least two families (family contrasts)."""
    if diff is None or not diff.prompt_diffs:
        return False
    return bool(_graph_diff().family_contrasts(diff))


def affected_families(change: SystematicChange, diff: CircuitDiff | None = None) -> list[str]:
    """The families ``change`` shows on.

    With per-prompt data over >= 2 families (``diff.prompt_diffs``): the families where the
    change is *specific* — its family contrast (the family's mean delta against the other
    families', a weighted Welch test, BH over all feature x family contrasts) has q <= 0.1
    and the family carries at least half of the change (docs/discovery.md). Otherwise: the
    families whose mean delta in ``change.families`` has the change's sign and at least
    :data:`FAMILY_SHARE` of the largest such magnitude."""
    if has_family_contrasts(diff):
        return _graph_diff().specific_families_of(diff, change.feature.key)
    sign = 1.0 if change.mean_delta > 0 else -1.0
    same = {f: d for f, d in change.families.items() if d * sign > 0}
    if not same:
        return []
    top = max(abs(d) for d in same.values())
    return sorted(f for f, d in same.items() if abs(d) >= FAMILY_SHARE * top)
