"""The miniature model's parts: a pixel codec, a word-embedding text encoder and a small ComfyUI FLUX.

* :class:`PixelCodec` has the trainer's ``VaeCodec`` interface (``encode`` IMAGE ``[B, H, W, 3]`` ->
  ``[B, 16, H/2, W/2]``, ``decode`` back, ``identity``). The latent is the pixels themselves: a 2x2
  space-to-depth of ``2 * rgb - 1`` (12 channels) padded with 4 zero channels to FLUX's 16. It is
  lossless. The model is a stock ComfyUI ``Flux``, whose latent format applies
  ``(z - 0.1159) * 0.3611`` on the way in (``process_latent_in``) in the trainer, the sampler and the
  reference patch alike; the codec writes ``z = x / 0.3611 + 0.1159`` so that the model itself works on
  ``x`` in [-1, 1] (unit-scale signal against unit noise), with no change to ComfyUI or the trainer.
* :class:`WordEncoder` has the trainer's ``TextEncoder`` interface, a fixed (untrained) stand-in for
  a contextual encoder such as T5: token ``i`` = its word's fixed random vector + the mean of its
  phrase's (so "red" in "a red head" also carries "head" and vice versa, as a contextual encoder's
  output would) + a position vector. Pooled = the mean of the word vectors.
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
    "head" and whose outputs carry their position. Two kinds (``kind``), each word a fixed random vector:

    * ``words-phrase`` (the default): token ``i`` = its word's vector + the mean of its phrase's word
      vectors (the text between commas / full stops: "a red head" gives every one of its three tokens
      both "red" and "head") + a fixed random vector for position ``i`` (scale 0.5);
    * ``words-noun`` (earlier miniature bases): ``[word vector | phrase's head-noun vector]``, half the
      dimensions each, no position.

    Pooled = the mean of the caption's word vectors (a bag of words, as CLIP's pooled vector is for
    such captions)."""

    KINDS = ("words-phrase", "words-noun")

    def __init__(self, dim: int = 64, tokens: int = 40, seed: int = 0, kind: str = "words-phrase"):
        if dim % 2:
            raise ValueError("dim must be even")
        if kind not in self.KINDS:
            raise ValueError(f"unknown word-encoder kind {kind!r}; known: {', '.join(self.KINDS)}")
        self.dim, self.tokens, self.seed, self.kind = dim, tokens, seed, kind
        self.identity = f"toy-{kind}:{dim}:{tokens}:{seed}"
        self._vectors: dict[str, torch.Tensor] = {}
        g = torch.Generator().manual_seed(seed + 7919)
        self.positions = torch.randn(tokens, dim, generator=g) * 0.5

    def _vec(self, kind: str, w: str, dim: int) -> torch.Tensor:
        key = f"{kind}:{w}"
        v = self._vectors.get(key)
        if v is None:
            h = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "little")
            v = self._vectors[key] = torch.randn(dim, generator=torch.Generator().manual_seed(h))
        return v

    @property
    def spec(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "tokens": self.tokens, "seed": self.seed}

    def _tokens(self, text: str) -> list[torch.Tensor]:
        out = []
        for phrase in re.split(r"[,.;]", text):
            ws = words(phrase)
            if not ws:
                continue
            if self.kind == "words-noun":
                context = self._vec("c", ws[-1], self.dim // 2)
                out += [torch.cat([self._vec("w", w, self.dim // 2), context]) for w in ws]
            else:
                vs = [self._vec("p", w, self.dim) for w in ws]
                context = torch.stack(vs).mean(0)
                out += [v + context for v in vs]
        return out

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        cond = torch.zeros(self.tokens, self.dim)
        vectors = self._tokens(text)
        for i, v in enumerate(vectors[: self.tokens]):
            cond[i] = v if self.kind == "words-noun" else v + self.positions[i]
        if self.kind == "words-noun":
            pooled = torch.stack(vectors).mean(0) if vectors else torch.zeros(self.dim)
        else:
            ws = words(text)
            pooled = torch.stack([self._vec("p", w, self.dim) for w in ws]).mean(0) if ws else torch.zeros(self.dim)
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
