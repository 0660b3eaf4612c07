"""Saving: the LoRA file (atomic, with metadata) and resumable training states.

A state is a folder ``<output_name>-step<NNNNNNNN>-state`` written by accelerate's ``save_state``
(optimizer, LR scheduler, grad scaler, RNG states of every process) plus ``adapter.safetensors`` (only
the LoRA tensors: the frozen base is never copied) and ``trainer_state.json`` (step, data position,
what the LoRA's shape depends on). It is written under a temporary name and renamed when complete, so
a run killed at any moment leaves the previous state intact; resuming picks the newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from . import lora
from ..core.files import atomic_replace_dir, atomic_save_safetensors, atomic_write_bytes

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"
TRAINER_FILE = "trainer_state.json"
FORMAT_VERSION = "1"
SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_STATE_RE = re.compile(r"-step(\d{8})-state$")
_LORA_RE = re.compile(r"-step(\d{8})\.safetensors$")


# --------------------------------------------------------------------------------------------------
# LoRA files


def lora_metadata(cfg, targets, step: int, model_hash: str, model_file: str | None) -> dict[str, str]:
    """Strings only (safetensors metadata). Plain names, plus kohya's ``ss_*`` ones that LoRA browsers show."""
    return {
        "format": "kohya-lora",
        "instruct_identity_version": FORMAT_VERSION,
        "mode": cfg.mode,
        "preset": cfg.preset,
        "loss": cfg.loss,
        "reference_attention": cfg.reference_attention,  # read by engine.oneway (samplers pick the mode from it)
        "rank": str(cfg.network_dim),
        "alpha": f"{float(cfg.network_alpha):g}",
        "steps": str(step),
        "targets": str(len(targets)),
        "base_model_file": os.path.basename(model_file) if model_file else "",
        "base_model_hash": model_hash,
        "config": cfg.to_json(),
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": str(cfg.network_dim),
        "ss_network_alpha": f"{float(cfg.network_alpha):g}",
        "ss_steps": str(step),
        "ss_base_model_version": "flux1",
        "ss_learning_rate": f"{cfg.learning_rate:g}",
    }


def gather_adapter(accelerator, module, diffusion_model) -> dict[str, torch.Tensor]:
    """The LoRA tensors by parameter name. Under FSDP/DeepSpeed the parameters may be sharded: gather
    them through accelerate (every process must call this then)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        full = accelerator.get_state_dict(module)
        return {k: v for k, v in (full or {}).items() if ".lora_" in k}
    return lora.adapter_state(diffusion_model)


def save_lora(path: Path, adapter: dict, targets, cfg, step: int, model_hash: str, model_file: str | None) -> Path:
    sd = lora.kohya_state_dict(None, targets, int(cfg.network_dim), float(cfg.network_alpha),
                               SAVE_DTYPES[cfg.save_precision], adapter=adapter)
    atomic_save_safetensors(sd, Path(path), lora_metadata(cfg, targets, step, model_hash, model_file))
    log.info("saved LoRA %s (step %d, %d modules)", path, step, len(targets))
    return Path(path)


def step_lora_path(out_dir: Path, name: str, step: int) -> Path:
    return Path(out_dir) / f"{name}-step{step:08d}.safetensors"


def prune_step_loras(out_dir: Path, name: str, step: int, keep_last_n_steps: int | None) -> None:
    """kohya's ``save_last_n_steps``: drop step LoRAs older than ``step - N``."""
    if not keep_last_n_steps:
        return
    for f in Path(out_dir).glob(f"{name}-step*.safetensors"):
        m = _LORA_RE.search(f.name)
        if m and int(m.group(1)) < step - keep_last_n_steps:
            f.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# states


def state_dir(out_dir: Path, name: str, step: int) -> Path:
    return Path(out_dir) / f"{name}-step{step:08d}-state"


def complete_states(out_dir: Path, name: str) -> list[tuple[int, Path]]:
    found = []
    for d in Path(out_dir).glob(f"{name}-step*-state"):
        m = _STATE_RE.search(d.name)
        if m and d.is_dir() and (d / TRAINER_FILE).is_file() and (d / ADAPTER_FILE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_state(out_dir: Path, name: str) -> Path | None:
    states = complete_states(out_dir, name)
    return states[-1][1] if states else None


def read_trainer_state(path: Path) -> dict:
    return json.loads((Path(path) / TRAINER_FILE).read_text())


def shape_signature(cfg) -> dict:
    """What a saved adapter must agree on to be loaded into this run."""
    signature = {"mode": cfg.mode, "preset": cfg.preset, "network_dim": int(cfg.network_dim)}
    if cfg.reference_attention != "joint":  # joint states saved before the option existed still resume
        signature["reference_attention"] = cfg.reference_attention
    return signature


class StateHooks:
    """accelerate save/load hooks that store only the LoRA tensors (never the frozen 12B base)."""

    def __init__(self, accelerator, diffusion_model, module):
        self.accelerator = accelerator
        self.dm = diffusion_model
        self.module = module

    def save(self, models, weights, output_dir):
        adapter = gather_adapter(self.accelerator, self.module, self.dm)
        if self.accelerator.is_main_process:
            atomic_save_safetensors({k: v.float() for k, v in adapter.items()}, Path(output_dir) / ADAPTER_FILE)
        weights.clear()

    def load(self, models, input_dir):
        from safetensors.torch import load_file

        lora.load_adapter_state(self.dm, load_file(str(Path(input_dir) / ADAPTER_FILE)))
        models.clear()


def save_state(accelerator, out_dir: Path, name: str, step: int, trainer_state: dict,
               keep_last_n_steps: int | None) -> Path:
    """Write the state of ``step`` atomically (every process must call this)."""
    final = state_dir(out_dir, name, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_bytes(tmp / TRAINER_FILE, json.dumps(trainer_state, indent=1).encode())
        atomic_replace_dir(tmp, final)
        prune_states(out_dir, name, step, keep_last_n_steps)
        log.info("saved training state %s", final)
    accelerator.wait_for_everyone()
    return final


def prune_states(out_dir: Path, name: str, step: int, keep_last_n_steps: int | None) -> None:
    """Keep states of the last N steps (kohya's ``save_last_n_steps_state``); by default only the newest.
    States of later steps than ``step`` belong to an earlier run (or a branch this run resumed before):
    they go too, so ``--resume`` can never pick them."""
    for s, d in complete_states(out_dir, name):
        too_old = (s < step - keep_last_n_steps) if keep_last_n_steps else (s < step)
        if too_old or s > step:
            shutil.rmtree(d, ignore_errors=True)
    for d in Path(out_dir).glob(f".{name}-step*-state.tmp"):  # leftovers of killed runs
        if d.name != f".{state_dir(out_dir, name, step).name}.tmp":
            shutil.rmtree(d, ignore_errors=True)
