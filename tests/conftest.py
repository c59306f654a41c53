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
