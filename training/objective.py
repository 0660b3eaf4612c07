"""The training objective, pure torch: timestep sampling and the paper's Eq. 2.

Identity mode, per sample with target latent ``x0`` (H x W), clean reference ``r`` and noise ``n``
drawn over the whole H x 2W grid::

    x_t   = (1 - s) * x0 + s * n[target half]          the target half is noised ...
    input = concat(x_t, r)                              ... the reference half never is
    v*    = n - concat(x0, r)                           flow-matching velocity (kohya: noise - latents)
    loss  = masked_mse(v_theta(input, s, text), v*, mu) mu = 1 on the target half, normalised by its area

``loss = "full"`` drops the mask (Table 2's ablation): the reference half's target then contains noise
the model never sees, so its optimum there is ``-r``, i.e. reconstructing the reference, which is the
copy-paste pressure the paper's ablation describes. Grid mode is plain text-to-image flow matching.
The layout (which half is which, the mask, the loss normalisation) comes from ``core.layout`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core import layout


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


def grid_tokens(height: int, width: int, patch_size: int, mode: str) -> int:
    """Image tokens the model sees for a target latent of ``height`` x ``width``."""
    if mode == "identity":
        return layout.Layout(height, width).token_count(patch_size)
    return math.ceil(height / patch_size) * math.ceil(width / patch_size)


def noise_shape(target: torch.Tensor, mode: str) -> tuple[int, ...]:
    """Identity mode draws noise over the whole H x 2W grid (the paper's z_1), grid mode over the image."""
    c, h, w = target.shape[-3:]
    return (c, h, 2 * w) if mode == "identity" else (c, h, w)


@dataclass
class FlowInputs:
    model_input: torch.Tensor      # what the transformer gets
    velocity_target: torch.Tensor  # n - x0 over the same grid
    mask: torch.Tensor | None      # mu (None: full loss)


def flow_inputs(target: torch.Tensor, reference: torch.Tensor | None, noise: torch.Tensor, sigmas: torch.Tensor,
                mode: str, loss: str) -> FlowInputs:
    """Model input, velocity target and loss mask for one batch (latents in the model's space)."""
    s = sigmas.to(target.dtype).view(-1, 1, 1, 1)
    if mode == "identity":
        if reference is None:
            raise ValueError("identity mode needs a reference latent")
        x0 = layout.concat(target, reference)
        lay = layout.Layout.of(x0)
        noisy_target = (1 - s) * target + s * noise[..., lay.target]
        model_input = layout.concat(noisy_target, reference)
        mask = layout.target_mask(lay, device=target.device) if loss == "masked" else None
        return FlowInputs(model_input, noise - x0, mask)
    model_input = (1 - s) * target + s * noise
    return FlowInputs(model_input, noise - target, None)


def flow_loss(prediction: torch.Tensor, inputs: FlowInputs) -> torch.Tensor:
    """Eq. 2: squared velocity error over the masked area (the target half), normalised by that area."""
    return layout.masked_mse(prediction, inputs.velocity_target, inputs.mask)
