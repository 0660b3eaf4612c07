"""Saving: the LoRA file (atomic, with metadata) and resumable training states.

A state is a folder ``<output_name>-step<NNNNNNNN>-state`` holding ``adapter.safetensors`` (only the
LoRA tensors: the frozen base is never copied), the optimizer, LR schedule and grad scaler, the RNG
states of every process (each as ``<name>.safetensors`` + ``<name>.json``: tensors and plain values,
never pickle, so loading a state cannot run code), and ``trainer_state.json`` (step, data position,
what the LoRA's shape depends on), written last. The folder is written under a temporary name and
renamed when complete, so a run killed at any moment leaves the previous state intact; resuming
picks the newest complete one. Nothing non-finite is ever saved (:class:`Diverged`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import lora
from ..core.errors import InputError
from ..core.files import atomic_replace_dir, atomic_save_safetensors, atomic_write_bytes, clean_stale_temporaries

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"
TRAINER_FILE = "trainer_state.json"
FORMAT_VERSION = "1"
SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_STATE_RE = re.compile(r"-step(\d{8})-state$")
_LORA_RE = re.compile(r"-step(\d{8})\.safetensors$")


# --------------------------------------------------------------------------------------------------
# LoRA files


def lora_metadata(cfg, targets, step: int, model_hash: str, model_file: str | None,
                  references: tuple[int, int] | None = None) -> dict[str, str]:
    """Strings only (safetensors metadata). Plain names, plus kohya's ``ss_*`` ones that LoRA browsers show.
    ``references``: the fewest and most references of the training grids (``references`` key, "1" or "1-3")."""
    lo, hi = references or ((1, 1) if cfg.mode == "identity" else (0, 0))
    return {
        "references": (str(lo) if lo == hi else f"{lo}-{hi}") if cfg.mode == "identity" else "0",
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


def save_lora(path: Path, adapter: dict, targets, cfg, step: int, model_hash: str, model_file: str | None,
              references: tuple[int, int] | None = None) -> Path:
    check_finite(adapter, f"LoRA {Path(path).name}", step)
    sd = lora.kohya_state_dict(None, targets, int(cfg.network_dim), float(cfg.network_alpha),
                               SAVE_DTYPES[cfg.save_precision], adapter=adapter)
    atomic_save_safetensors(sd, Path(path), lora_metadata(cfg, targets, step, model_hash, model_file, references))
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


def previous_results(out_dir: Path, name: str) -> list[str]:
    """Files of an earlier run named ``name`` in ``out_dir`` that a new run would overwrite or prune."""
    out = Path(out_dir)
    found = [p.name for p in [out / f"{name}.safetensors"] if p.is_file()]
    found += sorted(p.name for p in out.glob(f"{name}-step*.safetensors") if _LORA_RE.search(p.name))
    found += [d.name for _, d in complete_states(out, name)]
    return found


def refuse_overwrite(out_dir: Path, name: str, why: str = "") -> None:
    """A run that does not continue an earlier one must not destroy its results (LoRAs, states)."""
    found = previous_results(out_dir, name)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise InputError("output_dir", f"{out_dir} already holds the results of a run named '{name}' ({shown}); "
                                       f"{why or 'starting over there would overwrite them'}.",
                         "Continue that run with --resume (the node: resume on), or set another output_dir or "
                         "output_name for a new run.")


def clean_temporaries(out_dir: Path, name: str, folders=()) -> list[Path]:
    """Half-written files (``.*.tmp``) that a killed run left in ``out_dir`` and ``folders``, and
    state folders of this run that were never completed. A file is removed once it is a minute old
    (a live writer renames its temporary file within seconds)."""
    removed = []
    for folder in [Path(out_dir), *map(Path, folders)]:
        removed += clean_stale_temporaries(folder, older_than_s=60.0)
    for d in Path(out_dir).glob(f".{name}-step*-state.tmp"):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    for p in removed:
        log.info("removed %s (left by an interrupted run)", p)
    return removed


def shape_signature(cfg) -> dict:
    """What a saved adapter must agree on to be loaded into this run."""
    signature = {"mode": cfg.mode, "preset": cfg.preset, "network_dim": int(cfg.network_dim)}
    if cfg.reference_attention != "joint":  # joint states saved before the option existed still resume
        signature["reference_attention"] = cfg.reference_attention
    return signature


class Diverged(InputError):
    """Training produced a non-finite loss or LoRA: the run stops, nothing non-finite is saved, and the
    command line exits with :attr:`exit_code`."""

    exit_code = 3


def check_finite(tensors: dict[str, torch.Tensor], what: str, step: int) -> None:
    """Refuse to save ``tensors`` if any value is NaN or infinite (every process calls this)."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise Diverged("learning_rate", f"the LoRA has non-finite values at step {step} ({len(bad)} tensors, e.g. {bad[0]}); "
                                        f"the {what} was not saved (earlier files are kept).",
                       "Lower learning_rate (e.g. 1e-4) and keep max_grad_norm at 1.0, then start again or --resume "
                       "from the last saved state.")


# --------------------------------------------------------------------------------------------------
# trees of tensors and plain values, without pickle: <name>.json + <name>.safetensors

STATE_FORMAT = 2   # 1: accelerate's pickled files (never loaded); 2: safetensors + JSON


def _encode(obj, tensors: dict):
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.frombuffer(bytearray(np.ascontiguousarray(obj).tobytes()), dtype=torch.uint8).clone()
        return {"__ndarray__": key, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {"__npscalar__": obj.dtype.str, "value": _encode(obj.item(), tensors)}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"a training state cannot hold a {type(obj).__name__}")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        raw = tensors[obj["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "__npscalar__" in obj:
        return np.dtype(obj["__npscalar__"]).type(_decode(obj["value"], tensors))
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_tree(tree, folder: Path, name: str) -> None:
    """``tree`` (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) as ``name``.json + .safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    plain = _encode(tree, tensors)
    atomic_save_safetensors(tensors, Path(folder) / f"{name}.safetensors")
    atomic_write_bytes(Path(folder) / f"{name}.json", json.dumps(plain, indent=None).encode())


def load_tree(folder: Path, name: str):
    """What :func:`save_tree` wrote (JSON and safetensors only: nothing is unpickled)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / f"{name}.safetensors"))
    return _decode(json.loads((Path(folder) / f"{name}.json").read_text()), tensors)


# --------------------------------------------------------------------------------------------------
# resumable states


@dataclass
class Resumable:
    """What a state restores besides the step: the LoRA (in ``diffusion_model``), the optimizer and the
    learning-rate schedule; the accelerator adds its grad scaler and every process its RNG states."""

    diffusion_model: object
    optimizer: object
    scheduler: object


def _sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _optimizer_name(accelerator) -> str:
    # DDP keeps identical optimizer states on every process (one file); FSDP/DeepSpeed shard them
    return f"optimizer-rank{accelerator.process_index}" if _sharded(accelerator) else "optimizer"


def rng_states(accelerator) -> dict:
    """This process's random generators (Python, NumPy, torch CPU and CUDA) and accelerate's step."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "accelerate_step": int(getattr(accelerator, "step", 0))}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(accelerator, states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states.get("cuda") is not None:
        torch.cuda.set_rng_state_all(states["cuda"])
    accelerator.step = int(states.get("accelerate_step", 0))


def save_state(accelerator, out_dir: Path, name: str, step: int, trainer_state: dict,
               keep_last_n_steps: int | None, objects: Resumable, adapter: dict[str, torch.Tensor]) -> Path:
    """Write the state of ``step`` atomically (every process must call this): ``adapter.safetensors``,
    the optimizer, schedule and grad scaler as safetensors + JSON, each process's RNG states, and
    ``trainer_state.json`` last. Nothing is pickled."""
    check_finite(adapter, "training state", step)
    final = state_dir(out_dir, name, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_save_safetensors({k: v.float() for k, v in adapter.items()}, tmp / ADAPTER_FILE)
        save_tree(objects.scheduler.state_dict(), tmp, "scheduler")
        scaler = getattr(accelerator, "scaler", None)
        if scaler is not None:
            save_tree(scaler.state_dict(), tmp, "scaler")
    if accelerator.is_main_process or _sharded(accelerator):
        save_tree(objects.optimizer.state_dict(), tmp, _optimizer_name(accelerator))
    save_tree(rng_states(accelerator), tmp, f"rng-rank{accelerator.process_index}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_bytes(tmp / TRAINER_FILE, json.dumps({**trainer_state, "state_format": STATE_FORMAT}, indent=1).encode())
        atomic_replace_dir(tmp, final)
        prune_states(out_dir, name, step, keep_last_n_steps)
        log.info("saved training state %s", final)
    accelerator.wait_for_everyone()
    return final


def load_state(accelerator, path: Path, objects: Resumable) -> None:
    """Restore what :func:`save_state` wrote. States of the old pickled format are refused, never read."""
    from safetensors.torch import load_file

    path = Path(path)
    saved = read_trainer_state(path)
    if saved.get("state_format") != STATE_FORMAT:
        raise InputError("--resume", f"{path} was saved by an older version of the trainer, in pickle files, which are "
                                     "never loaded (unpickling a file can run any code in it).",
                         "Start a fresh run in another output_dir or under another output_name (the old run's LoRA "
                         "files still work), or finish it with the version that wrote it.")
    lora.load_adapter_state(objects.diffusion_model, load_file(str(path / ADAPTER_FILE)))
    objects.optimizer.load_state_dict(load_tree(path, _optimizer_name(accelerator)))
    objects.scheduler.load_state_dict(load_tree(path, "scheduler"))
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and (path / "scaler.json").is_file():
        scaler.load_state_dict(load_tree(path, "scaler"))
    rng = f"rng-rank{accelerator.process_index}"
    if (path / f"{rng}.json").is_file():
        set_rng_states(accelerator, load_tree(path, rng))
    else:
        log.warning("%s has no random states for process %d: this process continues with fresh ones",
                    path, accelerator.process_index)


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
