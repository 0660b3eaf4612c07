"""Cost of the reference-concat sampler patch.

    .venv/bin/python benchmarks/bench_reference.py            # small random FLUX on the CPU
    .venv/bin/python benchmarks/bench_reference.py --real     # FLUX.1 dimensions, random weights, GPU

Prints, for one sampling run of the same H x 2W latent: time with and without the patch (overhead
ratio, target <= 1.02), and H x 2W vs H x W (measured ratio next to the FLOP ratio). No weights
are downloaded; the model is built with random weights in-process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from instruct_identity.engine import runtime, synthetic


def flux_flops(tokens_img: int, tokens_txt: int, hidden: int, depth: int, depth_single: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of the FLUX blocks (matmuls + attention), enough for ratios."""
    n = tokens_img + tokens_txt
    d = hidden
    attn = 4 * n * n * d  # QK^T and AV
    double = 2 * n * d * (3 * d + d + 2 * mlp_ratio * d) + attn
    single = 2 * n * d * (3 * d + mlp_ratio * d + d + mlp_ratio * d) + attn
    return depth * double + depth_single * single


def build(args):
    """(model, unet_config, context width, pooled width): FLUX.1-dev dimensions on the accelerator with
    ``--real``, else a small FLUX of ``--hidden`` on the CPU; random weights either way."""
    if args.real:
        import comfy.model_management

        cfg = dict(synthetic.FLUX_DEV)
        dev = comfy.model_management.get_torch_device()
        return synthetic.random_flux(cfg, device=dev, dtype=torch.bfloat16), cfg, cfg["context_in_dim"], cfg["vec_in_dim"]
    hidden, heads = args.hidden, args.hidden // 64
    cfg = synthetic.tiny_flux_config("flux", hidden=hidden, heads=heads, context=64, vec=64)
    return synthetic.tiny_flux("flux", hidden=hidden, heads=heads, context=64, vec=64), cfg, 64, 64


def sample(model, latent, cond, steps, mask=None):
    import comfy.sample

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)).to(latent)
    sync()
    t = clock()
    comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent, noise_mask=mask,
                        disable_pbar=True, seed=0)
    sync()
    return clock() - t


def clock() -> float:
    """GPU: wall time. CPU: this process's CPU time on one thread, which other load on a shared
    machine barely disturbs (wall time there measures the neighbours)."""
    return time.perf_counter() if torch.cuda.is_available() else time.process_time()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="FLUX.1-dev dimensions (12B, random weights); needs a GPU")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="target sizes in px (default 256 CPU; 512 1024 real)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size of the small CPU model")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    sizes = args.sizes or ([512, 1024] if args.real else [256])
    runtime.setup_comfyui(cpu=not args.real)
    if not args.real:
        torch.set_num_threads(1)
    from instruct_identity.core import layout
    from instruct_identity.engine.patch import reference_patch_of
    from instruct_identity.engine.sampling import identity_inputs

    model, cfg, ctx, vec = build(args)
    dev = model.load_device
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 512 if args.real else 77, ctx, generator=g).to(dev),
             {"pooled_output": torch.randn(1, vec, generator=g).to(dev), "guidance": 3.5}]]
    print(f"device: {dev} ({'wall' if torch.cuda.is_available() else 'single-thread CPU'} time); model: hidden {cfg['hidden_size']}, blocks {cfg['depth']}+{cfg['depth_single_blocks']}; "
          f"{args.steps} euler steps, median of {args.repeats}")
    for px in sizes:
        h = w = px // 8
        z_ref = torch.randn(1, 16, h, w, generator=g).to(dev)
        inputs = identity_inputs(model, z_ref)
        grid, mask, patched = inputs.latent, inputs.noise_mask, inputs.model
        single = torch.zeros_like(z_ref)
        sample(patched, grid, cond, 1, mask)  # warm-up (model load, kernels)
        sample(model, single, cond, 1)
        plain_t, patch_t, single_t = [], [], []
        for _ in range(args.repeats):  # interleaved, so drift hits all three alike
            plain_t.append(sample(model, grid, cond, args.steps, mask))
            patch_t.append(sample(patched, grid, cond, args.steps, mask))
            single_t.append(sample(model, single, cond, args.steps))
        plain, patched_s, single_s = (statistics.median(x) for x in (plain_t, patch_t, single_t))
        txt = cond[0][0].shape[1]
        tok = (h // 2) * (w // 2)
        flop_ratio = flux_flops(2 * tok, txt, cfg["hidden_size"], cfg["depth"], cfg["depth_single_blocks"]) / \
            flux_flops(tok, txt, cfg["hidden_size"], cfg["depth"], cfg["depth_single_blocks"])
        print(f"target {px}x{px} (grid {px}x{2 * px}, {2 * tok} image + {txt} text tokens):")
        print(f"  H x 2W unpatched {plain:.3f}s  patched {patched_s:.3f}s  overhead x{patched_s / plain:.3f} (target <= 1.02)")
        print(f"  H x 2W vs H x W  x{plain / single_s:.2f} measured, x{flop_ratio:.2f} by FLOPs")
        holder = reference_patch_of(patched)
        x = torch.randn_like(grid)
        n = 200
        t = clock()
        for _ in range(n):  # what the patch adds to one model call: the input and the output edit
            ref = holder.clean_reference(model.model, x)
            layout.with_reference(layout.with_reference(x, ref), ref)
        per_call = (clock() - t) / n
        print(f"  patch work per model call {per_call * 1e6:.0f} us = {100 * per_call / (plain / args.steps):.2f}% "
              f"of one model call")
        if args.real and torch.cuda.is_available():
            print(f"  peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
