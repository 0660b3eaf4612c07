"""Stand-ins with random weights for tests, benchmarks and smoke runs (no downloads, ever).

* :class:`SyntheticVae` and :class:`SyntheticTextEncoder` have the trainer's codec/encoder interface
  and are deterministic and cheap.
* :func:`random_flux` builds a ComfyUI FLUX model (``comfy.supported_models.Flux``) of any size with
  random weights directly on a device: ``FLUX_DEV`` gives the real 12B dimensions for GPU benchmarks.
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
