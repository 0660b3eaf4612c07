"""Reference-concat generation: the Instruct Identity Reference node and the nodes that take the
target half back out. ``prepare_reference`` holds the logic; the node classes only call it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import node_helpers
import torch
from comfy_api.latest import io, ui

from ..core import images, layout, limits
from ..core.errors import InputError
from ..core.reference_bias import ReferenceControl, check_strength
from ..engine import oneway
from ..engine.patch import ROUTE_FILL, ROUTE_LORA, ROUTES, model_info
from ..engine.sampling import identity_inputs
from . import CATEGORY

log = logging.getLogger(__name__)

ROUTE_AUTO = "auto"
ROUTE_LORA_ONE_WAY = "lora_one_way"   # the lora route with one-way reference attention (engine/oneway.py)
ROUTE_CHOICES = [ROUTE_AUTO, ROUTE_LORA, ROUTE_LORA_ONE_WAY, ROUTE_FILL]
ROUTE_TOOLTIP = ("auto: fill for FLUX.1 Fill models; otherwise lora, one-way if the model carries a one-way LoRA "
                 "(loaded with Instruct Identity Load LoRA). lora: the paper's joint attention (the reference is "
                 "recomputed at every step, ~2x the cost). lora_one_way: for LoRAs trained with reference_attention "
                 "= one_way: the reference is computed once and reused (~1.05-1.2x the cost of plain text-to-image).")
MAX_SIDE = 8192
ReferencesIO = io.Custom("II_REFERENCES")   # the chain of Add Reference nodes


@dataclass(frozen=True)
class ExtraReference:
    """One reference appended by *Add Reference*: the picture, its strength, the region it is bound to."""

    image: torch.Tensor
    strength: float = 1.0
    region: torch.Tensor | None = None


def add_reference(chain, image, strength: float = 1.0, region=None) -> tuple[ExtraReference, ...]:
    """``chain`` (a tuple of :class:`ExtraReference`, or None) with one more reference (a new tuple:
    ComfyUI caches node outputs, so the chain is never changed in place)."""
    if image is None:
        raise InputError("image", "no picture is connected.", "Connect a Load Image with the reference.")
    chain = tuple(chain or ())
    layout.check_references(len(chain) + 2, "references")   # the Reference node's own picture comes first
    return chain + (ExtraReference(image, check_strength(strength), region),)


@dataclass
class PreparedReference:
    model: object
    positive: list
    negative: list
    latent: dict
    route: str
    width: int
    height: int
    preview: torch.Tensor  # the grid as it will be sampled: [placeholder target | ref_1 | ... | ref_K]
    notes: list[str] = field(default_factory=list)
    attention: str = oneway.JOINT
    controls: tuple = ()   # core.reference_bias.ReferenceControl per reference

    @property
    def references(self) -> int:
        return max(1, len(self.controls))

    @property
    def info(self) -> str:
        how = ("FLUX Fill diptych" if self.route == ROUTE_FILL else "reference in the model input" if
               self.attention == oneway.JOINT else "one-way reference attention: the reference is computed once and reused")
        k = self.references
        head = (f"route: {self.route} ({how}), "
                f"target {self.width}x{self.height} px, grid {(1 + k) * self.width}x{self.height} px, batch {self.latent['samples'].shape[0]}")
        lines = [head]
        if k > 1 or any(not c.neutral for c in self.controls):
            lines.append(f"{k} reference(s): " + ", ".join(
                f"#{j + 1} strength {c.strength:g}" + (" bound to a region" if c.region is not None else "")
                for j, c in enumerate(self.controls)))
        return "\n".join(lines + self.notes)


def zero_conditioning(conditioning: list) -> list:
    """A negative that says nothing (what ConditioningZeroOut does), for CFG 1 FLUX graphs."""
    out = []
    for emb, extra in conditioning:
        extra = dict(extra)
        if extra.get("pooled_output") is not None:
            extra["pooled_output"] = torch.zeros_like(extra["pooled_output"])
        out.append([torch.zeros_like(emb), extra])
    return out


def _target_size(value: int, reference_px: int, multiple: int, name: str, notes: list[str]) -> int:
    asked = value if value > 0 else reference_px
    size = layout.snap(asked, multiple, name, maximum=MAX_SIDE)
    if size != asked:
        notes.append(f"{name}: {asked} px rounded to {size} px (a multiple of {multiple} px, what the VAE and the "
                     f"model's patches need).")
    return size


def _batch(refs: int, batch_size: int) -> int:
    if batch_size < 1:
        raise InputError("batch_size", f"{batch_size} is not a batch size.", "Use 1 or more.")
    if refs == 1 or refs == batch_size:
        return batch_size
    if batch_size == 1:
        return refs  # one output per reference
    raise InputError("batch_size", f"{batch_size} samples cannot be paired with {refs} reference images.",
                     f"Set batch_size to 1 or {refs} (one output per reference), or give a single reference.")


def _encode(vae, pixels: torch.Tensor, channels: int) -> torch.Tensor:
    z = vae.encode(pixels[..., :3])
    if z.shape[1] != channels:
        raise InputError("vae", f"this VAE makes {z.shape[1]}-channel latents but the model works on {channels} channels.",
                         "Load the VAE that belongs to the model (ae.safetensors for FLUX.1, the FLUX.2 VAE for FLUX.2).")
    return z


def prepare_reference(model, vae, positive, image, *, negative=None, width: int = 0, height: int = 0, fit: str = "pad",
                      pad_color: str = "#ffffff", batch_size: int = 1, route: str = ROUTE_AUTO, guidance: float = -1.0,
                      reference_mask=None, strength: float = 1.0, region=None, more_references=None) -> PreparedReference:
    """Everything a sampler needs to generate the character of ``image`` as the target of a diptych,
    or with ``more_references`` (*Add Reference* chain) of a grid ``[target | ref_1 | ... | ref_K]``.
    ``strength`` / ``region``: the first reference's (``core.reference_bias``)."""
    info = model_info(model)
    if vae is None:
        raise InputError("vae", "no VAE is connected.", "Connect the model's VAE (ae.safetensors for FLUX.1).")
    if positive is None:
        raise InputError("positive", "no prompt conditioning is connected.", "Connect a CLIP Text Encode with your prompt.")
    if image is None:
        raise InputError("reference", "no reference image is connected.", "Connect a Load Image with the character.")
    attention = None  # the mode the model is tagged with (Instruct Identity Load LoRA), else joint
    if route == ROUTE_AUTO:
        route = info.auto_route
    elif route in (ROUTE_LORA, ROUTE_LORA_ONE_WAY):
        route, attention = ROUTE_LORA, oneway.ONE_WAY if route == ROUTE_LORA_ONE_WAY else oneway.JOINT
    if route not in ROUTES:
        raise InputError("route", f"'{route}' is not a route.", f"Choose {', '.join(ROUTE_CHOICES)}.")
    if attention == oneway.ONE_WAY and info.is_fill:
        raise InputError("route", "lora_one_way needs FLUX.1 dev/schnell or FLUX.2 with a one-way Instruct Identity "
                         "LoRA; this is a FLUX.1 Fill model.", "Use route fill (or auto) with FLUX.1 Fill.")
    if info.is_structural_control:
        raise InputError("model", "this is a structural control model (FLUX.1 Canny/Depth) that expects a control image.",
                         "Use FLUX.1 dev/schnell with an Instruct Identity LoRA, or FLUX.1 Fill.")
    if route == ROUTE_FILL and not info.is_fill:
        raise InputError("route", f"the fill route needs a FLUX.1 Fill (inpainting) model, but this {info.family} model "
                         "has no inpaint channels.", "Load flux1-fill-dev.safetensors, or use the lora route with an "
                         "Instruct Identity LoRA.")

    extra = tuple(more_references or ())
    k = layout.check_references(1 + len(extra), "more_references")
    controls = (ReferenceControl(check_strength(strength, "strength"), region),
                *(ReferenceControl(e.strength, e.region) for e in extra))
    if route == ROUTE_FILL and (k > 1 or not controls[0].neutral):
        raise InputError("more_references" if k > 1 else "strength", "the fill route takes one reference at strength 1 "
                         "with no region (FLUX.1 Fill's diptych has one known half).",
                         "Use the lora route with an Instruct Identity LoRA for several references, strengths or regions.")

    notes: list[str] = []
    color = images.parse_color(pad_color)
    rgb, note = images.to_rgb(image, color)
    if note:
        notes.append(note)
    if reference_mask is not None:
        rgb = images.apply_subject_mask(rgb, reference_mask, color)
    multiple = layout.spatial_multiple(vae.spacial_compression_encode(), info.patch_size)
    w = _target_size(int(width), rgb.shape[2], multiple, "width", notes)
    h = _target_size(int(height), rgb.shape[1], multiple, "height", notes)
    lay_k = layout.Layout(h // vae.spacial_compression_encode(), w // vae.spacial_compression_encode(), k)
    layout.check_grid_tokens(lay_k, info.patch_size, "more_references" if k > 1 else "width")
    ref_px = images.fit(rgb, h, w, fit, color)
    extra_px = [_fit_extra(e.image, h, w, fit, color, j + 2, ref_px.shape[0]) for j, e in enumerate(extra)]
    batch = _batch(ref_px.shape[0], int(batch_size))
    grey = torch.full_like(ref_px, 0.5)
    preview = torch.cat([grey, ref_px, *[e.expand(ref_px.shape[0], -1, -1, -1) for e in extra_px]], dim=2)
    lay_mask_px = torch.zeros(1, 1, h, 2 * w)  # pixel-resolution mask, as InpaintModelConditioning gives it
    lay_mask_px[..., :w] = 1.0

    if route == ROUTE_LORA:
        if info.is_fill:
            notes.append("route: lora on a Fill model; its inpaint channels get ComfyUI's defaults.")
        z = _encode(vae, ref_px, info.latent_channels)
        refs = [z] + [_encode(vae, e, info.latent_channels) for e in extra_px]
        inputs = identity_inputs(model, refs[0] if k == 1 else refs, batch, attention, controls)
        lay, samples, model = inputs.layout, inputs.latent, inputs.model
        attention = oneway.ONE_WAY if oneway.one_way_patch_of(model) is not None else oneway.JOINT
    else:
        z = _encode(vae, preview, info.latent_channels)
        lay = layout.Layout.of(z)
        extra = {"concat_latent_image": z, "concat_mask": lay_mask_px}
        positive = node_helpers.conditioning_set_values(positive, extra)
        if negative is not None:
            negative = node_helpers.conditioning_set_values(negative, extra)
        samples = layout.match_batch(z, batch).clone()

    if negative is None:
        negative = zero_conditioning(positive)
    g = float(guidance)
    if g >= 0:
        positive = node_helpers.conditioning_set_values(positive, {"guidance": g})
        negative = node_helpers.conditioning_set_values(negative, {"guidance": g})
    elif not all("guidance" in extra for _, extra in positive):
        g = info.default_guidance
        positive = node_helpers.conditioning_set_values(positive, {"guidance": g})
        negative = node_helpers.conditioning_set_values(negative, {"guidance": g})
        notes.append(f"guidance: the prompt carried none, set to {g:g} (the {route} route's default).")

    latent = {"samples": samples, "noise_mask": layout.target_mask(lay)}
    if k > 1:
        latent[layout.LATENT_KEY] = k
    prepared = PreparedReference(model, positive, negative, latent, route, w, h, preview, notes,
                                 attention if route == ROUTE_LORA else oneway.JOINT, controls)
    for n in notes:
        log.warning("Instruct Identity Reference: %s", n)
    return prepared


def _fit_extra(image, h: int, w: int, fit: str, color, index: int, batch: int) -> torch.Tensor:
    """An *Add Reference* picture as RGB at the target size (one picture, or one per reference picture)."""
    rgb, _ = images.to_rgb(image, color)
    if rgb.shape[0] not in (1, batch):
        raise InputError("more_references", f"reference {index} is a batch of {rgb.shape[0]} pictures, the first "
                         f"reference of {batch}.", "Give each Add Reference one picture, or as many as the first reference.")
    return images.fit(rgb, h, w, fit, color)


def split_image(image: torch.Tensor, references: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, reference strip) of a decoded grid image: the two halves of an H x 2W diptych, or
    ``[target | ref_1 | ... | ref_K]`` with ``references`` = K."""
    k = layout.check_references(references)
    if image.shape[2] % (1 + k):
        what = "odd, so it is not a [target | reference] diptych" if k == 1 else \
            f"not a multiple of {1 + k}, so it is not a [target | {k} references] grid"
        raise InputError("image", f"width {image.shape[2]} px is {what}.",
                         "Decode the LATENT that the Instruct Identity Reference node fed the sampler.")
    panel = image.shape[2] // (1 + k)
    return image[:, :, :panel], image[:, :, panel:]


def comparison(image: torch.Tensor, references: int = 1) -> torch.Tensor:
    """The references on the left, the generated target on the right, with a gutter."""
    target, reference = split_image(image, references)
    return images.side_by_side(reference, target)


# ---------------------------------------------------------------------------------------------
# Nodes

STRENGTH_TOOLTIP = ("How strongly the target attends to this reference: 0 ignores it, 1 is as the LoRA was trained, "
                    "more gives a stronger identity and less prompt freedom (exactly the plain path at 1).")
REGION_TOOLTIP = ("Optional mask over the target picture (1 = inside): only that region sees this reference, and the "
                  "reference sees only that region, so two characters' references do not colour each other.")
FIT_TOOLTIP = "pad: keep the whole reference, fill with pad_color; crop: fill the frame, cut the overflow; stretch: ignore the aspect ratio."


class InstructIdentityReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentityReference",
            display_name="Instruct Identity Reference",
            category=CATEGORY,
            description=("Puts your character's picture to the right of the picture to generate (one H x 2W latent) "
                         "and patches the model so the sampler always sees the clean reference. Works with an "
                         "Instruct Identity LoRA on FLUX.1 dev/schnell (route lora) and zero-shot with FLUX.1 Fill "
                         "(route fill); auto picks by the model."),
            inputs=[
                io.Model.Input("model"),
                io.Vae.Input("vae"),
                io.Conditioning.Input("positive"),
                io.Image.Input("reference", tooltip="The character. RGBA is composited over pad_color; grayscale is expanded to RGB."),
                io.Int.Input("width", default=0, min=0, max=MAX_SIDE, step=16, tooltip="Target width in px; 0 = the reference's width. Rounded to a multiple of 16 (FLUX)."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIDE, step=16, tooltip="Target height in px; 0 = the reference's height."),
                io.Combo.Input("fit", options=list(images.FIT_MODES), default="pad", tooltip=FIT_TOOLTIP),
                io.String.Input("pad_color", default="#ffffff", tooltip="Colour for padding and transparency: #rrggbb or r,g,b."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Samples per reference; with several references, 1 gives one sample each."),
                io.Combo.Input("route", options=ROUTE_CHOICES, default=ROUTE_AUTO, tooltip=ROUTE_TOOLTIP),
                io.Float.Input("guidance", default=-1.0, min=-1.0, max=100.0, step=0.1,
                               tooltip="FLUX guidance. -1 keeps the prompt's own value, or uses the route's default (3.5; Fill 30) if it has none."),
                io.Conditioning.Input("negative", optional=True, tooltip="Optional; a zeroed prompt is used when absent (FLUX usually runs at CFG 1)."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Optional subject mask (1 = subject): everything outside it becomes pad_color. Load Image's MASK is 1 on transparent pixels, so pass it through Invert Mask first."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05, optional=True,
                               tooltip=STRENGTH_TOOLTIP),
                ReferencesIO.Input("more_references", optional=True,
                                   tooltip="More references (Instruct Identity Add Reference, chained): more views of "
                                           "this character, or other characters bound to their regions."),
                io.Mask.Input("region", optional=True, tooltip=REGION_TOOLTIP),
            ],
            outputs=[
                io.Model.Output(display_name="model"),
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
                io.Latent.Output(display_name="latent"),
                io.String.Output(display_name="info"),
            ],
        )

    @classmethod
    def execute(cls, model, vae, positive, reference, width, height, fit, pad_color, batch_size, route, guidance,
                negative=None, reference_mask=None, strength=1.0, more_references=None, region=None) -> io.NodeOutput:
        p = prepare_reference(model, vae, positive, reference, negative=negative, width=width, height=height, fit=fit,
                              pad_color=pad_color, batch_size=batch_size, route=route, guidance=guidance,
                              reference_mask=reference_mask, strength=strength, region=region,
                              more_references=more_references)
        return io.NodeOutput(p.model, p.positive, p.negative, p.latent, p.info,
                             ui=ui.PreviewImage(p.preview, cls=cls))


class InstructIdentityLoadLora(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import folder_paths

        return io.Schema(
            node_id="InstructIdentityLoadLora",
            display_name="Instruct Identity Load LoRA",
            category=CATEGORY,
            description=("Loads an Instruct Identity LoRA onto the model (as Load LoRA does) and reads from the file "
                         "how it was trained: joint or one-way reference attention. The Reference node on route auto "
                         "then samples it the same way."),
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras")),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01),
                io.Combo.Input("reference_attention", options=["auto", *oneway.MODES], default="auto",
                               tooltip="auto: what the LoRA file records (joint for files without the entry). joint / "
                                       "one_way: override it (a LoRA samples well only in the mode it was trained in)."),
            ],
            outputs=[io.Model.Output(display_name="model"), io.String.Output(display_name="info")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength_model, reference_attention) -> io.NodeOutput:
        import folder_paths

        if model is None:
            raise InputError("model", "no model is connected.", "Connect Load Diffusion Model.")
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        patched, mode = oneway.apply_lora_file(model, path, strength_model, reference_attention)
        how = "read from the file" if reference_attention == "auto" else "set on this node"
        return io.NodeOutput(patched, f"{lora_name}: reference attention {mode} ({how}), strength {strength_model:g}")


class InstructIdentityDecodeTarget(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentityDecodeTarget",
            display_name="Instruct Identity Decode Target",
            category=CATEGORY,
            description="Decodes the sampled [target | reference] latent and returns the generated target, and the reference beside it for comparison.",
            inputs=[io.Latent.Input("samples"), io.Vae.Input("vae")],
            outputs=[
                io.Image.Output(display_name="target"),
                io.Image.Output(display_name="comparison"),
                io.Latent.Output(display_name="target_latent"),
            ],
        )

    @classmethod
    def execute(cls, samples, vae) -> io.NodeOutput:
        if vae is None:
            raise InputError("vae", "no VAE is connected.", "Connect the same VAE as the Reference node.")
        grid = samples["samples"]
        k = layout.references_of(samples)
        target_latent, _ = layout.split(grid, references=k)
        decoded = vae.decode(grid)
        if decoded.ndim == 5:  # video-shaped VAEs return [B, T, H, W, C]
            decoded = decoded.reshape(-1, *decoded.shape[-3:])
        target, _ = split_image(decoded, k)
        return io.NodeOutput(target, comparison(decoded, k), {"samples": target_latent.contiguous()})


class InstructIdentitySplitLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentitySplitLatent",
            display_name="Instruct Identity Split Latent",
            category=CATEGORY,
            description="Splits a [target | reference] latent into the target and the reference(s) (several references: the strip of all of them).",
            inputs=[io.Latent.Input("samples")],
            outputs=[io.Latent.Output(display_name="target"), io.Latent.Output(display_name="reference")],
        )

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        target, reference = layout.split(samples["samples"], references=layout.references_of(samples))
        return io.NodeOutput({"samples": target.contiguous()}, {"samples": reference.contiguous()})


class InstructIdentitySplitImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentitySplitImage",
            display_name="Instruct Identity Split Image",
            category=CATEGORY,
            description="Splits a decoded [target | reference] image into the target, the reference, and a reference | target comparison.",
            inputs=[io.Image.Input("image"),
                    io.Int.Input("references", default=1, min=1, max=limits.MAX_REFERENCES, optional=True,
                                 tooltip="How many references the grid holds (1: a [target | reference] diptych).")],
            outputs=[io.Image.Output(display_name="target"), io.Image.Output(display_name="reference"),
                     io.Image.Output(display_name="comparison")],
        )

    @classmethod
    def execute(cls, image, references=1) -> io.NodeOutput:
        target, reference = split_image(image, references)
        return io.NodeOutput(target, reference, comparison(image, references))


class InstructIdentityAddReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentityAddReference",
            display_name="Instruct Identity Add Reference",
            category=CATEGORY,
            description=("Appends one more reference for the Instruct Identity Reference node (chain several): another "
                         "view of the character, or a second character bound to its region of the picture. The grid "
                         "becomes [target | ref 1 | ... | ref K]."),
            inputs=[
                io.Image.Input("image", tooltip="The reference picture (fitted to the target size like the first one)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05, tooltip=STRENGTH_TOOLTIP),
                io.Mask.Input("region", optional=True, tooltip=REGION_TOOLTIP),
                ReferencesIO.Input("references", optional=True, tooltip="The chain so far (another Add Reference)."),
            ],
            outputs=[ReferencesIO.Output(display_name="references")],
        )

    @classmethod
    def execute(cls, image, strength, region=None, references=None) -> io.NodeOutput:
        return io.NodeOutput(add_reference(references, image, strength, region))


NODES = [InstructIdentityReference, InstructIdentityAddReference, InstructIdentityLoadLora, InstructIdentityDecodeTarget, InstructIdentitySplitLatent, InstructIdentitySplitImage]
