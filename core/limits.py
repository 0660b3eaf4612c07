"""Resource limits: the largest inputs the pack accepts, checked *before* anything is allocated.

One request over ComfyUI's HTTP API must never take the server down, so every size a user controls
(regions, canvas, pictures, batches, attention sequence) has a ceiling here. Each can be raised (or
lowered) with an environment variable by whoever runs the server; docs/limits.md lists them and
where each is enforced. Values that are not positive integers in the environment are ignored (the
default applies) with a warning, so a typo cannot switch a limit off.
"""

from __future__ import annotations

import logging
import os

from .errors import InputError

log = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        log.warning("%s=%r is not a positive whole number; using the default %d", name, raw, default)
        return default
    return value


#: Regions of one layout (a 16 x 16 grid is the largest the grid node offers).
MAX_REGIONS = _env_int("II_MAX_REGIONS", 256)
#: Canvas width or height of a layout, in pixels (the grid node's own maximum).
MAX_CANVAS_SIDE = _env_int("II_MAX_CANVAS_SIDE", 8192)
#: regions x canvas pixels: one mask per region at canvas size is what the layout nodes output
#: (float32: 1 GiB at this limit), e.g. 256 regions on 1024 x 1024, 16 on 4096 x 4096.
MAX_REGION_MASK_VALUES = _env_int("II_MAX_REGION_MASK_VALUES", 2 ** 28)
#: Text + image tokens of the joint-attention mask of regional prompting (an L x L float32 mask:
#: 1 GiB at this limit; a 2048 x 1024 canvas is 8192 image tokens).
MAX_REGIONAL_TOKENS = _env_int("II_MAX_REGIONAL_TOKENS", 16384)
#: References of one identity grid ``[target | ref_1 | ... | ref_K]`` (FLUX.2 takes up to 10 images).
MAX_REFERENCES = _env_int("II_MAX_REFERENCES", 8)
#: Image tokens of one identity grid, target and references together (a 1024 x 1024 target with three
#: references is 4 x 4096 tokens).
MAX_IDENTITY_TOKENS = _env_int("II_MAX_IDENTITY_TOKENS", 20480)
#: Text + image tokens of the reference-strength / region-binding attention bias (an L x L float
#: mask, 1 GiB in float32 at this limit). Only built when a strength is not 1 or a region is bound.
MAX_REFERENCE_BIAS_TOKENS = _env_int("II_MAX_REFERENCE_BIAS_TOKENS", 16384)
#: Characters of one Character Sheet Batch (one sheet each, from a single queue run).
MAX_SHEETS_PER_BATCH = _env_int("II_MAX_SHEETS_PER_BATCH", 1000)
#: Trainer: width or height of a training or preview picture, in pixels.
MAX_TRAIN_SIDE = _env_int("II_MAX_TRAIN_SIDE", 4096)
#: Trainer: pairs per micro-batch on one process (train_batch_size / a dataset's batch_size).
MAX_TRAIN_BATCH = _env_int("II_MAX_TRAIN_BATCH", 64)


def check_regions(count: int, name: str = "layout") -> None:
    if count > MAX_REGIONS:
        raise InputError(name, f"{count} regions, more than the {MAX_REGIONS} a layout may have.",
                         "Use fewer regions (merge small ones, or split the sheet into several); the server's "
                         "owner can raise II_MAX_REGIONS (docs/limits.md).")


def check_canvas(width, height, name: str = "layout") -> tuple[int, int]:
    """``(width, height)`` as ints, refused if not positive or over :data:`MAX_CANVAS_SIDE`."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError, OverflowError):
        raise InputError(name, f"the canvas size {width!r} x {height!r} is not a number of pixels.",
                         "Give width and height as whole numbers of pixels.") from None
    if w <= 0 or h <= 0:
        raise InputError(name, f"the canvas is {w}x{h} px.", "Use a positive width and height.")
    if max(w, h) > MAX_CANVAS_SIDE:
        raise InputError(name, f"the canvas is {w}x{h} px, over the {MAX_CANVAS_SIDE} px limit per side.",
                         f"Use at most {MAX_CANVAS_SIDE} px (the server's owner can raise II_MAX_CANVAS_SIDE, "
                         "docs/limits.md).")
    return w, h


def check_region_masks(count: int, width: int, height: int, name: str = "layout") -> None:
    """Regions x canvas pixels within :data:`MAX_REGION_MASK_VALUES` (plus the two checks above)."""
    check_regions(count, name)
    w, h = check_canvas(width, height, name)
    if count * w * h > MAX_REGION_MASK_VALUES:
        most = max(1, MAX_REGION_MASK_VALUES // (w * h))
        raise InputError(name, f"{count} regions on a {w}x{h} canvas need {count * w * h / 1e6:.0f}M mask values, "
                               f"over the {MAX_REGION_MASK_VALUES / 1e6:.0f}M limit.",
                         f"Use at most {most} regions at this size, or a smaller canvas (scale the layout and the "
                         "picture together); see docs/limits.md.")
