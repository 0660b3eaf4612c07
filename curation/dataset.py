"""The trainer's dataset on disk: a JSONL manifest + content-addressed images. Resumable and safe.

Layout of a dataset folder::

    pairs.jsonl          one {"reference": "images/<id>.png", "target": "images/<id>.png", "caption": "..."}
                         per line (paths relative to the manifest; extra keys say where a pair came from)
    images/<id>.png      one file per distinct cell; <id> is a hash of the pixels
    curation_report.json what the last run kept and dropped, and why

Guarantees: an image file is never rewritten (its name is its content, so an existing file already
holds these pixels); manifest lines already present are kept verbatim and a pair that is already
listed is not added again (so a resumed or repeated run adds no duplicates); the manifest is
replaced atomically (temp file + ``os.replace``) after every sheet; a lock file keeps two runs from
writing the same dataset at once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.files import atomic_write_bytes, atomic_write_text, clean_stale_temporaries
from ..core.imagefile import png_bytes
from .pairs import content_id

log = logging.getLogger(__name__)

MANIFEST = "pairs.jsonl"
IMAGES = "images"
REPORT = "curation_report.json"
LOCK = ".curation.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DatasetWriter:
    """Append pairs to a dataset folder (see the module docstring). Use as a context manager."""

    def __init__(self, root: str | Path, manifest: str = MANIFEST):
        self.root = Path(root)
        self.manifest = self.root / manifest
        self.images = self.root / IMAGES
        self._lines: list[str] = []
        self._keys: set[tuple[str, str, str]] = set()
        self._pending: list[str] = []
        self._locked = False
        if self.manifest.exists():
            for n, line in enumerate(self.manifest.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (str(row["reference"]), str(row["target"]), str(row["caption"]))
                except (ValueError, KeyError, TypeError):
                    raise InputError("dataset", f"{self.manifest} line {n} is not a (reference, target, caption) object.",
                                     "Fix or remove that line, or write the new pairs to another folder.") from None
                self._lines.append(line)
                self._keys.add(key)

    # ---- lock ----

    def __enter__(self) -> "DatasetWriter":
        self.root.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(exist_ok=True)
        lock = self.root / LOCK
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise InputError("dataset", f"another curation (process {pid}) is writing {self.root}.",
                                     f"Wait for it to finish (or delete {lock} if it is gone).") from None
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._locked = True
            # half-written files of a killed run: nobody else writes here while we hold the lock
            for folder in (self.root, self.images):
                for stale in clean_stale_temporaries(folder, older_than_s=0):
                    log.info("removed %s (left by an interrupted run)", stale)
            return self
        raise InputError("dataset", f"could not lock {self.root}.", f"Delete {lock} and retry.")

    def __exit__(self, *exc) -> None:
        try:
            self.commit()
        finally:
            if self._locked:
                (self.root / LOCK).unlink(missing_ok=True)
                self._locked = False

    # ---- content ----

    @property
    def count(self) -> int:
        return len(self._lines) + len(self._pending)

    def has(self, reference: str, target: str, caption: str) -> bool:
        return (reference, target, caption) in self._keys

    def image(self, arr: np.ndarray) -> str:
        """Store a ``[H, W, 3]`` uint8 picture (once) and return its path relative to the manifest."""

        name = f"{content_id(arr)}.png"
        path = self.images / name
        if not path.exists():  # content-named: an existing file already holds these pixels
            atomic_write_bytes(path, png_bytes(arr), overwrite=False)
        return f"{IMAGES}/{name}"

    def add(self, reference: str, target: str, caption: str, **meta) -> bool:
        """Queue one pair; ``False`` if the dataset already lists it."""
        key = (reference, target, caption)
        if key in self._keys:
            return False
        self._keys.add(key)
        row = {"reference": reference, "target": target, "caption": caption, **meta}
        self._pending.append(json.dumps(row, ensure_ascii=False))
        return True

    def commit(self) -> int:
        """Write the manifest (old lines verbatim + new ones) atomically; returns lines added."""
        if not self._pending:
            return 0
        lines = self._lines + self._pending
        atomic_write_text(self.manifest, "\n".join(lines) + "\n")
        added = len(self._pending)
        self._lines = lines
        self._pending = []
        return added

    def write_report(self, report: dict) -> Path:
        path = self.root / REPORT
        atomic_write_text(path, json.dumps(report, indent=1, ensure_ascii=False))
        return path


def read_pairs(manifest: str | Path) -> list[dict]:
    """The manifest's rows with paths resolved against its folder (for checks and tests)."""
    manifest = Path(manifest)
    rows = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            for k in ("reference", "target"):
                row[k] = str((manifest.parent / row[k]).resolve())
            rows.append(row)
    return rows
