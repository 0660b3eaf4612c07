"""The miniature model's parts: a pixel codec, a word-embedding text encoder and a small ComfyUI FLUX.

* :class:`PixelCodec` has the trainer's ``VaeCodec`` interface (``encode`` IMAGE ``[B, H, W, 3]`` ->
  ``[B, 16, H/2, W/2]``, ``decode`` back, ``identity``). The latent is the pixels themselves: a 2x2
  space-to-depth of ``2 * rgb - 1`` (12 channels) padded with 4 zero channels to FLUX's 16. It is
  lossless. The model is a stock ComfyUI ``Flux``, whose latent format applies
  ``(z - 0.1159) * 0.3611`` on the way in (``process_latent_in``) in the trainer, the sampler and the
  reference patch alike; the codec writes ``z = x / 0.3611 + 0.1159`` so that the model itself works on
  ``x`` in [-1, 1] (unit-scale signal against unit noise), with no change to ComfyUI or the trainer.
* :class:`WordEncoder` has the trainer's ``TextEncoder`` interface, a fixed (untrained) stand-in for
  a contextual encoder such as T5: token ``i`` = ``[its word's fixed random vector | its phrase's head
  noun's vector]`` (so "red" in "a red head" also carries "head", as a contextual encoder's output
  would). Pooled = the mean of the tokens.
* :func:`unet_config` / :func:`build_model`: ComfyUI's own FLUX module via ``engine.synthetic.random_flux``.
"""

from __future__ import annotations

import hashlib
import re

import torch
import torch.nn.functional as F

LATENT_CHANNELS = 16
DOWNSCALE = 2
PIXEL_CHANNELS = 3 * DOWNSCALE * DOWNSCALE  # 12 used channels, 4 zero padding


def unet_config(hidden: int = 192, heads: int = 3, double: int = 2, single: int = 2, text_dim: int = 64) -> dict:
    head_dim = hidden // heads
    axes = [head_dim - 2 * (head_dim * 3 // 8), head_dim * 3 // 8, head_dim * 3 // 8]  # e.g. 64 -> [16, 24, 24]
    return dict(image_model="flux", in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, vec_in_dim=text_dim,
                context_in_dim=text_dim, hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=double,
                depth_single_blocks=single, axes_dim=axes, theta=10000, patch_size=2, qkv_bias=True,
                guidance_embed=False)


def latent_format():
    import comfy.latent_formats

    return comfy.latent_formats.Flux()


class PixelCodec:
    """Lossless pixel "VAE" in the trainer's codec interface (see the module docstring)."""

    downscale = DOWNSCALE
    spec = {"kind": "pixel-s2d", "downscale": DOWNSCALE, "channels": LATENT_CHANNELS}

    def __init__(self):
        fmt = latent_format()
        self.scale, self.shift = float(fmt.scale_factor), float(fmt.shift_factor)
        self.identity = f"toy-pixel-codec:s2d{DOWNSCALE}:{self.scale}:{self.shift}"

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels[..., :3].movedim(-1, 1).float() * 2 - 1
        x = F.pixel_unshuffle(x, DOWNSCALE)
        x = torch.cat([x, x.new_zeros(x.shape[0], LATENT_CHANNELS - PIXEL_CHANNELS, *x.shape[-2:])], dim=1)
        return x / self.scale + self.shift

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        x = (latent.float().cpu() - self.shift) * self.scale
        x = F.pixel_shuffle(x[:, :PIXEL_CHANNELS], DOWNSCALE)
        return ((x + 1) / 2).clamp(0, 1).movedim(1, -1)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


class WordEncoder:
    """Caption -> (``[tokens, dim]`` token vectors, ``[dim]`` pooled), deterministic, untrained.

    A stand-in for a contextual encoder such as T5, whose output for "red" in "a red head" carries
    "head": token ``i`` is ``[word vector | context vector]`` (``dim / 2`` each), the word's fixed random
    vector next to that of its phrase's head noun (the last word of the text between commas / full
    stops). Keeping the two halves apart lets one attention head bind an attribute to its part: a
    query for "head" matches the context half, the value carries the word half. Pooled = the mean of
    the tokens (a bag of words, as CLIP's pooled vector is for such captions)."""

    def __init__(self, dim: int = 64, tokens: int = 36, seed: int = 0):
        if dim % 2:
            raise ValueError("dim must be even")
        self.dim, self.tokens, self.seed = dim, tokens, seed
        self.identity = f"toy-words-noun:{dim}:{tokens}:{seed}"
        self._vectors: dict[str, torch.Tensor] = {}

    def _vec(self, kind: str, w: str) -> torch.Tensor:
        key = f"{kind}:{w}"
        v = self._vectors.get(key)
        if v is None:
            h = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "little")
            v = self._vectors[key] = torch.randn(self.dim // 2, generator=torch.Generator().manual_seed(h))
        return v

    @property
    def spec(self) -> dict:
        return {"kind": "words-noun", "dim": self.dim, "tokens": self.tokens, "seed": self.seed}

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        cond = torch.zeros(self.tokens, self.dim)
        vectors = []
        for phrase in re.split(r"[,.;]", text):
            ws = words(phrase)
            if ws:
                context = self._vec("c", ws[-1])
                vectors += [torch.cat([self._vec("w", w), context]) for w in ws]
        for i, v in enumerate(vectors[: self.tokens]):
            cond[i] = v
        pooled = torch.stack(vectors).mean(0) if vectors else torch.zeros(self.dim)
        return cond, pooled


def build_model(config: dict, seed: int = 0, state_dict: dict | None = None):
    """A ModelPatcher around ComfyUI's FLUX with ``config``: the given weights, or a fresh start for
    pre-training (``random_flux`` weights with DiT's adaLN-zero: modulations and the output layer
    start at zero, so every block starts as the identity and the model predicts 0)."""
    from ..engine.synthetic import random_flux

    patcher = random_flux(config, seed=seed)
    dm = patcher.model.diffusion_model
    with torch.no_grad():
        if state_dict is not None:
            dm.load_state_dict(state_dict, strict=True)
        else:
            for name, p in dm.named_parameters():
                if name.startswith("final_layer.") or ".modulation.lin." in name or "_mod.lin." in name:
                    p.zero_()
    dm.float().eval()
    return patcher
