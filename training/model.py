"""FLUX, its VAE and text encoders through ComfyUI's own loaders, and the training forward pass.

The model trained is ComfyUI's module tree (``ModelPatcher.model.diffusion_model``) as loaded by
``comfy.sd.load_diffusion_model``; the VAE and text encoders come from ``comfy.sd.VAE`` and
``comfy.sd.load_clip``. ComfyUI must be importable first: ``engine.runtime.setup_comfyui`` does that.

ComfyUI's FLUX blocks add their residuals in place (``img += ...``), which autograd refuses. Two ways
round it, both here: per-block non-reentrant gradient checkpointing through ComfyUI's own block
replacement hook (``transformer_options["patches_replace"]["dit"]``), each block running on clones of
its inputs; or, without checkpointing, a ``saved_tensors_hooks`` pack that clones saved activations
(never the model's weights).
"""

from __future__ import annotations

import gc
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from ..core.errors import InputError

log = logging.getLogger(__name__)

def resolve_model_file(value: str | None, folder: str, key: str, required: bool = True) -> str | None:
    """A model path: an existing file, or a name in ComfyUI's model folder (``folder_paths``)."""
    if not value:
        if required:
            raise InputError(key, "is not set.", f"Set it to the model file (e.g. models/{folder}/...).")
        return None
    if Path(value).is_file():
        return str(Path(value).resolve())
    import folder_paths

    found = folder_paths.get_full_path(folder, value)
    if found:
        return found
    raise InputError(key, f"{value} is neither a file nor a model in ComfyUI's models/{folder}.",
                     "Give the full path of the file.")


# --------------------------------------------------------------------------------------------------
# components


class VaeCodec:
    """What the trainer needs of a VAE: encode/decode ComfyUI IMAGE tensors, and an identity for caches."""

    def __init__(self, vae, identity: str):
        self.vae = vae
        self.identity = identity

    @property
    def downscale(self) -> int:
        """Pixels per latent pixel (8 for FLUX.1's VAE, 16 for FLUX.2's)."""
        return int(self.vae.spacial_compression_encode())

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels[..., :3])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)


class TextEncoder:
    """ComfyUI CLIP object -> (cond ``[T, D]``, pooled ``[D]`` or None) per caption."""

    def __init__(self, clip, identity: str):
        self.clip = clip
        self.identity = identity

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.clip.tokenize(text)
        out = self.clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        pooled = out.get("pooled_output")
        return out["cond"][0].detach().cpu(), (pooled[0].detach().cpu() if pooled is not None else None)


@dataclass
class Components:
    """Everything loaded from outside. Tests and benchmarks pass their own (small, random) ones."""

    model: object                 # comfy.model_patcher.ModelPatcher around a FLUX model
    vae: object | None            # VaeCodec-like
    text_encoder: object | None   # TextEncoder-like
    model_file: str | None = None
    model_hash: str = ""


def weight_dtype(mixed_precision: str, fp8_base: bool) -> torch.dtype:
    if fp8_base:
        return torch.float8_e4m3fn
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def load_vae(path: str, hashes) -> VaeCodec:
    import comfy.sd
    import comfy.utils

    sd = comfy.utils.load_torch_file(path)
    vae = comfy.sd.VAE(sd=sd)
    vae.throw_exception_if_invalid()
    return VaeCodec(vae, f"vae:{hashes(path)[:20]}")


def load_text_encoder(clip_l: str, t5xxl: str | None, hashes) -> TextEncoder:
    import comfy.sd

    paths = [clip_l] + ([t5xxl] if t5xxl else [])
    clip_type = comfy.sd.CLIPType.FLUX if t5xxl else comfy.sd.CLIPType.STABLE_DIFFUSION
    if not t5xxl:
        log.warning("no t5xxl given: captions are encoded with CLIP-L only (fine for tests, not for real FLUX)")
    clip = comfy.sd.load_clip(ckpt_paths=paths, embedding_directory=None, clip_type=clip_type)
    return TextEncoder(clip, "te:" + "+".join(hashes(p)[:20] for p in paths))


def load_flux(path: str, dtype: torch.dtype):
    """``comfy.sd.load_diffusion_model`` with the weight dtype of the run."""
    import comfy.model_base
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(path, model_options={"dtype": dtype})
    if not isinstance(patcher.model, comfy.model_base.Flux):
        raise InputError("pretrained_model_name_or_path", f"{path} is a {type(patcher.model).__name__} model, not FLUX.",
                         "Use a FLUX.1 dev (or schnell) diffusion model file.")
    return patcher


def free_memory() -> None:
    """Drop ComfyUI's loaded models (text encoders, VAE) and return their memory."""
    import comfy.model_management as mm

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()


def place(patcher, device: torch.device) -> None:
    """Put the diffusion model on the training device and keep ComfyUI from moving it away while it
    samples previews (its offload device becomes the training device)."""
    patcher.model.to(device)
    patcher.load_device = device
    patcher.offload_device = device
    patcher.model.device = device


# --------------------------------------------------------------------------------------------------
# forward


def compute_dtype(patcher) -> torch.dtype:
    """The dtype ComfyUI computes this model in (its manual-cast dtype for fp8 weights)."""
    base = patcher.model
    return base.manual_cast_dtype or base.get_dtype()


def _double(block):
    def run(img, txt, vec, pe, attn_mask, transformer_options):
        return block(img=img.clone(), txt=txt.clone(), vec=vec, pe=pe, attn_mask=attn_mask,
                     transformer_options=transformer_options)

    def replace(args, extra):
        img, txt = checkpoint(run, args["img"], args["txt"], args["vec"], args["pe"], args.get("attn_mask"),
                              args.get("transformer_options"), use_reentrant=False)
        return {"img": img, "txt": txt}

    return replace


def _single(block):
    def run(img, vec, pe, attn_mask, transformer_options):
        return block(img.clone(), vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=transformer_options)

    def replace(args, extra):
        return {"img": checkpoint(run, args["img"], args["vec"], args["pe"], args.get("attn_mask"),
                                  args.get("transformer_options"), use_reentrant=False)}

    return replace


class FluxForward:
    """Calls ComfyUI's FLUX ``forward`` for training: velocity for (latent grid, sigma, text)."""

    def __init__(self, diffusion_model, *, gradient_checkpointing: bool, guidance: float,
                 dtype: torch.dtype | None = None, reference_attention: str = "joint"):
        self.guidance = float(guidance)
        self.dtype = dtype  # the compute dtype ComfyUI casts inputs to (None: leave them as they are)
        self.has_guidance = bool(getattr(diffusion_model.params, "guidance_embed", False))
        self.patches = None
        self.one_way = None  # one-way reference attention (engine/oneway.py): its out-of-place blocks need no clones
        if reference_attention == "one_way":
            from ..engine import oneway

            oneway.check_model(diffusion_model)
            self.one_way = partial(oneway.training_options, gradient_checkpointing)
        elif gradient_checkpointing:
            dit = {("double_block", i): _double(b) for i, b in enumerate(diffusion_model.double_blocks)}
            dit.update({("single_block", i): _single(b) for i, b in enumerate(diffusion_model.single_blocks)})
            self.patches = dit
        self.weight_storage = {p.untyped_storage().data_ptr() for p in diffusion_model.parameters()}
        self.weight_storage |= {b.untyped_storage().data_ptr() for b in diffusion_model.buffers()}

    def _pack(self, t: torch.Tensor):
        if t.untyped_storage().data_ptr() in self.weight_storage:
            return t
        return t.clone()

    def __call__(self, module, x: torch.Tensor, sigmas: torch.Tensor, context: torch.Tensor,
                 pooled: torch.Tensor | None, references: int = 1) -> torch.Tensor:
        options = {"patches_replace": {"dit": dict(self.patches)}} if self.patches else {}
        if self.one_way is not None:
            options = self.one_way(references)
        guidance = torch.full((x.shape[0],), self.guidance, device=x.device, dtype=torch.float32) if self.has_guidance else None
        if self.dtype is not None:  # as ComfyUI's BaseModel._apply_model does; the timestep stays fp32
            x, context = x.to(self.dtype), context.to(self.dtype)
            pooled = pooled.to(self.dtype) if pooled is not None else None
            guidance = guidance.to(self.dtype) if guidance is not None else None
        hooks = nullcontext() if self.patches or self.one_way else torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        with hooks:
            out = module(x, sigmas.float(), context, y=pooled, guidance=guidance, transformer_options=options)
        return out.float()
