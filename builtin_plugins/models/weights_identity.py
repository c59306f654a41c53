"""Model identity from the bytes of the weights files, hashed once per file version.

A model directory's identity is the sha256 over its weights files' names and sha256s
(``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.gguf`` at the top level). Hashing a
file is done once per *version* of it: the result is kept in the artefact cache (kind
``file-sha256``) under a key made of the file's absolute path, size, mtime (ns), inode and
device, so an unchanged file is never re-read and any rewrite (which changes the mtime,
usually the size) is hashed again. A change that keeps size and mtime (a deliberate
``touch -r``) is the one case this memo cannot see; ``md cache clear --kind file-sha256``
forgets every memo.

Directories that md-framework built record their weights' sha256 in ``md_meta.json``
(``weights_sha256``: file name -> sha256); a file that no longer matches is damaged or
was replaced, and loading it is refused with an error naming the file
(:class:`~md_framework.storage_errors.DamagedFileError`). Standard library only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from md_framework.cache_files import _sha256_file
from md_framework.storage_errors import DamagedFileError, StorageError, from_os_error

if TYPE_CHECKING:
    from md_framework.cache import ArtifactCache

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
FILE_HASH_KIND = "file-sha256"
VERIFIED_KIND = "weights-verified"


@dataclass(frozen=True)
class WeightsIdentity:
    """``files``: weights file name -> sha256; ``digest``: sha256 over the sorted pairs."""

    directory: Path
    files: dict[str, str]
    digest: str

    @property
    def model_id(self) -> str:
        return f"sha256:{self.digest}"

    def describe_files(self) -> str:
        """The weights file (or the directory, when there are several) for messages."""
        names = sorted(self.files)
        return str(self.directory / names[0]) if len(names) == 1 else str(self.directory)


def weight_files(directory: str | os.PathLike[str]) -> list[Path]:
    directory = Path(directory)
    try:
        return sorted(p for p in directory.iterdir()
                      if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    except OSError as exc:
        raise from_os_error(exc, directory, what="the model directory") from None


def file_sha256(path: str | os.PathLike[str], cache: ArtifactCache | None = None) -> str:
    """sha256 of ``path``'s bytes, memoised in ``cache`` by (path, size, mtime, inode)."""
    from md_framework.cache import cache_key

    path = Path(path).absolute()
    try:
        st = path.stat()
    except OSError as exc:
        raise from_os_error(exc, path, what="the model file") from None
    key = cache_key(artifact=FILE_HASH_KIND, path=str(path), size=st.st_size,
                    mtime_ns=st.st_mtime_ns, inode=st.st_ino, device=st.st_dev)
    if cache is not None:
        found = cache.get_json(FILE_HASH_KIND, key)
        if isinstance(found, dict) and isinstance(found.get("sha256"), str):
            return found["sha256"]
    try:
        digest = _sha256_file(path)
    except OSError as exc:
        raise DamagedFileError(path, f"cannot be read ({from_os_error(exc).cause})",
                               "Restore the file or rebuild the model directory") from None
    if cache is not None:
        try:
            cache.put_json(FILE_HASH_KIND, key, {"sha256": digest, "size": st.st_size})
        except StorageError as exc:  # the memo is an optimisation only
            logger.warning("md: could not remember the hash of %s (%s)", path, exc)
    return digest


def weights_identity(directory: str | os.PathLike[str],
                     cache: ArtifactCache | None = None) -> WeightsIdentity | None:
    """The identity of the weights files in ``directory``; ``None`` when it has none."""
    directory = Path(directory).absolute()
    files = {p.name: file_sha256(p, cache) for p in weight_files(directory)}
    if not files:
        return None
    digest = hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in sorted(files.items())).encode())
    return WeightsIdentity(directory, files, digest.hexdigest())


def check_recorded(identity: WeightsIdentity, recorded: Mapping[str, str],
                   meta_path: Path) -> None:
    """Refuse weights that differ from the sha256s recorded when the directory was built."""
    for name, expected in sorted(recorded.items()):
        found = identity.files.get(name)
        if found is None:
            raise DamagedFileError(
                identity.directory / name, "missing (the directory was built with it)",
                "Restore the file or rebuild the model directory")
        if found != expected:
            raise DamagedFileError(
                identity.directory / name,
                f"damaged or replaced: its sha256 {found[:12]}… differs from the {expected[:12]}…"
                f" recorded in {meta_path.name} when it was built",
                "Restore the file or rebuild the model directory (delete it; md organism build"
                f" and the loaders rebuild what they made), or delete {meta_path.name} if you"
                " replaced the weights on purpose")


def check_hub_blobs(identity: WeightsIdentity) -> None:
    """Refuse a Hugging Face cache snapshot whose weights differ from what the hub sent.

    In the hub cache a snapshot's large (LFS) files are links to ``blobs/<sha256 of the
    content>`` (huggingface_hub's cache layout), so the blob's name is the hash the hub
    published: a file whose bytes hash to something else was damaged after download."""
    import re

    for name, found in sorted(identity.files.items()):
        path = identity.directory / name
        if not path.is_symlink():
            continue
        blob = Path(os.readlink(path)).name
        if re.fullmatch(r"[0-9a-f]{64}", blob) and blob != found:
            raise DamagedFileError(
                path, f"damaged after download: its sha256 {found[:12]}… differs from the hub's"
                      f" {blob[:12]}… (its blob's name in the Hugging Face cache)",
                "Delete the model from the Hugging Face cache (huggingface-cli delete-cache) and"
                " download it again")


def was_verified(cache: ArtifactCache | None, identity: WeightsIdentity, model_id: str) -> bool:
    """Whether these exact file contents were already checked against ``model_id``."""
    if cache is None:
        return False
    from md_framework.cache import cache_key

    return cache.get_json(VERIFIED_KIND, cache_key(digest=identity.digest, model_id=model_id)) is not None


def mark_verified(cache: ArtifactCache | None, identity: WeightsIdentity, model_id: str) -> None:
    if cache is None:
        return
    from md_framework.cache import cache_key

    try:
        cache.put_json(VERIFIED_KIND, cache_key(digest=identity.digest, model_id=model_id),
                       {"model_id": model_id, "files": identity.files})
    except StorageError as exc:
        logger.warning("md: could not remember that %s was verified (%s)", identity.directory, exc)


def open_identity_cache(cache_dir: str | os.PathLike[str] | None) -> ArtifactCache | None:
    """The artefact cache holding the hash memo, or ``None`` when it cannot be opened."""
    if cache_dir is None:
        return None
    from md_framework.cache import ArtifactCache

    try:
        return ArtifactCache(Path(cache_dir).expanduser())
    except Exception as exc:  # noqa: BLE001 - without a memo every load hashes again
        logger.warning("md: cache %s unavailable for weights hashes (%s)", cache_dir, exc)
        return None
