"""Run ``md`` in a subprocess and check its error output (tests/reliability)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class MdResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The error message: stderr from ``Error:`` on, without plugin-load warnings."""
        lines = [ln for ln in self.stderr.splitlines() if not ln.startswith("Warning: ")]
        text = "\n".join(lines)
        return text[text.find("Error: "):] if "Error: " in text else text


def run_md(*args: str, cwd: Path, timeout: float = 180, autoload: bool = False) -> MdResult:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"})
    if autoload:
        env.pop("MD_DISABLE_PLUGIN_AUTOLOAD", None)
    else:
        env["MD_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = subprocess.run([sys.executable, "-m", "md_framework", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return MdResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_clear_error(result: MdResult, *expected: str) -> str:
    """Exit code 2, no traceback, exactly one ``Error:`` message containing ``expected``."""
    both = result.stdout + result.stderr
    assert result.returncode == 2, both
    assert "Traceback" not in both, both
    assert sum(ln.startswith("Error: ") for ln in result.error.splitlines()) == 1, both
    for text in expected:
        assert text in result.error, f"{text!r} not in {result.error!r}"
    return result.error
