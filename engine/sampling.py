"""The identity sampling recipe, written once: reference latent -> patched model -> ComfyUI's sampler.

The Reference node (``nodes/reference.py``) takes :func:`identity_inputs` and hands its parts to
whatever sampler node the user wires; the trainer's previews, the toy replication and the benchmarks
call :func:`sample_identity`, which runs ComfyUI's own ``comfy.sample.sample`` on the same parts. So
every picture this pack makes goes through one path: the clean reference in the right half of every
model input (``engine.patch``), the target half sampled under a noise mask (``core.layout``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import layout
from .patch import patch_model, reference_strip


@dataclass
class IdentityInputs:
    """What a sampler needs: the patched model, the H x 2W start latent and the target-half mask."""

    model: object              # ModelPatcher clone carrying the reference patch
    latent: torch.Tensor       # [B, C, h, (1 + K)w]: zeros on the target panel, the references to its right
    noise_mask: torch.Tensor   # [1, 1, h, (1 + K)w]: 1 on the target panel (what gets sampled)
    reference: torch.Tensor    # [R, C, h, K*w] the clean reference strip (VAE space)
    references: int = 1        # K

    @property
    def layout(self) -> layout.Layout:
        return layout.Layout.of(self.latent, references=self.references)

    def as_latent_dict(self) -> dict:
        """ComfyUI's LATENT for a sampler node (the reference count rides along: samplers copy the dict)."""
        out = {"samples": self.latent, "noise_mask": self.noise_mask}
        if self.references != 1:
            out[layout.LATENT_KEY] = self.references
        return out


def _references(reference_latent) -> list[torch.Tensor]:
    refs = [reference_latent] if isinstance(reference_latent, torch.Tensor) else list(reference_latent)
    layout.check_references(len(refs))
    return [r.detach() for r in refs]


def identity_inputs(model, reference_latent, batch: int | None = None, reference_attention: str | None = None,
                    controls=None) -> IdentityInputs:
    """Patch ``model`` with ``reference_latent`` (``[R, C, h, w]``, VAE space; or a list of K such
    latents for ``[target | ref_1 | ... | ref_K]``) and lay out a grid of ``batch`` samples (default:
    one per reference picture). ``reference_attention``: ``joint``, ``one_way``, or None for the mode
    ``model`` is tagged with (``engine.oneway.mode_of``; untagged: joint). ``controls``: one
    ``core.reference_bias.ReferenceControl`` (strength, bound region) per reference."""
    refs = _references(reference_latent)
    start, mask = _start_grid(refs, batch)
    patched = patch_model(model, refs[0] if len(refs) == 1 else refs, reference_attention, controls)
    return IdentityInputs(patched, start, mask, reference_strip(refs), len(refs))


def _start_grid(reference_latent, batch: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[zeros | ref_1 | ... | ref_K]`` for ``batch`` samples (default: one per reference picture)
    and the target-panel mask."""
    refs = _references(reference_latent)
    ref = refs[0]
    batch = max(r.shape[0] for r in refs) if batch is None else int(batch)
    lay = layout.Layout(ref.shape[-2], ref.shape[-1], len(refs))
    start = layout.concat(torch.zeros((batch,) + tuple(ref.shape[1:]), dtype=ref.dtype, device=ref.device),
                          refs[0] if len(refs) == 1 else refs)
    return start, layout.target_mask(lay)


def conditioning(cond: torch.Tensor, pooled: torch.Tensor | None = None, guidance: float | None = None) -> list:
    """A ComfyUI CONDITIONING from text-encoder outputs (``[T, D]`` or a batch ``[B, T, D]``)."""
    cond = cond if cond.ndim == 3 else cond.unsqueeze(0)
    extra: dict = {}
    if pooled is not None:
        extra["pooled_output"] = pooled if pooled.ndim == 2 else pooled.unsqueeze(0)
    if guidance is not None:
        extra["guidance"] = float(guidance)
    return [[cond, extra]]


def _sample(model, latent, positive, negative, *, seed, steps, cfg, sampler, scheduler, noise_mask=None, noise=None):
    import comfy.sample

    if noise is None:
        noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent, denoise=1.0,
                               noise_mask=noise_mask, disable_pbar=True, seed=seed)


@torch.no_grad()
def sample_identity(model, reference_latent, positive, negative, *, seed: int, steps: int,
                    cfg: float = 1.0, sampler: str = "euler", scheduler: str = "simple", batch: int | None = None,
                    noise: torch.Tensor | None = None, reference_attention: str | None = None,
                    controls=None) -> torch.Tensor:
    """Generate targets for ``reference_latent`` (one latent or a list of K): the sampled grid (VAE space).

    The reference panels of the result are the references themselves; :func:`core.layout.split`
    takes the target out. ``reference_attention`` and ``controls`` as in :func:`identity_inputs`: a model trained by
    ``training.trainer.train`` (its ``Components.model``) or loaded with ``engine.oneway.apply_lora_file``
    carries its mode, so None samples it the way it was trained."""
    inputs = identity_inputs(model, reference_latent, batch, reference_attention, controls)
    return _sample(inputs.model, inputs.latent, positive, negative, seed=seed, steps=steps, cfg=cfg, sampler=sampler,
                   scheduler=scheduler, noise_mask=inputs.noise_mask, noise=noise)


@torch.no_grad()
def sample_diptych_inpaint(model, reference_latent: torch.Tensor, positive, negative, *, seed: int, steps: int,
                           cfg: float = 1.0, sampler: str = "euler", scheduler: str = "simple",
                           batch: int | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The baseline without this pack's patch: the same ``[empty target | reference]`` grid and target-half
    noise mask, sampled by ComfyUI's own masked sampling (what *Set Latent Noise Mask* + *KSampler* does:
    before every model call the reference half is replaced by the reference noised to that step's level),
    i.e. the diptych route of a plain model. The model never sees a clean reference next to a noisy
    target, which is what a base pre-trained on multi-view pictures knows; the patch's clean reference
    is what an identity LoRA learns to read. Returns the H x 2W grid (VAE space)."""
    start, mask = _start_grid(reference_latent, batch)
    return _sample(model, start, positive, negative, seed=seed, steps=steps, cfg=cfg, sampler=sampler,
                   scheduler=scheduler, noise_mask=mask, noise=noise)


@torch.no_grad()
def sample_text_to_image(model, latent_shape: tuple[int, ...], positive, negative, *, seed: int, steps: int,
                         cfg: float = 1.0, sampler: str = "euler", scheduler: str = "simple",
                         noise: torch.Tensor | None = None) -> torch.Tensor:
    """Plain text-to-image (no reference, no patch) from an empty latent of ``latent_shape``."""
    latent = torch.zeros(latent_shape)
    return _sample(model, latent, positive, negative, seed=seed, steps=steps, cfg=cfg, sampler=sampler,
                   scheduler=scheduler, noise=noise)
