"""Fixtures for the bad-input and security tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "validation"))  # the fake models/metrics (toy.py)
sys.path.insert(0, str(HERE))

from reliability_helpers import run_md  # noqa: E402


@pytest.fixture
def md(tmp_path):
    def call(*args: str, **kwargs):
        return run_md(*args, cwd=tmp_path, **kwargs)
    return call
