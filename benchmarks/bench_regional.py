"""What regional prompting costs: one sampling step with and without it, and the mask build.

    .venv/bin/python benchmarks/bench_regional.py                      # tiny random FLUX (hidden 128), CPU
    .venv/bin/python benchmarks/bench_regional.py --model test --canvas 256 --repeats 2
                                                                       # 3072-wide, 1+1 blocks (a FLUX block's real size)
    .venv/bin/python benchmarks/bench_regional.py --device cuda        # on a GPU, if ComfyUI sees one

For R = 4, 9, 16 regions (a near-square grid on the canvas) it times one real ComfyUI sampling step
(``comfy.sample.sample``, 1 step of euler) in these configurations:

* ``base``       the base prompt alone, unpatched model;
* ``regional``   inside the injection window, every block masked, base blending 0.2, global image attention;
* ``blocked``    the same with blocked image attention and no base blending;
* ``outside``    the patched model at a step outside the window (regional text is dropped there);

plus the cost of building the joint-attention mask (bool, then the conditioning's float mask) for
the benchmark's canvas and for FLUX.1's usual 1024x1024 with 256 T5 tokens per prompt.

It also measures, on the same random model, how much region B's output moves when only region A's
prompt changes (blocked: exactly 0; global: > 0). That shows the information path, not identity
consistency: comparing identity consistency needs real weights (see compare_image_attention.py).
Random weights: timings are real, pictures are noise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from instruct_identity.engine import runtime, synthetic


def build_model(kind: str, device: str):
    runtime.setup_comfyui(cpu=device == "cpu")
    if kind == "tiny":
        cfg = synthetic.tiny_flux_config("flux")
    else:  # the size of one real FLUX.1 block: 3072 wide, 24 heads, CLIP-L-wide text (like the server tests' file)
        cfg = synthetic.tiny_flux_config("flux", hidden=3072, heads=24, context=768, vec=768)
        cfg["axes_dim"] = [16, 56, 56]
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    patcher = synthetic.random_flux(cfg, device=device, dtype=dtype)
    return patcher, cfg["context_in_dim"], cfg["vec_in_dim"]


def grid_for(r: int) -> tuple[int, int]:
    rows = int(math.floor(math.sqrt(r)))
    while r % rows:
        rows -= 1
    return rows, r // rows


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best, median) seconds over ``repeats`` runs after a warm-up. Best-of is what we print: on a
    shared machine the median mostly measures the neighbours."""
    fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def interleaved(fns: dict, repeats: int) -> dict:
    """{name: (best, median)} timing each function once per round, round after round."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "test"], default="tiny")
    ap.add_argument("--canvas", type=int, default=512, help="square canvas in pixels")
    ap.add_argument("--text-tokens", type=int, default=77, help="tokens per prompt (CLIP-L 77; FLUX T5 in ComfyUI: 256)")
    ap.add_argument("--regions", type=int, nargs="+", default=[4, 9, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    patcher, ctx, vec = build_model(args.model, args.device)
    import comfy.sample

    from instruct_identity.core import regions as R
    from instruct_identity.engine import regional as P

    g = torch.Generator().manual_seed(0)
    base = [[torch.randn(1, args.text_tokens, ctx, generator=g), {"pooled_output": torch.randn(1, vec, generator=g), "guidance": 3.5}]]
    lat_hw = (args.canvas // 8, args.canvas // 8)
    latent = torch.zeros(1, 16, *lat_hw)
    noise = torch.randn(latent.shape, generator=g)

    def step(model, cond, latent=latent, noise=noise):
        return comfy.sample.sample(model, noise, 1, 1.0, "euler", "simple", cond, cond, latent, disable_pbar=True, seed=0)

    results = {"model": args.model, "device": args.device, "threads": args.threads, "canvas": args.canvas,
               "text_tokens": args.text_tokens, "image_tokens": (args.canvas // 16) ** 2, "rows": []}
    t_base, t_base_med = timed(lambda: step(patcher, base), args.repeats)
    results["base_step_s"] = t_base
    results["base_step_median_s"] = t_base_med
    print(f"model={args.model} device={args.device} threads={args.threads} canvas={args.canvas}px "
          f"image tokens={(args.canvas // 16) ** 2} text tokens/prompt={args.text_tokens}")
    print(f"base prompt only: {t_base * 1000:.1f} ms/step (best of {args.repeats}; median {t_base_med * 1000:.1f} ms)")
    print(f"{'R':>3} {'tokens':>7} {'base':>9} {'regional':>10} {'x base':>7} {'blocked':>10} {'outside':>10} "
          f"{'mask bool':>10} {'mask cond':>10} {'FLUX-1024 mask':>15} {'B moves (blocked/global)':>26}")
    for r in args.regions:
        rows, cols = grid_for(r)
        layout = R.grid_layout(args.canvas, args.canvas, rows, cols, 16, [f"cell {i}" for i in range(r)])
        embeds = [torch.randn(1, args.text_tokens, ctx, generator=g) for _ in range(r)]

        def setup(mode, **opts):
            cond, texts = P.regional_conditioning(base, embeds, layout, mode)
            m = P.patch_model(patcher, layout, texts, mode, P.RegionalOptions(**opts))
            return m, cond, texts

        m_reg, c_reg, texts = setup("global", base_ratio=0.2, start=0.0, end=1.0)
        m_blk, c_blk, _ = setup("blocked", base_ratio=0.0, start=0.0, end=1.0)
        m_out, c_out, _ = setup("global", base_ratio=0.2, start=0.5, end=1.0)
        # interleaved rounds: the base and every configuration see the same background load
        t = interleaved({"base": lambda: step(patcher, base), "regional": lambda: step(m_reg, c_reg),
                         "blocked": lambda: step(m_blk, c_blk), "outside": lambda: step(m_out, c_out)}, args.repeats)
        (t_b, _), (t_reg, t_reg_med), (t_blk, _), (t_out, _) = t["base"], t["regional"], t["blocked"], t["outside"]

        tok = R.token_grid(args.canvas, args.canvas)
        t_mask, _ = timed(lambda: R.regional_mask(layout, texts[0], *tok, "global"), max(3, args.repeats))
        t_cond, _ = timed(lambda: P.regional_conditioning(base, embeds, layout, "global"), max(3, args.repeats))
        big = R.grid_layout(1024, 1024, rows, cols, 16, [f"cell {i}" for i in range(r)])
        big_text = R.TextLayout(256, (256,) * r)
        t_big, _ = timed(lambda: R.regional_mask(big, big_text, 64, 64, "global"), 3)

        # information path between cells: change region A's prompt, look at region B's output
        moves = {}
        for mode in ("blocked", "global"):
            outs = []
            for shift in (0.0, 1.0):
                e = [embeds[0] + shift] + embeds[1:]
                cond, tx = P.regional_conditioning(base, e, layout, mode)
                m = P.patch_model(patcher, layout, tx, mode, P.RegionalOptions(base_ratio=0.0, start=0.0, end=1.0))
                outs.append(step(m, cond))
            labels = layout.labels(*lat_hw)
            bmask = labels == (r - 1)                   # the last cell, far from cell 0
            moves[mode] = float((outs[0] - outs[1])[..., bmask].abs().mean())

        n_tok = texts[0].total + (args.canvas // 16) ** 2
        row = dict(regions=r, grid=f"{rows}x{cols}", tokens=n_tok, base_s=t_b, regional_s=t_reg, regional_median_s=t_reg_med,
                   blocked_s=t_blk, outside_s=t_out,
                   mask_bool_s=t_mask, mask_cond_s=t_cond, flux1024_mask_s=t_big, b_moves_blocked=moves["blocked"],
                   b_moves_global=moves["global"])
        results["rows"].append(row)
        print(f"{r:>3} {n_tok:>7} {t_b * 1000:>7.1f}ms {t_reg * 1000:>8.1f}ms {t_reg / t_b:>6.2f}x {t_blk * 1000:>8.1f}ms {t_out * 1000:>8.1f}ms "
              f"{t_mask * 1000:>8.2f}ms {t_cond * 1000:>8.2f}ms {t_big * 1000:>13.1f}ms "
              f"{moves['blocked']:>12.2e} / {moves['global']:.2e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
