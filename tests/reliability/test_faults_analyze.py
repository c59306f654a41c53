"""Faults met by ``md analyze`` and ``md organism build`` in a subprocess: each is one
``Error:`` line with exit code 2 naming the path and the cause, and the run resumes to
the same decisions (issue 19, finding 3). Faults are injected by ``faultfs.py``."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import faultfs
import pytest
import yaml
from reliability_helpers import REPO_ROOT, MdResult, assert_one_clear_error

from md_framework.storage_errors import StorageError

HERE = Path(__file__).resolve().parent


def run_faulty(prefix: Path, err: str, *args: str, cwd: Path, env_extra=None,
               timeout: float = 900) -> MdResult:
    """``md ARGS`` with writes under ``prefix`` failing with ``err`` (``ENOSPC``, ``EROFS``)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{HERE}", "NO_COLOR": "1",
                "MD_DISABLE_PLUGIN_AUTOLOAD": "1", "FAULTFS_SKIP_LOCKS": "1", **(env_extra or {})})
    cmd = [sys.executable, str(HERE / "faultfs.py"), str(prefix), err, "-m", "md_framework", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return MdResult(proc.returncode, proc.stdout, proc.stderr)


# ------------------------------------------------------------------- organism build


@pytest.mark.parametrize("err, cause", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EROFS, "read-only file system")])
def test_organism_build_disk_fault_is_one_clear_error(tmp_path: Path, err: int, cause: str) -> None:
    from builtin_plugins.organisms import build_organism

    cache = tmp_path / "organisms"
    cache.mkdir()
    faultfs.install(cache, err)
    try:
        with pytest.raises(StorageError) as info:
            build_organism("toy-null", cache, log=None)
    finally:
        faultfs.uninstall()
    message = str(info.value)
    assert f": {cause}." in message and message.startswith(str(cache))
    assert "organism cache" in message and "\n" not in message


def test_md_organism_build_on_a_full_disk_is_one_clear_error(md, tmp_path: Path) -> None:
    cache = tmp_path / "organisms"
    cache.mkdir()
    result = run_faulty(cache, "ENOSPC", "organism", "build", "toy-null", "--cache-dir", str(cache),
                        "--threads", "1", cwd=tmp_path, timeout=300)
    assert_one_clear_error(result, f"{cache}", "no space left on device", "Free space")


# ------------------------------------------------------------------- md analyze (toy demo)


@pytest.fixture(scope="module")
def demo_config(artefact_cache_dir: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults-demo")
    data = yaml.safe_load((REPO_ROOT / "examples" / "configs" / "demo.yaml").read_text())
    data.update(cache_dir=str(artefact_cache_dir), threads=1)
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _ledger_decisions(run: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(run / "ledger.sqlite") as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT hypothesis_id, rejected FROM decisions ORDER BY fdr_index")]


def _report_decisions(run: Path) -> list[tuple[str, int]]:
    report = json.loads((run / "report.json").read_text())
    return [(r["hypothesis"]["id"], int(r["decision"])) for r in report["validation_results"]]


@pytest.mark.slow
def test_full_disk_at_report_time_resumes_to_the_same_decisions(md, demo_config: Path,
                                                                 tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    failed = run_faulty(run / "graphs", "ENOSPC", "analyze", str(demo_config), "--out", str(run),
                        cwd=tmp_path)
    error = assert_one_clear_error(failed, f"{run / 'graphs'}: no space left on device. Free space,"
                                           f" then continue with: md analyze {demo_config}"
                                           f" --resume {run}")
    assert "every query and decision committed so far is kept" in error
    decided = _ledger_decisions(run)
    assert decided and not (run / "report.json").exists()
    resumed = md("analyze", str(demo_config), "--resume", str(run), timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _report_decisions(run) == decided  # the resume changed no decision


@pytest.mark.slow
def test_read_only_cache_serves_the_run_and_says_what_it_could_not_store(
        demo_config: Path, artefact_cache_dir: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(demo_config.read_text())
    # a tracer option no other test uses: a new tracer identity, so every graph is a miss
    data["tracer_options"] = {**data.get("tracer_options", {}), "max_n_logits": 7}
    config = tmp_path / "demo-more.yaml"
    config.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    result = run_faulty(artefact_cache_dir, "EROFS", "analyze", str(config), "--out", str(run),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    warned = [ln for ln in result.stderr.splitlines() if "is read-only" in ln]
    assert len(warned) == 1, result.stderr[-3000:]
    assert str(artefact_cache_dir) in warned[0] and "not stored" in warned[0]
    assert (run / "report.json").exists() and _report_decisions(run) == _ledger_decisions(run)
