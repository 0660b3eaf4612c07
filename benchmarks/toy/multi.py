"""Several references in the miniature world (issue 21): more views of one character, two characters
bound to their regions, and the strength dial; measured with the toy replication's metrics.

    .venv/bin/python -m benchmarks.toy.multi                 # the documented run (3 seeds, ~1 h on 2 cores)
    .venv/bin/python -m benchmarks.toy.multi --quick         # smoke test (CI): minutes, results in .cache
    .venv/bin/python -m benchmarks.toy.multi --report-only   # regenerate docs/toy-replication.md

Base: the miniature base the toy replication made and the demo ships (``demo/models/ii_demo_base.safetensors``),
so this needs no pre-training. Every LoRA is trained by the pack's trainer (``training.trainer.train``,
the toy's LoRA settings: preset B, masked loss, shift timesteps, cosine schedule) on sprite data written
as manifests with ``references: [...]``; every picture is sampled through ``engine.sampling.sample_identity``
with K references and their controls (strength, region). Three LoRAs per seed:

* ``views-1``: pairs whose manifest lines list three other views of the character, trained with
  ``reference_views = 1`` (one reference per grid: the single-reference LoRA);
* ``views-1to3``: the same lines and budget, ``reference_views = [1, 3]``;
* ``two-characters``: scenes with one character on the left and one on the right (small), the two
  references in the grid ``[scene | ref A | ref B]``, the caption naming both poses.

Evaluated on held-out characters: each views LoRA with K = 1, 2, 3 views of the character (distinct and
near splits, the first view chosen as in the toy's splits); ``views-1`` with reference strengths
0 .. 2 (distinct split); the two-character LoRA with and without region binding (reference A bound to
the left half of the target, B to the right). Results go to the ``multi`` entry of
``docs/toy-replication.json`` and a section of the generated report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BASE_FILE = REPO / "demo" / "models" / "ii_demo_base.safetensors"
FORMAT = "toy-multi-v1"

log = logging.getLogger("toy")


@dataclass(frozen=True)
class MultiProfile:
    name: str
    steps: int
    batch: int
    rank: int
    lr: float
    train_pairs: int
    eval_items: int
    sample_steps: int
    seeds: int
    strengths: tuple = (0.0, 0.5, 1.0, 1.5, 2.0)
    views: tuple = (1, 2, 3)
    size: int = 32


PROFILES = {
    "full": MultiProfile("full", steps=600, batch=16, rank=16, lr=5e-3, train_pairs=1500, eval_items=32,
                         sample_steps=24, seeds=3),
    "quick": MultiProfile("quick", steps=3, batch=4, rank=4, lr=1e-3, train_pairs=12, eval_items=3, sample_steps=2,
                          seeds=1, strengths=(0.0, 1.0, 2.0)),
}
LORAS = ("views-1", "views-1to3", "two-characters")
SHIPPED = "shipped"                      # the demo's identity LoRA (2400 steps, one reference): evaluated only
SHIPPED_FILE = REPO / "demo" / "models" / "ii_demo_identity_lora.safetensors"


# --------------------------------------------------------------------------------------------------
# data: several views of one character, and two-character scenes


def _chars():
    from instruct_identity.miniature import sprites

    return sprites.split_characters(100_000, 200, seed=0)


def other_views(rng: random.Random, exclude: list, n: int) -> list:
    from instruct_identity.miniature import sprites

    return rng.sample([p for p in sprites.ALL_POSES if p not in exclude], n)


def distinct_parts(a, b) -> bool:
    """Two characters that share no colour of the same part (so leakage is visible part by part)."""
    return a.head != b.head and a.torso != b.torso and a.legs != b.legs and a.hat != b.hat


def scene_poses(rng: random.Random):
    from instruct_identity.miniature import sprites

    return (sprites.Pose("left", "small", rng.choice(sprites.POSES)),
            sprites.Pose("right", "small", rng.choice(sprites.POSES)))


def render_scene(a, b, pa, pb, size: int):
    """Two characters in one picture: RGB and each character's part masks."""
    from instruct_identity.miniature import sprites

    img_a, masks_a = sprites.render(a, pa, size)
    img_b, masks_b = sprites.render(b, pb, size)
    out = img_a.copy()
    fig_b = sprites.silhouette(masks_b)
    out[fig_b] = img_b[fig_b]
    masks_a = {k: m & ~fig_b for k, m in masks_a.items()}
    return out, masks_a, masks_b


def scene_caption(pa, pb) -> str:
    return f"{pa.caption()}. {pb.caption()}"


def write_views_manifest(root: Path, chars, n: int, size: int, seed: int) -> Path:
    """``n`` lines: a target view and three other views of the same character as ``references``."""
    from instruct_identity.core.files import atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes
    from instruct_identity.miniature import sprites

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"multi-views:{seed}")
    lines = []
    for i in range(n):
        c = chars[i % len(chars)]
        tgt = rng.choice(sprites.ALL_POSES)
        views = other_views(rng, [tgt], 3)
        names = []
        for j, pose in enumerate([tgt] + views):
            f = root / f"{i:05d}_{j}.png"
            if not f.is_file():
                atomic_write_bytes(f, png_bytes(sprites.render(c, pose, size)[0]), fsync=False)
            names.append(f.name)
        lines.append(json.dumps({"target": names[0], "references": names[1:], "caption": tgt.caption()}))
    atomic_write_text(root / "pairs.jsonl", "\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def write_scene_manifest(root: Path, chars, n: int, size: int, seed: int) -> Path:
    """``n`` lines: a two-character scene and the two characters' references (A left, B right)."""
    from instruct_identity.core.files import atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes
    from instruct_identity.miniature import sprites

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"multi-scenes:{seed}")
    lines = []
    for i in range(n):
        a, b = scene_pair(rng, chars)
        pa, pb = scene_poses(rng)
        scene = render_scene(a, b, pa, pb, size)[0]
        files = {"tgt": scene, "refA": sprites.render(a, rng.choice(sprites.ALL_POSES), size)[0],
                 "refB": sprites.render(b, rng.choice(sprites.ALL_POSES), size)[0]}
        for k, img in files.items():
            f = root / f"{i:05d}_{k}.png"
            if not f.is_file():
                atomic_write_bytes(f, png_bytes(img), fsync=False)
        lines.append(json.dumps({"target": f"{i:05d}_tgt.png", "references": [f"{i:05d}_refA.png", f"{i:05d}_refB.png"],
                                 "caption": scene_caption(pa, pb)}))
    atomic_write_text(root / "pairs.jsonl", "\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def scene_pair(rng: random.Random, chars):
    while True:
        a, b = rng.sample(chars, 2)
        if distinct_parts(a, b):
            return a, b


def dataset_toml(root: Path, manifest: Path, views) -> Path:
    from instruct_identity.core.files import atomic_write_text

    line = f"reference_views = {json.dumps(list(views)) if isinstance(views, (list, tuple)) else views}\n" if views else ""
    f = root / f"dataset-{'-'.join(map(str, views)) if isinstance(views, (list, tuple)) else views or 'all'}.toml"
    atomic_write_text(f, f"[general]\n{line}\n[[datasets]]\n  [[datasets.subsets]]\n  manifest = \"{manifest.name}\"\n")
    return f


# --------------------------------------------------------------------------------------------------
# evaluation items


@dataclass
class ViewsItem:
    item: object        # evaluate.EvalItem (reference = the first view)
    views: list         # uint8 pictures of views 1..3


@dataclass
class SceneItem:
    a: object           # evaluate.EvalItem of character A in the scene (target = the scene)
    b: object
    refs: list          # [reference A, reference B] pictures
    caption: str


def views_items(p: MultiProfile, split: str, seed: int) -> list[ViewsItem]:
    from instruct_identity.miniature import sprites

    from . import data, evaluate

    _, test = _chars()
    offset = {"distinct": 1000, "near": 1500}[split]
    pairs = data.make_pairs(test, p.eval_items, p.size, seed + offset, split)
    rng = random.Random(f"multi-eval-views:{split}:{seed}")
    out = []
    for pair, it in zip(pairs, evaluate.make_items(pairs, p.size)):
        extra = other_views(rng, [pair.ref_pose, pair.tgt_pose], 2)
        out.append(ViewsItem(it, [it.reference] + [sprites.render(pair.char, v, p.size)[0] for v in extra]))
    return out


def scene_items(p: MultiProfile, seed: int) -> list[SceneItem]:
    from instruct_identity.miniature import sprites

    from . import data, evaluate

    _, test = _chars()
    rng = random.Random(f"multi-eval-scenes:{seed}")
    out = []
    for _ in range(p.eval_items):
        a, b = scene_pair(rng, test)
        pa, pb = scene_poses(rng)
        ra, rb = rng.choice(sprites.ALL_POSES), rng.choice(sprites.ALL_POSES)
        scene, ma, mb = render_scene(a, b, pa, pb, p.size)
        ia, ma_ref = sprites.render(a, ra, p.size)
        ib, mb_ref = sprites.render(b, rb, p.size)
        out.append(SceneItem(evaluate.EvalItem(data.PairSpec(a, ra, pa), ia, scene, ma, ma_ref),
                             evaluate.EvalItem(data.PairSpec(b, rb, pb), ib, scene, mb, mb_ref), [ia, ib],
                             scene_caption(pa, pb)))
    return out


def half_regions(size: int):
    """Masks over the target picture: left half, right half."""
    import torch

    left = torch.zeros(size, size)
    left[:, : size // 2] = 1
    return left, 1 - left


# --------------------------------------------------------------------------------------------------
# sampling and scoring


def sample(model, codec, te, refs_per_item: list[list], captions: list[str], *, steps: int, seed: int, controls=None,
           batch: int = 32) -> np.ndarray:
    """Targets for items with K references each (all items the same K): float RGB ``[N, S, S, 3]``."""
    import torch

    from instruct_identity.core import layout
    from instruct_identity.engine import sampling

    from . import data, evaluate

    outs = []
    k = len(refs_per_item[0])
    for start in range(0, len(refs_per_item), batch):
        chunk = refs_per_item[start:start + batch]
        refs = [codec.encode(torch.cat([data.to_image(r[j]) for r in chunk])) for j in range(k)]
        pos = evaluate.conditioning(te, captions[start:start + batch])
        neg = evaluate.conditioning(te, [""] * len(chunk))
        grid = sampling.sample_identity(model, refs[0] if k == 1 else refs, pos, neg, seed=seed + start, steps=steps,
                                        controls=controls)
        target, strip = layout.split(grid, references=k)
        if not torch.allclose(strip, torch.cat(refs, -1), atol=1e-4):
            raise AssertionError("the patch did not keep the references clean")
        outs.append(codec.decode(target).numpy())
    return np.concatenate(outs)


def score_scenes(outputs: np.ndarray, items: list[SceneItem]) -> dict:
    """Per character: part colour accuracy; leakage: share of parts whose colour is the *other*
    character's colour of that part; silhouette IoU of both figures together."""
    from instruct_identity.miniature import sprites

    from . import evaluate

    acc, leak, sil = [], [], []
    for out, it in zip(outputs.astype(np.float32), items, strict=True):
        for me, other in ((it.a, it.b), (it.b, it.a)):
            guesses = evaluate.part_guesses(out, me)
            acc.append(np.mean([g == evaluate.true_color(me.pair.char, part) for part, (g, _) in guesses.items()]))
            leak.append(np.mean([g == evaluate.true_color(other.pair.char, part) for part, (g, _) in guesses.items()]))
        both = sprites.silhouette(it.a.target_masks) | sprites.silhouette(it.b.target_masks)
        sil.append(evaluate.iou(evaluate.figure_mask(out), both))
    return {m: _mean_se(v) for m, v in (("part_color_acc", acc), ("leakage", leak), ("sil_iou", sil))}


def _mean_se(v) -> dict:
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0}


def _summary(scored: dict) -> dict:
    m = scored["mean"]
    return {k: {"mean": m[k], "se": m[k + "_se"]} for k in ("part_color_acc", "sil_iou", "copy_paste")}


# --------------------------------------------------------------------------------------------------
# one job: train one LoRA (the pack's trainer) and evaluate it


def job_key(job: dict) -> str:
    import hashlib

    blob = json.dumps({"format": FORMAT, **{k: v for k, v in job.items() if k != "work"}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_job(job: dict) -> dict:
    import torch

    from instruct_identity.engine.runtime import setup_comfyui

    setup_comfyui(cpu=True)
    torch.set_num_threads(1)
    from . import jobs

    jobs.quiet()
    out_dir = Path(job["work"]) / "runs" / f"{job['lora']}-s{job['seed']}-{job_key(job)}"
    done = out_dir / "result.json"
    if done.is_file():
        return {**json.loads(done.read_text()), "cached": True}
    p = MultiProfile(**{**job["profile"], "strengths": tuple(job["profile"]["strengths"]),
                        "views": tuple(job["profile"]["views"])})
    t0 = time.perf_counter()
    if job["lora"] == SHIPPED:
        lora_path, train_info = str(SHIPPED_FILE), None
    else:
        lora_path, train_info = train_lora(job, p, out_dir)
    model, codec, te = load(lora_path)
    result = {"lora": job["lora"], "seed": job["seed"], "train": train_info, "eval": {}}
    if job["lora"] == "two-characters":
        items = scene_items(p, job["eval_seed"])
        left, right = half_regions(p.size)
        from instruct_identity.core.reference_bias import ReferenceControl

        for binding, controls in (("unbound", None), ("bound", [ReferenceControl(region=left), ReferenceControl(region=right)])):
            outs = sample(model, codec, te, [it.refs for it in items], [it.caption for it in items],
                          steps=p.sample_steps, seed=job["eval_seed"], controls=controls)
            result["eval"][binding] = score_scenes(outs, items)
            _grid(out_dir / f"{binding}.png", [it.refs + [it.a.target] for it in items], outs,
                  f"two characters, {binding}: ref A | ref B | ground truth | output")
    else:
        from instruct_identity.core.reference_bias import ReferenceControl

        from . import evaluate

        for split in ("distinct", "near"):
            items = views_items(p, split, job["eval_seed"])
            for k in p.views:
                outs = sample(model, codec, te, [it.views[:k] for it in items], [it.item.pair.caption for it in items],
                              steps=p.sample_steps, seed=job["eval_seed"])
                result["eval"][f"{split}.K{k}"] = _summary(evaluate.score(outs, [it.item for it in items]))
                if split == "distinct":
                    _grid(out_dir / f"views-K{k}.png", [it.views[:k] + [it.item.target] for it in items], outs,
                          f"{job['lora']}, {k} view(s): views | ground truth | output")
        if job["lora"] in ("views-1", SHIPPED):
            items = views_items(p, "distinct", job["eval_seed"])
            for s in p.strengths:
                outs = sample(model, codec, te, [it.views[:1] for it in items], [it.item.pair.caption for it in items],
                              steps=p.sample_steps, seed=job["eval_seed"], controls=[ReferenceControl(strength=s)])
                result["eval"][f"strength.{s:g}"] = _summary(evaluate.score(outs, [it.item for it in items]))
                _grid(out_dir / f"strength-{s:g}.png", [[it.views[0], it.item.target] for it in items], outs,
                      f"strength {s:g}: reference | ground truth | output")
    result["wall_s"] = time.perf_counter() - t0
    from instruct_identity.core.files import atomic_write_text

    atomic_write_text(done, json.dumps(result, indent=1))
    return result


def train_lora(job: dict, p: MultiProfile, out_dir: Path) -> tuple[str, dict]:
    from instruct_identity.miniature import files as mfiles
    from instruct_identity.training.config import from_dict
    from instruct_identity.training.model import Components
    from instruct_identity.training.trainer import train

    from .lora_runs import LoraSettings, RunSpec, trainer_options

    train_chars, _ = _chars()
    chars = train_chars[: max(8, p.train_pairs // 2)]
    data_root = Path(job["work"]) / "data"
    if job["lora"] == "two-characters":
        manifest = write_scene_manifest(data_root / "scenes", chars, p.train_pairs, p.size, 0)
        views = None
    else:
        manifest = write_views_manifest(data_root / "views", chars, p.train_pairs, p.size, 0)
        views = 1 if job["lora"] == "views-1" else [1, 3]
    dataset = dataset_toml(manifest.parent, manifest, views)
    settings = LoraSettings(steps=p.steps, batch=p.batch, rank=p.rank, lr=p.lr, timestep_sampling="shift", shift=3.0,
                            scheduler="cosine", warmup=0.05)
    spec = RunSpec(job["lora"], "B", "masked", job["seed"])
    opts = trainer_options(spec, settings, dataset, out_dir, Path(job["work"]) / "cache", p.size)
    cfg = from_dict(opts)
    base = mfiles.load_base(BASE_FILE)
    t0 = time.perf_counter()
    result = train(cfg, Components(base.model, base.codec, base.text_encoder, str(BASE_FILE), "ii-demo-base"))
    return str(result.lora_path), {"wall_s": time.perf_counter() - t0, "steps": result.step,
                                   "seconds_per_step": result.seconds_per_step,
                                   "fixed_loss_before": result.fixed_loss_before,
                                   "fixed_loss_after": result.fixed_loss_after, "reference_views": views}


def load(lora_path: str):
    from instruct_identity.engine import oneway
    from instruct_identity.miniature import files as mfiles

    base = mfiles.load_base(BASE_FILE)
    return oneway.apply_lora_file(base.model, lora_path)[0], base.codec, base.text_encoder


def _grid(path: Path, inputs: list[list], outputs: np.ndarray, title: str, n: int = 8, scale: int = 4) -> None:
    """Rows of ``inputs... | output`` for the first ``n`` items, atomically."""
    from PIL import Image, ImageDraw

    from .evaluate import _save_png

    n = min(n, len(inputs))
    s = inputs[0][0].shape[0] * scale
    cols = len(inputs[0]) + 1
    canvas = Image.new("RGB", (cols * (s + 2), 18 + n * (s + 2)), (200, 200, 200))
    ImageDraw.Draw(canvas).text((4, 3), title, fill=(0, 0, 0))
    for i in range(n):
        tiles = list(inputs[i]) + [(np.clip(outputs[i], 0, 1) * 255).round().astype(np.uint8)]
        for j, img in enumerate(tiles):
            canvas.paste(Image.fromarray(img).resize((s, s), Image.NEAREST), (j * (s + 2), 18 + i * (s + 2)))
    _save_png(path, canvas)


# --------------------------------------------------------------------------------------------------
# the whole measurement


def paired(values_a: list[float], values_b: list[float]) -> dict:
    """Mean ± SE over seeds of a - b (same seed, same items, same sampling noise)."""
    d = np.asarray(values_a, np.float64) - np.asarray(values_b, np.float64)
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0,
            "n": int(len(d))}


def summarise(results: list[dict], p: MultiProfile) -> dict:
    by = {(r["lora"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results if r["lora"] != SHIPPED})

    def vals(lora, key, metric="part_color_acc"):
        return [by[(lora, s)]["eval"][key][metric]["mean"] for s in seeds if (lora, s) in by]

    def mean_se(v):
        return _mean_se(v) if v else None

    out = {"views": {}, "strength": {}, "two_characters": {}, "comparisons": {}}
    for lora in ("views-1", "views-1to3"):
        for split in ("distinct", "near"):
            for k in p.views:
                key = f"{split}.K{k}"
                out["views"][f"{lora}.{key}"] = {m: mean_se(vals(lora, key, m)) for m in ("part_color_acc", "sil_iou")}
    for split in ("distinct", "near"):
        for k in p.views:
            key = f"{split}.K{k}"
            out["comparisons"][f"views-1to3 - views-1.{key}"] = paired(vals("views-1to3", key), vals("views-1", key))
            if k > 1:
                out["comparisons"][f"views-1to3 K{k} - K1.{split}"] = paired(vals("views-1to3", key),
                                                                         vals("views-1to3", f"{split}.K1"))
    for s in p.strengths:
        key = f"strength.{s:g}"
        out["strength"][f"{s:g}"] = {m: mean_se(vals("views-1", key, m)) for m in ("part_color_acc", "sil_iou")}
    if any(r["lora"] == SHIPPED for r in results):
        shipped = next(r for r in results if r["lora"] == SHIPPED)["eval"]
        out["shipped"] = {k: {m: v[m] for m in ("part_color_acc", "sil_iou")} for k, v in shipped.items()}
    for binding in ("unbound", "bound"):
        out["two_characters"][binding] = {m: mean_se(vals("two-characters", binding, m))
                                          for m in ("part_color_acc", "leakage", "sil_iou")}
    for m in ("part_color_acc", "leakage", "sil_iou"):
        out["comparisons"][f"bound - unbound.{m}"] = paired(vals("two-characters", "bound", m),
                                                            vals("two-characters", "unbound", m))
    return out


def run(p: MultiProfile, work: Path, workers: int) -> dict:
    t0 = time.perf_counter()
    prof = {**asdict(p), "strengths": list(p.strengths), "views": list(p.views)}
    todo = [{"lora": lora, "seed": s, "eval_seed": 0, "profile": prof, "work": str(work)}
            for s in range(p.seeds) for lora in LORAS]
    todo.append({"lora": SHIPPED, "seed": 0, "eval_seed": 0, "profile": prof, "work": str(work)})
    todo.sort(key=lambda j: (j["lora"] == SHIPPED, j["lora"] == "views-1"))   # the longer (several-reference) runs first
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_job, todo))
    else:
        results = [run_job(j) for j in todo]
    for r in results:
        log.info("%s seed %d: %s", r["lora"], r["seed"], {k: round(v["part_color_acc"]["mean"], 3)
                                                           for k, v in r["eval"].items()})
    return {"format": FORMAT, "profile": prof, "base": str(BASE_FILE.relative_to(REPO)), "runs": results,
            "summary": summarise(results, p), "wall_s": time.perf_counter() - t0, "workers": workers,
            "images": {}}


def publish(results: dict, work: Path, images: Path) -> None:
    """Copy each first seed's pictures to ``images`` (docs/images/toy/multi-*.png)."""
    from instruct_identity.core.files import atomic_write_bytes

    for r in results["runs"]:
        if r["seed"] != 0:
            continue
        runs = sorted((work / "runs").glob(f"{r['lora']}-s0-*"))
        for f in sorted(runs[-1].glob("*.png")) if runs else []:
            name = f"multi-{r['lora']}-{f.stem}.png"
            atomic_write_bytes(images / name, f.read_bytes(), fsync=False)
            results["images"][f"{r['lora']}/{f.stem}"] = name


def main(argv: list[str] | None = None) -> int:
    from . import jobs, report
    from .run import write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="default .cache/toy/multi-<profile>")
    ap.add_argument("--json", type=Path, default=None, help="default docs/toy-replication.json (--quick: <work>/results.json)")
    ap.add_argument("--doc", type=Path, default=None, help="default docs/toy-replication.md (--quick: <work>/report.md)")
    ap.add_argument("--images", type=Path, default=None, help="default docs/images/toy (--quick: <work>/images)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    jobs.quiet()
    p = PROFILES["quick" if args.quick else "full"]
    work = (args.work or REPO / ".cache" / "toy" / f"multi-{p.name}").resolve()
    json_path = args.json or (work / "results.json" if args.quick else REPO / "docs" / "toy-replication.json")
    doc = args.doc or (work / "report.md" if args.quick else REPO / "docs" / "toy-replication.md")
    images = args.images or (work / "images" if args.quick else REPO / "docs" / "images" / "toy")
    everything = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if not args.report_only:
        multi = run(p, work, args.workers)
        multi["generated_by"] = ".venv/bin/python -m benchmarks.toy.multi" + (" --quick" if args.quick else "")
        publish(multi, work, images)
        everything["multi"] = multi
        write_json(json_path, everything)
    if "runs" in everything:
        report.write(everything, doc, os.path.relpath(images, doc.parent))
    else:   # a JSON with only this entry (the quick profile): its section alone
        from instruct_identity.core.files import atomic_write_text

        from .multi_report import section

        atomic_write_text(doc, "\n".join(section(everything["multi"], os.path.relpath(images, doc.parent))) + "\n")
    log.info("results: %s\nreport: %s", json_path, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
