"""The Instruct Identity latent layout: ``[target | reference]`` on one H x 2W grid, or with K
references ``[target | ref_1 | ... | ref_K]`` on one H x (1 + K)W grid.

This module is the single definition of the layout. The sampler patch (``engine/patch.py``), the
one-way path (``engine/oneway.py``) and the trainer (``training/``) all import it, so inference sees
exactly what training saw:

* the target latent ``z_tgt`` (H x W) sits on the left, columns ``0 .. W-1``;
* the clean reference latents sit to its right, reference ``j`` (0-based) on columns
  ``(1 + j)W .. (2 + j)W - 1``; together they are the *reference strip* (``[R, C, H, K*W]``);
* the mask ``mu`` is 1 on the target panel and 0 on every reference panel (the paper's Eq. 2).

With one reference (K = 1) everything is exactly the paper's diptych.

FLUX's RoPE numbers image tokens by (row, column) of the patch grid, so the concatenated grid gets
contiguous positions with no change to the model. Tensors are ``[..., C, H, W]`` (ComfyUI's layout);
nothing here assumes a channel count or a patch size: those come in as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import limits
from .errors import InputError

#: key of the reference count in a ComfyUI LATENT dict (it survives the samplers, which copy the dict)
LATENT_KEY = "instruct_identity_references"


@dataclass(frozen=True)
class Layout:
    """Geometry of one grid in latent units: ``height`` rows, ``width`` columns per panel, and
    ``references`` reference panels to the right of the target."""

    height: int
    width: int
    references: int = 1

    @property
    def panels(self) -> int:
        return 1 + self.references

    @property
    def grid_width(self) -> int:
        return self.panels * self.width

    @property
    def target(self) -> slice:
        return slice(0, self.width)

    @property
    def reference(self) -> slice:
        """The reference strip: every reference panel (with one reference, the right half)."""
        return slice(self.width, self.grid_width)

    def reference_slot(self, index: int) -> slice:
        """Columns of reference ``index`` (0-based)."""
        if not 0 <= index < self.references:
            raise IndexError(f"reference {index} of {self.references}")
        return slice((1 + index) * self.width, (2 + index) * self.width)

    @classmethod
    def of(cls, grid: torch.Tensor, name: str = "latent", references: int = 1) -> "Layout":
        """The layout of an existing H x (1 + ``references``)W grid."""
        if grid.ndim < 3:
            raise InputError(name, f"expected a [batch, channels, height, width] latent, got shape {tuple(grid.shape)}.")
        k = check_references(references, "references")
        h, wg = grid.shape[-2], grid.shape[-1]
        if wg % (1 + k):
            what = "is odd, so it cannot be a [target | reference] grid" if k == 1 else \
                f"is not a multiple of {1 + k}, so it cannot be a [target | {k} references] grid"
            raise InputError(name, f"width {wg} {what}.", "Use the LATENT made by the Instruct Identity Reference node.")
        return cls(h, wg // (1 + k), k)

    def token_count(self, patch_size: int) -> int:
        """Image tokens of the whole grid (what FLUX's attention and ``flux_shift`` see)."""
        return math.ceil(self.height / patch_size) * math.ceil(self.grid_width / patch_size)

    def panel_tokens(self, patch_size: int) -> tuple[int, int]:
        """(rows, columns) of one panel's token grid."""
        return math.ceil(self.height / patch_size), math.ceil(self.width / patch_size)


def check_references(count, name: str = "references") -> int:
    """``count`` references as an int, within 1 .. :data:`core.limits.MAX_REFERENCES`."""
    try:
        k = int(count)
    except (TypeError, ValueError):
        raise InputError(name, f"{count!r} is not a number of references.", "Give 1 or more.") from None
    if k < 1:
        raise InputError(name, f"{k} references.", "Give at least one reference.")
    if k > limits.MAX_REFERENCES:
        raise InputError(name, f"{k} references, more than the {limits.MAX_REFERENCES} one grid may hold.",
                         "Use fewer references (the server's owner can raise II_MAX_REFERENCES, docs/limits.md).")
    return k


def check_grid_tokens(layout: "Layout", patch_size: int, name: str = "references") -> int:
    """The grid's image-token count, refused over :data:`core.limits.MAX_IDENTITY_TOKENS` (before any
    latent of that size is allocated)."""
    n = layout.token_count(patch_size)
    if n > limits.MAX_IDENTITY_TOKENS:
        raise InputError(name, f"the target with {layout.references} reference(s) makes a grid of {n} image tokens, "
                         f"more than the {limits.MAX_IDENTITY_TOKENS} allowed.",
                         "Use fewer references or a smaller size (the server's owner can raise II_MAX_IDENTITY_TOKENS, "
                         "docs/limits.md).")
    return n


def references_of(latent: dict) -> int:
    """The reference count a LATENT dict records (1 for latents made before several references existed)."""
    return check_references(latent.get(LATENT_KEY, 1), "samples")


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


def concat(target: torch.Tensor, reference) -> torch.Tensor:
    """``[target | reference]`` along the width; ``reference`` may be a list of K references
    (``[target | ref_1 | ... | ref_K]``). Each reference batch broadcasts to the target's."""
    refs = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    check_references(len(refs))
    panels = [target]
    for j, ref in enumerate(refs):
        if target.shape[-3:] != ref.shape[-3:]:
            which = "reference" if len(refs) == 1 else f"reference {j + 1}"
            raise InputError("reference", f"{which}: latent shape {tuple(ref.shape[-3:])} (channels, height, width) "
                             f"differs from the target's {tuple(target.shape[-3:])}.",
                             "Encode every reference at the target size with the same VAE.")
        panels.append(match_batch(ref.to(device=target.device, dtype=target.dtype), target.shape[0]))
    return torch.cat(panels, dim=-1)


def split(grid: torch.Tensor, references: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, reference strip) of a grid with ``references`` reference panels (views, not copies);
    with one reference, the two halves of an H x 2W grid."""
    lay = Layout.of(grid, references=references)
    return grid[..., lay.target], grid[..., lay.reference]


def split_references(grid: torch.Tensor, references: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(target, [ref_1, ..., ref_K]) of a grid with ``references`` reference panels (views)."""
    lay = Layout.of(grid, references=references)
    return grid[..., lay.target], [grid[..., lay.reference_slot(j)] for j in range(lay.references)]


def target_mask(layout: Layout, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``mu`` as ``[1, 1, H, (1 + K)W]``: 1 over the target panel, 0 over the reference panels."""
    mask = torch.zeros(1, 1, layout.height, layout.grid_width, device=device, dtype=dtype)
    mask[..., layout.target] = 1
    return mask


def strip_layout(grid: torch.Tensor, strip: torch.Tensor) -> Layout | None:
    """The layout in which ``strip`` (``[R, C, H, K*W]``) is the reference strip of ``grid``, or None."""
    wg, ws = grid.shape[-1], strip.shape[-1]
    w = wg - ws
    if w <= 0 or ws % w or strip.shape[-3:-1] != grid.shape[-3:-1]:
        return None
    return Layout(grid.shape[-2], w, ws // w)


def with_reference(grid: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A copy of ``grid`` whose reference strip is exactly ``reference`` (``[R, C, H, K*W]``: the K
    references side by side; batch broadcast as in :func:`match_batch`). The reference count follows
    from the two widths. This is what keeps the references clean at every model call."""
    lay = strip_layout(grid, reference)
    if lay is None:
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
