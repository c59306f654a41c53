from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def toy_multi(artefact_cache_dir: Path):
    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism

    path = artefact_cache_dir / "organisms"
    path.mkdir(parents=True, exist_ok=True)
    return build_organism("toy-multi", path, log=None)
