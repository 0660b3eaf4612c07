"""Character-sheet nodes: batch queuing (characters x poses), saving sheets with their layout,
splitting sheets into cells, and finding the borders to out-paint."""

from __future__ import annotations

import json
import logging
import os

import folder_paths
import torch
from comfy.cli_args import args as comfy_args
from comfy_api.latest import io, ui

from ..core import regions as R
from ..core.errors import InputError
from ..core.files import atomic_write_bytes, clean_stale_temporaries
from ..core.imagefile import png_bytes
from ..curation import outpaint as O
from ..curation import sheets as S
from .regional import CATEGORY, RegionLayoutIO

log = logging.getLogger(__name__)

EXAMPLE_CHARACTERS = ("mira: a young woman with short silver hair, round glasses, green bomber jacket, black jeans, red sneakers\n"
                      "bolt: a small orange robot with one blue eye, antenna and yellow stripes")
EXAMPLE_POSES = "standing, front view\nstanding, side view\nstanding, back view\nsitting on a chair\nwaving, smiling\nrunning"


class CharacterSheetBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityCharacterSheetBatch",
            display_name="Character Sheet Batch (Instruct Identity)",
            category=CATEGORY,
            description="Characters x poses -> one sheet per character from a single queue run. Outputs are lists: every node "
                        "downstream runs once per character. Seeds depend only on the base seed and the character's name; "
                        "file names carry the name.",
            inputs=[
                io.String.Input("characters", multiline=True, dynamic_prompts=False, default=EXAMPLE_CHARACTERS,
                                tooltip="'name: description' per line, or CSV (name,description[,poses]), or JSON "
                                        '[{"name", "description", "poses"}].'),
                io.String.Input("poses", multiline=True, dynamic_prompts=False, default=EXAMPLE_POSES,
                                tooltip="One pose or scene per line (one sheet cell each), or a JSON list."),
                io.Combo.Input("format", options=list(S.INPUT_FORMATS), default="auto", tooltip="How 'characters' is written."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Base seed; each character's seed is derived from it and the name (so re-queuing repeats the sheets)."),
                io.String.Input("base_template", multiline=True, dynamic_prompts=False, default=S.DEFAULT_BASE_TEMPLATE,
                                tooltip="The shared identity prompt. {description} and {name} are filled in."),
                io.String.Input("cell_template", multiline=True, dynamic_prompts=False, default=S.DEFAULT_CELL_TEMPLATE,
                                tooltip="Each cell's prompt. {pose}, {description} and {name} are filled in."),
                io.String.Input("folder", default="character_sheets", tooltip="Sub-folder of the output folder for the sheets."),
            ],
            outputs=[
                io.String.Output("name", display_name="name", is_output_list=True, tooltip="The character's name (one per sheet)."),
                io.String.Output("base_prompt", display_name="base_prompt", is_output_list=True, tooltip="Identity prompt for the whole sheet."),
                io.String.Output("cell_prompts", display_name="cell_prompts", is_output_list=True, tooltip="One line per cell: connect to the grid's 'prompts'."),
                io.String.Output("captions", display_name="captions", is_output_list=True, tooltip="One caption (the pose) per cell: connect to the grid's 'captions'."),
                io.Int.Output("sheet_seed", display_name="seed", is_output_list=True, tooltip="The character's seed: connect to the sampler's seed."),
                io.String.Output("filename_prefix", display_name="filename_prefix", is_output_list=True, tooltip="folder/name: connect to Save Character Sheet."),
                io.Int.Output("count", display_name="count", tooltip="Number of sheets."),
            ],
        )

    @classmethod
    def execute(cls, characters, poses, format, seed, base_template, cell_template, folder) -> io.NodeOutput:
        plans = S.plan_sheets(characters, poses, seed, format, base_template, cell_template, folder)
        log.info("Instruct Identity: %d character sheets queued: %s", len(plans), ", ".join(p.name for p in plans))
        return io.NodeOutput([p.name for p in plans], [p.base_prompt for p in plans], ["\n".join(p.cell_prompts) for p in plans],
                             ["\n".join(p.captions) for p in plans], [p.seed for p in plans], [p.filename_prefix for p in plans],
                             len(plans))


def _png_metadata(cls, sheet_json: str):
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if not comfy_args.disable_metadata and cls.hidden is not None:
        if cls.hidden.prompt is not None:
            meta.add_text("prompt", json.dumps(cls.hidden.prompt))
        for k, v in (cls.hidden.extra_pnginfo or {}).items():
            meta.add_text(k, json.dumps(v))
    meta.add_text(S.PNG_KEY, sheet_json)
    return meta


def save_sheets(images: torch.Tensor, layout: R.RegionLayout, filename_prefix: str, character: str = "", base_prompt: str = "",
                seed: int | None = None, metadata=None, output_dir: str | None = None) -> list[tuple[str, str]]:
    """Save each picture as PNG (ComfyUI's counter naming) with a ``.sheet.json`` next to it.
    Returns (subfolder, file name) per picture."""

    output_dir = output_dir or folder_paths.get_output_directory()
    prefix = str(filename_prefix or "").strip()
    if not prefix or os.path.basename(os.path.normpath(prefix)) in ("", ".", ".."):
        raise InputError("filename_prefix", f"'{filename_prefix}' names no file.", "Give folder/name, e.g. character_sheets/mira.")
    if os.path.isabs(prefix) or os.path.commonpath([os.path.abspath(output_dir),
                                                    os.path.abspath(os.path.join(output_dir, os.path.dirname(os.path.normpath(prefix))))]) \
            != os.path.abspath(output_dir):
        raise InputError("filename_prefix", f"'{filename_prefix}' points outside the output folder.",
                         "Use a folder/name inside ComfyUI's output folder, e.g. character_sheets/mira.")
    h, w = images.shape[1], images.shape[2]
    full, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, output_dir, w, h)
    for stale in clean_stale_temporaries(full, older_than_s=60.0):  # half-written sheets of a killed run
        log.info("removed %s (left by an interrupted save)", stale)
    out = []
    for b in range(images.shape[0]):
        info = S.SheetInfo(layout, character or filename, "", base_prompt, seed)
        name = f"{filename.replace('%batch_num%', str(b))}_{counter:05}_.png"
        path = os.path.join(full, name)
        info.image = name
        pnginfo = metadata(json.dumps(info.to_dict(), ensure_ascii=False)) if metadata else None
        atomic_write_bytes(path, png_bytes(images[b], pnginfo=pnginfo))
        S.write_sidecar(path, info)
        out.append((subfolder, name))
        counter += 1
    return out


class SaveCharacterSheet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentitySaveSheet",
            display_name="Save Character Sheet (Instruct Identity)",
            category=CATEGORY,
            description="Save sheets to the output folder with their layout (cell boxes, prompts, captions) in a .sheet.json "
                        "next to each PNG and inside it, so Sheets to Dataset can cut them into training pairs.",
            is_output_node=True,
            inputs=[
                io.Image.Input("images"),
                RegionLayoutIO.Input("layout"),
                io.String.Input("filename_prefix", default="character_sheets/sheet",
                                tooltip="folder/name inside the output folder; the Character Sheet Batch node gives one per character."),
                io.String.Input("character", default="", optional=True, tooltip="Character name recorded with the sheet."),
                io.String.Input("base_prompt", default="", optional=True, multiline=True, dynamic_prompts=False),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, optional=True, control_after_generate=False,
                             tooltip="Seed recorded with the sheet."),
            ],
            outputs=[io.String.Output("sheet_path", display_name="sheet_path", tooltip="Path of the (first) saved sheet relative to the output folder.")],
        )

    @classmethod
    def execute(cls, images, layout, filename_prefix, character="", base_prompt="", seed=0) -> io.NodeOutput:
        saved = save_sheets(images, layout, filename_prefix, character, base_prompt, seed, lambda j: _png_metadata(cls, j))
        results = [ui.SavedResult(name, sub, io.FolderType.output) for sub, name in saved]
        first = os.path.join(saved[0][0], saved[0][1]) if saved else ""
        return io.NodeOutput(first, ui=ui.SavedImages(results))


class SplitSheet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentitySplitSheet",
            display_name="Split Character Sheet (Instruct Identity)",
            category=CATEGORY,
            description="Cut a sheet into its cells along the layout (scaled if the picture's size differs). Outputs lists: "
                        "one cell picture and one caption per region.",
            inputs=[io.Image.Input("image"), RegionLayoutIO.Input("layout")],
            outputs=[
                io.Image.Output("cells", display_name="cells", is_output_list=True),
                io.String.Output("captions", display_name="captions", is_output_list=True),
            ],
        )

    @classmethod
    def execute(cls, image, layout) -> io.NodeOutput:
        cells, caps = [], []
        for b in range(image.shape[0]):
            for cell, cap in zip(R.crop_cells(image[b], layout), layout.captions):
                cells.append(cell.unsqueeze(0).contiguous())
                caps.append(cap)
        return io.NodeOutput(cells, caps)


class OutpaintBorders(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityOutpaintBorders",
            display_name="Find Cut-off Borders (Instruct Identity)",
            category=CATEGORY,
            description="Estimate the plain background, find where the subject touches the picture's border, and give the "
                        "padding for only those sides: connect left/top/right/bottom to Pad Image for Outpainting, then "
                        "InpaintModelConditioning with a FLUX Fill model.",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("threshold", default=0.08, min=0.0, max=1.0, step=0.01,
                               tooltip="How far (0-1, per channel) a pixel must be from the background to count as subject."),
                io.Int.Input("margin", default=2, min=1, max=64, tooltip="Border band (px) in which a touching subject counts."),
                io.Float.Input("min_touch", default=0.02, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of a side the subject must cover to be called cut off."),
                io.Float.Input("pad_fraction", default=0.25, min=0.01, max=2.0, step=0.01,
                               tooltip="Padding per cut-off side, as a share of the picture's width (left/right) or height (top/bottom)."),
                io.Int.Input("multiple", default=16, min=1, max=128, tooltip="Round each padding up to this many pixels (FLUX: 16)."),
            ],
            outputs=[
                io.Int.Output("left", display_name="left"),
                io.Int.Output("top", display_name="top"),
                io.Int.Output("right", display_name="right"),
                io.Int.Output("bottom", display_name="bottom"),
                io.Mask.Output("subject_mask", display_name="subject_mask"),
                io.String.Output("report", display_name="report"),
            ],
        )

    @classmethod
    def execute(cls, image, threshold, margin, min_touch, pad_fraction, multiple) -> io.NodeOutput:
        reports, masks = [], []
        for b in range(image.shape[0]):
            rep, mask = O.border_padding(image[b], threshold, margin, min_touch, pad_fraction, multiple)
            reports.append(rep)
            masks.append(mask)
        pad = O.union_padding(reports)
        text = "\n".join(f"image {i + 1}: {r.text()}" for i, r in enumerate(reports)) if len(reports) > 1 else reports[0].text()
        return io.NodeOutput(pad["left"], pad["top"], pad["right"], pad["bottom"], torch.stack(masks), text)


NODES = [CharacterSheetBatch, SaveCharacterSheet, SplitSheet, OutpaintBorders]
