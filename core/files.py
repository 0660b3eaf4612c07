"""Atomic file writes: the one definition for the whole pack.

Everything a user keeps (LoRAs, checkpoints, reports, datasets, caches, images) is written to a
temporary file in the destination folder and moved into place with ``os.replace``, so a crash or a
kill leaves either the old file or the new one, never a torn one. Temporary files are named
``.<name>.<random>.tmp``; :func:`clean_stale_temporaries` removes the ones a killed process left.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); returns the path.

    ``overwrite=False`` never replaces an existing file (the new data is dropped if ``path`` appeared
    meanwhile): the file is linked into place, which fails instead of replacing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                if not path.exists():
                    os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """UTF-8 text, atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_save_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    """A safetensors file (contiguous CPU copies of ``tensors``), atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def atomic_replace_dir(staging: str | Path, final: str | Path) -> Path:
    """Move a fully written folder ``staging`` to ``final``, replacing an existing one."""
    staging, final = Path(staging), Path(final)
    old = final.with_name(f".{final.name}.old{TMP_SUFFIX}")
    if final.exists():
        if old.exists():
            import shutil

            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_stale_temporaries(folder: str | Path, older_than_s: float = 3600.0) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files older than ``older_than_s`` that a killed writer left behind."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        try:
            if p.is_file() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed
