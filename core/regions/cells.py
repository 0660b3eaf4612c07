"""Cells of a finished sheet: crop each region out, or assemble cells back into a sheet."""

from __future__ import annotations

import torch

from ..errors import InputError
from .layout import RegionLayout

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
