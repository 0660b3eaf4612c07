"""Pre-training of the toy base model: plain text-to-image flow matching, all parameters.

It reuses the trainer's pieces (``FluxForward`` for ComfyUI's FLUX forward with autograd,
``objective.sample_sigmas`` / ``flow_inputs`` / ``flow_loss`` in grid mode, the model's own
``process_latent_in``), so the base sees latents exactly as the LoRA trainer and the sampler do.
The result is cached as safetensors under a key of everything it depends on (model config,
schedule, seed, and a fingerprint of the renderer's pixels and captions), so reruns skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import components, data, sprites

log = logging.getLogger(__name__)

FORMAT = "toy-base-v1"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1200
    batch: int = 32
    lr: float = 6e-4
    warmup: int = 60
    min_lr_ratio: float = 0.1
    ema: float = 0.995
    seed: int = 0
    size: int = 32


def renderer_fingerprint(size: int) -> str:
    """Hash of a few renders and captions: a change to the renderer or the captions changes the key."""
    h = hashlib.sha256()
    rng = random.Random(0)
    chars = sprites.all_characters()
    for i in range(24):
        c = chars[(i * 379) % len(chars)]
        p = sprites.ALL_POSES[i % len(sprites.ALL_POSES)]
        h.update(sprites.render(c, p, size)[0].tobytes())
        h.update(data.pretrain_caption(c, p, rng).encode())
    return h.hexdigest()[:16]


def cache_key(unet: dict, cfg: PretrainConfig, text_identity: str, train_chars: list) -> str:
    blob = json.dumps({"format": FORMAT, "unet": unet, "pretrain": asdict(cfg), "text": text_identity,
                       "render": renderer_fingerprint(cfg.size),
                       "chars": hashlib.sha256(repr(train_chars).encode()).hexdigest()[:16]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain(unet: dict, cfg: PretrainConfig, train_chars: list, codec, text_encoder, progress=None) -> tuple[dict, dict]:
    """Train from scratch; returns (EMA state dict, info)."""
    from instruct_identity.training import objective
    from instruct_identity.training.model import FluxForward

    torch.manual_seed(cfg.seed)
    patcher = components.build_model(unet, seed=cfg.seed)
    base = patcher.model
    dm = base.diffusion_model
    dm.train()
    ema = {k: v.detach().clone() for k, v in dm.state_dict().items()}
    forward = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)
    params = [p for p in dm.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    stream = data.PretrainStream(train_chars, cfg.size, codec, text_encoder, cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    steps = range(cfg.steps) if progress is None else progress(range(cfg.steps))
    for step in steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        latent, cond, pooled = stream.batch(cfg.batch)
        x0 = base.process_latent_in(latent)
        sigmas = objective.sample_sigmas("uniform", torch.randn(cfg.batch, generator=g), torch.rand(cfg.batch, generator=g))
        noise = torch.randn(x0.shape, generator=g)
        inputs = objective.flow_inputs(x0, None, noise, sigmas, "grid", "full")
        loss = objective.flow_loss(forward(dm, inputs.model_input, sigmas, cond, pooled), inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema, (1 + step) / (10 + step))
            for k, v in dm.state_dict().items():
                ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        losses.append(float(loss))
        if progress is not None and hasattr(steps, "set_postfix") and step % 20 == 0:
            steps.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    info = {"wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
            "loss_first50": float(np.mean(losses[:50])), "loss_last50": float(np.mean(losses[-50:])),
            "losses": losses}
    return ema, info


def load_or_train(cache_dir: Path, unet: dict, cfg: PretrainConfig, train_chars: list, codec, text_encoder,
                  progress=None, force: bool = False) -> tuple[dict, dict, Path]:
    """The cached base weights for this configuration, training them first if needed."""
    from safetensors.torch import load_file, save_file

    key = cache_key(unet, cfg, text_encoder.identity, train_chars)
    path = Path(cache_dir) / f"base-{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file() and not force:
        info = json.loads(meta_path.read_text())
        info["cached"] = True
        log.info("base model: cached %s (pre-trained %d steps in %.0f s)", path.name, cfg.steps, info["wall_s"])
        return load_file(str(path)), info, path
    log.info("base model: pre-training %d steps (batch %d) -> %s", cfg.steps, cfg.batch, path.name)
    state, info = pretrain(unet, cfg, train_chars, codec, text_encoder, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"key": key, "format": FORMAT})
    os.replace(tmp, path)
    info.update({"key": key, "unet": unet, "pretrain": asdict(cfg)})
    tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, meta_path)
    info["cached"] = False
    return state, info, path
