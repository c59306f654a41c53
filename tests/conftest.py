"""Test-wide isolation: no user-installed plugins, no network, one torch thread.

Tests that need third-party plugins ask for them explicitly (see tests/test_example_plugins.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports md_framework/torch/transformers.
os.environ["MD_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def artefact_cache_dir() -> Path:
    """Where built models/transcoders/graphs are cached between test runs.

    Override with MD_TEST_CACHE; CI keeps the default inside the clone.
    """
    path = Path(os.environ.get("MD_TEST_CACHE", REPO_ROOT / ".md-cache" / "tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """On a busy 2-core machine two torch threads can be 20x slower than one."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


# ----------------------------------------------------------------------------- organisms
# Built once per session (cached across runs under artefact_cache_dir/organisms); shared by
# the metrics, organisms, causal and pipeline tests.


@pytest.fixture(scope="session")
def organism_cache(artefact_cache_dir: Path) -> Path:
    path = artefact_cache_dir / "organisms"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build_organism(name: str, cache: Path):
    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism

    return build_organism(name, cache, log=None)


@pytest.fixture(scope="session")
def toy_multi(organism_cache: Path):
    return _build_organism("toy-multi", organism_cache)


@pytest.fixture(scope="session")
def toy_null(organism_cache: Path):
    return _build_organism("toy-null", organism_cache)
