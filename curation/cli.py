"""Command line: ``python -m instruct_identity.curation [curate] SHEETS DATASET [options]`` and
``python -m instruct_identity.curation split SHEET OUT_DIR``.

SHEETS is a folder of character sheets (or one sheet). Each sheet's layout comes from the
``.sheet.json`` next to it (written by the Save Character Sheet node) or the PNG's text chunk; for
plain pictures give the grid with ``--grid ROWSxCOLS --gutter PX`` (and ``--captions FILE``, one per
cell). Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from ..core.errors import InputError
from ..core.version import package_version
from ..core.files import atomic_write_bytes, atomic_write_text
from ..core.imagefile import png_bytes
from .captions import CAPTION_MODES, make_captioner
from .filters import FILTER_MODES, make_filter
from .pairs import PAIRINGS
from .pipeline import CurationConfig, curate, folder_sources, load_picture, split_sheet
from .sheets import read_sheet_info, uniform_info

log = logging.getLogger("instruct_identity.curation")


def _grid(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text or "")
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not ROWSxCOLS (e.g. 2x3)")
    return int(m.group(1)), int(m.group(2))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (use 0 or more)")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ii-curate",
                                description="Turn character sheets into (reference, target, caption) training pairs.")
    p.add_argument("--version", action="version", version=f"ii-curate {package_version()}")
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("curate", help="sheets -> dataset (default command)")
    c.add_argument("sheets", type=Path, help="folder of sheets (searched recursively) or one sheet")
    c.add_argument("dataset", type=Path, help="dataset folder (created; resumed if it exists)")
    c.add_argument("--pairing", choices=PAIRINGS, default="all", help="all ordered pairs, first cell as reference, or cyclic")
    c.add_argument("--max-pairs", type=_count, default=0, help="at most this many pairs per sheet (0 = no cap)")
    c.add_argument("--near-duplicate", type=_fraction, default=0.02, help="cells closer than this are duplicates (0..1)")
    c.add_argument("--blank-std", type=_fraction, default=0.02, help="cells whose pixels vary less than this are blank")
    c.add_argument("--min-cell", type=_count, default=32, help="smallest usable cell side in pixels")
    c.add_argument("--filter", choices=FILTER_MODES, default="off", help="filter pairs with CHARIS (filter mode)")
    c.add_argument("--charis-config", type=Path, help="CHARIS config (TOML/JSON) naming the local models for --filter charis")
    c.add_argument("--caption", choices=CAPTION_MODES, default="cell",
                   help="cell: the cell prompt is the caption; vlm: the VLM of --charis-config describes each target "
                        "(cached; the cell prompt stays when no VLM is configured)")
    c.add_argument("--grid", type=_grid, help="ROWSxCOLS for sheets without a layout file")
    c.add_argument("--gutter", type=_count, default=0, help="gutter in px for --grid")
    c.add_argument("--captions", type=Path, help="text file, one caption per cell, for --grid")
    c.add_argument("--no-recursive", action="store_true", help="only the top folder")
    c.add_argument("--report", type=Path, help="also write the report (JSON) here")
    c.add_argument("-v", "--verbose", action="store_true")
    s = sub.add_parser("split", help="cut one sheet into its cells (for checking a layout)")
    s.add_argument("sheet", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--grid", type=_grid)
    s.add_argument("--gutter", type=_count, default=0)
    s.add_argument("-v", "--verbose", action="store_true")
    return p


def _fallback(args, size_from):
    """The --grid layout, sized from the first readable picture of ``size_from`` (a path or a list)."""
    if not args.grid:
        return None
    candidates = [size_from] if isinstance(size_from, Path) else list(size_from or [])
    arr = None
    for path in candidates:
        try:
            arr = load_picture(path)
            break
        except InputError as e:  # reported again (and skipped) when the sheets are curated
            log.warning("%s", e)
    if arr is None:
        raise InputError("--grid", "no readable picture to take the canvas size from.",
                         "Check the sheets folder (the pictures above could not be read).")
    captions = []
    if getattr(args, "captions", None):
        if not args.captions.is_file():
            raise InputError("--captions", f"{args.captions} does not exist.", "Give a text file with one caption per cell.")
        try:
            text = args.captions.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError("--captions", f"{args.captions} is not UTF-8 text.", "Save it as UTF-8 text, one caption per line.") from None
        captions = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        return uniform_info(args.grid[0], args.grid[1], args.gutter, arr.shape[1], arr.shape[0], captions)
    except InputError as e:  # the grid's checks name rows/cols/gutter/prompts: here they all come from --grid etc.
        flag = {"prompts": "--captions", "captions": "--captions", "gutter": "--gutter"}.get(e.input_name, "--grid")
        raise InputError(flag, e.problem, e.fix) from None


def cmd_curate(args) -> int:
    from tqdm import tqdm

    from .sheets import find_sheets
    pics = find_sheets(args.sheets, not args.no_recursive)
    fallback = _fallback(args, pics)
    config = CurationConfig(args.pairing, args.max_pairs, args.near_duplicate, args.blank_std, args.min_cell)
    if args.filter == "charis" and not args.charis_config:
        log.warning("--filter charis without --charis-config: CHARIS runs with its defaults (no local models), so axes "
                    "that need a model are missing and those pairs are dropped")
    pair_filter = make_filter(args.filter, config_path=str(args.charis_config) if args.charis_config else None)
    from .pipeline import CurationReport
    pre = CurationReport()
    sources = folder_sources(args.sheets, fallback, not args.no_recursive, report=pre)
    if not sources:
        raise InputError("sheets", f"no character sheets found under {args.sheets}.",
                         "Use sheets saved by the Save Character Sheet node, or give --grid ROWSxCOLS.")
    bar = tqdm(total=len(sources), unit="sheet", disable=None)
    captioner = make_captioner(args.caption, config_path=str(args.charis_config) if args.charis_config else None)
    report = curate(sources, args.dataset, config, pair_filter, progress=lambda n: bar.update(1), captioner=captioner)
    bar.close()
    report.skipped_sheets = pre.skipped_sheets + report.skipped_sheets
    if pre.skipped_sheets:  # the dataset's report lists every skipped sheet, not only those curate() saw
        from .dataset import DatasetWriter

        with DatasetWriter(args.dataset) as writer:
            writer.write_report(report.to_dict())
    text = report.text()
    for line in text.splitlines():
        log.info("%s", line)
    if args.report:
        atomic_write_text(args.report, json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    return 0


def cmd_split(args) -> int:
    info = read_sheet_info(args.sheet) or _fallback(args, args.sheet)
    if info is None:
        raise InputError("sheet", f"{args.sheet} has no layout.", "Give --grid ROWSxCOLS (and --gutter).")
    args.out.mkdir(parents=True, exist_ok=True)
    cells = split_sheet(load_picture(args.sheet), info)
    for i, (arr, cap) in enumerate(zip(cells, info.layout.captions), start=1):
        atomic_write_bytes(args.out / f"cell_{i:02d}.png", png_bytes(arr))
        atomic_write_text(args.out / f"cell_{i:02d}.txt", cap + "\n")
    log.info("wrote %d cells to %s", len(cells), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("curate", "split", "-h", "--help", "--version"):
        argv = ["curate"] + argv
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return cmd_curate(args) if args.command == "curate" else cmd_split(args)
    except InputError as e:
        log.error("error: %s", e)
        return 2
    except OSError as e:  # a folder that cannot be read or written: say which, no traceback
        log.error("error: %s", e)
        return 1
