"""Regions of a canvas and the joint-attention mask of regional prompting (torch only).

A :class:`RegionLayout` splits a canvas of ``width`` x ``height`` pixels into disjoint regions, each
with its own prompt; pixels no region covers form the *background*. Layouts come from a grid
(:func:`grid_layout`), from masks (:func:`layout_from_masks`), from a colour-coded picture
(:func:`layout_from_color_mask`) or from their JSON form (:meth:`RegionLayout.from_json`, the form a
region editor stores in a widget: regions with ``x, y, w, h`` in pixels and a ``prompt``).

The joint attention of a FLUX block runs over ``[text tokens | image tokens]``. With regional
prompting the text is ``[base | region 1 | ... | region R | background]`` and
:func:`joint_attention_mask` says who may attend to whom (``True`` = may attend):

* text of one group sees only its own group's text (``text_r <-> text_s`` blocked for r != s);
* every image token sees the base prompt's text (the base governs every region); the base text
  sees the image only in ``"global"`` mode (see :func:`joint_attention_mask`);
* region r's text and region r's image tokens see each other, and no other image token;
* the background prompt (if any) pairs the same way with the uncovered pixels;
* image <-> image: ``"blocked"`` keeps each region to itself (the reference method),
  ``"global"`` lets every image token see every other (identity can flow between sheet cells);
* extra tokens appended after the image (e.g. reference latents) see and are seen by everything.

Nothing here knows the VAE or the patch size: the image token grid comes in as ``(rows, cols)``;
:func:`token_grid` computes it for a given VAE downscale and patch size.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .errors import InputError

IMAGE_ATTENTION_MODES = ("blocked", "global")
BACKGROUND = -1          # label of uncovered pixels / tokens
LAYOUT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Layout objects


@dataclass(frozen=True)
class Region:
    """One region: a rectangle ``box = (x, y, w, h)`` in pixels, or an arbitrary ``mask``.

    ``mask`` (``[height, width]`` bool at canvas size) wins over ``box`` when both are given; ``box``
    is then its bounding box. ``caption`` is what a training pair made from this region should be
    captioned with (defaults to the prompt); ``cell`` is ``(row, col)`` for grid cells.
    """

    prompt: str
    box: tuple[int, int, int, int]
    mask: torch.Tensor | None = field(default=None, compare=False, repr=False)
    caption: str | None = None
    cell: tuple[int, int] | None = None
    color: str | None = None

    @property
    def text_for_caption(self) -> str:
        return self.caption if self.caption is not None else self.prompt

    def pixel_mask(self, width: int, height: int) -> torch.Tensor:
        """``[height, width]`` bool mask of this region on the canvas."""
        if self.mask is not None:
            return self.mask.bool()
        x, y, w, h = self.box
        out = torch.zeros(height, width, dtype=torch.bool)
        out[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True
        return out


@dataclass(frozen=True, eq=False)
class RegionLayout:
    """A canvas and its disjoint regions (overlaps are resolved in favour of the earlier region)."""

    width: int
    height: int
    regions: tuple[Region, ...]
    background_prompt: str = ""
    grid: tuple[int, int, int] | None = None   # (rows, cols, gutter) for grid layouts

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise InputError("layout", f"the canvas is {self.width}x{self.height} px.", "Use a positive width and height.")

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.regions]

    @property
    def captions(self) -> list[str]:
        return [r.text_for_caption for r in self.regions]

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [r.box for r in self.regions]

    def masks(self) -> torch.Tensor:
        """``[R, height, width]`` bool, disjoint (a pixel belongs to the first region covering it)."""
        if not self.regions:
            return torch.zeros(0, self.height, self.width, dtype=torch.bool)
        raw = torch.stack([r.pixel_mask(self.width, self.height) for r in self.regions])
        taken = torch.cumsum(raw.int(), dim=0) - raw.int()   # how many earlier regions cover the pixel
        return raw & (taken == 0)

    def overlap_pixels(self) -> int:
        """How many pixels more than one region claims (they go to the earliest region)."""
        if not self.regions:
            return 0
        raw = torch.stack([r.pixel_mask(self.width, self.height) for r in self.regions])
        return int((raw.sum(0) > 1).sum())

    def labels(self, rows: int | None = None, cols: int | None = None) -> torch.Tensor:
        """``[rows, cols]`` long: the region index of each cell of a ``rows x cols`` grid laid over the
        canvas (default: pixel resolution), ``-1`` for background. A grid cell goes to whatever covers
        most of its area."""
        rows = self.height if rows is None else int(rows)
        cols = self.width if cols is None else int(cols)
        if self.regions and all(r.mask is None for r in self.regions) and not _boxes_overlap(self.boxes):
            return _box_labels(self.boxes, self.width, self.height, rows, cols)
        masks = self.masks()
        bg = ~masks.any(0, keepdim=True) if len(masks) else torch.ones(1, self.height, self.width, dtype=torch.bool)
        onehot = torch.cat([bg, masks], 0).float()          # channel 0 = background
        if (rows, cols) != (self.height, self.width):
            onehot = F.interpolate(onehot.unsqueeze(0), size=(rows, cols), mode="area").squeeze(0)
        return onehot.argmax(0) - 1

    def with_prompts(self, prompts: list[str], captions: list[str] | None = None) -> "RegionLayout":
        if len(prompts) != len(self.regions):
            raise InputError("prompts", f"{len(prompts)} prompts for {len(self.regions)} regions.", "Give one prompt per region.")
        caps = captions if captions is not None else [r.caption for r in self.regions]
        regions = tuple(replace(r, prompt=p, caption=c) for r, p, c in zip(self.regions, prompts, caps))
        return replace(self, regions=regions)

    # ---- JSON form (what a region editor stores in a widget) ----------------------------------

    def to_dict(self) -> dict:
        regions = []
        for r in self.regions:
            x, y, w, h = r.box
            d = {"x": int(x), "y": int(y), "w": int(w), "h": int(h), "prompt": r.prompt}
            if r.caption is not None:
                d["caption"] = r.caption
            if r.cell is not None:
                d["cell"] = [int(r.cell[0]), int(r.cell[1])]
            if r.color is not None:
                d["color"] = r.color
            if r.mask is not None:
                d["mask_rle"] = rle_encode(r.mask)
            regions.append(d)
        out = {"version": LAYOUT_VERSION, "width": int(self.width), "height": int(self.height), "regions": regions}
        if self.background_prompt:
            out["background"] = self.background_prompt
        if self.grid is not None:
            out["grid"] = {"rows": int(self.grid[0]), "cols": int(self.grid[1]), "gutter": int(self.grid[2])}
        return out

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data, width: int | None = None, height: int | None = None, name: str = "layout") -> "RegionLayout":
        """Parse the JSON form. A bare list of regions is accepted; ``width``/``height`` then come from
        the arguments or, failing that, from the regions' extent."""
        if isinstance(data, list):
            data = {"regions": data}
        if not isinstance(data, dict):
            raise InputError(name, "the layout is not a JSON object.",
                             'Write {"width": W, "height": H, "regions": [{"x":0,"y":0,"w":..,"h":..,"prompt":".."}]}.')
        items = data.get("regions", [])
        if not isinstance(items, list):
            raise InputError(name, "'regions' must be a list.", 'Write "regions": [{"x":0,"y":0,"w":..,"h":..,"prompt":".."}].')
        regions = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(name, f"region {i + 1} is not an object.", 'Write each region as {"x":..,"y":..,"w":..,"h":..,"prompt":".."}.')
            try:
                box = tuple(int(round(float(item[k]))) for k in ("x", "y", "w", "h"))
            except (KeyError, TypeError, ValueError):
                raise InputError(name, f"region {i + 1} needs numeric x, y, w and h (pixels).",
                                 'Write {"x":0,"y":0,"w":256,"h":256,"prompt":"..."}.') from None
            if box[2] <= 0 or box[3] <= 0:
                raise InputError(name, f"region {i + 1} is {box[2]}x{box[3]} px.", "Give every region a positive w and h.")
            cell = item.get("cell")
            regions.append(Region(prompt=str(item.get("prompt", "")), box=box, caption=item.get("caption"),
                                  cell=tuple(cell) if cell is not None else None, color=item.get("color"),
                                  mask=None))
        w = data.get("width", width)
        h = data.get("height", height)
        if w is None or h is None:
            w = w if w is not None else max((b[0] + b[2] for b in (r.box for r in regions)), default=0)
            h = h if h is not None else max((b[1] + b[3] for b in (r.box for r in regions)), default=0)
        w, h = int(w), int(h)
        regions = [_with_rle(r, it, w, h, name) for r, it in zip(regions, items)]
        grid = data.get("grid")
        grid_t = (int(grid["rows"]), int(grid["cols"]), int(grid.get("gutter", 0))) if isinstance(grid, dict) else None
        return cls(w, h, tuple(regions), str(data.get("background", "") or ""), grid_t)

    @classmethod
    def from_json(cls, text: str, width: int | None = None, height: int | None = None, name: str = "layout_json") -> "RegionLayout":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(name, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).",
                             'Write {"width": W, "height": H, "regions": [{"x":0,"y":0,"w":..,"h":..,"prompt":".."}]}.') from None
        return cls.from_dict(data, width, height, name)


def _boxes_overlap(boxes) -> bool:
    for i, (x, y, w, h) in enumerate(boxes):
        for (x2, y2, w2, h2) in boxes[i + 1:]:
            if x < x2 + w2 and x2 < x + w and y < y2 + h2 and y2 < y + h:
                return True
    return False


def _coverage(start: float, size: float, extent: int, cells: int) -> torch.Tensor:
    """Share of each of ``cells`` equal cells over ``[0, extent)`` covered by ``[start, start+size)``."""
    edges = torch.linspace(0, extent, cells + 1, dtype=torch.float64)
    lo = torch.clamp(edges[:-1], min=start)
    hi = torch.clamp(edges[1:], max=start + size)
    return (hi - lo).clamp(min=0) / (edges[1:] - edges[:-1])


def _box_labels(boxes, width: int, height: int, rows: int, cols: int) -> torch.Tensor:
    """Majority labels of disjoint boxes on a ``rows x cols`` grid, from exact overlap areas."""
    cover = torch.stack([_coverage(y, h, height, rows)[:, None] * _coverage(x, w, width, cols)[None, :]
                         for (x, y, w, h) in boxes])                         # [R, rows, cols]
    full = torch.cat([(1 - cover.sum(0, keepdim=True)).clamp(min=0), cover], 0)
    return full.argmax(0) - 1


def _with_rle(region: Region, item: dict, width: int, height: int, name: str) -> Region:
    rle = item.get("mask_rle")
    if rle is None:
        return region
    mask = rle_decode(rle, height, width, name)
    return replace(region, mask=mask)


def rle_encode(mask: torch.Tensor) -> list[int]:
    """Run lengths of a bool mask in row-major order, starting with a run of ``False``."""
    flat = mask.flatten().bool()
    if flat.numel() == 0:
        return []
    change = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
    bounds = torch.cat([torch.tensor([0]), change, torch.tensor([flat.numel()])])
    runs = (bounds[1:] - bounds[:-1]).tolist()
    return ([0] + runs) if bool(flat[0]) else runs


def rle_decode(runs, height: int, width: int, name: str = "layout") -> torch.Tensor:
    if sum(int(r) for r in runs) != height * width:
        raise InputError(name, f"a region's mask_rle covers {sum(runs)} pixels, the canvas {height * width}.",
                         "Save the layout again from the node that made it.")
    values = torch.arange(len(runs)) % 2 == 1
    return torch.repeat_interleave(values, torch.tensor([int(r) for r in runs])).reshape(height, width)


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


def _parse_color_255(text: str) -> tuple[int, int, int]:
    s = text.strip()
    if s.startswith("#"):
        h = s[1:]
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    parts = [int(p) for p in s.split(",")]
    if any(p > 255 for p in parts):
        raise InputError("prompts", f"colour '{text}' has a channel above 255.", "Use r,g,b with values 0-255 or #rrggbb.")
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
    px = (image[..., :3].float().cpu().clamp(0, 1) * 255).round().to(torch.int32)
    flat = px.reshape(-1, 3)
    bg = torch.tensor(_parse_color_255(background_color) if background_color else (0, 0, 0), dtype=torch.int32)
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
    # nearest palette colour (or background) per pixel, within tolerance
    cand = torch.cat([bg.unsqueeze(0), palette], 0)
    dist = ((flat.unsqueeze(1) - cand.unsqueeze(0)).float() ** 2).sum(-1)        # [N, 1+K]
    label = dist.argmin(1).reshape(h, w) - 1                                      # -1 = background
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


# --------------------------------------------------------------------------------------------------
# Token grid and the joint attention mask


def token_grid(height_px: int, width_px: int, vae_downscale: int = 8, patch_size: int = 2) -> tuple[int, int]:
    """Rows and columns of image tokens for a picture of this size (FLUX.1: 8 x 2; FLUX.2: 16 x 1)."""
    lh = max(1, int(height_px) // int(vae_downscale))
    lw = max(1, int(width_px) // int(vae_downscale))
    return math.ceil(lh / patch_size), math.ceil(lw / patch_size)


@dataclass(frozen=True)
class TextLayout:
    """Token counts of ``[base | region 1 .. R | background]`` in the text sequence."""

    base: int
    regions: tuple[int, ...]
    background: int = 0

    @property
    def total(self) -> int:
        return self.base + sum(self.regions) + self.background

    def groups(self) -> torch.Tensor:
        """Group id per text token: 0 base, 1..R regions, R+1 background."""
        r = len(self.regions)
        sizes = [self.base, *self.regions, self.background]
        ids = list(range(r + 2))
        return torch.repeat_interleave(torch.tensor(ids), torch.tensor(sizes, dtype=torch.long))

    def spans(self) -> list[slice]:
        """Slices of each group (base, regions..., background) in the text sequence."""
        out, start = [], 0
        for n in (self.base, *self.regions, self.background):
            out.append(slice(start, start + n))
            start += n
        return out


def joint_attention_mask(labels: torch.Tensor, text: TextLayout, image_attention: str = "blocked",
                         extra_tokens: int = 0, device=None, base_reads_image: bool | None = None) -> torch.Tensor:
    """Boolean ``[L, L]`` mask (``True`` = may attend) over ``[text | image | extra]`` tokens.

    ``labels``: region index per image token (any shape, flattened in row-major order like FLUX's
    patch sequence), ``-1`` for background. Region indices must be ``< len(text.regions)``.

    Every image token reads the base prompt's text. Whether the base text reads the image
    (``base_reads_image``) defaults to the mode: in ``"global"`` mode it does; in ``"blocked"`` mode
    it does not, because base text that had read region A would carry A into region B in the next
    block -- so blocked regions share nothing but the base prompt itself.
    """
    if image_attention not in IMAGE_ATTENTION_MODES:
        raise InputError("image_attention", f"'{image_attention}' is not a mode.", f"Choose one of {', '.join(IMAGE_ATTENTION_MODES)}.")
    labels = labels.flatten().to(device=device, dtype=torch.long)
    r = len(text.regions)
    if labels.numel() and int(labels.max()) >= r:
        raise InputError("layout", f"image tokens are labelled with region {int(labels.max()) + 1}, but only {r} regional prompts were given.")
    tg = text.groups().to(device)                                       # [T]
    ig = torch.where(labels < 0, torch.full_like(labels, r + 1), labels + 1)   # [N]
    if base_reads_image is None:
        base_reads_image = image_attention == "global"
    tt = tg[:, None] == tg[None, :]
    it = ((tg[None, :] == 0) | (tg[None, :] == ig[:, None]))            # image row -> text column
    ti = (tg[:, None] == ig[None, :])                                   # text row -> image column
    if base_reads_image:
        ti = ti | (tg[:, None] == 0)
    if image_attention == "global":
        ii = torch.ones(len(ig), len(ig), dtype=torch.bool, device=device)
    else:
        ii = ig[:, None] == ig[None, :]
    top = torch.cat([tt, ti], 1)
    bottom = torch.cat([it, ii], 1)
    mask = torch.cat([top, bottom], 0)
    if extra_tokens:
        mask = F.pad(mask, (0, extra_tokens, 0, extra_tokens), value=True)
    return mask


def regional_mask(layout: RegionLayout, text: TextLayout, rows: int, cols: int, image_attention: str = "blocked",
                  extra_tokens: int = 0, device=None) -> torch.Tensor:
    """:func:`joint_attention_mask` for ``layout`` on a ``rows x cols`` image token grid."""
    if len(text.regions) != len(layout):
        raise InputError("layout", f"{len(text.regions)} regional prompts for {len(layout)} regions.")
    return joint_attention_mask(layout.labels(rows, cols), text, image_attention, extra_tokens, device)


def blocked_value(dtype: torch.dtype) -> float:
    """A large negative bias that blocks attention in ``dtype`` without overflowing to -inf when
    logits are added (so fully blocked key chunks never produce NaN in chunked kernels)."""
    if dtype.is_floating_point:
        return float(max(torch.finfo(dtype).min / 4, -1e30))
    return -1e30


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive bias (0 where allowed, a large negative number where blocked)."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed.bool(), blocked_value(dtype))


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Reference attention ``softmax(q k^T / sqrt(d) + bias) v`` for ``[B, H, L, D]`` tensors."""
    scale = q.shape[-1] ** -0.5
    logits = (q.float() @ k.float().transpose(-1, -2)) * scale
    if allowed is not None:
        logits = logits.masked_fill(~allowed.bool(), float("-inf"))
    return (logits.softmax(-1) @ v.float()).to(v.dtype)


def blend_rows(regional: torch.Tensor, base: torch.Tensor, base_ratio: float) -> torch.Tensor:
    """``(1 - base_ratio) * regional + base_ratio * base`` (the reference method's base blending)."""
    return regional * (1.0 - base_ratio) + base * base_ratio


# --------------------------------------------------------------------------------------------------
# Cells of a finished sheet


def crop_cells(image: torch.Tensor, layout: RegionLayout) -> list[torch.Tensor]:
    """Each region's bounding box cut from ``image`` (``[H, W, C]`` or ``[1, H, W, C]``), scaled from
    the layout's canvas to the image size if they differ."""
    if image.ndim == 4:
        image = image[0]
    h, w = image.shape[0], image.shape[1]
    sx, sy = w / layout.width, h / layout.height
    out = []
    for (x, y, bw, bh) in layout.boxes:
        x0, y0 = int(round(x * sx)), int(round(y * sy))
        x1, y1 = int(round((x + bw) * sx)), int(round((y + bh) * sy))
        out.append(image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)])
    return out


def assemble_cells(cells: list[torch.Tensor], layout: RegionLayout, fill: float = 1.0) -> torch.Tensor:
    """Inverse of :func:`crop_cells` for box regions: paste cells back on a canvas of the layout's
    size (``[H, W, C]``); uncovered pixels get ``fill``."""
    if len(cells) != len(layout):
        raise InputError("cells", f"{len(cells)} cells for {len(layout)} regions.")
    c = cells[0].shape[-1] if cells else 3
    canvas = torch.full((layout.height, layout.width, c), float(fill), dtype=cells[0].dtype if cells else torch.float32)
    for cell, (x, y, bw, bh) in zip(cells, layout.boxes):
        canvas[y:y + bh, x:x + bw] = cell[:bh, :bw]
    return canvas
