"""Helpers of the built-in demo's tests: small random miniature base files (a size of their own, so a
loader that assumed the shipped model's size fails) and random LoRAs for them."""

from __future__ import annotations

import torch
from instruct_identity.miniature import components

# hidden 96 / 2 heads / 1+1 blocks / 24-wide words: none of it the shipped base's configuration
SMALL = {"hidden": 96, "heads": 2, "double": 1, "single": 1, "text_dim": 24}
TEXT = components.WordEncoder(dim=24, tokens=12, seed=3).spec  # whatever kind the miniature's encoder is
SIZE = 16


def write_base(path, seed: int = 0, image_size: int = SIZE):
    """A random miniature base file (modulations not zero, so the model's output depends on its input)."""
    from instruct_identity.miniature import files

    cfg = components.unet_config(**SMALL)
    patcher = components.build_model(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    sd = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in patcher.model.diffusion_model.state_dict().items()}
    spec = files.BaseSpec(cfg, image_size=image_size, text_encoder=dict(TEXT))
    files.save_base(path, sd, spec, {"command": "tests/demo random base", "metrics": {}})
    return path


def write_lora(path, model, rank: int = 4, seed: int = 0, scale: float = 0.5):
    """A random kohya-format LoRA (img_in and every double block's img_attn.qkv) for ``model``."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    dm = model.model.diffusion_model
    targets = {"img_in": dm.img_in}
    targets.update({f"double_blocks_{i}_img_attn_qkv": b.img_attn.qkv for i, b in enumerate(dm.double_blocks)})
    sd = {}
    for name, lin in targets.items():
        sd[f"lora_unet_{name}.lora_down.weight"] = scale * torch.randn(rank, lin.in_features, generator=g)
        sd[f"lora_unet_{name}.lora_up.weight"] = scale * torch.randn(lin.out_features, rank, generator=g)
        sd[f"lora_unet_{name}.alpha"] = torch.tensor(float(rank))
    save_file(sd, str(path))
    return path
