"""Region layouts of a canvas: the :class:`RegionLayout` model, its JSON form and mask encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..limits import check_canvas, check_region_masks, check_regions

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
        check_region_masks(len(self.regions), self.width, self.height)  # before anything is allocated

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
        """``[R, height, width]`` bool, disjoint (a pixel belongs to the first region covering it).
        Memory: the result plus one canvas-sized mask (regions are added one at a time)."""
        out = torch.zeros(len(self.regions), self.height, self.width, dtype=torch.bool)
        taken = torch.zeros(self.height, self.width, dtype=torch.bool)
        for i, r in enumerate(self.regions):
            out[i] = r.pixel_mask(self.width, self.height) & ~taken
            taken |= out[i]
        return out

    def overlap_pixels(self) -> int:
        """How many pixels more than one region claims (they go to the earliest region)."""
        taken = torch.zeros(self.height, self.width, dtype=torch.bool)
        shared = torch.zeros(self.height, self.width, dtype=torch.bool)
        for r in self.regions:
            m = r.pixel_mask(self.width, self.height)
            shared |= taken & m
            taken |= m
        return int(shared.sum())

    def labels(self, rows: int | None = None, cols: int | None = None) -> torch.Tensor:
        """``[rows, cols]`` long: the region index of each cell of a ``rows x cols`` grid laid over the
        canvas (default: pixel resolution), ``-1`` for background. A grid cell goes to whatever covers
        most of its area."""
        rows = self.height if rows is None else int(rows)
        cols = self.width if cols is None else int(cols)
        if self.regions and all(r.mask is None for r in self.regions) and not _boxes_overlap(self.boxes):
            return _box_labels(self.boxes, self.width, self.height, rows, cols)
        # one region at a time (memory: a few canvas-sized planes, never one per region); ties go to
        # the background, then to the earlier region, as an argmax over [background, regions] would
        taken = torch.zeros(self.height, self.width, dtype=torch.bool)
        best = torch.full((rows, cols), -1.0)
        label = torch.full((rows, cols), -1, dtype=torch.long)

        def share(mask: torch.Tensor) -> torch.Tensor:
            m = mask.float()
            if (rows, cols) != (self.height, self.width):
                m = F.interpolate(m[None, None], size=(rows, cols), mode="area")[0, 0]
            return m

        for i, r in enumerate(self.regions):
            m = r.pixel_mask(self.width, self.height) & ~taken
            taken |= m
            s = share(m)
            better = s > best
            best = torch.where(better, s, best)
            label = torch.where(better, torch.full_like(label, i), label)
        background = share(~taken)
        return torch.where(background >= best, torch.full_like(label, -1), label)

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
        check_regions(len(items), name)  # before a single region is built
        regions = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(name, f"region {i + 1} is not an object.", 'Write each region as {"x":..,"y":..,"w":..,"h":..,"prompt":".."}.')
            try:
                box = tuple(int(round(float(item[k]))) for k in ("x", "y", "w", "h"))
            except (KeyError, TypeError, ValueError, OverflowError):
                raise InputError(name, f"region {i + 1} needs numeric x, y, w and h (pixels).",
                                 'Write {"x":0,"y":0,"w":256,"h":256,"prompt":"..."}.') from None
            if box[2] <= 0 or box[3] <= 0:
                raise InputError(name, f"region {i + 1} is {box[2]}x{box[3]} px.", "Give every region a positive w and h.")
            cell = item.get("cell")
            if cell is not None and not (isinstance(cell, (list, tuple)) and len(cell) == 2
                                         and all(isinstance(v, int) and not isinstance(v, bool) for v in cell)):
                raise InputError(name, f"region {i + 1} has cell {cell!r}.", 'Write "cell": [row, column] (whole numbers) or leave it out.')
            caption, color = item.get("caption"), item.get("color")
            regions.append(Region(prompt=str(item.get("prompt", "")), box=box,
                                  caption=None if caption is None else str(caption),
                                  cell=tuple(cell) if cell is not None else None, color=None if color is None else str(color),
                                  mask=None))
        w = data.get("width", width)
        h = data.get("height", height)
        if w is None or h is None:
            w = w if w is not None else max((b[0] + b[2] for b in (r.box for r in regions)), default=0)
            h = h if h is not None else max((b[1] + b[3] for b in (r.box for r in regions)), default=0)
        w, h = check_canvas(w, h, name)
        check_region_masks(len(regions), w, h, name)  # before any mask is decoded
        regions = [_with_rle(r, it, w, h, name) for r, it in zip(regions, items)]
        grid = data.get("grid")
        try:
            grid_t = (int(grid["rows"]), int(grid["cols"]), int(grid.get("gutter", 0))) if isinstance(grid, dict) else None
        except (KeyError, TypeError, ValueError, OverflowError):
            raise InputError(name, f"'grid' is {grid!r}.", 'Write "grid": {"rows": R, "cols": C, "gutter": G} or leave it out.') from None
        return cls(w, h, tuple(regions), str(data.get("background", "") or ""), grid_t)

    @classmethod
    def from_json(cls, text: str, width: int | None = None, height: int | None = None, name: str = "layout_json") -> "RegionLayout":
        fix = 'Write {"width": W, "height": H, "regions": [{"x":0,"y":0,"w":..,"h":..,"prompt":".."}]}.'
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(name, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).", fix) from None
        except RecursionError:
            raise InputError(name, "the JSON is nested too deeply.", fix) from None
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
    """Majority labels of disjoint boxes on a ``rows x cols`` grid, from exact overlap areas (one box
    at a time: memory is a few grid-sized planes; ties go to the background, then the earlier box)."""
    total = torch.zeros(rows, cols, dtype=torch.float64)
    best = torch.full((rows, cols), -1.0, dtype=torch.float64)
    label = torch.full((rows, cols), -1, dtype=torch.long)
    for i, (x, y, w, h) in enumerate(boxes):
        cover = _coverage(y, h, height, rows)[:, None] * _coverage(x, w, width, cols)[None, :]
        total += cover
        better = cover > best
        best = torch.where(better, cover, best)
        label = torch.where(better, torch.full_like(label, i), label)
    background = (1 - total).clamp(min=0)
    return torch.where(background >= best, torch.full_like(label, -1), label)


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
    if not isinstance(runs, list) or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
        raise InputError(name, "a region's mask_rle is not a list of run lengths (whole numbers, 0 or more).",
                         "Save the layout again from the node that made it.")
    if sum(int(r) for r in runs) != height * width:
        raise InputError(name, f"a region's mask_rle covers {sum(runs)} pixels, the canvas {height * width}.",
                         "Save the layout again from the node that made it.")
    values = torch.arange(len(runs)) % 2 == 1
    return torch.repeat_interleave(values, torch.tensor([int(r) for r in runs])).reshape(height, width)


