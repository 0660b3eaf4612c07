"""The named set-up steps of a training run (``trainer.setup`` calls them in order).

    accelerator -> check the dataset -> encoders -> cache latents and captions -> preview prompts
    -> free the encoders -> load FLUX -> add LoRA -> optimizer and schedule

ComfyUI must be importable (``engine.runtime.setup_comfyui``) before this module is imported.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..core.errors import InputError
from ..core.files import atomic_write_bytes
from ..engine.runtime import use_cpu
from . import lora
from .cache import FileHashes, TensorCache
from .config import TrainConfig
from .data import Encoders, TrainData, build_items
from .dataset import check, defaults_from, read_dataset
from .model import (
    Components,
    free_memory,
    load_flux,
    load_text_encoder,
    load_vae,
    place,
    resolve_model_file,
    weight_dtype,
)
from .schedule import lr_lambda, warmup_steps

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# named steps


def make_accelerator(cfg: TrainConfig):
    """accelerate's Accelerator; on a machine without a GPU it runs on the CPU, and several processes
    (``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``) then talk through gloo."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    # accelerate keeps its settings in process-wide singletons: a second run in the same process (a
    # ComfyUI node, tests) may use another precision. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(cpu=use_cpu(), mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=int(cfg.gradient_accumulation_steps),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def warn_sharded(cfg: TrainConfig, acc) -> None:
    from accelerate.utils import DistributedType

    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) and acc.is_main_process:
        log.warning("%s is not covered by this trainer's tests (DDP is): LoRA files are built from the gathered state "
                    "dict, resumable states also hold accelerate's copy of the model%s.", acc.distributed_type,
                    "; preset A's row/column masks rely on per-parameter gradient hooks, which sharding may bypass"
                    if cfg.preset == "A" else "")


def check_dataset(cfg: TrainConfig, acc, paths=None):
    """Read and check the dataset; ``paths`` (a ``training.paths.PathPolicy``) confines what it may name."""
    from ..miniature.demo_data import prepare_for_training

    wanted = Path(str(cfg.dataset_config or ""))
    if wanted.suffix == ".jsonl" and not wanted.exists() and cfg.pretrained_model_name_or_path:
        # a miniature base's missing *.jsonl dataset: generated sprite pairs (written where writes may go)
        if paths is not None:
            paths.check_write(wanted, "dataset_config")
        prepare_for_training(wanted, resolve_model_file(cfg.pretrained_model_name_or_path, "diffusion_models",
                                                        "pretrained_model_name_or_path"), acc)
    if paths is not None:
        paths.check_dataset_config(Path(cfg.dataset_config))
    specs, pairs, problems = read_dataset(cfg.dataset_config, defaults_from(cfg), cfg.mode)
    check_specs(specs)
    if paths is not None:
        paths.check_pairs(pairs)  # before a single picture is opened
    report = check(pairs, problems)
    if acc.is_main_process:
        out = Path(cfg.output_dir)
        atomic_write_bytes(out / "dataset_report.json", report.to_json().encode())
        atomic_write_bytes(out / "dataset_report.txt", (report.text() + "\n").encode())
        (log.warning if report.problems else log.info)("%s", report.text())
    if not report.pairs:
        raise InputError("dataset_config", f"no usable pair in {cfg.dataset_config}.\n{report.text()}",
                         "Fix the listed problems (see dataset_report.txt in the output folder).")
    return report, specs


def open_encoders(cfg: TrainConfig, components: Components | None, hashes: FileHashes) -> Encoders:
    """Given components, or ComfyUI files that load only when a cache miss or the samples need them."""
    if components is not None:
        return Encoders.of(components.vae, components.text_encoder)
    from ..miniature.base_file import encoders_of

    miniature = encoders_of(resolve_model_file(cfg.pretrained_model_name_or_path, "diffusion_models",
                                               "pretrained_model_name_or_path"))
    if miniature is not None:  # a miniature base file carries its codec and text encoder in its metadata
        return Encoders.of(*miniature)
    ae = resolve_model_file(cfg.ae, "vae", "ae")
    clip_l = resolve_model_file(cfg.clip_l, "text_encoders", "clip_l")
    t5 = resolve_model_file(cfg.t5xxl, "text_encoders", "t5xxl", required=False)
    vae_id = f"vae:{hashes(ae)[:20]}"
    te_id = "te:" + "+".join(hashes(p)[:20] for p in [clip_l] + ([t5] if t5 else []))
    hashes.flush()
    return Encoders(vae_id, te_id, lambda: load_vae(ae, hashes), lambda: load_text_encoder(clip_l, t5, hashes))


def cache_data(cfg: TrainConfig, acc, report, specs, encoders: Encoders, hashes: FileHashes):
    root = cfg.resolved_cache_dir
    latents = TensorCache(root if cfg.cache_latents_to_disk else None, "latents")
    texts = TensorCache(root if cfg.cache_text_encoder_outputs_to_disk else None, "text")
    with acc.main_process_first():
        items = build_items(report.pairs, specs, encoders, hashes, latents, texts, progress=_bar(acc))
        if acc.is_main_process:
            hashes.flush()
    data = TrainData(items, specs, latents, texts, seed=cfg.seed, world=acc.num_processes)
    return data


def check_specs(specs) -> None:
    """A dataset TOML's own resolution and batch size are held to the same limits as the config's."""
    from ..core.limits import MAX_TRAIN_BATCH, MAX_TRAIN_SIDE

    for i, spec in enumerate(specs):
        if max(spec.resolution) > MAX_TRAIN_SIDE:
            raise InputError(f"datasets[{i}].resolution", f"{spec.resolution[0]}x{spec.resolution[1]} px is over the "
                             f"{MAX_TRAIN_SIDE} px limit per side.", "Use e.g. 512 or 1024 (docs/limits.md).")
        if spec.batch_size > MAX_TRAIN_BATCH:
            raise InputError(f"datasets[{i}].batch_size", f"{spec.batch_size} pairs per step is over the {MAX_TRAIN_BATCH} "
                             "limit.", "Use gradient_accumulation_steps for a larger effective batch (docs/limits.md).")


def prepare_samples(cfg: TrainConfig, specs, encoders: Encoders, paths=None):
    if not (cfg.sample_prompts and (cfg.sample_every_n_steps or cfg.sample_at_first)):
        return []
    from ..core.limits import MAX_TRAIN_SIDE
    from . import sampling

    w, h = specs[0].resolution
    prompts = sampling.parse_prompts(cfg.sample_prompts, width=w, height=h, seed=cfg.seed)
    for p in prompts:
        if max(p.width, p.height) > MAX_TRAIN_SIDE:
            raise InputError("sample_prompts", f"the preview '{p.prompt[:40]}' is {p.width}x{p.height} px, over the "
                             f"{MAX_TRAIN_SIDE} px limit per side.", "Use --w and --h of at most that (docs/limits.md).")
    if paths is not None:
        paths.check_samples(prompts)
    return sampling.prepare(prompts, encoders.text, encoders.vae, cfg.mode)


def release_encoders(encoders: Encoders, keep_vae: bool) -> None:
    """T5-XXL must not sit in memory while training: drop the text encoder (and the VAE unless the
    previews need it) and let ComfyUI free what it had loaded."""
    encoders.drop_text()
    if not keep_vae:
        encoders.drop_vae()
    free_memory()


def load_model(cfg: TrainConfig, components: Components | None, hashes: FileHashes, device):
    if components is not None:
        patcher, model_file, model_hash = components.model, components.model_file, components.model_hash
    else:
        model_file = resolve_model_file(cfg.pretrained_model_name_or_path, "diffusion_models", "pretrained_model_name_or_path")
        model_hash = hashes(model_file)
        hashes.flush()
        from ..miniature.base_file import model_of

        patcher = model_of(model_file)  # a miniature base file, or None
        if patcher is None:
            patcher = load_flux(model_file, weight_dtype(cfg.mixed_precision, cfg.fp8_base))
    from ..engine.patch import model_info

    info = model_info(patcher)
    if info.in_channels != info.latent_channels:
        raise InputError("pretrained_model_name_or_path", f"this model takes {info.in_channels} input channels per "
                         f"latent pixel (a Fill/Canny/Depth model); the trainer adapts plain FLUX.1 dev/schnell.",
                         "Use flux1-dev.safetensors.")
    place(patcher, device)
    return patcher, model_file, model_hash


def add_lora(cfg: TrainConfig, dm) -> list[lora.Target]:
    targets = lora.inject(dm, cfg.preset, int(cfg.network_dim), float(cfg.network_alpha),
                          dropout=float(cfg.network_dropout), seed=cfg.seed)
    dm.train()
    log.info("LoRA preset %s on %d modules (img_in included), rank %d, alpha %g: %.2fM trainable values",
             cfg.preset, len(targets), cfg.network_dim, cfg.network_alpha,
             lora.effective_parameter_count(dm, targets) / 1e6)
    return targets


def make_optimizer(cfg: TrainConfig, dm, total_steps: int):
    params = [p for _, p in lora.trainable_parameters(dm)]
    kwargs = cfg.optimizer_kwargs()
    if cfg.optimizer_type == "AdamW8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise InputError("optimizer_type", "AdamW8bit needs bitsandbytes.", "pip install bitsandbytes, or use AdamW.") from e
        make = bnb.optim.AdamW8bit
    else:
        make = torch.optim.AdamW
    try:
        optimizer = make(params, lr=cfg.learning_rate, **kwargs)
    except (TypeError, ValueError) as e:  # an unknown keyword, betas out of range, a negative weight_decay...
        raise InputError("optimizer_args", f"{cfg.optimizer_type} refused them: {e}.",
                         "Use AdamW's keywords with valid values, e.g. {weight_decay = 0.01, betas = [0.9, 0.999], eps = 1e-8}.") from None
    warm = warmup_steps(cfg.lr_warmup_steps, total_steps)
    schedule = lr_lambda(scheduler=cfg.lr_scheduler, total=total_steps, warmup=warm, cycles=int(cfg.lr_scheduler_num_cycles),
                         power=float(cfg.lr_scheduler_power), min_ratio=float(cfg.lr_scheduler_min_lr_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler


def total_steps(cfg: TrainConfig, data: TrainData) -> int:
    if cfg.max_train_epochs:
        return math.ceil(data.batches_per_epoch * int(cfg.max_train_epochs) / int(cfg.gradient_accumulation_steps))
    return int(cfg.max_train_steps)


def ignore_frozen_in_ddp(dm) -> None:
    """DDP would broadcast (and check) every parameter, the frozen 12B base included: tell it not to."""
    names = [n for n, p in dm.named_parameters() if not p.requires_grad] + [n for n, _ in dm.named_buffers()]
    dm._ddp_params_and_buffers_to_ignore = names


def _bar(acc):
    from tqdm.auto import tqdm

    def progress(items, desc):
        return tqdm(items, desc=desc, disable=not acc.is_main_process, leave=False)

    return progress
