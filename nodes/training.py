"""Start an Instruct Identity LoRA training run from a graph (the CLI ``ii-train`` is the main way).

The node runs ``training.trainer.train`` in ComfyUI's process with a trainer TOML (docs/trainer.md),
shows the steps on ComfyUI's progress bar and stops at the queue's Cancel; a stopped run continues
from its last saved state when queued again with ``resume`` on.

A ComfyUI server takes graphs (and file uploads) from whoever reaches its HTTP API, so the node reads
and writes only inside ComfyUI's folders (``training.paths``; the server's owner may add folders with
``II_TRAIN_ALLOWED_DIRS``), loads only .safetensors models, and resumes from states that hold no
pickle. A relative ``config`` is looked up in ComfyUI's input, then user, then output folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from comfy_api.latest import io

from ..core.errors import InputError
from ..core.imagefile import load_comfy
from . import CATEGORY

log = logging.getLogger(__name__)


def config_path(config: str, policy) -> Path:
    """The trainer TOML the node may read: an absolute path inside the readable folders, or a path
    relative to ComfyUI's input, user or output folder (the first that has it)."""
    raw = Path(config.strip()).expanduser()
    if raw.is_absolute():
        return policy.check_read(raw, "config")
    for root in policy.read:
        candidate = root / raw
        if policy.check_read(candidate, "config").is_file():
            return candidate
    raise InputError("config", f"'{config.strip()}' is not a file in ComfyUI's input, user or output folder.",
                     "Put the trainer TOML in ComfyUI's input folder and give its name (see docs/trainer.md).")


def run_training(config: str, resume: bool, max_train_steps: int):
    """Train as the TOML says; returns (TrainResult, TrainConfig)."""
    import comfy.model_management
    import comfy.utils

    from ..training.config import load_config
    from ..training.paths import PathPolicy
    from ..training.trainer import train

    if not config.strip():
        raise InputError("config", "no trainer config is given.", "Give the path of a trainer TOML (see docs/trainer.md).")
    policy = PathPolicy.comfyui()
    overrides = {"max_train_steps": int(max_train_steps)} if max_train_steps > 0 else {}
    cfg = load_config(config_path(config, policy), overrides)
    policy.check_config(cfg)  # every path of the run, before anything is read or written
    bar = comfy.utils.ProgressBar(int(cfg.max_train_steps))

    def on_step(info):
        bar.update_absolute(info.step, int(cfg.max_train_steps))
        comfy.model_management.throw_exception_if_processing_interrupted()

    result = train(cfg, resume=True if resume else None, on_step=on_step, paths=policy)
    return result, cfg


def loss_curve_image(path: Path | None) -> torch.Tensor:
    if path is None or not Path(path).is_file():
        return torch.zeros(1, 64, 64, 3)
    return load_comfy(path, name="loss_curve")


class InstructIdentityTrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentityTrainLoRA",
            display_name="Instruct Identity Train LoRA",
            category=f"{CATEGORY}/Training",
            description=("Trains an Instruct Identity LoRA (masked flow matching on [noisy target | clean reference]) "
                         "as a trainer TOML describes, inside ComfyUI. The command line (ii-train, accelerate launch) "
                         "is the better place for long or multi-GPU runs."),
            inputs=[
                io.String.Input("config", default="", tooltip="Path of a trainer TOML (see docs/trainer.md and training/examples/)."),
                io.Boolean.Input("resume", default=True, tooltip="Continue from the newest saved state of this config's output_dir, if any."),
                io.Int.Input("max_train_steps", default=0, min=0, max=10_000_000,
                             tooltip="0 = the config's max_train_steps."),
            ],
            outputs=[
                io.String.Output(display_name="lora_path"),
                io.Image.Output(display_name="loss_curve"),
                io.String.Output(display_name="info"),
            ],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, config, resume, max_train_steps) -> io.NodeOutput:
        result, cfg = run_training(config, resume, max_train_steps)
        curve = cfg.resolved_logging_dir / f"{cfg.output_name}-loss.png"
        info = (f"{result.step} steps, LoRA {result.lora_path}; loss on fixed draws {result.fixed_loss_before:.4f} -> "
                f"{result.fixed_loss_after:.4f}; {len(result.report.problems)} pair(s) skipped (dataset_report.txt)")
        return io.NodeOutput(str(result.lora_path), loss_curve_image(curve), info)


NODES = [InstructIdentityTrainLoRA]
