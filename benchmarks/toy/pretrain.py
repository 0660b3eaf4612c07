"""Pre-training of the miniature base model: plain text-to-image flow matching, all parameters.

It reuses the trainer's pieces (``FluxForward`` for ComfyUI's FLUX forward with autograd,
``objective.sample_sigmas`` / ``flow_inputs`` / ``flow_loss`` in grid mode, the model's own
``process_latent_in``), so the base sees latents exactly as the LoRA trainer and the sampler do.
Batches alternate between single renders and two-view character sheets (``data.PretrainStream``);
the weights kept are an exponential moving average (EMA). The result is cached as a miniature base
file (``miniature.save_base``, fp16) under a key of everything it depends on (model config, schedule,
seed, text encoder, and a fingerprint of the renderer's pixels and captions), so reruns skip it;
``checkpoint_every`` also writes the EMA weights so far to ``<key>.partial.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from instruct_identity.miniature import BaseSpec, components, load_state, save_base, sprites

from . import data

log = logging.getLogger(__name__)

FORMAT = "toy-base-v3"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1200
    batch: int = 32            # single renders per batch
    sheet_batch: int = 16      # two-view sheets per batch (same pixel count as 32 singles)
    sheet_ratio: float = 0.5   # share of steps that are sheet batches
    sheet_describe: float = 0.5  # share of sheet captions that name the colours (the rest: the other view tells)
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    ema: float = 0.995
    timestep_sampling: str = "uniform"
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
        q = sprites.ALL_POSES[(i * 7 + 3) % len(sprites.ALL_POSES)]
        h.update(sprites.render(c, p, size)[0].tobytes())
        h.update(sprites.render_sheet(c, [p, q], size).tobytes())
        h.update(data.pretrain_caption(c, p, rng).encode())
        h.update(data.pretrain_sheet_caption(c, [p, q], rng).encode())
    return h.hexdigest()[:16]


_UNKEYED_DEFAULTS = {"sheet_describe": 0.5}


def cache_key(unet: dict, cfg: PretrainConfig, text_identity: str, train_chars: list, init_key: str | None = None) -> str:
    """``init_key``: the key of the base this stage continues from (None: from scratch)."""
    settings = asdict(cfg)
    for name, default in _UNKEYED_DEFAULTS.items():  # options added later stay out of the key at their default,
        if settings[name] == default:                # so the bases cached before them keep their keys
            del settings[name]
    d = {"format": FORMAT, "unet": unet, "pretrain": settings, "text": text_identity,
         "render": renderer_fingerprint(cfg.size), "chars": hashlib.sha256(repr(train_chars).encode()).hexdigest()[:16]}
    if init_key is not None:
        d["init"] = init_key
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def is_sheet_step(step: int, cfg: PretrainConfig) -> bool:
    """Deterministic interleaving: the share ``sheet_ratio`` of steps, spread evenly."""
    return math.floor((step + 1) * cfg.sheet_ratio) > math.floor(step * cfg.sheet_ratio)


def pretrain(unet: dict, cfg: PretrainConfig, train_chars: list, codec, text_encoder, progress=None,
             checkpoint=None, checkpoint_every: int = 0, init_state: dict | None = None,
             stage: int = 0) -> tuple[dict, dict]:
    """Train from scratch (or continue from ``init_state``, a previous stage's EMA weights, with a fresh
    optimiser, schedule and data stream); returns (EMA state dict, info). ``checkpoint(ema_state, step)``
    is called every ``checkpoint_every`` steps."""
    from instruct_identity.training import objective
    from instruct_identity.training.model import FluxForward

    torch.manual_seed(cfg.seed)
    patcher = components.build_model(unet, seed=cfg.seed, state_dict=init_state)
    base = patcher.model
    dm = base.diffusion_model
    dm.train()
    ema = {k: v.detach().clone() for k, v in dm.state_dict().items()}
    forward = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)
    params = list(dm.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    stream = data.PretrainStream(train_chars, cfg.size, codec, text_encoder, cfg.seed + 1000 * stage,
                                 cfg.sheet_describe)
    g = torch.Generator().manual_seed(cfg.seed + 1000 * stage)
    losses: list[float] = []
    sheet_losses: list[float] = []
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    steps = range(cfg.steps) if progress is None else progress(range(cfg.steps))
    for step in steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        sheet = is_sheet_step(step, cfg)
        latent, cond, pooled = stream.sheet_batch(cfg.sheet_batch) if sheet else stream.batch(cfg.batch)
        n = latent.shape[0]
        x0 = base.process_latent_in(latent)
        sigmas = objective.sample_sigmas(cfg.timestep_sampling, torch.randn(n, generator=g), torch.rand(n, generator=g))
        noise = torch.randn(x0.shape, generator=g)
        inputs = objective.flow_inputs(x0, None, noise, sigmas, "grid", "full")
        loss = objective.flow_loss(forward(dm, inputs.model_input, sigmas, cond, pooled), inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = cfg.ema if init_state is not None else min(cfg.ema, (1 + step) / (10 + step))
            for k, v in dm.state_dict().items():
                ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        (sheet_losses if sheet else losses).append(loss.item())
        if progress is not None and hasattr(steps, "set_postfix") and step % 20 == 0:
            steps.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
            checkpoint(ema, step + 1)
    info = {"wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
            "loss_first50": float(np.mean(losses[:50])), "loss_last50": float(np.mean(losses[-50:])),
            "sheet_loss_first50": float(np.mean(sheet_losses[:50])) if sheet_losses else math.nan,
            "sheet_loss_last50": float(np.mean(sheet_losses[-50:])) if sheet_losses else math.nan,
            "losses": losses}
    return ema, info


def base_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"base-{key}.safetensors"


def load_or_train(cache_dir: Path, unet: dict, cfg: PretrainConfig, train_chars: list, codec, text_encoder,
                  progress=None, force: bool = False, checkpoint_every: int = 0,
                  init: tuple[dict, str] | None = None, stage: int = 0) -> tuple[dict, dict, Path]:
    """The cached base weights (fp32 copy of the fp16 file) for this configuration, training them first
    if needed; (state dict, info, file). ``init``: (weights, key) of the stage this one continues."""
    from instruct_identity.core.files import atomic_write_text

    key = cache_key(unet, cfg, text_encoder.identity, train_chars, init[1] if init else None)
    path = base_path(cache_dir, key)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file() and not force:
        info = json.loads(meta_path.read_text())
        info["cached"] = True
        log.info("base model: cached %s (pre-trained %d steps in %.0f s)", path.name, cfg.steps, info["wall_s"])
        state, _, _ = load_state(path)
        return state, info, path
    log.info("base model: pre-training %d steps -> %s", cfg.steps, path.name)
    spec = BaseSpec(unet, cfg.size, dict(codec.spec), text_encoder.spec)
    partial = path.with_name(f"base-{key}.partial.safetensors")

    def checkpoint(state, step):
        save_base(partial, state, spec, {"pretrain": asdict(cfg), "key": key, "partial_step": step})
        log.info("base model: EMA checkpoint at step %d -> %s", step, partial.name)

    state, info = pretrain(unet, cfg, train_chars, codec, text_encoder, progress, checkpoint, checkpoint_every,
                           init[0] if init else None, stage)
    info.update({"key": key, "unet": unet, "pretrain": asdict(cfg), "init": init[1] if init else None})
    save_base(path, state, spec, {"pretrain": asdict(cfg), "key": key, "loss_last50": info["loss_last50"]})
    atomic_write_text(meta_path, json.dumps(info))
    info["cached"] = False
    state, _, _ = load_state(path)  # the runs use exactly what the file holds (fp16-rounded)
    return state, info, path
