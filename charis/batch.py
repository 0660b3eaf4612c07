"""Batch inputs and outputs: manifests, folders, resumable results files, CSV, and the split/merge
used for multi-process scoring.

Inputs
  * a JSONL manifest: one object per line with ``reference``, ``generated`` and optional ``prompt``
    and ``id`` (relative paths are relative to the manifest's folder);
  * a folder with ``reference/`` and ``generated/`` subfolders: ``generated/NAME.png`` pairs with
    ``reference/NAME.*``, and ``generated/NAME__anything.png`` too (several generations per
    reference); the prompt comes from ``generated/<stem>.txt`` when present.

Results: JSONL, one :class:`PairResult` per line. Each line is appended with a single ``write`` on an
``O_APPEND`` descriptor and flushed to disk, so an interrupted run leaves at most one torn last line,
which the reader skips (and :func:`repair` removes). Items already scored without error are skipped
on the next run; failed items are tried again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from pathlib import Path

from .axes import CORE_AXES, DREAMBENCH_AXES
from .evaluator import Item
from .images import IMAGE_SUFFIXES
from .results import PairResult

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    pass


def read_items(source: str | Path) -> list[Item]:
    source = Path(source)
    if source.is_dir():
        manifest = source / "manifest.jsonl"
        return read_manifest(manifest) if manifest.is_file() else read_folder(source)
    if source.is_file():
        return read_manifest(source)
    raise ManifestError(f"{source}: no such manifest or folder")


def read_manifest(path: Path) -> list[Item]:
    items, seen = [], set()
    base = path.parent
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ManifestError(f"{path}:{n}: not a JSON object ({e})") from None
        if not isinstance(row, dict) or not row.get("reference") or not row.get("generated"):
            raise ManifestError(f"{path}:{n}: needs 'reference' and 'generated' paths")
        ref, gen = Path(row["reference"]), Path(row["generated"])
        ref = ref if ref.is_absolute() else base / ref
        gen = gen if gen.is_absolute() else base / gen
        item_id = str(row.get("id") or gen.stem)
        if item_id in seen:
            item_id = f"{item_id}#{n}"
        seen.add(item_id)
        items.append(Item(item_id, ref, gen, str(row.get("prompt") or "")))
    return items


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def read_folder(folder: Path) -> list[Item]:
    refs = {p.stem: p for p in _images(folder / "reference")}
    gens = _images(folder / "generated")
    if not refs or not gens:
        raise ManifestError(f"{folder}: expected reference/ and generated/ subfolders with images "
                            "(or a manifest.jsonl)")
    items = []
    for g in gens:
        key = g.stem if g.stem in refs else g.stem.split("__")[0]
        if key not in refs:
            log.warning("%s: no reference named %s.*; skipped", g, key)
            continue
        txt = g.with_suffix(".txt")
        prompt = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
        items.append(Item(g.stem, refs[key], g, prompt))
    return items


# --------------------------------------------------------------------------------------------------
# Results files


def append_result(path: Path, result: PairResult) -> None:
    """Append one result line atomically (one write on an O_APPEND descriptor, then fsync)."""
    line = (result.to_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> list[PairResult]:
    """All complete result lines of ``path`` (a torn last line is skipped); the latest line per id wins."""
    if not path.is_file():
        return []
    latest: dict[str, PairResult] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = PairResult.from_dict(json.loads(line))
        except (ValueError, TypeError) as e:
            log.warning("%s:%d: unreadable result line skipped (%s)", path, n, e)
            continue
        latest[r.id] = r
    return list(latest.values())


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rewrite_results(path: Path, results: list[PairResult]) -> None:
    write_atomic(path, "".join(r.to_json() + "\n" for r in results))


def repair(path: Path) -> None:
    """Drop a torn last line left by an interrupted run (rewrites the file atomically)."""
    if path.is_file():
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            rewrite_results(path, read_results(path))


def done_ids(path: Path) -> set[str]:
    return {r.id for r in read_results(path) if r.ok}


# --------------------------------------------------------------------------------------------------
# Multi-process split / merge (accelerate)


def part_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}")


def split(items: list, rank: int, world: int) -> list:
    """The contiguous share of ``items`` for process ``rank`` of ``world`` (what
    ``accelerate.PartialState.split_between_processes`` hands out, usable without a launcher)."""
    n = len(items)
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return items[start:start + per + (1 if rank < extra else 0)]


def merge_parts(out: Path) -> int:
    """Fold every ``<out>.partN`` into ``out`` (atomically) and delete the parts; returns lines merged."""
    parts = sorted(out.parent.glob(f"{out.name}.part*"))
    if not parts:
        return 0
    merged = {r.id: r for r in read_results(out)}
    n = 0
    for p in parts:
        for r in read_results(p):
            merged[r.id] = r
            n += 1
    rewrite_results(out, list(merged.values()))
    for p in parts:
        p.unlink(missing_ok=True)
    return n


# --------------------------------------------------------------------------------------------------
# CSV


def axis_columns(results: list[PairResult]) -> list[str]:
    seen = []
    for r in results:
        for a in r.axes:
            if a not in seen:
                seen.append(a)
    order = list(CORE_AXES) + ["clip_score"] + list(DREAMBENCH_AXES)
    return [a for a in order if a in seen] + [a for a in seen if a not in order]


def to_csv(results: list[PairResult]) -> str:
    cols = axis_columns(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "reference", "generated", "prompt", "composite", "mode", "composite_axes", "missing_axes",
                "passed", *cols, "error"])
    for r in results:
        c = r.composite
        w.writerow([r.id, r.reference or "", r.generated or "", r.prompt, _num(c.value if c else None),
                    c.mode if c else "", " ".join(c.axes_used) if c else "", " ".join(c.axes_missing) if c else "",
                    "" if not c or c.passed is None else str(c.passed).lower(),
                    *[_num(r.axes[a].value) if a in r.axes else "" for a in cols], r.error or ""])
    return buf.getvalue()


def _num(v) -> str:
    return "" if v is None else f"{v:.6f}"
