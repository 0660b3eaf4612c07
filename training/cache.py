"""Content-keyed caches for latents and text-encoder outputs, and file hashes.

A latent is keyed by the image file's SHA-256, the bucket size and the VAE's identity (the hash of its
file); a text embedding by the caption and the text encoders' identity. Changing an image, a caption,
a bucket or an encoder gives a new key, so stale entries are never read; entries of other runs with the
same content are reused. Files are safetensors written atomically (temp file + rename), so a killed run
leaves either a whole entry or none. Nothing is written next to the dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ..core.files import atomic_save_safetensors, atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = "ii-cache-2"  # bump when the preprocessing changes


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileHashes:
    """SHA-256 of files, remembered by (path, size, mtime) in ``<cache_dir>/file-hashes.json`` so a
    23 GB model is hashed once, not every run."""

    def __init__(self, cache_dir: Path | None):
        self.path = Path(cache_dir) / "file-hashes.json" if cache_dir else None
        self.memo: dict = {}
        self.dirty = False
        if self.path and self.path.is_file():
            try:
                self.memo = json.loads(self.path.read_text())
            except ValueError:
                self.memo = {}

    def __call__(self, file: str | os.PathLike) -> str:
        p = Path(file).resolve()
        st = p.stat()
        key = str(p)
        entry = self.memo.get(key)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return entry["sha256"]
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        digest = h.hexdigest()
        self.memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self.dirty = True
        return digest

    def flush(self) -> None:
        if self.path and self.dirty:
            try:
                atomic_write_bytes(self.path, json.dumps(self.memo, indent=1).encode())
                self.dirty = False
            except OSError as e:  # a read-only cache still works, just slower
                log.warning("could not remember file hashes in %s: %s", self.path, e)


class TensorCache:
    """``key -> {name: tensor}``: on disk (safetensors under ``root``) or in memory (``root=None``)."""

    def __init__(self, root: Path | None, kind: str):
        self.root = Path(root) / kind if root else None
        self.kind = kind
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(*parts: str) -> str:
        return sha256_bytes("\x1f".join((CACHE_VERSION,) + tuple(parts)).encode())

    def file(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        if key in self.memory:
            return True
        return self.root is not None and self.file(key).is_file()

    def put(self, key: str, tensors: dict[str, torch.Tensor], keep_in_memory: bool) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        if self.root is not None:
            atomic_save_safetensors(tensors, self.file(key), {"kind": self.kind, "version": CACHE_VERSION})
        if keep_in_memory or self.root is None:
            self.memory[key] = tensors

    def get(self, key: str) -> dict[str, torch.Tensor]:
        if key in self.memory:
            return self.memory[key]
        from safetensors.torch import load_file

        return load_file(str(self.file(key)))

    def valid(self, key: str) -> bool:
        """A disk entry that loads (a truncated file from another tool counts as a miss)."""
        if key in self.memory:
            return True
        if self.root is None or not self.file(key).is_file():
            return False
        try:
            self.get(key)
            return True
        except Exception:  # noqa: BLE001
            return False
