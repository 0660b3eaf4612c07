"""Stand-ins with random weights for tests, benchmarks and smoke runs (no downloads, ever).

The one place that builds random FLUX-family models:

* :func:`random_flux` builds a ComfyUI FLUX model (``comfy.supported_models.Flux``) of any size with
  random weights directly on a device: ``FLUX_DEV`` gives the real 12B dimensions for GPU benchmarks.
* :func:`tiny_flux` builds a small FLUX-family model (flux, flux_fill, flux2, flux_schnell, chroma) of
  :func:`tiny_flux_config` on the CPU; :func:`tiny_sd15` a small UNet that is *not* FLUX.
* :func:`flux_conditioning` is a CONDITIONING with random text embeddings of a tiny model's widths.
* :class:`SyntheticVae` and :class:`SyntheticTextEncoder` have the trainer's codec/encoder interface
  and are deterministic and cheap.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

FLUX_DEV = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)


class SyntheticVae:
    """8x8 space-to-depth followed by a fixed random projection to ``channels`` (decode: its pseudo-inverse)."""

    downscale = 8

    def __init__(self, channels: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(channels, 3 * 64, generator=g) / 8.0
        self.inv = torch.linalg.pinv(self.proj)
        self.identity = f"synthetic-vae:{channels}:{seed}"

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels[..., :3].movedim(-1, 1).float() * 2 - 1
        x = F.pixel_unshuffle(x, 8)
        return torch.einsum("oc,bchw->bohw", self.proj, x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("co,bohw->bchw", self.inv, latent.float().cpu())
        x = F.pixel_shuffle(x, 8)
        return ((x + 1) / 2).clamp(0, 1).movedim(1, -1)


class SyntheticTextEncoder:
    """Caption -> random embeddings seeded by the caption's hash (same caption, same embedding)."""

    def __init__(self, context_dim: int = 32, pooled_dim: int | None = 32, tokens: int = 8, seed: int = 0):
        self.context_dim, self.pooled_dim, self.tokens, self.seed = context_dim, pooled_dim, tokens, seed
        self.identity = f"synthetic-te:{context_dim}:{pooled_dim}:{tokens}:{seed}"

    def encode(self, text: str):
        h = int.from_bytes(hashlib.sha256(f"{self.seed}:{text}".encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(h)
        cond = torch.randn(self.tokens, self.context_dim, generator=g)
        pooled = torch.randn(self.pooled_dim, generator=g) if self.pooled_dim else None
        return cond, pooled


TINY_FAMILIES = ("flux", "flux_fill", "flux2", "flux_schnell", "chroma")


def init_random_(module: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """ComfyUI's ops skip weight init (memory is left uninitialised): give every tensor a value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and ("norm" in name or name.endswith("scale")):
                p.copy_(1.0 + 0.01 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.01 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
        for _, b in module.named_buffers():
            if b.is_floating_point() and not torch.isfinite(b).all():
                b.zero_()
    return module


def tiny_flux_config(family: str = "flux", hidden: int = 128, heads: int = 2, context: int = 32, vec: int = 32,
                     double: int = 1, single: int = 1) -> dict:
    """unet_config of a small FLUX-family DiT (by default one double + one single block)."""
    base = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=vec, context_in_dim=context,
                hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=double, depth_single_blocks=single,
                axes_dim=[16, 24, 24], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
    if family == "flux":
        return base
    if family == "flux_schnell":
        return {**base, "guidance_embed": False}
    if family == "flux_fill":
        return {**base, "in_channels": 96}
    if family == "flux2":
        return {**base, "image_model": "flux2", "in_channels": 128, "out_channels": 128, "patch_size": 1,
                "axes_dim": [16, 16, 16, 16], "theta": 2000, "mlp_ratio": 3.0, "global_modulation": True,
                "vec_in_dim": None, "mlp_silu_act": True, "qkv_bias": False, "ops_bias": False,
                "default_ref_method": "index", "ref_index_scale": 10.0, "guidance_embed": True}
    if family == "chroma":  # Chroma: no pooled vector, a distilled guidance/modulation network
        return dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=context, hidden_size=hidden,
                    mlp_ratio=4.0, num_heads=heads, depth=1, depth_single_blocks=1, axes_dim=[16, 24, 24],
                    theta=10000, patch_size=2, qkv_bias=True, in_dim=64, out_dim=hidden, hidden_dim=2 * hidden,
                    n_layers=2)
    raise ValueError(f"unknown tiny family {family!r}; choose from {TINY_FAMILIES}")


def tiny_flux(family: str = "flux", seed: int = 0, **kw):
    """A ModelPatcher around a small random FLUX-family model of :func:`tiny_flux_config`, on the CPU."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    unet_config = tiny_flux_config(family, **kw)
    cls = {"flux": sm.Flux, "flux_fill": sm.FluxInpaint, "flux2": sm.Flux2, "flux_schnell": sm.FluxSchnell,
           "chroma": sm.Chroma}[family]
    model_config = cls(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    init_random_(model.diffusion_model, seed=seed)
    model.diffusion_model.float().eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_sd15():
    """A small random SD1.5-style UNet (a model that is *not* a FLUX-family DiT)."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    cfg = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
               adm_in_channels=None, in_channels=4, model_channels=32, num_res_blocks=[1], transformer_depth=[0],
               transformer_depth_output=[0, 0], channel_mult=[1], transformer_depth_middle=0,
               use_linear_in_transformer=False, context_dim=32, num_heads=-1, num_head_channels=8, num_classes=None)
    model = sm.SD15(cfg).get_model({})
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def flux_conditioning(context_dim: int = 32, pooled_dim: int | None = 32, tokens: int = 8, seed: int = 1, guidance=3.5):
    """A ComfyUI CONDITIONING list with random text embeddings of the tiny model's widths."""
    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": None}  # FLUX.2's encoder has no pooled vector
    if guidance is not None:
        extra["guidance"] = guidance
    if pooled_dim:
        extra["pooled_output"] = torch.randn(1, pooled_dim, generator=g)
    return [[torch.randn(1, tokens, context_dim, generator=g), extra]]


@torch.no_grad()
def random_flux(unet_config: dict, *, device="cpu", dtype=torch.float32, seed: int = 0, std: float = 0.02):
    """A ``ModelPatcher`` around a ComfyUI FLUX model with random weights, built on ``device``.

    Weights are drawn tensor by tensor on the device (fp8 via bf16), so a 12B model never passes
    through host memory."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    device = torch.device(device)
    model_config = sm.Flux(dict(unet_config))
    model_config.set_inference_dtype(dtype, None if dtype in (torch.float32, torch.float16, torch.bfloat16)
                                     else torch.bfloat16)
    model = model_config.get_model({}, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.diffusion_model.named_parameters():
        draw_dtype = p.dtype if p.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16
        if p.ndim == 1 and ("norm" in name or name.endswith("scale")):
            v = 1.0 + 0.01 * torch.randn(p.shape, generator=g, device=device, dtype=draw_dtype)
        elif p.ndim == 1:
            v = 0.01 * torch.randn(p.shape, generator=g, device=device, dtype=draw_dtype)
        else:
            v = std * torch.randn(p.shape, generator=g, device=device, dtype=draw_dtype)
        p.copy_(v.to(p.dtype))
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
