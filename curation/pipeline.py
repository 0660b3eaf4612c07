"""Sheets -> training pairs (the paper's Stage I data curation, after generation).

For each sheet: cut it along its layout into cells, drop cells that are blank, too small or
near-duplicates of an earlier cell, pair the remaining cells (reference, target; caption from the
target cell), optionally pass each pair through a filter (CHARIS in filter mode), and append the
pairs to the dataset. Everything dropped is reported with its reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..core.errors import InputError
from ..core.imagefile import load_rgb, to_uint8
from ..core.regions import crop_cells
from . import pairs as PA
from .dataset import DatasetWriter
from .captions import Captioner
from .filters import PairFilter, as_verdict
from .sheets import SheetInfo, find_sheets, read_sheet_info

log = logging.getLogger(__name__)


@dataclass
class CurationConfig:
    pairing: str = "all"              # all | first | cyclic (see pairs.pair_indices)
    max_pairs_per_sheet: int = 0      # 0 = no cap; else a deterministic subset
    near_duplicate: float = 0.02      # thumbnail mean abs difference below this = same picture
    blank_std: float = 0.02           # pixel std (0..1) below this = blank cell
    min_cell: int = 32                # cells narrower or lower than this (px) are dropped

    def validate(self) -> "CurationConfig":
        if self.pairing not in PA.PAIRINGS:
            raise InputError("pairing", f"'{self.pairing}' is not a pairing.", f"Choose one of {', '.join(PA.PAIRINGS)}.")
        if self.max_pairs_per_sheet < 0:
            raise InputError("max_pairs_per_sheet", "is negative.", "Use 0 (no cap) or more.")
        return self


@dataclass
class Dropped:
    sheet: str
    item: str       # "cell 3" or "pair 1->4" (1-based cell numbers in reading order)
    reason: str


@dataclass
class CurationReport:
    sheets: int = 0
    cells: int = 0
    pairs_considered: int = 0
    written: int = 0
    already_present: int = 0
    skipped_sheets: list[Dropped] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    dataset: str = ""

    def reasons(self) -> dict[str, int]:
        return dict(Counter(_reason_kind(d.reason) for d in self.dropped + self.skipped_sheets))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dropped_by_reason"] = self.reasons()
        return d

    def text(self) -> str:
        lines = [f"curation: {self.sheets} sheets, {self.cells} cells, {self.pairs_considered} candidate pairs -> "
                 f"{self.written} new pairs written, {self.already_present} already in the dataset"]
        if self.dataset:
            lines.append(f"dataset: {self.dataset}")
        reasons = self.reasons()
        if reasons:
            lines.append("dropped: " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
        for d in (self.skipped_sheets + self.dropped)[:200]:
            lines.append(f"  - {d.sheet}: {d.item}: {d.reason}")
        extra = len(self.skipped_sheets) + len(self.dropped) - 200
        if extra > 0:
            lines.append(f"  ... and {extra} more (see curation_report.json)")
        return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


@dataclass
class SheetSource:
    """One sheet to curate: its pixels (``[H, W, 3]`` uint8 or a path) and its description."""

    image: np.ndarray | str | Path
    info: SheetInfo
    name: str


def load_picture(path: str | Path) -> np.ndarray:
    """A sheet's pixels as ``[H, W, 3]`` uint8 (transparency on white); InputError naming the file."""
    return to_uint8(load_rgb(path, name="sheet")[0])


def split_sheet(image: np.ndarray, info: SheetInfo) -> list[np.ndarray]:
    """The sheet's cells (each region's box, scaled to the picture's size) as uint8 arrays."""
    tensor = torch.from_numpy(np.array(image, copy=True))
    return [np.ascontiguousarray(c.numpy()) for c in crop_cells(tensor, info.layout)]


def _stable_order(key: str, items: list) -> list:
    return sorted(items, key=lambda it: hashlib.sha256(f"{key}:{it}".encode()).hexdigest())


def _unreadable(e: InputError) -> str:
    """Why a sheet was skipped: the problem and its fix (and what was at fault, unless it is the sheet)."""
    what = "" if e.input_name in ("sheet", "image") else f"{e.input_name}: "
    return f"unreadable: {what}{e.problem} {e.fix}".strip()


def curate_sheet(writer: DatasetWriter, source: SheetSource, config: CurationConfig, report: CurationReport,
                 pair_filter: PairFilter | None = None, captioner: Captioner | None = None) -> None:
    name = source.name
    info = source.info
    try:  # one unreadable sheet (empty, truncated, oversized) is reported and skipped, never fatal
        image = load_picture(source.image) if isinstance(source.image, (str, Path)) else to_uint8(source.image)
        cells = split_sheet(image, info)
    except InputError as e:
        report.skipped_sheets.append(Dropped(name, "sheet", _unreadable(e)))
        log.warning("skipped sheet %s: %s", name, e)
        return
    captions = [c.strip() for c in info.layout.captions]
    report.sheets += 1
    report.cells += len(cells)

    kept: list[PA.Cell] = []
    for i, (arr, cap) in enumerate(zip(cells, captions)):
        what = f"cell {i + 1}"
        if arr.shape[0] < config.min_cell or arr.shape[1] < config.min_cell:
            report.dropped.append(Dropped(name, what, f"too small ({arr.shape[1]}x{arr.shape[0]} px, minimum {config.min_cell})"))
            continue
        if PA.is_blank(arr, config.blank_std):
            report.dropped.append(Dropped(name, what, "blank cell (no content)"))
            continue
        cell = PA.Cell(i, arr, cap, PA.thumbnail(arr), "")
        dup = next((k for k in kept if PA.distance(k.thumb, cell.thumb) < config.near_duplicate), None)
        if dup is not None:
            report.dropped.append(Dropped(name, what, f"near-duplicate of cell {dup.index + 1} "
                                                      f"(difference {PA.distance(dup.thumb, cell.thumb):.3f} < {config.near_duplicate})"))
            continue
        kept.append(cell)

    padded = PA.pad_to_common([c.image for c in kept])
    for c, arr in zip(kept, padded):
        c.image = arr

    candidates = []
    for ri, ti in PA.pair_indices(len(kept), config.pairing):
        ref, tgt = kept[ri], kept[ti]
        what = f"pair {ref.index + 1}->{tgt.index + 1}"
        report.pairs_considered += 1
        if not tgt.caption:
            report.dropped.append(Dropped(name, what, "no caption for the target cell"))
            continue
        candidates.append((ref, tgt, what))
    if config.max_pairs_per_sheet and len(candidates) > config.max_pairs_per_sheet:
        order = _stable_order(name, [c[2] for c in candidates])
        chosen = set(order[: config.max_pairs_per_sheet])
        for c in candidates:
            if c[2] not in chosen:
                report.dropped.append(Dropped(name, c[2], f"over max_pairs_per_sheet ({config.max_pairs_per_sheet})"))
        candidates = [c for c in candidates if c[2] in chosen]

    for ref, tgt, what in candidates:
        if pair_filter is not None:
            verdict = as_verdict(pair_filter(ref.image, tgt.image, tgt.caption))
            if not verdict.keep:
                report.dropped.append(Dropped(name, what, f"filter: {verdict.reason or 'rejected'}"))
                continue
        ref_path, tgt_path = writer.image(ref.image), writer.image(tgt.image)
        meta = {"sheet": name, "character": info.character, "cells": [ref.index + 1, tgt.index + 1]}
        caption = tgt.caption
        if captioner is not None:  # a VLM caption of what the target shows (captions.py); else the cell prompt
            cap = captioner(tgt.image, tgt.caption)
            caption, meta["caption_source"], meta["cell_prompt"] = cap.text, cap.source, tgt.caption
        if writer.add(ref_path, tgt_path, caption, **meta):
            report.written += 1
        else:
            report.already_present += 1
    writer.commit()


def curate(sources: Iterable[SheetSource], dataset_dir: str | Path, config: CurationConfig | None = None,
           pair_filter: PairFilter | None = None, progress: Callable[[int], None] | None = None,
           captioner: Captioner | None = None,
           check_interrupt: Callable[[], None] | None = None) -> CurationReport:
    """Curate ``sources`` into the dataset at ``dataset_dir`` (created if needed; resumable)."""
    config = (config or CurationConfig()).validate()
    report = CurationReport(dataset=str(Path(dataset_dir)))
    with DatasetWriter(dataset_dir) as writer:
        for i, source in enumerate(sources):
            if check_interrupt is not None:
                check_interrupt()
            curate_sheet(writer, source, config, report, pair_filter, captioner)
            if progress is not None:
                progress(i + 1)
        writer.write_report(report.to_dict())
    log.info("%s", report.text().splitlines()[0])
    return report


def folder_sources(folder: str | Path, fallback: SheetInfo | None = None, recursive: bool = True,
                   report: CurationReport | None = None) -> list[SheetSource]:
    """A :class:`SheetSource` per picture under ``folder`` that describes itself (sidecar or PNG
    chunk) -- or, for pictures that don't, per ``fallback`` (a grid given by the caller)."""
    folder = Path(folder)
    out = []
    for path in find_sheets(folder, recursive):
        name = str(path.relative_to(folder)) if folder.is_dir() else path.name
        try:
            info = read_sheet_info(path)
        except InputError as e:
            if report is not None:
                report.skipped_sheets.append(Dropped(name, "sheet", _unreadable(e)))
            log.warning("skipped sheet %s: %s", name, e)
            continue
        if info is None:
            if fallback is None:
                if report is not None:
                    report.skipped_sheets.append(Dropped(name, "sheet", "no layout (no .sheet.json, no PNG chunk; give --grid)"))
                continue
            info = SheetInfo(fallback.layout, character=path.stem)
        out.append(SheetSource(path, info, name))
    return out


def curate_folder(folder: str | Path, dataset_dir: str | Path, config: CurationConfig | None = None,
                  pair_filter: PairFilter | None = None, fallback: SheetInfo | None = None, **kw) -> CurationReport:
    skipped = CurationReport()
    sources = folder_sources(folder, fallback, report=skipped)
    if not sources:
        raise InputError("sheets", f"no character sheets found under {folder}.",
                         "Save sheets with the Save Character Sheet node (it writes the layout next to each picture), "
                         "or give the grid (rows, columns, gutter) for plain pictures.")
    report = curate(sources, dataset_dir, config, pair_filter, **kw)
    report.skipped_sheets = skipped.skipped_sheets + report.skipped_sheets
    if report.skipped_sheets:
        with DatasetWriter(dataset_dir) as w:
            w.write_report(report.to_dict())
    return report
