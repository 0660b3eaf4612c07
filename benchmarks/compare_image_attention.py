"""Which image<->image attention gives more consistent identity on a character sheet: blocked or global?

Needs real weights, so it drives a running ComfyUI (with this pack and FLUX.1 dev) over its HTTP API:

    python benchmarks/compare_image_attention.py --url http://127.0.0.1:8188 \\
        --characters characters.txt --poses poses.txt --seeds 3 \\
        --charis-config charis.toml --out compare_out

For every character x seed it queues the same regional-prompted sheet twice -- ``image_attention``
``blocked`` and ``global``, everything else equal (same seed, prompts, grid, window, base ratio) --
downloads the sheets, cuts them into cells and scores every ordered pair of cells of a sheet with
CHARIS (benchmark mode; the reference is one cell, the generated image another, the prompt the
second cell's pose). Identity consistency of a sheet = mean CHARIS identity score over its cell
pairs (colour fidelity and the composite are reported too). The table compares the two modes per
character and overall, with a paired difference (global - blocked) and its spread over sheets.

The CHARIS config must name local models (CLIP for identity, ...); see docs/charis.md. With random
test weights the pictures are noise and the comparison means nothing -- that is why this is a
script for real weights and not a test. Nothing is downloaded; the models live in ComfyUI.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("compare_image_attention")
MODES = ("blocked", "global")


def sheet_graph(args, character: str, description: str, poses: list[str], seed: int, mode: str) -> dict:
    cells = "\n".join(f"{description}, {p}, full body, plain white background" for p in poses)
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": args.unet, "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": args.clip_l, "clip_name2": args.t5, "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": args.vae}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text":
              f"character sheet of {description}, the same character in every panel, plain white background"}},
        "6": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": args.guidance}},
        "7": {"class_type": "InstructIdentityGridLayout", "inputs": {
            "width": args.width, "height": args.height, "rows": args.rows, "cols": args.cols, "gutter": args.gutter,
            "prompts": cells, "captions": "\n".join(poses), "background_prompt": "plain white background"}},
        "8": {"class_type": "InstructIdentityRegionalPrompting", "inputs": {
            "model": ["1", 0], "clip": ["2", 0], "conditioning": ["6", 0], "layout": ["7", 0], "image_attention": mode,
            "base_ratio": args.base_ratio, "start": 0.0, "end": args.end, "double_blocks": "all", "single_blocks": "all"}},
        "9": {"class_type": "EmptySD3LatentImage", "inputs": {"width": args.width, "height": args.height, "batch_size": 1}},
        "10": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": ["8", 0], "positive": ["8", 1], "negative": ["10", 0], "latent_image": ["9", 0], "seed": seed,
            "steps": args.steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {"class_type": "InstructIdentitySaveSheet", "inputs": {
            "images": ["12", 0], "layout": ["7", 0], "filename_prefix": f"compare_image_attention/{mode}/{character}_{seed}",
            "character": character, "seed": seed}},
    }


class Comfy:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return r.read()

    def run(self, prompt: dict, timeout: float) -> dict:
        body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            pid = json.loads(r.read())["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = json.loads(self._get(f"/history/{pid}"))
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"].get("status_str") != "success":
                    raise RuntimeError(f"ComfyUI failed: {json.dumps(entry['status'])[:2000]}")
                return entry
            time.sleep(1.0)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s")

    def image(self, info: dict) -> np.ndarray:
        from PIL import Image

        q = urllib.parse.urlencode({"filename": info["filename"], "subfolder": info.get("subfolder", ""), "type": info["type"]})
        return np.asarray(Image.open(io.BytesIO(self._get("/view?" + q))).convert("RGB"))


def score_sheet(evaluator, sheet: np.ndarray, layout, captions: list[str]) -> dict:
    """Mean CHARIS axes over every ordered pair of cells (reference = one cell, generated = another)."""
    from PIL import Image

    from instruct_identity.charis.images import from_pil
    from instruct_identity.curation.pipeline import split_sheet
    from instruct_identity.curation.sheets import SheetInfo

    cells = [from_pil(Image.fromarray(c), f"cell {i + 1}") for i, c in enumerate(split_sheet(sheet, SheetInfo(layout)))]
    sums: dict[str, list[float]] = {}
    for i, ref in enumerate(cells):
        for j, gen in enumerate(cells):
            if i == j:
                continue
            result = evaluator.score_pair(ref, gen, captions[j])
            for axis in ("identity", "color"):
                v = result.value(axis)
                if v is not None:
                    sums.setdefault(axis, []).append(v)
            if result.composite is not None and result.composite.value is not None:
                sums.setdefault("charis", []).append(result.composite.value)
    return {k: statistics.fmean(v) for k, v in sums.items()}


def summarise(rows: list[dict]) -> str:
    lines = [f"{'character':<20} {'seed':>6} " + " ".join(f"{m + ' ' + a:>16}" for m in MODES for a in ("identity", "color"))]
    for r in rows:
        vals = " ".join(f"{r[m].get(a, float('nan')):>16.3f}" for m in MODES for a in ("identity", "color"))
        lines.append(f"{r['character']:<20} {r['seed']:>6} {vals}")
    for axis in ("identity", "color", "charis"):
        diffs = [r["global"][axis] - r["blocked"][axis] for r in rows if axis in r["global"] and axis in r["blocked"]]
        if diffs:
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            mean_b = statistics.fmean(r["blocked"][axis] for r in rows if axis in r["blocked"])
            mean_g = statistics.fmean(r["global"][axis] for r in rows if axis in r["global"])
            lines.append(f"{axis}: blocked {mean_b:.3f}, global {mean_g:.3f}, global - blocked {statistics.fmean(diffs):+.3f} "
                         f"(sd {sd:.3f} over {len(diffs)} sheets)")
        else:
            lines.append(f"{axis}: not computed (configure the CHARIS models for it)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--characters", type=Path, required=True, help="'name: description' per line (or CSV/JSON)")
    ap.add_argument("--poses", type=Path, required=True, help="one pose per line (rows x cols of them)")
    ap.add_argument("--seeds", type=int, default=3, help="sheets per character and mode")
    ap.add_argument("--charis-config", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("compare_image_attention"))
    ap.add_argument("--unet", default="flux1-dev.safetensors")
    ap.add_argument("--clip-l", default="clip_l.safetensors")
    ap.add_argument("--t5", default="t5xxl_fp16.safetensors")
    ap.add_argument("--vae", default="ae.safetensors")
    ap.add_argument("--width", type=int, default=1520)
    ap.add_argument("--height", type=int, default=1008)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--cols", type=int, default=3)
    ap.add_argument("--gutter", type=int, default=16)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--base-ratio", type=float, default=0.2)
    ap.add_argument("--end", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from instruct_identity.charis import Evaluator, load_config
    from instruct_identity.core.regions import grid_layout
    from instruct_identity.curation.sheets import item_seed, parse_characters, parse_poses

    chars = parse_characters(args.characters.read_text(encoding="utf-8"))
    poses = parse_poses(args.poses.read_text(encoding="utf-8"))[: args.rows * args.cols]
    evaluator = Evaluator(load_config(args.charis_config, {"mode": "benchmark"}))
    layout = grid_layout(args.width, args.height, args.rows, args.cols, args.gutter, poses, captions=poses)
    comfy = Comfy(args.url)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in chars:
        for k in range(args.seeds):
            seed = item_seed(k, c.name)
            row = {"character": c.name, "seed": seed}
            for mode in MODES:
                entry = comfy.run(sheet_graph(args, c.name, c.description, poses, seed, mode), args.timeout)
                img = comfy.image(entry["outputs"]["13"]["images"][0])
                from PIL import Image

                Image.fromarray(img).save(args.out / f"{c.name}_{seed}_{mode}.png")
                row[mode] = score_sheet(evaluator, img, layout, poses)
                log.info("%s seed %d %s: %s", c.name, seed, mode, row[mode])
            rows.append(row)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    text = summarise(rows)
    (args.out / "summary.txt").write_text(text + "\n")
    log.info("\n%s", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
