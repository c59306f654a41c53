"""Run from a checkout without installing: the package's src/ on the path if needed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("md_example_detector") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
