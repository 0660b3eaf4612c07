"""Cells -> training pairs: checks on single cells, near-duplicate detection, pairing strategies.

Pictures here are ``uint8`` numpy arrays ``[H, W, 3]`` (what gets written to disk).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InputError

PAIRINGS = ("all", "first", "cyclic")
THUMB = 24


def content_id(arr: np.ndarray) -> str:
    """Stable id of a picture's pixels (shape included)."""
    h = hashlib.sha256()
    h.update(f"{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:20]


def thumbnail(arr: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Area-averaged ``size x size`` RGB thumbnail in 0..1 (the near-duplicate signature)."""
    t = torch.from_numpy(arr).float().div(255).permute(2, 0, 1)[None]
    return F.adaptive_avg_pool2d(t, size)[0].permute(1, 2, 0).numpy()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0 = identical, 1 = opposite)."""
    return float(np.abs(a - b).mean())


def is_blank(arr: np.ndarray, min_std: float = 0.02) -> bool:
    """A cell with (almost) no content: its pixels barely vary."""
    return float(arr.astype(np.float32).std() / 255) < min_std


@dataclass
class Cell:
    index: int
    image: np.ndarray
    caption: str
    thumb: np.ndarray
    id: str


def make_cells(images: list[np.ndarray], captions: list[str]) -> list[Cell]:
    return [Cell(i, im, c, thumbnail(im), content_id(im)) for i, (im, c) in enumerate(zip(images, captions))]


def pad_to_common(images: list[np.ndarray], color=None) -> list[np.ndarray]:
    """Centre every cell on a canvas of the largest cell size (grid cells are equal: no change).
    The fill is each cell's own border median, so plain backgrounds continue."""
    if not images:
        return images
    H = max(a.shape[0] for a in images)
    W = max(a.shape[1] for a in images)
    out = []
    for a in images:
        if a.shape[:2] == (H, W):
            out.append(a)
            continue
        ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        fill = np.median(ring, 0).astype(np.uint8) if color is None else np.asarray(color, np.uint8)
        canvas = np.empty((H, W, 3), np.uint8)
        canvas[:] = fill
        y, x = (H - a.shape[0]) // 2, (W - a.shape[1]) // 2
        canvas[y:y + a.shape[0], x:x + a.shape[1]] = a
        out.append(canvas)
    return out


def pair_indices(n: int, strategy: str = "all") -> list[tuple[int, int]]:
    """(reference, target) index pairs among ``n`` usable cells.

    ``all``: every ordered pair (n*(n-1)); ``first``: the first cell is the reference of every other;
    ``cyclic``: each cell is the reference of the next (n pairs, each cell once in each role)."""
    if strategy not in PAIRINGS:
        raise InputError("pairing", f"'{strategy}' is not a pairing.", f"Choose one of {', '.join(PAIRINGS)}.")
    if n < 2:
        return []
    if strategy == "all":
        return list(permutations(range(n), 2))
    if strategy == "first":
        return [(0, j) for j in range(1, n)]
    return [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(0, 1), (1, 0)]
