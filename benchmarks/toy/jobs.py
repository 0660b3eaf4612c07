"""One evaluation job of the toy replication: (train a LoRA with the project's trainer, then) sample the
held-out items through the sampler patch and score them. A job is a plain dict, so jobs can run in
worker processes (one torch thread each) as well as inline; its result does not depend on where it ran.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("toy")

RUN_LABELS = {
    "baseline": "untrained LoRA (= base model)",
    "B-masked": "preset B, masked loss (the paper's method)",
    "B-full": "preset B, full loss",
    "A-masked": "preset A (attention), masked",
    "C-masked": "preset C (+ modulation), masked",
    "B-masked-seed2": "preset B, masked, 2nd training seed",
}


def setup(threads: int) -> None:
    import sys

    import torch

    repo = str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from instruct_identity.training.model import setup_comfyui

    setup_comfyui(cpu=True)
    torch.set_num_threads(threads)


def _quiet() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.ERROR)  # ComfyUI logs through the root logger
    for noisy in ("accelerate", "instruct_identity.training", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    log.setLevel(logging.INFO)


def eval_items(job: dict):
    from . import data, evaluate, sprites

    _, test_chars = sprites.split_characters(100_000, 200, seed=0)
    pairs = data.make_pairs(test_chars, job["eval_items"], job["size"], job["seed"] + 1000)
    heldout = data.make_pairs(test_chars, job["heldout_pairs"], job["size"], job["seed"] + 2000)
    return evaluate.make_items(pairs, job["size"]), heldout


def run_job(job: dict, worker: bool = False) -> dict:
    """Train (unless ``job["spec"]`` is None: the untrained-LoRA baseline) and evaluate one run."""
    if worker:
        _quiet()
        setup(job["threads"])
    from safetensors.torch import load_file

    from . import components, evaluate, lora_runs

    name = job["name"]
    unet = job["unet"]
    base_state = load_file(job["base_file"])
    codec, te = components.PixelCodec(), components.WordEncoder()
    items, heldout = eval_items(job)
    out: dict = {"name": name}
    if job["spec"] is None:
        model = lora_runs.load_with_lora(unet, base_state, None)
        out.update({"preset": "-", "loss": "-", "seed": job["seed"], "steps": 0,
                    "heldout_loss": lora_runs.heldout_loss(model, codec, te, heldout, job["size"], job["seed"] + 3000)})
    else:
        spec = lora_runs.RunSpec(**job["spec"])
        settings = lora_runs.LoraSettings(seed=spec.seed, **job["lora"])
        log.info("LoRA run %s (%s): %d steps", name, RUN_LABELS.get(name, name), settings.steps)
        info, trained = lora_runs.train_run(spec, settings, Path(job["manifest"]), Path(job["work"]), base_state, unet,
                                            codec, te, job["base_hash"])
        info["heldout_loss"] = lora_runs.heldout_loss(trained, codec, te, heldout, job["size"], job["seed"] + 3000)
        del trained
        losses = info.pop("losses")
        info["loss_curve"] = _downsample(losses, 60)
        info["loss_first20"], info["loss_last20"] = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
        out.update({"preset": spec.preset, "loss": spec.loss, "seed": spec.seed, "rank": settings.rank,
                    "lr": settings.lr, "batch": settings.batch, **info})
        model = lora_runs.load_with_lora(unet, base_state, info["lora"])
    t0w, t0c = time.perf_counter(), time.process_time()
    outs = evaluate.sample_identity(model, codec, te, items, steps=job["sample_steps"], seed=job["seed"] + 5000)
    scored = evaluate.score(outs, items, evaluate.CharisColor())
    out["eval_wall_s"], out["eval_cpu_s"] = time.perf_counter() - t0w, time.process_time() - t0c
    out["metrics"], out["items"] = scored["mean"], scored["items"]
    evaluate.grid_png(Path(job["images"]) / f"{name}.png", items, outs,
                      f"{name}: {RUN_LABELS.get(name, name)} | each triplet: reference | ground truth | output",
                      n=job["grid_items"])
    m = scored["mean"]
    log.info("%s: CHARIS colour %.3f, part colour %.3f, silhouette IoU %.3f, copy-paste %.3f", name,
             m["charis_color"], m["part_color_acc"], m["sil_iou"], m["copy_paste"])
    return out


def _downsample(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return [round(float(v), 5) for v in values]
    chunks = np.array_split(np.asarray(values, np.float64), n)
    return [round(float(c.mean()), 5) for c in chunks]


def run_all(jobs: list[dict], workers: int) -> list[dict]:
    """Run ``jobs`` inline (``workers <= 1``) or in that many spawned processes; results in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [run_job(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, j, True) for j in jobs]
        return [f.result() for f in futures]
