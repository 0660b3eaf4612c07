"""One job of the toy replication: (train a LoRA with the project's trainer, then) sample the held-out
items of every evaluation split through the pack's sampling recipe and score them. A job is a plain
dict, so jobs can run in worker processes (one torch thread each) as well as inline; its result does
not depend on where it ran. Each job's result is cached in its own folder, named by a hash of the
job's full configuration (``job_key``): rerunning the benchmark reruns only jobs whose configuration
changed or that are new.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("toy")

JOB_FORMAT = "toy-job-v2"
KEY_FIELDS = ("kind", "spec", "lora", "base_key", "train_pairs", "train_seed", "size", "seed", "eval_items",
              "heldout_pairs", "sample_steps", "splits", "caption")


def setup(threads: int) -> None:
    import torch

    from instruct_identity.engine.runtime import setup_comfyui

    setup_comfyui(cpu=True)
    torch.set_num_threads(threads)


def quiet() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.ERROR)  # ComfyUI logs through the root logger
    for noisy in ("accelerate", "instruct_identity.training", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    log.setLevel(logging.INFO)


def job_key(job: dict) -> str:
    key = {"format": JOB_FORMAT, **{k: job.get(k) for k in KEY_FIELDS}}
    if job.get("route"):  # only where set, so the keys of jobs without one stay as they were
        key["route"] = job["route"]
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def job_dir(job: dict) -> Path:
    return Path(job["work"]) / "runs" / f"{job['name']}-s{job['spec']['seed'] if job.get('spec') else 0}-{job_key(job)}"


def cached_result(job: dict) -> dict | None:
    f = job_dir(job) / "result.json"
    if f.is_file():
        out = json.loads(f.read_text())
        out["cached"] = True
        return out
    return None


def eval_items(job: dict, split: str):
    from instruct_identity.miniature import sprites

    from . import data, evaluate

    _, test_chars = sprites.split_characters(100_000, 200, seed=0)
    offset = {"distinct": 1000, "near": 1500}[split]
    pairs = data.make_pairs(test_chars, job["eval_items"], job["size"], job["seed"] + offset, split)
    return evaluate.make_items(pairs, job["size"])


def heldout_pairs(job: dict):
    from instruct_identity.miniature import sprites

    from . import data

    _, test_chars = sprites.split_characters(100_000, 200, seed=0)
    return data.make_pairs(test_chars, job["heldout_pairs"], job["size"], job["seed"] + 2000, "train")


def run_job(job: dict, worker: bool = False) -> dict:
    """Train (``kind == "lora"``) or not (``"zero_shot"``: the base alone) and evaluate one job; cached."""
    if worker:
        quiet()
        setup(job["threads"])
    hit = cached_result(job)
    if hit is not None:
        log.info("%s (seed %s): cached", job["name"], hit.get("seed"))
        return hit
    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.miniature import files, load_state

    from . import data, evaluate, lora_runs

    name, folder = job["name"], job_dir(job)
    base_state, spec, _ = load_state(job["base_file"])
    unet = spec.unet_config
    codec, te = files.make_codec(spec.codec), files.make_text_encoder(spec.text_encoder)
    heldout = heldout_pairs(job)
    out: dict = {"name": name, "key": job_key(job), "kind": job["kind"], "label": job.get("label", name)}
    if job["kind"] == "zero_shot":
        model = lora_runs.load_with_lora(unet, base_state, None)
        out.update({"preset": "-", "loss": "-", "seed": 0, "steps": 0, "extra": {},
                    "heldout_loss": lora_runs.heldout_loss(model, codec, te, heldout, job["size"], job["seed"] + 3000)})
    else:
        rs = lora_runs.RunSpec(**job["spec"])
        settings = lora_runs.LoraSettings(**job["lora"])
        log.info("LoRA run %s seed %d: %d steps", name, rs.seed, training_steps(job))
        manifest = Path(job["manifest"])
        info, trained = lora_runs.train_run(rs, settings, manifest, folder, Path(job["work"]) / "trainer-cache",
                                            base_state, unet, codec, te, job["base_hash"])
        info["heldout_loss"] = lora_runs.heldout_loss(trained, codec, te, heldout, job["size"], job["seed"] + 3000)
        del trained
        losses = info.pop("losses")
        info["loss_curve"] = downsample(losses, 60)
        info["loss_first20"], info["loss_last20"] = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
        out.update({"preset": rs.preset, "loss": rs.loss, "seed": rs.seed, "extra": rs.extra, "rank": settings.rank,
                    "lr": settings.lr, "batch": settings.batch, **info})
        model = lora_runs.load_with_lora(unet, base_state, info["lora"])
    charis = evaluate.CharisColor()
    out["splits"], out["items"], out["eval_wall_s"] = {}, {}, 0.0
    grid_items, grid_outs = [], []
    for split in job["splits"]:
        items = eval_items(job, split)
        captions = [data.zero_shot_caption(it.pair.tgt_pose) for it in items] if job.get("caption") == "sheet" else None
        t0 = time.perf_counter()
        outs = evaluate.sample_identity(model, codec, te, items, steps=job["sample_steps"], seed=job["seed"] + 5000,
                                        captions=captions, route=job.get("route") or "patch")
        scored = evaluate.score(outs, items, charis)
        out["eval_wall_s"] += time.perf_counter() - t0
        out["splits"][split], out["items"][split] = scored["mean"], scored["items"]
        k = max(1, job["grid_items"] // len(job["splits"]))
        grid_items += items[:k]
        grid_outs.append(outs[:k])
        m = scored["mean"]
        log.info("%s seed %s [%s]: part colour %.3f, CHARIS colour %.3f, silhouette IoU %.3f, copy-paste %.3f", name,
                 out["seed"], split, m["part_color_acc"], m["charis_color"], m["sil_iou"], m["copy_paste"])
    out["charis_error"] = charis.error
    folder.mkdir(parents=True, exist_ok=True)
    out["grid"] = str(folder / "grid.png")
    evaluate.grid_png(folder / "grid.png", grid_items, np.concatenate(grid_outs),
                      f"{name} (seed {out['seed']}): {job.get('label', name)} | splits {' + '.join(job['splits'])} | "
                      "each triplet: reference | ground truth | output", n=len(grid_items))
    atomic_write_text(folder / "result.json", json.dumps(out, default=str))
    out["cached"] = False
    return out


def downsample(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return [round(float(v), 5) for v in values]
    chunks = np.array_split(np.asarray(values, np.float64), n)
    return [round(float(c.mean()), 5) for c in chunks]


def training_steps(job: dict) -> int:
    """How many LoRA steps a job trains (0: none), its ``extra`` options winning as in the trainer config."""
    if job["kind"] != "lora":
        return 0
    return int((job["spec"].get("extra") or {}).get("max_train_steps", job["lora"]["steps"]))


def run_all(jobs: list[dict], workers: int, progress=None) -> list[dict]:
    """Run ``jobs`` inline (``workers <= 1``) or in that many spawned processes; results in job order.
    Cached jobs are read here without starting a worker; the longest jobs start first, so the short ones
    fill the other workers' time instead of one long job running alone at the end."""
    results: list = [cached_result(j) for j in jobs]
    todo = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: -training_steps(jobs[i]))
    bar = progress(total=len(todo)) if progress is not None and todo else None
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = run_job(jobs[i])
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_job, jobs[i], True): i for i in todo}
            for f in as_completed(futures):
                results[futures[f]] = f.result()
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return results
