"""Small helpers shared by loaders, toy builders and tracers (no heavy imports at module level)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from md_framework.cache_files import write_text_atomic
from md_framework.errors import MissingDependencyError


def require(module: str, purpose: str = "", extra: str | None = "models") -> Any:
    """Import ``module`` or raise :class:`MissingDependencyError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from None


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def state_dict_sha256(model: Any) -> str:
    """sha256 over every tensor of the state dict in sorted key order (name, dtype, shape,
    bytes). Tied weights are hashed once per name, which is stable for a given architecture."""
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        tensor = tensor.contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success it replaces ``final``
    atomically (``os.replace``). A concurrent writer that wins first is kept."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # someone else finished the same content-addressed artefact first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final`` if it is complete (has ``.complete``), else build it atomically."""
    final = Path(final)
    if (final / ".complete").exists():
        return final
    if final.exists():  # an incomplete leftover from an old crash (not produced by atomic_dir)
        shutil.rmtree(final, ignore_errors=True)
    with atomic_dir(final) as tmp:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
    return final


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def machine_description() -> dict[str, str]:
    """The machine a build ran on (CPU model, architecture, Python, torch): the same organism
    spec and code trained on two machines gave different models (toy-scale-192: 10 real units
    on one, 140 on another), so a build records where it was made."""
    import platform

    import torch

    cpu = platform.processor()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "python": platform.python_version(),
            "torch": str(torch.__version__)}
