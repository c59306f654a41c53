"""A hub model's identity comes from its bytes too (issue 19): loaded from the Hugging Face
cache, its ``model_id`` is the weights files' content hash (not the revision name), and a
blob damaged after download is an error naming the file."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.reliability.test_faults_weights import _flip_mantissa_bits, _tiny_model_dir  # noqa: E402

REPO = "md-test/tiny-hub-model"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

LOAD = """
import sys
from md_framework.runtime import ModelLoadOptions
from md_framework.errors import MDError
from builtin_plugins.models.loaders import load_model
try:
    print(load_model(sys.argv[1], ModelLoadOptions(cache_dir=sys.argv[2])).model_id)
except MDError as exc:
    print("Error:", exc)
"""


def _hub_cache(model_dir: Path, hub: Path) -> Path:
    """``model_dir`` laid out as huggingface_hub's cache: snapshot files are links to
    ``blobs/<hash>`` (sha256 for the weights, as for LFS files; sha1 for the others)."""
    root = hub / f"models--{REPO.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for f in sorted(model_dir.iterdir()):
        data = f.read_bytes()
        big = f.suffix == ".safetensors"
        name = (hashlib.sha256 if big else hashlib.sha1)(data).hexdigest()
        shutil.copy(f, root / "blobs" / name)
        os.symlink(f"../../blobs/{name}", snapshot / f.name)
    return root


def _load(hub: Path, cache: Path) -> str:
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD, REPO, str(cache)], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_hub_model_identity_is_its_weights_hash_and_damage_is_refused(tmp_path: Path) -> None:
    from builtin_plugins.models.weights_identity import weights_identity

    model_dir = _tiny_model_dir(tmp_path / "m", meta=False)
    root = _hub_cache(model_dir, tmp_path / "hub")
    expected = weights_identity(model_dir).model_id
    assert _load(tmp_path / "hub", tmp_path / "cache") == expected

    blob = next((root / "blobs").glob("?" * 64))
    _flip_mantissa_bits(blob)
    message = _load(tmp_path / "hub", tmp_path / "cache")
    assert message.startswith("Error:") and "damaged after download" in message
    assert "model.safetensors" in message and "download it again" in message
