"""``train(config)``: the run as a sequence of named steps.

    setup:  accelerator -> check the dataset -> cache latents and captions -> free the encoders
            -> load FLUX -> add LoRA -> optimizer and schedule -> prepare (DDP) -> resume
    train:  optimizer steps (save / preview every N) -> final LoRA and state

ComfyUI must be importable (``engine.runtime.setup_comfyui``) before this module is imported.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import InputError
from . import checkpoints, lora, objective
from .cache import FileHashes
from .config import TrainConfig
from .data import Encoders, MicroBatch, TrainData, sample_generator
from .losslog import LossLog, sustained_jump
from .model import (
    Components,
    FluxForward,
    compute_dtype,
)
from .steps import (
    add_lora,
    cache_data,
    check_dataset,
    ignore_frozen_in_ddp,
    load_model,
    make_accelerator,
    make_optimizer,
    open_encoders,
    prepare_samples,
    release_encoders,
    total_steps,
    warn_sharded,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    lora_path: Path | None
    state_path: Path | None
    step: int
    losses: list[float] = field(default_factory=list)   # per optimizer step of this run (process mean)
    samples: list[Path] = field(default_factory=list)
    report: object = None
    seconds_per_step: float = 0.0
    peak_memory_bytes: int = 0
    fixed_loss_before: float | None = None  # Eq. 2 on fixed noise/timesteps of a few training batches
    fixed_loss_after: float | None = None
    jumped_at: int | None = None  # the step where the loss jumped and stayed up (``losslog.sustained_jump``)


@dataclass
class StepInfo:
    step: int
    loss: float
    lr: float
    result: TrainResult


class Interrupted(Exception):
    """Raised by an ``on_step`` callback to stop a run (tests simulate a kill with it)."""


def step_loss(cfg: TrainConfig, patcher, forward: FluxForward, module, mb: MicroBatch, micro_step: int,
              patch_size: int) -> torch.Tensor:
    """Eq. 2 on one micro-batch (see ``objective``); noise and timesteps drawn per sample."""
    base = patcher.model
    device = mb.target.device
    x0 = base.process_latent_in(mb.target.float())
    ref = None
    if isinstance(mb.reference, list):
        ref = [base.process_latent_in(r.float()) for r in mb.reference]
    elif mb.reference is not None:
        ref = base.process_latent_in(mb.reference.float())
    k = mb.references
    shape = objective.noise_shape(x0, cfg.mode, k)
    u_n, u_u, noise = [], [], []
    for sid in mb.sample_ids:
        g = sample_generator(cfg.seed, micro_step, sid)
        u_u.append(torch.rand((), generator=g))
        u_n.append(torch.randn((), generator=g))
        noise.append(torch.randn(shape, generator=g))
    tokens = objective.grid_tokens(x0.shape[-2], x0.shape[-1], patch_size, cfg.mode, k)
    sigmas = objective.sample_sigmas(cfg.timestep_sampling, torch.stack(u_n), torch.stack(u_u),
                                     sigmoid_scale=cfg.sigmoid_scale, shift=cfg.discrete_flow_shift, tokens=tokens)
    sigmas = sigmas.to(device)
    inputs = objective.flow_inputs(x0, ref, torch.stack(noise).to(device), sigmas, cfg.mode, cfg.loss)
    prediction = forward(module, inputs.model_input, sigmas, mb.context, mb.pooled, references=k)
    return objective.flow_loss(prediction, inputs)


def fixed_loss(cfg: TrainConfig, acc, patcher, forward: FluxForward, module, data: TrainData, patch_size: int,
               batches: int = 4) -> float:
    """Eq. 2 on the first few batches with fixed noise and timesteps (no gradient): a loss that is
    comparable between the start and the end of a run, unlike the noisy per-step loss."""
    values = []
    was_training = module.training
    module.eval()  # no dropout, and the training RNG streams stay untouched
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), acc.autocast():
        for i in range(min(batches, data.batches_per_epoch)):
            mb = data.micro_batch(i, acc.process_index, acc.device)
            values.append(step_loss(cfg, patcher, forward, module, mb, -1 - i, patch_size).float())
    module.train(was_training)
    return acc.reduce(torch.stack(values).mean(), reduction="mean").item()


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """Everything a running training holds (the loop's state is ``step`` and ``micro_step``)."""

    cfg: TrainConfig
    acc: object
    patcher: object
    dm: object                  # ComfyUI's FLUX module with the LoRA
    module: object              # the same, as accelerate prepared it (DDP-wrapped on several processes)
    forward: FluxForward
    optimizer: object
    scheduler: object
    data: TrainData
    targets: list
    encoders: Encoders
    samples: list
    losslog: LossLog
    result: TrainResult
    model_hash: str
    model_file: str | None
    step: int = 0
    micro_step: int = 0
    last_saved: int = -1

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def patch_size(self) -> int:
        return int(getattr(self.dm, "patch_size", 2))


def optimizer_step(run: Run) -> tuple[float, float]:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; (mean loss, next lr)."""
    cfg, acc = run.cfg, run.acc
    params = [p for _, p in lora.trainable_parameters(run.dm)]
    losses = []
    for _ in range(int(cfg.gradient_accumulation_steps)):
        mb = run.data.micro_batch(run.micro_step, acc.process_index, acc.device)
        with acc.accumulate(run.module):
            with acc.autocast():
                loss = step_loss(cfg, run.patcher, run.forward, run.module, mb, run.micro_step, run.patch_size)
            acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(params, float(cfg.max_grad_norm))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        run.micro_step += 1
    if not getattr(run.optimizer, "step_was_skipped", False):
        run.scheduler.step()
    run.step += 1
    return acc.reduce(torch.stack(losses).mean(), reduction="mean").item(), run.scheduler.get_last_lr()[0]


def save(run: Run, final: bool) -> None:
    """The LoRA file (final or per step) and, if enabled, the resumable state (all processes call this)."""
    cfg, acc = run.cfg, run.acc
    adapter = checkpoints.gather_adapter(acc, run.module, run.dm)
    if acc.is_main_process:
        path = (run.out_dir / f"{cfg.output_name}.safetensors" if final
                else checkpoints.step_lora_path(run.out_dir, cfg.output_name, run.step))
        run.result.lora_path = checkpoints.save_lora(path, adapter, run.targets, cfg, run.step, run.model_hash,
                                                     run.model_file, run.data.reference_range)
        if not final:
            checkpoints.prune_step_loras(run.out_dir, cfg.output_name, run.step, cfg.save_last_n_steps)
        run.losslog.plot()
    if cfg.save_state and run.last_saved != run.step:
        state = {"step": run.step, "micro_step": run.micro_step, "world_size": acc.num_processes,
                 "signature": checkpoints.shape_signature(cfg), "config": cfg.to_dict()}
        run.result.state_path = checkpoints.save_state(acc, run.out_dir, cfg.output_name, run.step, state,
                                                       cfg.save_last_n_steps_state, resumable(run), adapter)
        run.last_saved = run.step
    acc.wait_for_everyone()


def preview(run: Run) -> None:
    if run.samples and run.acc.is_main_process:
        from .sampling import sample_all

        cfg = run.cfg
        run.result.samples += sample_all(run.patcher, run.samples, run.encoders.vae, out_dir=run.out_dir / "sample",
                                         name=cfg.output_name, step=run.step, sampler=cfg.sample_sampler,
                                         scheduler=cfg.sample_scheduler, mode=cfg.mode)
    run.acc.wait_for_everyone()


def resumable(run: Run) -> checkpoints.Resumable:
    return checkpoints.Resumable(run.dm, run.optimizer, run.scheduler)


def diverged(run: Run, loss: float) -> checkpoints.Diverged:
    """The error a non-finite loss stops the run with: what happened and what is kept."""
    cfg = run.cfg
    state = checkpoints.latest_state(run.out_dir, cfg.output_name)
    kept = (f"the last good state is {state} (step {int(state.name.split('-step')[-1][:8])})" if state is not None
            else "no state had been saved yet (save_every_n_steps keeps some)")
    return checkpoints.Diverged("learning_rate", f"the loss became {loss} at step {run.step} (learning_rate "
                                f"{cfg.learning_rate:g}): training stopped without saving this step; {kept}.",
                                "Lower learning_rate (e.g. 1e-4), keep max_grad_norm at 1.0 and check the dataset "
                                "(dataset_report.txt); then start again, or --resume from the last good state.")


def setup(cfg: TrainConfig, components: Components | None, resume, paths=None) -> Run:
    """Dataset check, caches, encoders freed, FLUX + LoRA, optimizer, accelerate, resume. ``paths`` (a
    ``training.paths.PathPolicy``) confines every file the run reads and writes (the ComfyUI node)."""
    if paths is not None:
        paths.check_config(cfg)
    acc = make_accelerator(cfg)
    warn_sharded(cfg, acc)
    if not resume:  # before anything is written: never destroy an earlier run's results
        checkpoints.refuse_overwrite(Path(cfg.output_dir), cfg.output_name)
    elif resume is True and checkpoints.latest_state(Path(cfg.output_dir), cfg.output_name) is None:
        checkpoints.refuse_overwrite(Path(cfg.output_dir), cfg.output_name,
                                     "it saved no resumable state, so resuming would start over and overwrite them")
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        checkpoints.clean_temporaries(Path(cfg.output_dir), cfg.output_name,
                                      [Path(cfg.output_dir) / "sample", cfg.resolved_logging_dir])
    torch.manual_seed(cfg.seed)
    hashes = FileHashes(cfg.resolved_cache_dir)

    report, specs = check_dataset(cfg, acc, paths)
    encoders = open_encoders(cfg, components, hashes)
    data = cache_data(cfg, acc, report, specs, encoders, hashes)
    samples = prepare_samples(cfg, specs, encoders, paths)
    release_encoders(encoders, keep_vae=bool(samples))

    patcher, model_file, model_hash = load_model(cfg, components, hashes, acc.device)
    dm = patcher.model.diffusion_model
    targets = add_lora(cfg, dm)
    optimizer, scheduler = make_optimizer(cfg, dm, total_steps(cfg, data))
    forward = FluxForward(dm, gradient_checkpointing=cfg.gradient_checkpointing, guidance=cfg.guidance_scale,
                          dtype=compute_dtype(patcher), reference_attention=cfg.reference_attention)
    from ..engine import oneway  # imports ComfyUI: here, so importing the trainer does not need it yet

    oneway.tag(patcher, cfg.reference_attention)  # previews, and whoever samples this patcher later, use the mode
    ignore_frozen_in_ddp(dm)
    module, optimizer = acc.prepare(dm, optimizer)

    step, micro_step = resume_run(cfg, acc, resume, checkpoints.Resumable(dm, optimizer, scheduler))
    run = Run(cfg, acc, patcher, dm, module, forward, optimizer, scheduler, data, targets, encoders, samples,
              LossLog(cfg.resolved_logging_dir, cfg.output_name), TrainResult(None, None, step, report=report),
              model_hash, model_file, step, micro_step, last_saved=step if resume else -1)
    if acc.is_main_process:
        run.losslog.start(step)
    return run


def train(cfg: TrainConfig, components: Components | None = None, *, resume: str | bool | None = None,
          on_step=None, paths=None) -> TrainResult:
    """Train a LoRA as ``cfg`` says. ``components`` replaces the ComfyUI model files (tests, benchmarks);
    ``resume`` is a state folder, or True for the newest one in ``output_dir``; ``on_step(StepInfo)``
    is called after every optimizer step (progress bars, cancelling)."""
    from tqdm.auto import tqdm

    run = setup(cfg, components, resume, paths)
    acc, result = run.acc, run.result
    steps = total_steps(cfg, run.data)
    if cfg.sample_at_first and run.step == 0:
        preview(run)
    result.fixed_loss_before = fixed_loss(cfg, acc, run.patcher, run.forward, run.module, run.data, run.patch_size)
    bar = tqdm(total=steps, initial=run.step, desc=cfg.output_name, unit="step", disable=not acc.is_main_process,
               dynamic_ncols=True)
    durations: list[float] = []
    run.module.train()
    while run.step < steps:
        t0 = time.perf_counter()
        loss, lr = optimizer_step(run)
        durations.append(time.perf_counter() - t0)
        result.losses.append(loss)
        result.step = run.step
        if acc.is_main_process:
            run.losslog.add(run.step, loss, lr, durations[-1], run.data.epoch_of(run.micro_step - 1))
        if not math.isfinite(loss):  # every process sees the same reduced loss, so all stop here
            bar.close()
            if acc.is_main_process:
                run.losslog.plot()
            raise diverged(run, loss)
        if result.jumped_at is None:
            jump = sustained_jump(result.losses)
            if jump is not None:
                result.jumped_at = run.step - (len(result.losses) - jump) + 1
                log.warning("the loss jumped at step %d to %.4g (more than 10x what it was) and has stayed there: the "
                            "run has probably diverged. Lower learning_rate or use lr_scheduler = \"cosine\"; "
                            "save_every_n_steps keeps the LoRAs from before the jump.", result.jumped_at, loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        if cfg.save_every_n_steps and run.step % int(cfg.save_every_n_steps) == 0 and run.step < steps:
            save(run, final=False)
        if cfg.sample_every_n_steps and run.step % int(cfg.sample_every_n_steps) == 0:
            preview(run)
        if on_step is not None:
            on_step(StepInfo(run.step, loss, lr, result))
    bar.close()
    result.fixed_loss_after = fixed_loss(cfg, acc, run.patcher, run.forward, run.module, run.data, run.patch_size)
    save(run, final=True)
    timed = durations[1:] or durations  # the first step pays one-off costs
    result.seconds_per_step = sorted(timed)[len(timed) // 2] if timed else 0.0
    result.peak_memory_bytes = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    if acc.is_main_process:
        log.info("done: %d steps, %.3f s/step; loss on fixed draws of the first batches %.4f -> %.4f; LoRA %s",
                 run.step, result.seconds_per_step, result.fixed_loss_before, result.fixed_loss_after, result.lora_path)
    acc.end_training()
    return result


def resume_run(cfg: TrainConfig, acc, resume, objects: checkpoints.Resumable) -> tuple[int, int]:
    """Restore LoRA, optimizer, scheduler, RNG states, step and data position; (0, 0) for a fresh run."""
    if not resume:
        return 0, 0  # setup() refused to start over an earlier run's results
    path = Path(resume) if isinstance(resume, (str, Path)) else checkpoints.latest_state(Path(cfg.output_dir), cfg.output_name)
    if path is None:
        checkpoints.refuse_overwrite(Path(cfg.output_dir), cfg.output_name,
                                     "it saved no resumable state, so resuming would start over and overwrite them")
        if acc.is_main_process:
            log.warning("--resume: no complete state in %s yet, starting at step 0", cfg.output_dir)
        return 0, 0
    if not (path / checkpoints.TRAINER_FILE).is_file():
        raise InputError("--resume", f"{path} is not a complete training state.",
                         "Give a *-state folder written by this trainer, or --resume alone for the newest one.")
    saved = checkpoints.read_trainer_state(path)
    if saved.get("signature") != checkpoints.shape_signature(cfg):
        raise InputError("--resume", f"{path} was trained with {saved.get('signature')}, this config says "
                         f"{checkpoints.shape_signature(cfg)}.", "Resume with the same mode, preset and network_dim.")
    if saved.get("world_size") != acc.num_processes:
        log.warning("resuming a %s-process state on %d processes: the data order restarts its epoch plan",
                    saved.get("world_size"), acc.num_processes)
    checkpoints.load_state(acc, path, objects)
    if acc.is_main_process:
        log.info("resumed from %s at step %d", path, saved["step"])
    return int(saved["step"]), int(saved["micro_step"])
