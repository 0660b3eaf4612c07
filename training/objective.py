"""The training objective, pure torch: timestep sampling and the paper's Eq. 2.

Identity mode, per sample with target latent ``x0`` (H x W), clean reference ``r`` and noise ``n``
drawn over the whole H x 2W grid::

    x_t   = (1 - s) * x0 + s * n[target half]          the target half is noised ...
    input = concat(x_t, r)                              ... the reference half never is
    v*    = n - concat(x0, r)                           flow-matching velocity (kohya: noise - latents)
    loss  = masked_mse(v_theta(input, s, text), v*, mu) mu = 1 on the target half, normalised by its area

``loss`` picks the objective (``LOSSES``); the last three are readings of Table 2's "full loss" baseline,
the loss computed over both halves:

* ``"masked"`` (default, Eq. 2): the above.
* ``"full"``: the same input, mask dropped. The reference half's target ``n - r`` holds noise the model
  never sees (its input there is the clean ``r``), so that half's loss cannot fall below the noise's
  variance and its gradient is mostly noise; its optimum is ``-r``. This is Eq. 2 with mu = 1, the
  literal ablation.
* ``"full_noised"``: the reference half is noised like the target, ``input = (1 - s) x0 + s n`` over
  the whole grid, target ``n - x0`` everywhere (plain flow matching on the pair, the In-Context-LoRA
  way). Sampling still feeds the clean reference (the pack's patch), so train and test differ there.
* ``"full_consistent"``: the clean-reference input of ``"masked"``, and on the reference half the
  velocity that leaves the clean reference where it is under the sampler's update. Derivation: the
  sampler treats the model output as a velocity ``v`` with denoised estimate ``x - s v`` (ComfyUI's
  CONST / rectified-flow parameterisation) and steps ``x <- x + (s' - s) v``. With ``x = r`` on the
  reference half at every call, the update leaves it unchanged for every step size iff ``v = 0``,
  which is also exactly the velocity whose denoised estimate is ``r`` itself. So the target there is
  ``0``: a learnable, consistent signal, loss over the whole grid, normalised by its area.

Grid mode is plain text-to-image flow matching (``loss`` must be ``"full"``). The layout (which half is
which, the mask, the loss normalisation) comes from ``core.layout`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core import layout

LOSSES = ("masked", "full", "full_noised", "full_consistent")


def flux_mu(tokens: int, x1: float = 256, y1: float = 0.5, x2: float = 4096, y2: float = 1.15) -> float:
    """kohya/BFL's resolution-dependent shift: mu linear in the image-token count."""
    m = (y2 - y1) / (x2 - x1)
    return m * tokens + (y1 - m * x1)


def time_shift(mu: float, sigma: float, t: torch.Tensor) -> torch.Tensor:
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def sample_sigmas(method: str, u_normal: torch.Tensor, u_uniform: torch.Tensor, *, sigmoid_scale: float = 1.0,
                  shift: float = 3.0, tokens: int = 0) -> torch.Tensor:
    """Noise levels in [0, 1] from pre-drawn standard normal and uniform numbers (one per sample).

    kohya's names: ``uniform`` t ~ U(0, 1); ``sigmoid`` sigmoid(scale * N); ``shift`` sigmoid(scale * N)
    then s*t / (1 + (s - 1) t) with s = discrete_flow_shift; ``flux_shift`` sigmoid(scale * N) shifted
    by mu(tokens), where ``tokens`` must be the token count of the WHOLE grid the model sees.
    """
    if method == "uniform":
        return u_uniform
    t = torch.sigmoid(sigmoid_scale * u_normal)
    if method == "sigmoid":
        return t
    if method == "shift":
        return (t * shift) / (1 + (shift - 1) * t)
    if method == "flux_shift":
        if tokens <= 0:
            raise ValueError("flux_shift needs the image-token count")
        return time_shift(flux_mu(tokens), 1.0, t.clamp(1e-6, 1 - 1e-6))
    raise ValueError(f"unknown timestep_sampling {method!r}")


def grid_tokens(height: int, width: int, patch_size: int, mode: str, references: int = 1) -> int:
    """Image tokens the model sees for a target latent of ``height`` x ``width`` (and ``references``
    reference panels in identity mode)."""
    if mode == "identity":
        return layout.Layout(height, width, references).token_count(patch_size)
    return math.ceil(height / patch_size) * math.ceil(width / patch_size)


def noise_shape(target: torch.Tensor, mode: str, references: int = 1) -> tuple[int, ...]:
    """Identity mode draws noise over the whole grid (the paper's z_1: H x 2W with one reference,
    H x (1 + K)W with K), grid mode over the image."""
    c, h, w = target.shape[-3:]
    return (c, h, (1 + references) * w) if mode == "identity" else (c, h, w)


@dataclass
class FlowInputs:
    model_input: torch.Tensor      # what the transformer gets
    velocity_target: torch.Tensor  # n - x0 over the same grid
    mask: torch.Tensor | None      # mu (None: full loss)


def flow_inputs(target: torch.Tensor, reference, noise: torch.Tensor, sigmas: torch.Tensor,
                mode: str, loss: str) -> FlowInputs:
    """Model input, velocity target and loss mask for one batch (latents in the model's space).
    ``reference``: one reference latent, or a list of K (``[target | ref_1 | ... | ref_K]``)."""
    s = sigmas.to(target.dtype).view(-1, 1, 1, 1)
    if mode == "identity":
        if reference is None:
            raise ValueError("identity mode needs a reference latent")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
        x0 = layout.concat(target, reference)
        lay = layout.Layout.of(x0, references=len(reference) if isinstance(reference, (list, tuple)) else 1)
        if loss == "full_noised":
            return FlowInputs((1 - s) * x0 + s * noise, noise - x0, None)
        noisy_target = (1 - s) * target + s * noise[..., lay.target]
        model_input = layout.concat(noisy_target, reference)
        if loss == "full_consistent":
            velocity = layout.with_reference(layout.concat(noise[..., lay.target] - target, reference),
                                             torch.zeros_like(x0[..., lay.reference]))
            return FlowInputs(model_input, velocity, None)
        mask = layout.target_mask(lay, device=target.device) if loss == "masked" else None
        return FlowInputs(model_input, noise - x0, mask)
    if loss not in ("full", None):
        raise ValueError(f"grid mode trains whole images: loss must be \"full\", not {loss!r}")
    model_input = (1 - s) * target + s * noise
    return FlowInputs(model_input, noise - target, None)


def flow_loss(prediction: torch.Tensor, inputs: FlowInputs) -> torch.Tensor:
    """Eq. 2: squared velocity error over the masked area (the target half), normalised by that area."""
    return layout.masked_mse(prediction, inputs.velocity_target, inputs.mask)
