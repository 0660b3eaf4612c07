"""Trainer step time and peak memory.

1. Overhead of the method (CPU, small random FLUX): one training step of the masked
   [noisy target | clean reference] objective vs a plain text-to-image LoRA step on an image with the
   same token count (target: <= 1.05x). Each variant runs in its own process, so peak RSS is its own.

       python benchmarks/bench_train.py                       # CPU, small model

2. Real FLUX.1-dev dimensions with random weights (no download), preset B at ranks 128 and 512,
   512 x 512 pairs (a 512 x 1024 grid: 2048 image tokens + 512 text tokens), bf16 autocast, gradient
   checkpointing; reports s/it and peak VRAM (compare kohya: A6000, rank 128, 512^2 single images,
   8.25 s/it bf16 and 44 GB; 24 GB with fp8_base):

       python benchmarks/bench_train.py --size flux-dev --device cuda --ranks 128 512 [--fp8]

   ``--double/--single`` shrink the block counts (e.g. a CPU smoke run of the same code path:
   ``--size flux-dev --device cpu --double 1 --single 1 --resolution 64 --text-tokens 16 --ranks 4``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SMALL = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=64, context_in_dim=64, hidden_size=256,
             mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=4, axes_dim=[16, 24, 24], theta=10000,
             patch_size=2, qkv_bias=True, guidance_embed=True)


def setup():
    from instruct_identity.engine import runtime

    runtime.setup_comfyui()


def build(size: str, device: str, dtype: torch.dtype, double: int | None, single: int | None):
    from instruct_identity.engine.synthetic import FLUX_DEV, random_flux

    cfg = dict(FLUX_DEV if size == "flux-dev" else SMALL)
    if double is not None:
        cfg["depth"] = double
    if single is not None:
        cfg["depth_single_blocks"] = single
    return random_flux(cfg, device=device, dtype=dtype), cfg


def run_child(args) -> dict:
    """Build the model once and time the variants step by step, interleaved (a busy shared CPU slows
    them alike); the minimum and median per variant are reported. Peak memory: CUDA's per-variant
    max_memory_allocated, or on the CPU the process max RSS (``--variants`` with one variant per process)."""
    setup()
    from instruct_identity.training import lora
    from instruct_identity.training.config import TrainConfig
    from instruct_identity.training.data import MicroBatch
    from instruct_identity.training.model import FluxForward, compute_dtype
    from instruct_identity.training.trainer import step_loss

    cuda = args.device.startswith("cuda")
    device = torch.device(args.device)
    weight_dtype = torch.float8_e4m3fn if args.fp8 else (torch.bfloat16 if cuda else torch.float32)
    patcher, unet = build(args.size, args.device, weight_dtype, args.double, args.single)
    dm = patcher.model.diffusion_model
    lora.inject(dm, args.preset, args.rank, float(args.rank))
    dm.train()
    fwd = FluxForward(dm, gradient_checkpointing=args.checkpointing, guidance=1.0, dtype=compute_dtype(patcher))
    params = [p for _, p in lora.trainable_parameters(dm)]
    opt = torch.optim.AdamW(params, lr=1e-4)
    h = w = args.resolution // 8
    g = torch.Generator().manual_seed(0)
    bs = args.batch
    ctx = torch.randn(bs, args.text_tokens, unet["context_in_dim"], generator=g).to(device)
    pooled = torch.randn(bs, unet["vec_in_dim"], generator=g).to(device)
    setups = {}
    for variant in args.variants:
        mode = "identity" if variant == "masked" else "grid"
        cfg = TrainConfig(dataset_config="-", mode=mode, preset=args.preset, network_dim=args.rank,
                          mixed_precision="bf16" if cuda else "no").finalize()
        if mode == "identity":  # [noisy target | clean reference] on an H x 2W grid, masked loss
            tgt, ref = torch.randn(bs, 16, h, w, generator=g), torch.randn(bs, 16, h, w, generator=g)
        else:  # a plain image with the same token count as that grid, full loss
            tgt, ref = torch.randn(bs, 16, h, 2 * w, generator=g), None
        mb = MicroBatch(tgt.to(device), ref.to(device) if ref is not None else None, ctx, pooled, list(range(bs)), 0)
        setups[variant] = (cfg, mb)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    times = {v: [] for v in args.variants}
    cpu_times = {v: [] for v in args.variants}
    peaks = {v: 0 for v in args.variants}
    for i in range(args.warmup + args.steps):
        for variant, (cfg, mb) in setups.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0, c0 = time.perf_counter(), time.process_time()
            with autocast:
                loss = step_loss(cfg, patcher, fwd, dm, mb, i, int(unet["patch_size"]))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
                peaks[variant] = max(peaks[variant], torch.cuda.max_memory_allocated())
            if i >= args.warmup:
                times[variant].append(time.perf_counter() - t0)
                cpu_times[variant].append(time.process_time() - c0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = (h // 2) * (2 * w // 2)
    return {v: {"variant": v, "rank": args.rank, "preset": args.preset, "tokens": tokens, "text_tokens": args.text_tokens,
                "median_s": statistics.median(times[v]), "min_s": min(times[v]),
                "cpu_median_s": statistics.median(cpu_times[v]),
                "peak_bytes": peaks[v] if cuda else rss,
                "peak_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
                "lora_params_M": sum(p.numel() for p in params) / 1e6} for v in args.variants}


def spawn(args, **over) -> dict:
    cmd = [sys.executable, __file__, "--child"]
    for k, v in {**vars(args), **over}.items():
        if k in ("child", "ranks"):
            continue
        if k == "variants":
            cmd += ["--variants", *v]
            continue
        if k == "checkpointing":
            if not v:
                cmd.append("--no-checkpointing")
        elif isinstance(v, bool):
            if v:
                cmd.append(f"--{k.replace('_', '-')}")
        elif v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "flux-dev"], default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ranks", type=int, nargs="+", default=None)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--preset", default="B")
    p.add_argument("--resolution", type=int, default=None, help="pixels per image (each half of the grid)")
    p.add_argument("--text-tokens", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--fp8", action="store_true", help="base weights in float8_e4m3fn (the 24 GB path)")
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--double", type=int, default=None)
    p.add_argument("--single", type=int, default=None)
    p.add_argument("--variants", nargs="+", choices=["masked", "plain"], default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable CPU-time numbers)")
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    real = args.size == "flux-dev"
    args.resolution = args.resolution or (512 if real else 128)
    args.text_tokens = args.text_tokens or (512 if real else 32)
    args.steps = args.steps or (5 if real else 8)
    args.variants = args.variants or (["masked"] if real else ["masked", "plain"])
    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps(run_child(args)))
        return
    ranks = args.ranks or ([128, 512] if real else [args.rank])
    cuda = args.device.startswith("cuda")
    for r in ranks:
        rows = spawn(args, rank=r)
        if not cuda and len(args.variants) > 1:  # CPU peak memory: one process per variant
            for v in args.variants:
                rows[v]["peak_bytes"] = spawn(args, rank=r, variants=[v], steps=1, warmup=0)[v]["peak_bytes"]
        for v, row in rows.items():
            print(f"{args.size:8s} {args.device:4s} preset {row['preset']} rank {r:4d} {v:6s}: "
                  f"{row['tokens']} image + {row['text_tokens']} text tokens, LoRA {row['lora_params_M']:.1f}M, "
                  f"{row['median_s']:.3f} s/it median, {row['min_s']:.3f} min (of {args.steps}), "
                  f"CPU time {row['cpu_median_s']:.3f} s/it, "
                  f"peak {row['peak_bytes'] / 2**30:.2f} GiB ({row['peak_kind']})", flush=True)
        if "masked" in rows and "plain" in rows:
            m, q = rows["masked"], rows["plain"]
            print(f"rank {r}: masked concat / plain LoRA step = {m['min_s'] / q['min_s']:.3f}x by min wall time, "
                  f"{m['median_s'] / q['median_s']:.3f}x by median wall time, "
                  f"{m['cpu_median_s'] / q['cpu_median_s']:.3f}x by median CPU time (target <= 1.05x); "
                  f"peak memory {m['peak_bytes'] / q['peak_bytes']:.3f}x", flush=True)


if __name__ == "__main__":
    main()
