"""Strength per reference and region binding, as one additive attention bias (torch only).

FLUX attends over one joint sequence ``[text | image tokens of the grid | extra]``; the grid is
``[target | ref_1 | ... | ref_K]`` (``core.layout``), its tokens numbered row by row over the whole
grid. Two controls per reference ``j`` change who may attend to whom:

* **strength** ``s_j`` (0 = ignored, 1 = as trained, > 1 = stronger): every query outside reference
  ``j`` gets ``log(s_j)`` added to its logits on reference ``j``'s keys. Adding ``log s`` to a logit
  multiplies that key's unnormalised attention weight by ``s``, so the share of attention the target
  gives the reference grows monotonically with ``s``; at 0 the keys are blocked; at exactly 1 no bias
  exists at all (the unbiased path, bit for bit).
* **region** (a mask over the target panel): reference ``j`` is *bound* to it. Then

  - target tokens outside the region do not attend to reference ``j``, and reference ``j`` does not
    attend to them;
  - the text does not attend to reference ``j`` (so the shared prompt cannot carry its colours to
    another region; reference ``j`` still reads the text);
  - two bound references whose regions do not overlap do not attend to each other, and neither do
    the target tokens of those two regions (outside their overlap).

  So in no attention layer does character A's reference, or A's region, reach B's region directly.
  Tokens outside every region (the background) and the text still read both regions: over several
  layers a trace of A can reach B through them (the leakage the toy world measures). A reference
  with no region is seen by every token, as without binding.

The bias is built once per grid size and shared by the batch (``[1, L, L]``); the sampler patch
(``engine/patch.py``) passes it as FLUX's attention mask in joint mode, the one-way path
(``engine/oneway.py``) takes the rows and columns it needs (:func:`one_way_parts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import limits
from .errors import InputError

BLOCKED = -10000.0   # finite: ComfyUI casts masks to fp16 and may add another mask to it
MAX_STRENGTH = 10.0


@dataclass(frozen=True)
class ReferenceControl:
    """How one reference is used: its strength and the target region it is bound to (None: all)."""

    strength: float = 1.0
    region: torch.Tensor | None = None   # [H, W] (or [1, H, W]) over the target panel, 1 = inside, any resolution

    @property
    def neutral(self) -> bool:
        return self.strength == 1.0 and self.region is None


def check_strength(value, name: str = "strength") -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"{value!r} is not a number.", "Use 0 (ignore the reference) to 10; 1 is as trained.") from None
    if not math.isfinite(s) or s < 0 or s > MAX_STRENGTH:
        raise InputError(name, f"{s:g} is outside 0..{MAX_STRENGTH:g}.",
                         "Use 0 (ignore the reference), 1 (as trained) or more for a stronger identity.")
    return s


def neutral(controls) -> bool:
    """True when no bias is needed: every strength 1 and no region bound."""
    return all(c.neutral for c in controls)


def region_tokens(region: torch.Tensor, rows: int, cols: int, name: str = "region") -> torch.Tensor:
    """A region mask resized (by area) to the target panel's token grid: bool ``[rows * cols]``;
    a token is inside when at least half of it is."""
    m = region.detach().float()
    while m.ndim > 2:
        if m.shape[0] != 1:
            raise InputError(name, f"a region is one mask, this is a batch of {m.shape[0]}.",
                             "Pick one mask (e.g. with Mask From Batch) per reference.")
        m = m[0]
    if m.ndim != 2 or min(m.shape) < 1:
        raise InputError(name, f"shape {tuple(region.shape)} is not a mask.", "Connect a MASK over the target picture.")
    tok = F.interpolate(m[None, None].cpu(), size=(rows, cols), mode="area")[0, 0] >= 0.5
    if not tok.any():
        raise InputError(name, f"the region covers no {rows}x{cols} token of the target (less than half of each).",
                         "Draw a larger region, or leave it unconnected to let the reference be seen everywhere.")
    return tok.flatten()


def _grid_index(rows: int, cols: int, panels: int) -> torch.Tensor:
    """Panel of every image token of the grid, in FLUX's row-major order over the whole grid."""
    col = torch.arange(panels * cols).repeat(rows)
    return col // cols


def bias(controls, *, text: int, rows: int, cols: int, extra: int = 0, device=None,
         dtype=torch.float32) -> torch.Tensor | None:
    """The additive bias ``[1, L, L]`` over ``[text | grid tokens | extra]`` (``L = text + rows *
    (1 + K) * cols + extra``) for ``controls`` (one :class:`ReferenceControl` per reference); None
    when :func:`neutral` (no bias: the unbiased path)."""
    controls = list(controls)
    if neutral(controls):
        return None
    k = len(controls)
    panels = 1 + k
    n_img = rows * panels * cols
    total = text + n_img + extra
    if total > limits.MAX_REFERENCE_BIAS_TOKENS:
        raise InputError("references", f"a reference strength or region needs an attention bias over {total} tokens "
                         f"(text + the grid of {k} reference(s)), more than the {limits.MAX_REFERENCE_BIAS_TOKENS} allowed.",
                         "Use strength 1 without regions, fewer references or a smaller size (the server's owner can "
                         "raise II_MAX_REFERENCE_BIAS_TOKENS, docs/limits.md).")
    # which token belongs to what: -2 text / extra, -1 target, j reference j
    owner = torch.full((total,), -2, dtype=torch.long)
    panel = _grid_index(rows, cols, panels)
    owner[text:text + n_img] = panel - 1
    # region membership of target tokens (in grid order), per bound reference
    target_pos = torch.nonzero(owner == -1).flatten()
    inside = {}
    for j, c in enumerate(controls):
        if c.region is not None:
            inside[j] = torch.zeros(total, dtype=torch.bool)
            inside[j][target_pos] = region_tokens(c.region, rows, cols, f"region of reference {j + 1}")
    out = torch.zeros(total, total, dtype=torch.float32)
    is_text = torch.zeros(total, dtype=torch.bool)
    is_text[:text] = True
    is_target = owner == -1
    for j, c in enumerate(controls):
        cols_j = owner == j
        s = check_strength(c.strength, f"strength of reference {j + 1}")
        if s != 1.0:   # every query outside reference j
            out[(~cols_j).nonzero().flatten()[:, None], cols_j.nonzero().flatten()[None, :]] += math.log(s) if s > 0 else BLOCKED
        if j in inside:
            rows_j = cols_j.nonzero().flatten()
            blocked_q = (is_target & ~inside[j]) | is_text
            for i in range(k):   # other bound references with a disjoint region
                if i != j and i in inside and not (inside[i] & inside[j]).any():
                    blocked_q |= owner == i
            out[blocked_q.nonzero().flatten()[:, None], rows_j[None, :]] = BLOCKED
            # reference j does not read the target outside its region
            out[rows_j[:, None], (is_target & ~inside[j]).nonzero().flatten()[None, :]] = BLOCKED
    bound = sorted(inside)
    for a in bound:   # target tokens of two disjoint bound regions do not read each other
        for b in bound:
            if a != b and not (inside[a] & inside[b]).any():
                only_a = (inside[a] & ~inside[b]).nonzero().flatten()
                only_b = (inside[b] & ~inside[a]).nonzero().flatten()
                out[only_a[:, None], only_b[None, :]] = BLOCKED
    return out.to(device=device, dtype=dtype).unsqueeze(0)


def one_way_parts(full: torch.Tensor, *, text: int, rows: int, cols: int, references: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-way path's pieces of a joint bias ``[1, L, L]`` (no extra tokens):

    * queries ``[text | target]`` x keys ``[text | target | reference strip]`` (the sampled call;
      target and strip tokens each row-major over their own panel(s), as ``process_img`` numbers them);
    * queries x keys of the reference strip alone (the reference path)."""
    panels = 1 + references
    grid_cols = panels * cols
    r = torch.arange(rows)[:, None]
    target = (r * grid_cols + torch.arange(cols)[None, :]).flatten() + text
    strip = (r * grid_cols + cols + torch.arange(references * cols)[None, :]).flatten() + text
    txt = torch.arange(text)
    q = torch.cat([txt, target]).to(full.device)
    kk = torch.cat([txt, target, strip]).to(full.device)
    strip = strip.to(full.device)
    return full[:, q[:, None], kk[None, :]], full[:, strip[:, None], strip[None, :]]
