"""Building region layouts: grids, masks, colour-coded pictures; prompts from text; previews."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..limits import MAX_REGIONS, check_canvas, check_region_masks, check_regions
from .layout import Region, RegionLayout

# --------------------------------------------------------------------------------------------------
# Building layouts


def prompt_lines(text: str) -> list[str]:
    """Non-empty, stripped lines of a multiline text."""
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def grid_cells(width: int, height: int, rows: int, cols: int, gutter: int = 0) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of each cell in reading order. Cells are equal; gutters separate them; the
    few pixels that don't divide evenly are left at the right and bottom edges."""
    if rows < 1 or cols < 1:
        raise InputError("rows" if rows < 1 else "cols", "the grid needs at least one row and one column.", "Use 1 or more.")
    if gutter < 0:
        raise InputError("gutter", f"{gutter} px is negative.", "Use 0 or more pixels.")
    if rows * cols > MAX_REGIONS:
        check_regions(rows * cols, "rows" if rows >= cols else "cols")
    width, height = check_canvas(width, height, "width" if int(width) >= int(height) else "height")
    cw = (width - (cols - 1) * gutter) // cols
    ch = (height - (rows - 1) * gutter) // rows
    if cw < 1 or ch < 1:
        raise InputError("gutter", f"a {width}x{height} canvas has no room for {rows}x{cols} cells with a {gutter} px gutter.",
                         "Use a larger canvas, fewer cells or a smaller gutter.")
    return [(c * (cw + gutter), r * (ch + gutter), cw, ch) for r in range(rows) for c in range(cols)]


def grid_layout(width: int, height: int, rows: int, cols: int, gutter: int = 0, prompts=(), captions=None,
                background_prompt: str = "") -> RegionLayout:
    """A ``rows x cols`` grid of cells, one region per cell in reading order.

    ``prompts`` (a list or a multiline text, one per cell) may be shorter than the grid: the
    remaining cells get an empty prompt (governed by the base prompt alone). ``captions`` pairs with
    the prompts the same way (default: the prompt)."""
    prompts = prompt_lines(prompts) if isinstance(prompts, str) else [str(p) for p in prompts]
    caps = None if captions is None else (prompt_lines(captions) if isinstance(captions, str) else [str(c) for c in captions])
    check_region_masks(int(rows) * int(cols), width, height, "rows/cols")
    cells = grid_cells(width, height, rows, cols, gutter)
    if len(prompts) > len(cells):
        raise InputError("prompts", f"{len(prompts)} prompts for a {rows}x{cols} grid ({len(cells)} cells).",
                         "Add rows or columns, or remove prompt lines.")
    if caps is not None and len(caps) > len(cells):
        raise InputError("captions", f"{len(caps)} captions for {len(cells)} cells.", "Give at most one caption per cell.")
    regions = []
    for i, box in enumerate(cells):
        p = prompts[i] if i < len(prompts) else ""
        c = caps[i] if caps is not None and i < len(caps) else None
        regions.append(Region(prompt=p, box=box, caption=c, cell=(i // cols, i % cols)))
    return RegionLayout(int(width), int(height), tuple(regions), background_prompt, (int(rows), int(cols), int(gutter)))


def layout_from_masks(masks: torch.Tensor, prompts, threshold: float = 0.5, background_prompt: str = "",
                      name: str = "masks") -> RegionLayout:
    """One region per mask (``[R, H, W]`` or ``[H, W]``, values in 0..1), in order; overlaps go to the
    earlier mask."""
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise InputError(name, f"expected a MASK [count, height, width], got shape {tuple(masks.shape)}.")
    check_region_masks(masks.shape[0], masks.shape[2], masks.shape[1], name)
    prompts = prompt_lines(prompts) if isinstance(prompts, str) else [str(p) for p in prompts]
    if len(prompts) != masks.shape[0]:
        raise InputError("prompts", f"{len(prompts)} prompt lines for {masks.shape[0]} masks.", "Write one prompt line per mask, in order.")
    _, h, w = masks.shape
    regions = []
    for i, (m, p) in enumerate(zip(masks, prompts)):
        b = m.float().cpu() >= threshold
        if not b.any():
            raise InputError(name, f"mask {i + 1} is empty (nothing at or above {threshold}).", "Paint the region, or lower the threshold.")
        regions.append(Region(prompt=p, box=_bbox(b), mask=b))
    return RegionLayout(int(w), int(h), tuple(regions), background_prompt)


def _bbox(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys = torch.nonzero(mask.any(1)).flatten()
    xs = torch.nonzero(mask.any(0)).flatten()
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])
    return (x0, y0, x1 - x0 + 1, y1 - y0 + 1)


_COLOR_LINE = re.compile(r"^\s*(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}|\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3})\s*[:=]\s*(.*)$")


def _color_key(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


_COLOR_255 = re.compile(r"#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}|\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}")


def _parse_color_255(text: str, name: str = "prompts") -> tuple[int, int, int]:
    s = str(text).strip()
    if not _COLOR_255.fullmatch(s):
        raise InputError(name, f"'{text}' is not a colour.", "Write it as #rrggbb (e.g. #000000) or r,g,b with values 0-255.")
    if s.startswith("#"):
        h = s[1:]
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    parts = [int(p) for p in s.split(",")]
    if any(p > 255 for p in parts):
        raise InputError(name, f"colour '{text}' has a channel above 255.", "Use r,g,b with values 0-255 or #rrggbb.")
    return tuple(parts)  # type: ignore[return-value]


def layout_from_color_mask(image: torch.Tensor, prompts: str, background_color: str = "#000000", tolerance: int = 32,
                           min_area: float = 0.001, background_prompt: str = "", name: str = "color_mask") -> RegionLayout:
    """Regions from a colour-coded picture (``[H, W, 3]`` or ``[1, H, W, 3]`` floats in 0..1).

    Each flat colour whose solid interior covers at least ``min_area`` of the canvas and that
    differs from ``background_color`` by more than ``tolerance`` (0-255, per channel) is a region;
    every other pixel (anti-aliased edges, specks) goes to the nearest of those colours or the
    background. Prompt lines written as
    ``#rrggbb: prompt`` (or ``r,g,b: prompt``) go to that colour; plain lines go to the remaining
    colours in reading order of the regions (top to bottom, then left to right)."""
    if image.ndim == 4:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] < 3:
        raise InputError(name, f"expected an IMAGE [height, width, 3], got shape {tuple(image.shape)}.")
    h, w = image.shape[0], image.shape[1]
    check_canvas(w, h, name)
    px = (image[..., :3].float().cpu().clamp(0, 1) * 255).round().to(torch.int32)
    flat = px.reshape(-1, 3)
    bg = torch.tensor(_parse_color_255(background_color, "background_color") if background_color else (0, 0, 0),
                      dtype=torch.int32)
    # a region colour has solid interior pixels (all 8 neighbours the same colour); anti-aliased
    # seams between regions are one or two pixels thin and have none
    code = (px[..., 0] * 65536 + px[..., 1] * 256 + px[..., 2]).long()
    padded = F.pad(code[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0].long()
    interior = torch.ones(h, w, dtype=torch.bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            interior &= padded[dy:dy + h, dx:dx + w] == code
    colors, counts = torch.unique(flat[interior.flatten()], dim=0, return_counts=True)
    keep = (counts >= max(1, int(min_area * h * w))) & ((colors - bg).abs().max(1).values > tolerance)
    palette = colors[keep]
    if len(palette) == 0:
        raise InputError(name, "no coloured region found (only the background colour).",
                         f"Paint regions in distinct colours on a {background_color} background.")
    if len(palette) > MAX_REGIONS:
        raise InputError(name, f"{len(palette)} distinct flat colours, more than the {MAX_REGIONS} regions a layout may have.",
                         "Paint fewer regions, raise min_area, or use a picture without noise or gradients.")
    check_region_masks(len(palette), w, h, name)
    # nearest palette colour (or background) per pixel, within tolerance; in chunks of pixels so the
    # distance table stays small however many colours there are
    cand = torch.cat([bg.unsqueeze(0), palette], 0).float()
    chunk = max(1, (1 << 22) // len(cand))
    label = torch.cat([((flat[i:i + chunk].unsqueeze(1).float() - cand.unsqueeze(0)) ** 2).sum(-1).argmin(1)
                       for i in range(0, flat.shape[0], chunk)]).reshape(h, w) - 1   # -1 = background
    masks = [label == k for k in range(len(palette))]
    present = [k for k in range(len(palette)) if masks[k].any()]

    def reading_key(k):
        ys, xs = torch.nonzero(masks[k], as_tuple=True)
        return (float(ys.float().mean()) // max(1, h // 16), float(xs.float().mean()))

    order = sorted(present, key=reading_key)
    explicit: dict[str, str] = {}
    plain: list[str] = []
    for line in prompt_lines(prompts):
        m = _COLOR_LINE.match(line)
        if m:
            explicit[_color_key(_parse_color_255(m.group(1)))] = m.group(2).strip()
        else:
            plain.append(line)
    keys = {k: _color_key(palette[k].tolist()) for k in order}
    for key in explicit:
        if not any(_near(key, keys[k], tolerance) for k in order):
            raise InputError("prompts", f"colour {key} does not appear in the colour mask.",
                             f"Colours found: {', '.join(keys[k] for k in order)}.")
    regions = []
    rest = iter(plain)
    for k in order:
        key = keys[k]
        match = next((p for c, p in explicit.items() if _near(c, key, tolerance)), None)
        if match is None:
            match = next(rest, None)
            if match is None:
                raise InputError("prompts", f"no prompt for the region coloured {key}.",
                                 f"Write one line per colour ({len(order)} found: {', '.join(keys[j] for j in order)}), "
                                 "or '#rrggbb: prompt' lines.")
        regions.append(Region(prompt=match, box=_bbox(masks[k]), mask=masks[k], color=key))
    extra = list(rest)
    if extra:
        raise InputError("prompts", f"{len(extra)} prompt lines more than the {len(order)} coloured regions.",
                         "Remove the extra lines or paint more regions.")
    return RegionLayout(int(w), int(h), tuple(regions), background_prompt)


def _near(a: str, b: str, tolerance: int) -> bool:
    ca, cb = _parse_color_255(a), _parse_color_255(b)
    return max(abs(x - y) for x, y in zip(ca, cb)) <= tolerance


def preview(layout: RegionLayout) -> torch.Tensor:
    """A colour-coded ``[1, H, W, 3]`` picture of the layout (background black)."""
    labels = layout.labels()
    n = max(1, len(layout))
    hues = torch.arange(n, dtype=torch.float32) / n
    colors = torch.stack([_hsv(h.item(), 0.65, 0.95) for h in hues])
    out = torch.zeros(layout.height, layout.width, 3)
    fg = labels >= 0
    out[fg] = colors[labels[fg]]
    return out.unsqueeze(0)


def _hsv(h: float, s: float, v: float) -> torch.Tensor:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return torch.tensor([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


