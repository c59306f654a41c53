"""Model organisms: base/intervention pairs with planted, measured behaviour changes.

Python API: :func:`build_organism`, :func:`load_universe`, :func:`load_spec`; the
benchmark lives in :mod:`builtin_plugins.organisms.bench`. See ``docs/organisms.md``.
"""

from builtin_plugins.organisms.build import (
    BuiltOrganism,
    build_organism,
    find_built,
    load_universe,
    load_universe_cases,
)
from builtin_plugins.organisms.spec import OrganismSpec, load_spec

__all__ = ["BuiltOrganism", "OrganismSpec", "build_organism", "find_built", "load_spec",
           "load_universe", "load_universe_cases"]
