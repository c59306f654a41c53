"""The analysis algorithms, shipped as essential builtin plugins.

Each module is a plugin registered through the ``md_framework`` entry-point group exactly as
a third party's would be, implementing one or more of the kernel's stage hooks
(``md_stage_*`` in :mod:`md_framework.hookspecs`):

============  ===============================  ==========================================
entry point   module                           what it does
============  ===============================  ==========================================
graph-diff    :mod:`.diff`                     graph diff by node identity, systematic
                                               changes with exact tests and BH q-values
discovery     :mod:`.discovery`                interpretation, patterns, hypotheses:
                                               merging, ranking, the priority floor and cap
test-selection :mod:`.testgen`                 explore/confirm split, held-out test pooling
validation    :mod:`.validation`               paired tests and the online FDR stream
exploration   :mod:`.explorer`                 the bandit choosing what to sample next
refinement    :mod:`.refine`                   re-tracing around a validated hypothesis
causal        :mod:`.causal`                   feature interventions (causal share)
screen        :mod:`.screen`                   two-stage tracing's prompt choice
============  ===============================  ==========================================

A run cannot work without them, so they are *essential*: ``plugins.disable`` refuses them
(:data:`md_framework.plugins.ESSENTIAL_PLUGINS`). To replace one, register a plugin whose
implementation of the same stage hook runs first (``@hookimpl(tryfirst=True)``).
"""
