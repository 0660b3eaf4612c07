"""The Instruct Identity latent layout: ``[target | reference]`` on one H x 2W grid.

This module is the single definition of the layout. The sampler patch (``nodes/patch.py``) and the
trainer (``training/``) both import it, so inference sees exactly what training saw:

* the target latent ``z_tgt`` (H x W) sits on the left, columns ``0 .. W-1``;
* the clean reference latent ``z_ref`` (H x W) sits on the right, columns ``W .. 2W-1``;
* the mask ``mu`` is 1 on the target half and 0 on the reference half (the paper's Eq. 2).

FLUX's RoPE numbers image tokens by (row, column) of the patch grid, so the concatenated grid gets
contiguous positions with no change to the model. Tensors are ``[..., C, H, W]`` (ComfyUI's layout);
nothing here assumes a channel count or a patch size: those come in as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import InputError


@dataclass(frozen=True)
class Layout:
    """Geometry of one diptych in latent units: ``height`` rows, ``width`` columns per half."""

    height: int
    width: int

    @property
    def grid_width(self) -> int:
        return 2 * self.width

    @property
    def target(self) -> slice:
        return slice(0, self.width)

    @property
    def reference(self) -> slice:
        return slice(self.width, 2 * self.width)

    @classmethod
    def of(cls, grid: torch.Tensor, name: str = "latent") -> "Layout":
        """The layout of an existing H x 2W grid."""
        if grid.ndim < 3:
            raise InputError(name, f"expected a [batch, channels, height, width] latent, got shape {tuple(grid.shape)}.")
        h, w2 = grid.shape[-2], grid.shape[-1]
        if w2 % 2:
            raise InputError(name, f"width {w2} is odd, so it cannot be a [target | reference] grid.",
                             "Use the LATENT made by the Instruct Identity Reference node.")
        return cls(h, w2 // 2)

    def token_count(self, patch_size: int) -> int:
        """Image tokens of the whole H x 2W grid (what FLUX's attention and ``flux_shift`` see)."""
        return math.ceil(self.height / patch_size) * math.ceil(self.grid_width / patch_size)


def match_batch(reference: torch.Tensor, batch: int, name: str = "reference") -> torch.Tensor:
    """Broadcast a reference batch to ``batch`` samples.

    One reference serves every sample; ``R`` references serve ``k * R`` samples by tiling, which is
    how ComfyUI stacks cond and uncond copies of the same batch into one model call.
    """
    r = reference.shape[0]
    if r == batch:
        return reference
    if r == 1:
        return reference.expand(batch, *reference.shape[1:])
    if batch % r == 0:
        return reference.repeat(batch // r, *([1] * (reference.ndim - 1)))
    raise InputError(name, f"{r} reference latents cannot be matched to a batch of {batch}.",
                     "Give one reference for all samples, or exactly one per sample.")


def concat(target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``[target | reference]`` along the width. The reference batch broadcasts to the target's."""
    if target.shape[-3:] != reference.shape[-3:]:
        raise InputError("reference", f"latent shape {tuple(reference.shape[-3:])} (channels, height, width) differs "
                         f"from the target's {tuple(target.shape[-3:])}.",
                         "Encode the reference at the target size with the same VAE.")
    reference = match_batch(reference.to(device=target.device, dtype=target.dtype), target.shape[0])
    return torch.cat([target, reference], dim=-1)


def split(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (target, reference) halves of an H x 2W grid (views, not copies)."""
    lay = Layout.of(grid)
    return grid[..., lay.target], grid[..., lay.reference]


def target_mask(layout: Layout, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``mu`` as ``[1, 1, H, 2W]``: 1 over the target half, 0 over the reference half."""
    mask = torch.zeros(1, 1, layout.height, layout.grid_width, device=device, dtype=dtype)
    mask[..., layout.target] = 1
    return mask


def with_reference(grid: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A copy of ``grid`` whose reference half is exactly ``reference`` (batch broadcast as in
    :func:`match_batch`). This is what keeps the reference clean at every model call."""
    lay = Layout.of(grid)
    if reference.shape[-3:] != (grid.shape[-3], lay.height, lay.width):
        raise InputError("latent", f"the sampled latent is {grid.shape[-2]}x{grid.shape[-1]} with {grid.shape[-3]} "
                         f"channels, but the reference is {reference.shape[-2]}x{reference.shape[-1]} with "
                         f"{reference.shape[-3]} channels, so it is not this reference's [target | reference] grid.",
                         "Feed the sampler the LATENT output of the same Instruct Identity Reference node.")
    out = grid.clone()
    out[..., lay.reference] = match_batch(reference.to(device=grid.device, dtype=grid.dtype), grid.shape[0])
    return out


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the masked elements only (``mask`` broadcasts to the inputs).

    Normalised by the masked area, so a half-width mask gives the same loss scale as a full one
    (unlike a plain mean of ``mask * err``, which halves it). ``mask=None`` is the full loss.
    """
    err = (prediction.float() - target.float()) ** 2
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype).expand_as(err)
    area = mask.sum()
    if area == 0:
        raise ValueError("masked_mse: the mask selects no element")
    return (err * mask).sum() / area


def spatial_multiple(vae_downscale: int, patch_size: int) -> int:
    """Pixel sizes must be multiples of this so each half is a whole number of patches."""
    return int(vae_downscale) * int(patch_size)


def snap(pixels: int, multiple: int, name: str, *, maximum: int = 8192) -> int:
    """Round a pixel size to the nearest multiple (at least one multiple); refuse absurd sizes."""
    if pixels <= 0:
        raise InputError(name, f"{pixels} px is not a usable size.", f"Use a positive size (multiples of {multiple} px).")
    if pixels > maximum:
        raise InputError(name, f"{pixels} px is larger than the {maximum} px this node accepts.",
                         "Generate smaller and upscale afterwards.")
    return max(multiple, int(pixels / multiple + 0.5) * multiple)  # half rounds up
