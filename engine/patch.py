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

from ..core import layout, reference_bias
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


def reference_strip(references) -> torch.Tensor:
    """K reference latents (a list of ``[R, C, h, w]``, or one tensor for K = 1) side by side:
    the ``[R, C, h, K*w]`` strip that fills the grid's reference panels."""
    if isinstance(references, torch.Tensor):
        return references
    refs = list(references)
    layout.check_references(len(refs))
    first = refs[0]
    for j, r in enumerate(refs[1:], start=2):
        if r.shape[1:] != first.shape[1:]:
            raise InputError("references", f"reference {j} encodes to {tuple(r.shape[1:])} (channels, height, width), "
                             f"reference 1 to {tuple(first.shape[1:])}.",
                             "Give every reference the target's size (the Reference node fits them for you).")
        if r.shape[0] not in (1, first.shape[0]) and first.shape[0] != 1:
            raise InputError("references", f"reference {j} is a batch of {r.shape[0]}, reference 1 of {first.shape[0]}.",
                             "Give one picture per reference, or the same number for each.")
    batch = max(r.shape[0] for r in refs)
    return torch.cat([layout.match_batch(r, batch, "references") for r in refs], dim=-1)


class ReferencePatch:
    """Holds the reference strip (VAE space, ``[R, C, h, K*w]``), the per-reference controls and
    the wrapper functions.

    ``apply_model`` runs around ``BaseModel.apply_model`` (any sampler, CFG batch, scheduler): the
    reference panels of ``x`` are replaced by the clean references in ``process_in`` space before the
    model sees it, and the reference panels of the denoised output are set to them as well, so the
    sampler's own state there stays on the references. With a strength other than 1 or a region
    bound (``controls``, joint attention), the call also gets the attention bias of
    ``core.reference_bias`` as FLUX's attention mask (added to a mask the conditioning already carries).
    """

    def __init__(self, reference: torch.Tensor, controls=None):
        self.reference = reference.detach()
        self.controls = tuple(controls or ())
        self.calls = 0
        self._cache: dict = {}
        self._bias: dict = {}

    def clean_reference(self, base_model, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        ref = self._cache.get(key)
        if ref is None:
            ref = base_model.process_latent_in(self.reference.to(device=like.device, dtype=torch.float32)).to(like.dtype)
            self._cache = {key: ref}
        return ref

    def attention_bias(self, base_model, x: torch.Tensor, args: tuple, kwargs: dict) -> dict:
        """``kwargs`` with the reference bias in ``attention_mask`` (unchanged when none is needed)."""
        if not self.controls or reference_bias.neutral(self.controls):
            return kwargs
        if kwargs.get("ref_latents") is not None:
            raise InputError("references", "a reference strength or region does not combine with ReferenceLatent "
                             "(Kontext / FLUX.2 edit) conditioning in the same graph.",
                             "Remove the ReferenceLatent node, or set every strength to 1 with no region.")
        context = args[1] if len(args) > 1 else kwargs.get("c_crossattn")
        text = int(context.shape[1]) if context is not None else 0
        patch = int(getattr(base_model.diffusion_model, "patch_size", 2))
        lay = layout.strip_layout(x, self.reference)
        if x.shape[-2] % patch or lay.width % patch:
            raise InputError("latent", f"a {x.shape[-2]}x{lay.width} latent panel is not a whole number of "
                             f"{patch}x{patch} patches.", "Use target sizes in multiples of 16 px.")
        rows, cols = x.shape[-2] // patch, lay.width // patch
        key = (text, rows, cols, x.device, x.dtype)
        bias = self._bias.get(key)
        if bias is None:
            bias = reference_bias.bias(self.controls, text=text, rows=rows, cols=cols, device=x.device)
            self._bias = {key: bias}
        mask = kwargs.get("attention_mask")
        if mask is not None:
            if mask.shape[-1] != bias.shape[-1] or mask.shape[-2] != bias.shape[-2]:
                raise InputError("positive", f"the conditioning carries an attention mask over {mask.shape[-1]} tokens, "
                                 f"but this grid has {bias.shape[-1]} (text + target + references).",
                                 "Bind the references to regions on the Add Reference node instead of an "
                                 "attention-mask conditioning, or set every strength to 1 with no region.")
            bias = mask.to(bias) + bias
        return {**kwargs, "attention_mask": bias}

    def apply_model(self, executor, x, t, *args, **kwargs):
        ref = self.clean_reference(executor.class_obj, x)
        x = layout.with_reference(x, ref)
        kwargs = self.attention_bias(executor.class_obj, x, args, kwargs)
        self.calls += 1
        denoised = executor(x, t, *args, **kwargs)
        return layout.with_reference(denoised, ref)

    def outer_sample(self, executor, *args, **kwargs):
        self.calls = 0
        out = executor(*args, **kwargs)
        log.info("Instruct Identity: clean reference fed to the model at %d model calls", self.calls)
        return out


def patch_model(model, reference_latent, reference_attention: str | None = None, controls=None):
    """A clone of ``model`` that keeps ``reference_latent`` clean in the reference panels of every
    model input: one ``[R, C, h, w]`` latent (the paper's diptych) or a list of K (``[target | ref_1 |
    ... | ref_K]``). ``controls``: one ``core.reference_bias.ReferenceControl`` per reference
    (strength, bound region); None is strength 1 everywhere, no region.

    Registered under one key with ``add_wrapper_with_key``: wrappers of other packs stay in place,
    and applying our node twice replaces our own wrapper instead of stacking it.
    ``reference_attention``: ``joint`` (the paper's), ``one_way`` (``engine.oneway``: the reference's
    keys and values computed once, the model run on the target half), or None for the mode the
    model was tagged with (``engine.oneway.mode_of``: the trainer and the LoRA loader tag it).
    """
    mode = oneway.mode_of(model) if reference_attention is None else oneway.check_mode(reference_attention)
    k = 1 if isinstance(reference_latent, torch.Tensor) else len(list(reference_latent))
    strip = reference_strip(reference_latent)
    controls = tuple(controls) if controls is not None else tuple(reference_bias.ReferenceControl() for _ in range(k))
    if len(controls) != k:
        raise InputError("references", f"{len(controls)} strengths/regions for {k} references.",
                         "Give one control per reference.")
    for j, c in enumerate(controls):
        reference_bias.check_strength(c.strength, f"strength of reference {j + 1}")
    m = model.clone()
    holder = ReferencePatch(strip, controls if mode == oneway.JOINT else None)
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
        oneway.install(m, strip, references=k, controls=controls)
    return m


def reference_patch_of(model) -> ReferencePatch | None:
    """The holder our node attached to ``model`` (None if unpatched)."""
    for fn in model.get_wrappers(WrappersMP.APPLY_MODEL, PATCH_KEY):
        holder = getattr(fn, "__self__", None)
        if isinstance(holder, ReferencePatch):
            return holder
    return None
