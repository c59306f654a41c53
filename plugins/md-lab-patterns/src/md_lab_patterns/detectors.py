"""Two recognisers over the systematic changes of a circuit diff.

* ``family_concentrated_change``: most of the absolute activation change sits in one prompt
  family. Behaviour changes planted by fine-tuning on one family look like this; diffuse
  drift does not.
* ``late_layer_shift``: most of the change mass sits in the last third of the layers,
  the signature of output-formatting changes (style) more than of new computation.

Only changes passing the exploratory screen (q <= ``Q_MAX``,
:func:`md_framework.detector_api.exploratory_changes`) count, so noise does not make
patterns. Both rules report their numbers in ``evidence`` so a reader can check them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from md_framework import hookimpl
from md_framework.detector_api import exploratory_changes
from md_framework.types import CircuitDiff, FeatureInterpretation, Pattern, PatternType, SystematicChange

Q_MAX = 0.1
FAMILY_SHARE = 0.5
LATE_SHARE = 0.6
MIN_FEATURES = 2


def _significant(diff: CircuitDiff) -> list[SystematicChange]:
    # the kernel's public exploratory screen, so these rules screen like the builtins
    return exploratory_changes(diff, Q_MAX)


def family_concentrated(diff: CircuitDiff) -> list[Pattern]:
    changes = _significant(diff)
    mass: dict[str, float] = defaultdict(float)
    members: dict[str, list[SystematicChange]] = defaultdict(list)
    for change in changes:
        for family, delta in change.families.items():
            mass[family] += abs(delta)
            members[family].append(change)
    total = sum(mass.values())
    patterns = []
    for family, family_mass in sorted(mass.items()):
        share = family_mass / total if total > 0 else 0.0
        if share >= FAMILY_SHARE and len(members[family]) >= MIN_FEATURES:
            signed = sum(c.families[family] for c in members[family])
            patterns.append(Pattern(
                id=f"lab:family:{family}",
                pattern_type="family_concentrated_change",
                description=(
                    f"{share:.0%} of the significant activation change is on prompts of "
                    f"family '{family}' ({'up' if signed > 0 else 'down'} overall)"
                ),
                features=[c.feature for c in members[family]],
                families=[family],
                strength=share,
                evidence={"share": share, "n_features": len(members[family]), "signed_mass": signed},
            ))
    return patterns


def late_layer_shift(diff: CircuitDiff) -> list[Pattern]:
    changes = _significant(diff)
    if len(changes) < MIN_FEATURES:
        return []
    n_layers = max(c.feature.layer for c in changes) + 1
    cut = n_layers - max(1, n_layers // 3)
    total = sum(abs(c.mean_delta) for c in changes)
    late = [c for c in changes if c.feature.layer >= cut]
    share = sum(abs(c.mean_delta) for c in late) / total if total > 0 else 0.0
    if share < LATE_SHARE or len(late) < MIN_FEATURES:
        return []
    families = sorted({f for c in late for f in c.families})
    return [Pattern(
        id="lab:late-layer-shift",
        pattern_type="late_layer_shift",
        description=f"{share:.0%} of the change mass is in layers >= {cut} of {n_layers}",
        features=[c.feature for c in late],
        families=families,
        strength=share,
        evidence={"share": share, "first_late_layer": cut, "n_layers_seen": n_layers},
    )]


@hookimpl
def md_pattern_types() -> list[PatternType]:
    """The two types, for the hypothesis templates: both are screened per feature
    (``feature`` level); the direction of a concentrated change is its ``signed_mass``; a
    late-layer shift suggests a style change (its direction is not known)."""
    return [
        PatternType(name="family_concentrated_change", level="feature", sign_key="signed_mass",
                    weight=0.85, description="most of the significant change sits in one family"),
        PatternType(name="late_layer_shift", level="feature", hypothesis_type="style_change",
                    weight=0.6, description="most of the change mass sits in the last third of the layers"),
    ]


@hookimpl
def md_detect_patterns(
    diff: CircuitDiff, interpretations: Mapping[str, list[FeatureInterpretation]]
) -> list[Pattern]:
    return family_concentrated(diff) + late_layer_shift(diff)
