"""ComfyUI integration of the latent layout: which model we were given, and the sampler patch that
keeps the reference half of the model input clean at every model call.

Plain functions and a small state holder; the Reference node and every other sampler of the pack reach
them through the one recipe in ``engine/sampling.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_base
import comfy.patcher_extension
import torch
from comfy.patcher_extension import WrappersMP

from ..core import layout
from ..core.errors import InputError
from . import oneway

log = logging.getLogger(__name__)

PATCH_KEY = "instruct_identity.reference"

ROUTE_LORA = "lora"   # clean reference latent in the model input (the paper's method)
ROUTE_FILL = "fill"   # FLUX.1 Fill: reference as the known half of a diptych (inpaint channels)
ROUTES = (ROUTE_LORA, ROUTE_FILL)


@dataclass(frozen=True)
class ModelInfo:
    """What the reference path needs to know about a FLUX-family model."""

    family: str            # "flux", "flux2", "chroma", ... (ComfyUI's image_model)
    latent_channels: int   # channels of the latent the sampler works on
    patch_size: int        # DiT patch size in latent pixels
    in_channels: int       # channels img_in takes per latent pixel (latent + any concat channels)
    default_guidance: float

    @property
    def is_fill(self) -> bool:
        """Inpainting model (FLUX.1 Fill): extra image + mask channels beyond one concat image."""
        return self.in_channels > 2 * self.latent_channels

    @property
    def is_structural_control(self) -> bool:
        """FLUX.1 Canny/Depth: exactly one extra concatenated image, which this method cannot feed."""
        return self.latent_channels < self.in_channels <= 2 * self.latent_channels

    @property
    def auto_route(self) -> str:
        return ROUTE_FILL if self.is_fill else ROUTE_LORA


def model_info(model) -> ModelInfo:
    """Describe ``model`` (a ComfyUI MODEL) or raise an :class:`InputError` saying why it can't be used."""
    if model is None:
        raise InputError("model", "no model is connected.", "Connect a FLUX model (Load Diffusion Model).")
    base = getattr(model, "model", None)
    if not isinstance(base, comfy.model_base.Flux):
        config = getattr(base, "model_config", None)
        kind = type(config if config is not None else (base if base is not None else model)).__name__
        raise InputError("model", f"this is a {kind} model, not a FLUX-family diffusion transformer.",
                         "Instruct Identity needs FLUX.1 (dev, schnell or Fill), FLUX.2 or Chroma: load one with "
                         "Load Diffusion Model.")
    dm = base.diffusion_model
    unet = base.model_config.unet_config
    patch = int(getattr(dm, "patch_size", unet.get("patch_size", 2)))
    latent_ch = int(base.latent_format.latent_channels)
    img_in = getattr(dm, "img_in", None)
    weight = getattr(img_in, "weight", None)
    in_ch = int(weight.shape[1] // (patch * patch)) if weight is not None else int(unet.get("in_channels", latent_ch))
    fill = in_ch > 2 * latent_ch
    return ModelInfo(
        family=str(unet.get("image_model", "flux")),
        latent_channels=latent_ch,
        patch_size=patch,
        in_channels=in_ch,
        default_guidance=30.0 if fill else 3.5,
    )


class ReferencePatch:
    """Holds one reference latent (VAE space, ``[R, C, h, w]``) and the wrapper functions.

    ``apply_model`` runs around ``BaseModel.apply_model`` (any sampler, CFG batch, scheduler): the
    reference half of ``x`` is replaced by the clean reference in ``process_in`` space before the
    model sees it, and the reference half of the denoised output is set to it as well, so the
    sampler's own state in that half stays on the reference.
    """

    def __init__(self, reference: torch.Tensor):
        self.reference = reference.detach()
        self.calls = 0
        self._cache: dict = {}

    def clean_reference(self, base_model, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        ref = self._cache.get(key)
        if ref is None:
            ref = base_model.process_latent_in(self.reference.to(device=like.device, dtype=torch.float32)).to(like.dtype)
            self._cache = {key: ref}
        return ref

    def apply_model(self, executor, x, t, *args, **kwargs):
        ref = self.clean_reference(executor.class_obj, x)
        x = layout.with_reference(x, ref)
        self.calls += 1
        denoised = executor(x, t, *args, **kwargs)
        return layout.with_reference(denoised, ref)

    def outer_sample(self, executor, *args, **kwargs):
        self.calls = 0
        out = executor(*args, **kwargs)
        log.info("Instruct Identity: clean reference fed to the model at %d model calls", self.calls)
        return out


def patch_model(model, reference_latent: torch.Tensor, reference_attention: str | None = None):
    """A clone of ``model`` that keeps ``reference_latent`` clean in the right half of every model input.

    Registered under one key with ``add_wrapper_with_key``: wrappers of other packs stay in place,
    and applying our node twice replaces our own wrapper instead of stacking it.
    ``reference_attention``: ``joint`` (the paper's), ``one_way`` (``engine.oneway``: the reference's
    keys and values computed once, the model run on the target half), or None for the mode the
    model was tagged with (``engine.oneway.mode_of``: the trainer and the LoRA loader tag it).
    """
    mode = oneway.mode_of(model) if reference_attention is None else oneway.check_mode(reference_attention)
    m = model.clone()
    holder = ReferencePatch(reference_latent)
    for kind, fn in ((WrappersMP.APPLY_MODEL, holder.apply_model), (WrappersMP.OUTER_SAMPLE, holder.outer_sample)):
        m.remove_wrappers_with_key(kind, PATCH_KEY)
        m.add_wrapper_with_key(kind, PATCH_KEY, fn)
    oneway.uninstall(m)   # a model patched one-way before (our node applied twice): back to joint
    if mode == oneway.ONE_WAY:
        info = model_info(model)
        if info.in_channels != info.latent_channels:
            raise InputError("reference_attention", f"one_way needs a model whose only input is the latent; this one "
                             f"takes {info.in_channels} channels per latent pixel (FLUX.1 Fill/Canny/Depth).",
                             "Use FLUX.1 dev/schnell or FLUX.2 with a one-way LoRA, or joint attention.")
        oneway.install(m, reference_latent)
    return m


def reference_patch_of(model) -> ReferencePatch | None:
    """The holder our node attached to ``model`` (None if unpatched)."""
    for fn in model.get_wrappers(WrappersMP.APPLY_MODEL, PATCH_KEY):
        holder = getattr(fn, "__self__", None)
        if isinstance(holder, ReferencePatch):
            return holder
    return None
