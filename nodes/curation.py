"""Sheet -> dataset curation nodes (thin wrappers over :mod:`instruct_identity.curation`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..core.errors import InputError
from ..core.imagefile import to_uint8
from ..curation import filters as FI
from ..curation.captions import CAPTION_MODES, make_captioner
from ..curation.pairs import PAIRINGS
from ..curation.pipeline import CurationConfig, SheetSource, curate, curate_folder
from ..curation.sheets import SheetInfo, find_sheets
from .regional import RegionLayoutIO

CATEGORY = "Instruct Identity/Curation"
CharisEvaluator = io.Custom("CHARIS_EVALUATOR")     # made by the CHARIS Loader node


def inside(base: str, relative: str, name: str) -> Path:
    """``relative`` resolved under ``base``; refuses paths that leave it (the server may be shared)."""
    rel = str(relative or "").strip()
    if not rel:
        raise InputError(name, "is empty.", f"Give a folder inside {base}.")
    base_p = Path(base).resolve()
    path = (base_p / rel).resolve()
    if os.path.commonpath([str(base_p), str(path)]) != str(base_p):
        raise InputError(name, f"'{rel}' points outside {base_p}.",
                         "Use a folder inside ComfyUI's output folder (or the command line tool for other places).")
    return path


def _options():
    return [
        io.Combo.Input("pairing", options=list(PAIRINGS), default="all",
                       tooltip="all: every ordered pair of cells; first: cell 1 is the reference of every other; cyclic: each cell "
                               "is the reference of the next."),
        io.Int.Input("max_pairs_per_sheet", default=0, min=0, max=10000, tooltip="0 = no cap; else a fixed (seedless) subset."),
        io.Float.Input("near_duplicate", default=0.02, min=0.0, max=1.0, step=0.005,
                       tooltip="Cells whose thumbnails differ by less than this are duplicates (dropped)."),
        io.Float.Input("blank_std", default=0.02, min=0.0, max=1.0, step=0.005, tooltip="Cells with less variation than this are blank (dropped)."),
        io.Combo.Input("filter", options=list(FI.FILTER_MODES), default="off",
                       tooltip="charis: keep only pairs that pass CHARIS in filter mode (identity, colour, quality, diversity)."),
        io.Combo.Input("caption", options=list(CAPTION_MODES), default="cell", optional=True,
                       tooltip="cell: the cell prompt is the caption; vlm: the CHARIS Loader's VLM describes each target "
                               "(cached; the cell prompt stays when the loader has no VLM)."),
        CharisEvaluator.Input("charis", optional=True, tooltip="The CHARIS Loader's evaluator (needed for filter = charis)."),
    ]


def _config(pairing, max_pairs_per_sheet, near_duplicate, blank_std) -> CurationConfig:
    return CurationConfig(pairing, int(max_pairs_per_sheet), float(near_duplicate), float(blank_std))


def _filter(mode: str, charis):
    if mode == "charis" and charis is None:
        raise InputError("charis", "filter is 'charis' but no CHARIS evaluator is connected.",
                         "Connect a CHARIS Loader (with the models it should use) to 'charis', or set filter to 'off'.")
    return FI.make_filter(mode, evaluator=charis)


def _captioner(mode: str, charis):
    if mode == "vlm" and charis is None:
        raise InputError("charis", "caption is 'vlm' but no CHARIS evaluator is connected.",
                         "Connect a CHARIS Loader with a VLM to 'charis', or set caption to 'cell'.")
    return make_captioner(mode, evaluator=charis)


def _progress(total: int):
    bar = comfy.utils.ProgressBar(max(1, total))
    return lambda n: bar.update_absolute(n, max(1, total))


class SheetsToDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentitySheetsToDataset",
            display_name="Sheets to Dataset (Instruct Identity)",
            category=CATEGORY,
            description="Cut every saved character sheet in a folder into cells, drop blank and near-duplicate cells, pair "
                        "the rest (reference, target, caption of the target) and append them to a training dataset "
                        "(pairs.jsonl + images). Resumable: pairs already in the dataset are not added again.",
            is_output_node=True,
            inputs=[
                io.String.Input("sheets_folder", default="character_sheets",
                                tooltip="Folder inside the output folder holding sheets saved by Save Character Sheet."),
                io.String.Input("dataset_folder", default="datasets/characters", tooltip="Dataset folder inside the output folder."),
                *_options(),
            ],
            outputs=[io.String.Output("report", display_name="report"), io.String.Output("manifest", display_name="manifest", tooltip="Path of pairs.jsonl.")],
        )

    @classmethod
    def fingerprint_inputs(cls, sheets_folder, **kwargs):
        """Run again whenever the folder's pictures change (the dataset itself is append-only)."""
        try:
            folder = inside(folder_paths.get_output_directory(), sheets_folder, "sheets_folder")
            h = hashlib.sha256()
            for p in find_sheets(folder):
                st = p.stat()
                h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
            return h.hexdigest()
        except Exception:  # noqa: BLE001 - bad input is reported by execute
            return float("nan")

    @classmethod
    def execute(cls, sheets_folder, dataset_folder, pairing, max_pairs_per_sheet, near_duplicate, blank_std, filter,
                charis=None, caption="cell") -> io.NodeOutput:
        out_dir = folder_paths.get_output_directory()
        src = inside(out_dir, sheets_folder, "sheets_folder")
        dst = inside(out_dir, dataset_folder, "dataset_folder")
        total = len(find_sheets(src)) if src.is_dir() else 1
        report = curate_folder(src, dst, _config(pairing, max_pairs_per_sheet, near_duplicate, blank_std), _filter(filter, charis),
                               progress=_progress(total), captioner=_captioner(caption, charis),
                               check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        return io.NodeOutput(report.text(), str(dst / "pairs.jsonl"))


class CurateSheet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityCurateSheet",
            display_name="Curate Sheet into Dataset (Instruct Identity)",
            category=CATEGORY,
            description="The same curation for sheets in the graph (IMAGE + layout), e.g. straight after VAE Decode.",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="One or more sheets with the same layout."),
                RegionLayoutIO.Input("layout"),
                io.String.Input("dataset_folder", default="datasets/characters", tooltip="Dataset folder inside the output folder."),
                io.String.Input("character", default="", tooltip="Character name recorded with the pairs."),
                *_options(),
            ],
            outputs=[io.String.Output("report", display_name="report"), io.String.Output("manifest", display_name="manifest")],
        )

    @classmethod
    def execute(cls, images, layout, dataset_folder, character, pairing, max_pairs_per_sheet, near_duplicate, blank_std, filter,
                charis=None, caption="cell") -> io.NodeOutput:
        dst = inside(folder_paths.get_output_directory(), dataset_folder, "dataset_folder")
        sources = []
        for b in range(images.shape[0]):
            arr = to_uint8(images[b])
            name = f"{character or 'sheet'}#{hashlib.sha256(arr.tobytes()).hexdigest()[:10]}"
            sources.append(SheetSource(arr, SheetInfo(layout, character=character), name))
        report = curate(sources, dst, _config(pairing, max_pairs_per_sheet, near_duplicate, blank_std), _filter(filter, charis),
                        progress=_progress(len(sources)), captioner=_captioner(caption, charis),
                        check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        return io.NodeOutput(report.text(), str(dst / "pairs.jsonl"))


NODES = [SheetsToDataset, CurateSheet]
