"""Identity LoRA runs with the project's own trainer, and loading their files the way ComfyUI does.

Every run calls ``training.trainer.train(cfg, components=Components(model, codec, text_encoder))``
with a config built by ``training.config.from_dict`` from the same keys a user's TOML holds (plus the
run's own ``extra`` trainer options, merged last); only the sizes differ from a real run. The saved
LoRA (fp16, kohya key names) is then loaded onto a fresh copy of the base with ComfyUI's own LoRA
loader (``comfy.sd.load_lora_for_models``, what ``LoraLoaderModelOnly`` calls).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from instruct_identity.miniature import components, sprites

from . import data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    steps: int = 300
    batch: int = 16
    rank: int = 16
    lr: float = 1e-3
    timestep_sampling: str = "uniform"  # the trainer's option (uniform | sigmoid | shift | flux_shift)
    shift: float = 3.0                  # discrete_flow_shift, for ``shift``
    scheduler: str = "constant"         # lr_scheduler
    warmup: float = 0.0                 # lr_warmup_steps: steps, or a fraction (< 1) of the run's steps


@dataclass(frozen=True)
class RunSpec:
    """One configuration and seed. ``extra``: trainer options merged into the config last (e.g.
    ``{"reference_attention": "one_way"}``)."""

    name: str
    preset: str
    loss: str
    seed: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "extra": dict(self.extra)}


def trainer_options(spec: RunSpec, s: LoraSettings, manifest: Path, out_dir: Path, cache_dir: Path, size: int) -> dict:
    opts = dict(
        mode="identity", preset=spec.preset, loss=spec.loss, network_dim=s.rank, network_alpha=float(s.rank),
        dataset_config=str(manifest), resolution=size, train_batch_size=s.batch, max_train_steps=s.steps,
        learning_rate=s.lr, lr_scheduler=s.scheduler, lr_warmup_steps=s.warmup, optimizer_type="AdamW",
        timestep_sampling=s.timestep_sampling, discrete_flow_shift=s.shift,
        guidance_scale=1.0, mixed_precision="no", save_precision="fp16", seed=spec.seed, output_dir=str(out_dir),
        output_name=spec.name, cache_dir=str(cache_dir), save_state=False)
    opts.update(spec.extra)
    return opts


def train_run(spec: RunSpec, s: LoraSettings, manifest: Path, out_dir: Path, cache_dir: Path, base_state: dict,
              unet: dict, codec, text_encoder, base_hash: str) -> tuple[dict, object]:
    """Train one LoRA; returns its file, timings and losses (and keeps the trained model for the held-out loss)."""
    from instruct_identity.training.config import from_dict
    from instruct_identity.training.model import Components
    from instruct_identity.training.trainer import train

    cfg = from_dict(trainer_options(spec, s, manifest, out_dir, cache_dir, data_size(manifest)))
    patcher = components.build_model(unet, state_dict=base_state)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    result = train(cfg, Components(patcher, codec, text_encoder, None, base_hash))
    info = {"lora": str(result.lora_path), "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
            "seconds_per_step": result.seconds_per_step, "losses": result.losses,
            "fixed_loss_before": result.fixed_loss_before, "fixed_loss_after": result.fixed_loss_after,
            "steps": result.step}
    return info, patcher


def data_size(manifest: Path) -> int:
    from PIL import Image

    first = Path(manifest).read_text().splitlines()[0]
    with Image.open(Path(manifest).parent / json.loads(first)["target"]) as im:
        return im.size[0]


def load_with_lora(unet: dict, base_state: dict, lora_path: str | None):
    """A fresh base, plus the LoRA file through ComfyUI's loader (None: the base alone), tagged with the
    reference attention its metadata records (so a one-way LoRA is sampled one way)."""
    from instruct_identity.engine import oneway

    base = components.build_model(unet, state_dict=base_state)
    if lora_path is None:
        return base
    return oneway.apply_lora_file(base, lora_path)[0]


@torch.no_grad()
def heldout_loss(patcher, codec, text_encoder, pairs: list[data.PairSpec], size: int, seed: int) -> float:
    """Eq. 2 on held-out pairs (target half only, for every run, whatever its training loss), fixed noise
    and timesteps on a grid of noise levels: comparable between runs, unlike the training losses."""
    from instruct_identity.engine import oneway
    from instruct_identity.training import objective
    from instruct_identity.training.model import FluxForward

    base = patcher.model
    dm = base.diffusion_model
    was = dm.training
    dm.eval()
    forward = FluxForward(dm, gradient_checkpointing=False, guidance=1.0, reference_attention=oneway.mode_of(patcher))
    refs = torch.cat([data.to_image(sprites.render(p.char, p.ref_pose, size)[0]) for p in pairs])
    tgts = torch.cat([data.to_image(sprites.render(p.char, p.tgt_pose, size)[0]) for p in pairs])
    ref = base.process_latent_in(codec.encode(refs))
    tgt = base.process_latent_in(codec.encode(tgts))
    conds, pooled = zip(*(text_encoder.encode(p.caption) for p in pairs), strict=True)
    context, pooled = torch.stack(conds), torch.stack(pooled)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for sigma in (0.1, 0.3, 0.5, 0.7, 0.9):
        sig = torch.full((len(pairs),), sigma)
        noise = torch.randn((len(pairs), *objective.noise_shape(tgt, "identity")), generator=g)
        inputs = objective.flow_inputs(tgt, ref, noise, sig, "identity", "masked")
        losses.append(float(objective.flow_loss(forward(dm, inputs.model_input, sig, context, pooled), inputs)))
    dm.train(was)
    return sum(losses) / len(losses)
