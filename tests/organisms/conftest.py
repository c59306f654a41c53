from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def organism_cache(artefact_cache_dir: Path) -> Path:
    path = artefact_cache_dir / "organisms"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def toy_multi(organism_cache: Path):
    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism

    return build_organism("toy-multi", organism_cache, log=None)


@pytest.fixture(scope="session")
def toy_null(organism_cache: Path):
    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism

    return build_organism("toy-null", organism_cache, log=None)
