"""The joint-attention mask of regional prompting and masked attention math (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from .layout import IMAGE_ATTENTION_MODES, RegionLayout

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


POSITION_MODES = ("sheet", "cell")


def cell_local_ids(img_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Position ids ``[B, N, C]`` (FLUX: ``(t, y, x)``) of an image token grid with each region's tokens
    moved so that the region starts where the whole grid starts, as if it were a picture of its own;
    background tokens (label ``-1``) and tokens after the grid (``N > labels.numel()``: reference
    latents) keep theirs. ``labels``: region index per grid token, row-major like the ids.

    With ``blocked`` image attention every cell is then exactly the model's text-to-image of a picture
    the cell's size: a cell on the right of a sheet is drawn like one on the left."""
    labels = labels.flatten().to(img_ids.device)
    n = labels.numel()
    if img_ids.ndim != 3 or img_ids.shape[1] < n or img_ids.shape[2] < 3:
        raise InputError("layout", f"the model's image positions {tuple(img_ids.shape)} do not cover the layout's {n} tokens.")
    out = img_ids.clone()
    grid = out[:, :n, 1:3]
    origin = grid.amin(dim=1, keepdim=True)                              # [B, 1, 2]
    for r in labels.unique().tolist():
        if r < 0:
            continue
        sel = labels == r
        grid[:, sel] = grid[:, sel] - grid[:, sel].amin(dim=1, keepdim=True) + origin
    return out


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


