"""Start an Instruct Identity LoRA training run from a graph (the CLI ``ii-train`` is the main way).

The node runs ``training.trainer.train`` in ComfyUI's process with a trainer TOML (docs/trainer.md),
shows the steps on ComfyUI's progress bar and stops at the queue's Cancel; a stopped run continues
from its last saved state when queued again with ``resume`` on.
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


def run_training(config: str, resume: bool, max_train_steps: int):
    """Train as the TOML says; returns (TrainResult, TrainConfig)."""
    import comfy.model_management
    import comfy.utils

    from ..training.config import load_config
    from ..training.trainer import train

    if not config.strip():
        raise InputError("config", "no trainer config is given.", "Give the path of a trainer TOML (see docs/trainer.md).")
    overrides = {"max_train_steps": int(max_train_steps)} if max_train_steps > 0 else {}
    cfg = load_config(Path(config.strip()).expanduser(), overrides)
    bar = comfy.utils.ProgressBar(int(cfg.max_train_steps))

    def on_step(info):
        bar.update_absolute(info.step, int(cfg.max_train_steps))
        comfy.model_management.throw_exception_if_processing_interrupted()

    result = train(cfg, resume=True if resume else None, on_step=on_step)
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
