"""Where is the subject cut off by the picture's border? (Out-paint repair, torch only.)

Character sheets are drawn on a plain background, so the background colour is estimated from the
border ring (a robust median), the subject is every pixel that differs from it, and a side needs
out-painting when the subject reaches it. Only those sides are padded; the amounts feed ComfyUI's
stock ``ImagePadForOutpaint`` (left, top, right, bottom) and then ``InpaintModelConditioning`` with a
FLUX Fill model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import InputError

SIDES = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class BorderReport:
    background: tuple[float, float, float]
    touching: dict[str, float]           # side -> fraction of that border the subject covers
    padding: dict[str, int]              # side -> pixels to add (0 = leave the side alone)

    @property
    def sides(self) -> list[str]:
        return [s for s in SIDES if self.padding[s] > 0]

    def text(self) -> str:
        bg = "#" + "".join(f"{round(c * 255):02x}" for c in self.background)
        if not self.sides:
            return f"background {bg}; the subject touches no border, nothing to out-paint"
        parts = [f"{s} {self.touching[s]:.0%} -> +{self.padding[s]} px" for s in self.sides]
        return f"background {bg}; subject cut off at " + ", ".join(parts)


def _as_hwc(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise InputError(name, "expected one picture here.", "Pass the batch one picture at a time.")
        image = image[0]
    if image.ndim != 3 or image.shape[-1] < 3:
        raise InputError(name, f"expected an IMAGE [height, width, 3], got shape {tuple(image.shape)}.")
    return image[..., :3].float()


def estimate_background(image: torch.Tensor, ring: int = 4, name: str = "image") -> torch.Tensor:
    """Background colour ``[3]``: the median of the border ring, then again over the ring pixels near
    that first guess (so a subject touching the border does not drag it)."""
    img = _as_hwc(image, name)
    h, w, _ = img.shape
    r = max(1, min(ring, h // 4 or 1, w // 4 or 1))
    px = torch.cat([img[:r].reshape(-1, 3), img[-r:].reshape(-1, 3), img[:, :r].reshape(-1, 3), img[:, -r:].reshape(-1, 3)])
    first = px.median(0).values
    near = px[(px - first).abs().max(1).values < 0.1]
    return (near if len(near) >= len(px) // 4 else px).median(0).values


def subject_mask(image: torch.Tensor, background: torch.Tensor | None = None, threshold: float = 0.08,
                 clean: int = 1, name: str = "image") -> torch.Tensor:
    """``[H, W]`` float mask: 1 where the picture differs from the background by more than
    ``threshold`` (max over channels); specks smaller than ``2*clean+1`` px are removed."""
    img = _as_hwc(image, name)
    bg = estimate_background(img, name=name) if background is None else background.to(img)
    mask = ((img - bg).abs().max(-1).values > threshold).float()
    if clean > 0:
        k = 2 * clean + 1
        m = mask[None, None]
        m = -F.max_pool2d(-m, k, 1, clean)          # erode
        m = F.max_pool2d(m, k, 1, clean)            # dilate
        mask = m[0, 0]
    return mask


def touching(mask: torch.Tensor, margin: int = 2) -> dict[str, float]:
    """Fraction of each border (within ``margin`` px of it) where the subject mask is set."""
    h, w = mask.shape
    m = max(1, min(margin, h, w))
    b = mask > 0.5
    return {
        "left": b[:, :m].any(1).float().mean().item(),
        "right": b[:, -m:].any(1).float().mean().item(),
        "top": b[:m, :].any(0).float().mean().item(),
        "bottom": b[-m:, :].any(0).float().mean().item(),
    }


def border_padding(image: torch.Tensor, threshold: float = 0.08, margin: int = 2, min_touch: float = 0.02,
                   pad_fraction: float = 0.25, multiple: int = 16, name: str = "image") -> tuple[BorderReport, torch.Tensor]:
    """Which sides to out-paint and by how much (``pad_fraction`` of the picture's size on that axis,
    rounded up to ``multiple``), plus the subject mask."""
    if not 0 < pad_fraction <= 4:
        raise InputError("pad_fraction", f"{pad_fraction} is outside (0, 4].", "Use e.g. 0.25 (a quarter of the size).")
    img = _as_hwc(image, name)
    h, w, _ = img.shape
    bg = estimate_background(img, name=name)
    mask = subject_mask(img, bg, threshold, name=name)
    touch = touching(mask, margin)
    pad = {}
    for side, frac in touch.items():
        size = w if side in ("left", "right") else h
        amount = pad_fraction * size
        pad[side] = int(math.ceil(amount / multiple) * multiple) if frac >= min_touch and frac > 0 else 0
    return BorderReport(tuple(float(c) for c in bg), touch, pad), mask


def union_padding(reports: list[BorderReport]) -> dict[str, int]:
    """One padding for a whole batch (ImagePadForOutpaint pads every picture the same)."""
    return {s: max((r.padding[s] for r in reports), default=0) for s in SIDES}
