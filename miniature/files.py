"""The miniature base file: one safetensors file holds everything needed to rebuild the model.

Weights are stored in fp16 (the model computes in fp32). The safetensors metadata (all strings) holds:

* ``format``: ``"instruct-identity-miniature-base/1"``;
* ``unet_config``: JSON of the ComfyUI FLUX config (``components.unet_config``);
* ``codec``: JSON of the pixel codec's spec (``{"kind": "pixel-s2d", "downscale": 2, "channels": 16}``);
* ``text_encoder``: JSON of the word encoder's spec (``{"kind": "words-phrase" | "words-noun", "dim", "tokens", "seed"}``);
* ``image_size``: the sprite size in pixels the model was trained on (e.g. ``"32"``);
* ``provenance``: JSON (command, config, metrics, anything the writer adds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import components

FORMAT = "instruct-identity-miniature-base/1"


@dataclass
class BaseSpec:
    """What a base file needs besides its weights."""

    unet_config: dict
    image_size: int = 32
    codec: dict = field(default_factory=lambda: dict(components.PixelCodec.spec))
    text_encoder: dict = field(default_factory=lambda: components.WordEncoder().spec)

    def to_metadata(self) -> dict:
        return {"format": FORMAT, "unet_config": json.dumps(self.unet_config, sort_keys=True),
                "codec": json.dumps(self.codec, sort_keys=True),
                "text_encoder": json.dumps(self.text_encoder, sort_keys=True), "image_size": str(self.image_size)}

    @classmethod
    def from_metadata(cls, meta: dict) -> BaseSpec:
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a miniature base file (format {meta.get('format')!r}, expected {FORMAT!r})")
        return cls(json.loads(meta["unet_config"]), int(meta["image_size"]), json.loads(meta["codec"]),
                   json.loads(meta["text_encoder"]))


@dataclass
class MiniatureBase:
    """A loaded base: ``model`` (ComfyUI ModelPatcher, fp32, eval), ``codec``, ``text_encoder``, ``spec``,
    ``provenance`` (dict) and ``path``."""

    model: object
    codec: components.PixelCodec
    text_encoder: components.WordEncoder
    spec: BaseSpec
    provenance: dict
    path: Path | None = None


def make_codec(spec: dict) -> components.PixelCodec:
    if spec.get("kind") != "pixel-s2d" or int(spec.get("downscale", 0)) != components.DOWNSCALE:
        raise ValueError(f"unknown codec {spec!r}")
    return components.PixelCodec()


def make_text_encoder(spec: dict) -> components.WordEncoder:
    if spec.get("kind") not in components.WordEncoder.KINDS:
        raise ValueError(f"unknown text encoder {spec!r}; known kinds: {', '.join(components.WordEncoder.KINDS)}")
    return components.WordEncoder(dim=int(spec["dim"]), tokens=int(spec["tokens"]), seed=int(spec["seed"]),
                                  kind=spec["kind"])


def save_base(path: str | Path, state_dict: dict, spec: BaseSpec, provenance: dict | None = None) -> Path:
    """Write ``state_dict`` (the diffusion model's, fp16) with ``spec`` and ``provenance`` in the metadata,
    atomically."""
    from ..core.files import atomic_save_safetensors

    tensors = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in state_dict.items()}
    meta = spec.to_metadata()
    meta["provenance"] = json.dumps(provenance or {}, sort_keys=True, default=str)
    return atomic_save_safetensors(tensors, path, metadata=meta)


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_state(path: str | Path) -> tuple[dict, BaseSpec, dict]:
    """(fp32 state dict, spec, provenance) of a base file, without building the model."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    spec = BaseSpec.from_metadata(meta)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    return state, spec, json.loads(meta.get("provenance") or "{}")


def load_base(path: str | Path) -> MiniatureBase:
    """The model, codec and text encoder of a base file (ComfyUI must be importable:
    ``engine.runtime.setup_comfyui`` outside a running ComfyUI)."""
    state, spec, provenance = load_state(path)
    model = components.build_model(spec.unet_config, state_dict=state)
    return MiniatureBase(model, make_codec(spec.codec), make_text_encoder(spec.text_encoder), spec, provenance,
                         Path(path))
