"""Regional prompting nodes: layouts (grid, JSON, masks, colour-coded mask) and the regional
conditioning + model patch for FLUX-family models. Thin classes over ``core.regions`` and
``engine/regional.py``."""

from __future__ import annotations

import logging

import comfy.model_management
import torch
from comfy_api.latest import io

from ..core import regions as R
from ..core.errors import InputError
from ..core.limits import MAX_REGIONAL_TOKENS, check_region_masks
from ..engine import regional as P

log = logging.getLogger(__name__)

CATEGORY = "Instruct Identity/Character sheets"
RegionLayoutIO = io.Custom("II_REGION_LAYOUT")

EXAMPLE_JSON = R.grid_layout(1024, 512, 1, 2, 16, ["standing, front view", "standing, back view"]).to_json()


def _layout_outputs():
    return [
        RegionLayoutIO.Output("layout", display_name="layout", tooltip="The layout (regions, prompts, grid) for Regional Prompting, Save Sheet and Split Sheet."),
        io.String.Output("json", display_name="json", tooltip="The same layout as JSON (regions with x, y, w, h in pixels and a prompt)."),
        io.Mask.Output("region_masks", display_name="region_masks", tooltip="One mask per region, in order (canvas size)."),
        io.Image.Output("preview", display_name="preview", tooltip="The regions in colour (background black)."),
    ]


def layout_result(layout: R.RegionLayout) -> io.NodeOutput:
    return io.NodeOutput(layout, layout.to_json(), layout.masks().float(), R.preview(layout))


class GridLayout(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityGridLayout",
            display_name="Sheet Grid Layout (Instruct Identity)",
            category=CATEGORY,
            description="Split a canvas into rows x columns of equal cells separated by a gutter; one prompt line per cell "
                        "(reading order). Cells without a line follow the base prompt alone.",
            inputs=[
                io.Int.Input("width", default=1536, min=16, max=8192, step=16, tooltip="Canvas width in pixels (use the latent's size)."),
                io.Int.Input("height", default=1024, min=16, max=8192, step=16, tooltip="Canvas height in pixels."),
                io.Int.Input("rows", default=2, min=1, max=16),
                io.Int.Input("cols", default=3, min=1, max=16),
                io.Int.Input("gutter", default=16, min=0, max=512, tooltip="Pixels between cells (background). Multiples of 16 keep cells on FLUX's token grid."),
                io.String.Input("prompts", multiline=True, dynamic_prompts=False, default="standing, front view\nstanding, side view\nstanding, back view",
                                tooltip="One prompt per cell in reading order (left to right, top to bottom)."),
                io.String.Input("captions", multiline=True, dynamic_prompts=False, default="", optional=True,
                                tooltip="Optional training captions per cell (default: the cell's prompt)."),
                io.String.Input("background_prompt", multiline=False, default="", optional=True,
                                tooltip="Optional prompt for the gutters and other uncovered pixels."),
            ],
            outputs=_layout_outputs(),
        )

    @classmethod
    def execute(cls, width, height, rows, cols, gutter, prompts, captions="", background_prompt="") -> io.NodeOutput:
        caps = captions if str(captions or "").strip() else None
        return layout_result(R.grid_layout(width, height, rows, cols, gutter, prompts, caps, background_prompt or ""))


class LayoutFromJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityLayoutFromJSON",
            display_name="Region Layout from JSON (Instruct Identity)",
            category=CATEGORY,
            description='A layout written (or stored by a region editor) as JSON: {"width": W, "height": H, "regions": '
                        '[{"x": 0, "y": 0, "w": 512, "h": 512, "prompt": "..."}], "background": ""}.',
            inputs=[
                io.String.Input("layout_json", multiline=True, dynamic_prompts=False, default=EXAMPLE_JSON,
                                tooltip="Regions with x, y, w, h in pixels and a prompt; optional caption and background."),
            ],
            outputs=_layout_outputs(),
        )

    @classmethod
    def execute(cls, layout_json) -> io.NodeOutput:
        return layout_result(R.RegionLayout.from_json(layout_json))


class LayoutFromMasks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityLayoutFromMasks",
            display_name="Regions from Masks (Instruct Identity)",
            category=CATEGORY,
            description="One region per mask (a MASK batch, e.g. from the mask editor or Load Image), one prompt line per mask. "
                        "Chain several of these nodes through 'add_to' to add masks one at a time.",
            inputs=[
                io.Mask.Input("masks"),
                io.String.Input("prompts", multiline=True, dynamic_prompts=False, default="", tooltip="One prompt per mask, in order."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="Mask values at or above this belong to the region."),
                RegionLayoutIO.Input("add_to", optional=True, tooltip="Add these regions to an existing layout (earlier regions win overlaps)."),
                io.String.Input("background_prompt", default="", optional=True),
            ],
            outputs=_layout_outputs(),
        )

    @classmethod
    def execute(cls, masks, prompts, threshold, add_to=None, background_prompt="") -> io.NodeOutput:
        layout = add_to
        if layout is not None:  # the new masks are scaled to the layout's canvas: check before allocating
            check_region_masks(len(layout) + (masks.shape[0] if masks.ndim == 3 else 1), layout.width, layout.height, "masks")
        if layout is not None and masks.shape[-2:] != (layout.height, layout.width):
            masks = torch.nn.functional.interpolate(masks.float().reshape(-1, 1, *masks.shape[-2:]), size=(layout.height, layout.width),
                                                    mode="bilinear", align_corners=False).squeeze(1)
        new = R.layout_from_masks(masks, prompts, threshold, background_prompt or "")
        if layout is not None:
            new = R.RegionLayout(layout.width, layout.height, layout.regions + new.regions,
                                 background_prompt or layout.background_prompt, None)
        return layout_result(new)


class LayoutFromColorMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityLayoutFromColorMask",
            display_name="Regions from Colour Mask (Instruct Identity)",
            category=CATEGORY,
            description="Each flat colour of a colour-coded picture is a region. Prompt lines '#ff0000: a red dog' go to that "
                        "colour; plain lines go to the colours in reading order (top to bottom, left to right).",
            inputs=[
                io.Image.Input("color_mask"),
                io.String.Input("prompts", multiline=True, dynamic_prompts=False, default=""),
                io.String.Input("background_color", default="#000000", tooltip="Pixels of this colour are background."),
                io.Int.Input("tolerance", default=32, min=0, max=128, tooltip="Per-channel distance (0-255) still counted as the same colour."),
                io.String.Input("background_prompt", default="", optional=True),
            ],
            outputs=_layout_outputs(),
        )

    @classmethod
    def execute(cls, color_mask, prompts, background_color, tolerance, background_prompt="") -> io.NodeOutput:
        return layout_result(R.layout_from_color_mask(color_mask, prompts, background_color, tolerance,
                                                      background_prompt=background_prompt or ""))


def encode_prompt(clip, text: str) -> torch.Tensor:
    """The text encoder's token embeddings ``[1, tokens, width]`` for one prompt."""
    tokens = clip.tokenize(text)
    cond = clip.encode_from_tokens_scheduled(tokens)
    return cond[0][0]


def check_regional_tokens(layout: R.RegionLayout, text_tokens: int) -> None:
    """The joint-attention mask is ``L x L`` for ``L`` = text + image tokens: refuse before building it."""
    rows, cols = R.token_grid(layout.height, layout.width)
    total = int(text_tokens) + rows * cols
    if total > MAX_REGIONAL_TOKENS:
        raise InputError("layout", f"regional prompting on a {layout.width}x{layout.height} canvas with {len(layout)} regional "
                                   f"prompts needs an attention mask over {total} tokens ({rows * cols} image + {text_tokens} "
                                   f"text), over the {MAX_REGIONAL_TOKENS} token limit.",
                         "Use a smaller canvas or fewer (or shorter) regional prompts; the server's owner can raise "
                         "II_MAX_REGIONAL_TOKENS (docs/limits.md).")


def _tokens(conditioning) -> int:
    try:
        return max(int(c[0].shape[1]) for c in conditioning)
    except (TypeError, ValueError, IndexError, AttributeError):
        return 0


def apply_regional(model, clip, conditioning, layout: R.RegionLayout, image_attention: str, options: P.RegionalOptions):
    """(patched model, regional conditioning) -- the whole node as a plain function."""
    if clip is None:
        raise InputError("clip", "no text encoder is connected.", "Connect the CLIP that encoded the base prompt.")
    if not layout.regions:
        raise InputError("layout", "the layout has no regions.", "Give the layout at least one region.")
    options.validate()
    P.flux_block_counts(model)
    # a lower bound (the base prompt, at least one token per regional prompt) before anything is encoded
    groups = sum(1 for p in layout.prompts if p.strip()) + bool(layout.background_prompt.strip())
    check_regional_tokens(layout, max(_tokens(conditioning) + groups, P.text_padding(model)))
    cache: dict[str, torch.Tensor] = {}

    def enc(text):
        if not text.strip():
            return None
        if text not in cache:
            comfy.model_management.throw_exception_if_processing_interrupted()
            cache[text] = encode_prompt(clip, text)
        return cache[text]

    embeds = [enc(p) for p in layout.prompts]
    background = enc(layout.background_prompt) if layout.background_prompt else None
    text = _tokens(conditioning) + sum(0 if e is None else int(e.shape[1]) for e in embeds + [background])
    check_regional_tokens(layout, max(text, P.text_padding(model)))  # exact, before the mask is built
    cond, texts = P.regional_conditioning(conditioning, embeds, layout, image_attention, background,
                                          pad_text_to=P.text_padding(model))
    rows, cols = R.token_grid(layout.height, layout.width)
    present = set(layout.labels(rows, cols).unique().tolist())
    lost = [i + 1 for i in range(len(layout)) if i not in present]
    if lost:
        log.warning("Instruct Identity regional: region(s) %s are smaller than one image token (16 px) and get no pixels.", lost)
    return P.patch_model(model, layout, texts, image_attention, options), cond


class RegionalPrompting(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructIdentityRegionalPrompting",
            display_name="Regional Prompting FLUX (Instruct Identity)",
            category=CATEGORY,
            description="Each region's image tokens follow its own prompt plus the base prompt (training-free regional prompting "
                        "for diffusion transformers). Use both outputs: the MODEL carries the schedule window, block choice and "
                        "base blending; the CONDITIONING carries the prompts and the attention mask.",
            inputs=[
                io.Model.Input("model", tooltip="A FLUX-family model (FLUX.1 dev/schnell, FLUX.2, ...)."),
                io.Clip.Input("clip", tooltip="The text encoder that encoded the base prompt; encodes the regional prompts."),
                io.Conditioning.Input("conditioning", tooltip="The base (identity) prompt, e.g. CLIP Text Encode -> FluxGuidance."),
                RegionLayoutIO.Input("layout"),
                io.Combo.Input("image_attention", options=list(R.IMAGE_ATTENTION_MODES), default="global",
                               tooltip="global: image tokens see the whole canvas, so identity flows between cells (sheets). "
                                       "blocked: each region sees only itself (the reference method; strict separation)."),
                io.Float.Input("base_ratio", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the unmasked base-prompt attention mixed into image tokens (0.1-0.3 works well)."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="First step (fraction of the schedule) with regional prompts."),
                io.Float.Input("end", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Regional prompts stop here (fraction of the steps); later steps use the base prompt alone."),
                io.String.Input("double_blocks", default="all", tooltip="Masked double blocks: all, none, 0-9, 0,2,4 or every 2."),
                io.String.Input("single_blocks", default="all", tooltip="Masked single blocks: all, none, 0-19, every 2, ..."),
                io.Combo.Input("positions", options=list(R.POSITION_MODES), default="sheet", optional=True,
                               tooltip="sheet: every token keeps its place on the canvas. cell: inside the window each region "
                                       "is positioned as a picture of its own, so with blocked attention every cell is drawn "
                                       "exactly like a single picture of its size (a right-hand cell like a left-hand one)."),
            ],
            outputs=[
                io.Model.Output(display_name="model"),
                io.Conditioning.Output(display_name="conditioning"),
            ],
        )

    @classmethod
    def execute(cls, model, clip, conditioning, layout, image_attention, base_ratio, start, end, double_blocks, single_blocks,
                positions="sheet") -> io.NodeOutput:
        options = P.RegionalOptions(base_ratio, start, end, double_blocks, single_blocks, positions)
        m, c = apply_regional(model, clip, conditioning, layout, image_attention, options)
        return io.NodeOutput(m, c)


NODES = [GridLayout, LayoutFromJSON, LayoutFromMasks, LayoutFromColorMask, RegionalPrompting]
