"""Toy-scale replication of Instruct Identity on the CPU (issues 7, 11), end to end in one command.

    .venv/bin/python -m benchmarks.toy.run                  # full run; writes docs/toy-replication.{json,md},
                                                            # docs/images/toy/, demo/models/, demo/references/
    .venv/bin/python -m benchmarks.toy.run --quick          # smoke test (tiny sizes); writes into --work only
    .venv/bin/python -m benchmarks.toy.run --runs B-masked  # (re)run only these configurations; the others
                                                            # are taken from the cache
    .venv/bin/python -m benchmarks.toy.run --report-only    # regenerate the markdown from the JSON

Steps: procedural sprites (``miniature.sprites``) -> a small ComfyUI FLUX pre-trained text-to-image on
single renders and two-view character sheets (cached) -> its text-to-image check and its zero-shot
identity row -> identity LoRAs trained by the project's trainer (``CONFIGS`` x seeds) -> sampling
held-out characters through ``engine.sampling`` -> metrics, grids, JSON, the generated report -> the
demo's model files. Every job is cached by a hash of its full configuration (``jobs.job_key``).

To add runs (e.g. issue 12's one-way attention), add an entry to ``CONFIGS`` with ``extra`` trainer
options and run ``--runs NAME``: only the new entry trains; the JSON and the report then hold it too.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .profiles import PROFILES, Profile

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("toy")

# The configurations: name, preset, loss, label, and ``extra`` trainer options merged into the config.
CONFIGS = [
    {"name": "B-masked", "preset": "B", "loss": "masked", "label": "preset B, masked loss (the paper's method)"},
    {"name": "B-full", "preset": "B", "loss": "full",
     "label": "preset B, full loss: clean reference in, reference-half target n - r (Eq. 2 without the mask)"},
    {"name": "B-full_noised", "preset": "B", "loss": "full_noised",
     "label": "preset B, full loss, reference half noised in training (In-Context-LoRA style)"},
    {"name": "B-full_consistent", "preset": "B", "loss": "full_consistent",
     "label": "preset B, full loss, clean reference in, reference-half target 0 (consistent with the sampler)"},
    {"name": "A-masked", "preset": "A", "loss": "masked", "label": "preset A (attention only), masked loss"},
    {"name": "C-masked", "preset": "C", "loss": "masked", "label": "preset C (attention + FFN + modulation), masked loss"},
    {"name": "B-one_way", "preset": "B", "loss": "masked", "extra": {"reference_attention": "one_way"},
     "label": "preset B, masked loss, one-way reference attention (issue 12: reference K/V computed once)"},
]
ZERO_SHOT = [
    {"name": "zero-shot", "caption": "sheet",
     "label": "no LoRA: the base with a sheet prompt (\"two views. first view: <target pose>\")"},
    {"name": "zero-shot-plain", "caption": "plain", "label": "no LoRA: the base with the LoRA's prompt (target pose only)"},
    {"name": "zero-shot-inpaint", "caption": "sheet", "route": "inpaint",
     "label": "no LoRA, no patch: ComfyUI's own masked sampling of [target | reference] (the reference half re-noised "
              "to each step's level, as Set Latent Noise Mask + KSampler do: the diptych route of a plain model), "
              "sheet prompt"},
]
COMPARISONS = [("B-masked", "B-full"), ("B-masked", "B-full_noised"), ("B-masked", "B-full_consistent"),
               ("B-masked", "A-masked"), ("B-masked", "C-masked"), ("C-masked", "A-masked"),
               ("B-masked", "B-one_way"), ("B-masked", "B-masked-uniform"), ("B-masked-2400", "B-masked")]
METRICS = ("part_color_acc", "charis_color", "sil_iou", "copy_paste", "part_color_err", "speckle")
TARGET_LORA_RUN = "B-masked-2400"
TARGETS = {"base_part_color_acc": 0.90, "base_sil_iou": 0.90, "lora_part_color_acc": 0.80, "lora_sil_iou": 0.85,
           "base_speckle": 0.05, "lora_speckle": 0.05}  # speckle: at most (issue 20); the others: at least
DEMO_REFERENCES = 6
# the demo ships the best of these on the distinct split (part colour accuracy): the paper's method, joint attention
DEMO_LORA_RUNS = ("B-masked", "B-masked-2400")
PARTIAL_EVERY = 200  # pre-training writes its EMA weights so far every this many steps (<key>.partial.safetensors)
# Earlier measurements on the way to this design (held-out text to image, full captions), kept in the JSON
# so the report can say what was tried; each was measured once, by the same metric code.
HISTORY = [
    {"base": "issue 7 base: 1200 steps of 32 single renders, EMA 0.995, word encoder token = word + phrase mean "
             "+ position (24 tokens)", "steps": 1200, "cfg": 1.0, "samples": 16, "part_color_acc": 0.552, "sil_iou": 0.915},
    {"base": "first issue-11 base, stopped at step 1000 of 3000: half the steps two-view sheets (batch 16), EMA 0.998, "
             "the same word encoder (40 tokens); EMA weights at step 1000", "steps": 1000, "cfg": 4.0, "samples": 32,
     "part_color_acc": 0.146, "sil_iou": 0.701, "cfg1_part_color_acc": 0.065},
    {"base": "the same run at step 500", "steps": 500, "cfg": 4.0, "samples": 32, "part_color_acc": 0.096,
     "sil_iou": 0.452},
    {"base": "this design's first stage alone (1400 steps; word encoder [word / head noun], no position vectors, "
             "36 tokens; 35 % sheet steps), EMA weights at step 700", "steps": 700, "cfg": 4.0, "samples": 32,
     "part_color_acc": 0.117, "sil_iou": 0.686},
    {"base": "this design's first stage alone, end (step 1400)", "steps": 1400, "cfg": 4.0, "samples": 32,
     "part_color_acc": 0.107, "sil_iou": 0.829},
    {"base": "the final base (both stages, 2400 steps) on TRAINING characters (another 24 samples; held-out on the "
             "same draw: 0.073 / 0.948)", "steps": 2400, "cfg": 4.0, "samples": 24, "part_color_acc": 0.177,
     "sil_iou": 0.926},
    {"base": "that final base (word encoder [word / head noun], 1400 + 1000 steps, 35 % sheet steps in both stages), "
             "held-out, as published on 2026-11-28", "steps": 2400, "cfg": 4.0, "samples": 64, "part_color_acc": 0.120,
     "sil_iou": 0.923,
     # `python -m benchmarks.toy.probe <its file>`: colour read from the caption at s = 0.95 (full / pose only)
     "probe_095": [0.09, 0.09]},
    {"base": "this design's stages 1 and 2 only (word encoder [word + phrase mean + position], 2000 + 1000 steps), "
             "held-out, as published on 2026-11-29 (key 993ae78a61706f41)", "steps": 3000, "cfg": 4.0, "samples": 64,
     "part_color_acc": 0.893, "sil_iou": 0.951},
    # docs/toy-replication.json at a2fc25c (base); speckle from docs/curation-replication.json's base_text_to_image
    # (32 other held-out singles, CFG 4), the measure that asked for a larger base
    {"base": "this design on a 4.0M-parameter model (hidden 192, 3 heads, 2 double + 2 single blocks; 2000 + 1000 + "
             "800 steps), held-out, as published until 2026-12-06 (key 029b2fb5bd960c79); speckle on 32 other held-out "
             "singles (docs/curation-replication.json)", "steps": 3800, "cfg": 4.0,
     "samples": 64, "part_color_acc": 0.928, "sil_iou": 0.968, "speckle": 0.144},
]

# Earlier identity LoRAs (preset B, masked, rank 16, batch 16, constant lr), distinct split; copied from their
# jobs' result.json (job keys given). They chose this design's LoRA settings: timestep sampling ``shift``;
# lr 5e-3 (between the two tried); a cosine decay with warm-up, after a constant 5e-3 diverged in one of two seeds.
LORA_HISTORY = [
    {"run": "B-masked", "steps": 200, "lr": 0.002, "timesteps": "uniform", "seeds": 3, "part_color_acc": 0.1571, "base": "stages 1-2",
     "part_color_acc_se": 0.0053, "sil_iou": 0.9215, "keys": ["fc3bb0476f40", "0eede84a98d2", "4c91c7b92f85"]},
    {"run": "B-masked", "steps": 800, "lr": 0.002, "timesteps": "uniform", "seeds": 1, "part_color_acc": 0.3307,
     "sil_iou": 0.9404, "keys": ["28ef6f0c2a3b"]},
    {"run": "B-masked", "steps": 2400, "lr": 0.002, "timesteps": "uniform", "seeds": 3, "part_color_acc": 0.6606,
     "part_color_acc_se": 0.0109, "sil_iou": 0.9511, "keys": ["7425c222fcbd", "0c945199b45c", "4a366cafdc91"]},
    {"run": "B-masked, one-way attention", "steps": 800, "lr": 0.002, "timesteps": "uniform", "seeds": 1,
     "part_color_acc": 0.3516, "sil_iou": 0.9376, "keys": ["bf83ab42437a"]},
    {"run": "B-masked", "steps": 600, "lr": 0.006, "timesteps": "uniform", "seeds": 1, "part_color_acc": 0.2578,
     "sil_iou": 0.9172, "keys": ["23dd05871eab"]},
    {"run": "B-masked", "steps": 600, "lr": 0.002, "timesteps": "shift", "seeds": 1, "part_color_acc": 0.5052,
     "sil_iou": 0.9365, "keys": ["2d29538c2cd3"]},
    {"run": "B-masked", "steps": 600, "lr": 0.006, "timesteps": "shift", "seeds": 1, "part_color_acc": 0.5391,
     "sil_iou": 0.9321, "keys": ["929bcac4bdbc"]},
    {"run": "B-masked, seed 0 (the loss jumped from 0.02 to 1.2 at step ~1840 and stayed: diverged)", "steps": 2400,
     "lr": 0.005, "timesteps": "shift", "seeds": 1, "part_color_acc": 0.0156, "sil_iou": 0.1318, "base": "final",
     "keys": ["2563c1a7e44c"]},
    {"run": "B-masked, seed 1", "steps": 2400, "lr": 0.005, "timesteps": "shift", "seeds": 1, "part_color_acc": 0.8229,
     "sil_iou": 0.9734, "base": "final", "keys": ["bb6203297b29"]},
]

# --------------------------------------------------------------------------------------------------
# the pipeline


def build_jobs(profile: Profile, common: dict, selected: set[str] | None) -> list[dict]:
    jobs_ = []
    for z in ZERO_SHOT:
        jobs_.append({**common, "kind": "zero_shot", "name": z["name"], "label": z["label"], "caption": z["caption"],
                      "spec": None, **({"route": z["route"]} if z.get("route") else {})})
    for c in CONFIGS + list(profile.extra_runs):
        for s in range(c.get("seeds", profile.seeds)):
            spec = {"name": c["name"], "preset": c["preset"], "loss": c["loss"], "seed": common["seed"] + s,
                    "extra": dict(c.get("extra", {}))}
            jobs_.append({**common, "kind": "lora", "name": c["name"], "label": c["label"], "caption": "plain",
                          "spec": spec})
    if selected:
        unknown = selected - {j["name"] for j in jobs_}
        if unknown:
            raise SystemExit(f"unknown run name(s): {', '.join(sorted(unknown))}; known: "
                             + ", ".join(dict.fromkeys(j["name"] for j in jobs_)))
    return jobs_


def run_profile(profile: Profile, work: Path, seed: int, threads: int, workers: int, selected: set[str] | None,
                retrain_base: bool = False, progress: bool = True) -> dict:
    """Everything for one profile; returns the results dict (the JSON's content)."""
    import torch
    from tqdm.auto import tqdm

    from instruct_identity.miniature import components, sprites

    from . import data, jobs, pretrain

    t_wall = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    bar = (lambda it: tqdm(it, mininterval=10, dynamic_ncols=True)) if progress else None

    unet = components.unet_config(**profile.unet)
    codec, te = components.PixelCodec(), components.WordEncoder()
    train_chars, test_chars = sprites.split_characters(100_000, 200, seed=0)
    held = {(c.head, c.torso) for c in test_chars}
    assert not any((c.head, c.torso) in held for c in train_chars)

    # 1. base model (cached)
    # one process: it gets every core the jobs will share later (threads x workers)
    jobs_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads * workers))
    pcfg = pretrain.PretrainConfig(seed=seed, size=profile.size, **profile.pretrain)
    base_state, base_info, base_file = pretrain.load_or_train(work.parent / "base-cache", unet, pcfg, train_chars,
                                                              codec, te, progress=bar, force=retrain_base,
                                                              checkpoint_every=PARTIAL_EVERY)
    stages = [base_info]
    for i, more in enumerate(profile.pretrain_more, start=1):
        cfg_i = pretrain.PretrainConfig(seed=seed, size=profile.size, **more)
        base_state, base_info, base_file = pretrain.load_or_train(
            work.parent / "base-cache", unet, cfg_i, train_chars, codec, te, progress=bar, force=retrain_base,
            init=(base_state, base_info["key"]), stage=i, checkpoint_every=PARTIAL_EVERY)
        stages.append(base_info)
    torch.set_num_threads(jobs_threads)
    if len(stages) > 1:  # the whole pre-training, stage by stage
        base_info = {**base_info, "wall_s": sum(s_["wall_s"] for s_ in stages), "cpu_s": sum(s_["cpu_s"] for s_ in stages),
                     "loss_first50": stages[0]["loss_first50"],
                     "stages": [{k: v for k, v in s_.items() if k not in ("losses", "unet")} for s_ in stages]}
    base_key = base_info["key"]

    # 2. the base's text-to-image check (cached with the base), and whether each stage reads colour words
    base_eval = base_check(profile, work, base_key, base_state, unet, codec, te, test_chars, seed)
    base_eval["caption_probe"] = [caption_probe(work, pretrain.base_path(work.parent / "base-cache", st["key"]), st,
                                                unet, codec, te, test_chars, seed, profile) for st in stages]

    # 3. LoRA data and the jobs
    manifest = data.write_manifest(data.make_pairs(train_chars, profile.train_pairs, profile.size, seed),
                                   work / "dataset", profile.size)
    common = {"unet": unet, "base_file": str(base_file), "base_key": base_key, "base_hash": f"toy-base:{base_key}",
              "manifest": str(manifest), "work": str(work), "size": profile.size, "seed": seed, "threads": threads,
              "train_pairs": profile.train_pairs, "train_seed": seed, "eval_items": profile.eval_items,
              "heldout_pairs": profile.heldout_pairs, "sample_steps": profile.sample_steps,
              "grid_items": profile.grid_items, "lora": profile.lora, "splits": list(profile.splits)}
    all_jobs = build_jobs(profile, common, selected)
    todo = [j for j in all_jobs if selected is None or j["name"] in selected or jobs.cached_result(j) is not None]
    done = jobs.run_all(todo, workers, progress=(lambda total: tqdm(total=total, desc="runs", mininterval=10))
                        if progress else None)

    results = {
        "generated_by": None, "profile": asdict(profile), "seed": seed, "threads": threads, "workers": workers,
        "unet": unet, "text_encoder": te.spec, "codec": dict(codec.spec),
        "base": {**base_eval, "pretrain": {k: v for k, v in base_info.items() if k not in ("losses", "unet")},
                 "file_key": base_key, "file": str(base_file)},
        "zero_shot": {}, "runs": [], "oracles": oracles(profile, common),
    }
    per_item: dict = {}
    for r in done:
        for split, m in r["splits"].items():
            per_item[(r["name"], r["seed"], split)] = r["items"][split]
            if r["kind"] == "zero_shot":
                results["zero_shot"].setdefault(r["name"], {"label": r["label"], "splits": {}})["splits"][split] = \
                    {k: m[k] for k in m}
                continue
            results["runs"].append({
                "name": r["name"], "label": r["label"], "loss": r["loss"], "preset": r["preset"], "seed": r["seed"],
                "split": split, "extra": r.get("extra", {}), "key": r["key"],
                "metrics": {k: m[k] for k in m}, "heldout_loss": r.get("heldout_loss"),
                "steps": r.get("steps"), "rank": r.get("rank"), "lr": r.get("lr"), "batch": r.get("batch"),
                "train_wall_s": r.get("wall_s"), "train_cpu_s": r.get("cpu_s"), "eval_wall_s": r.get("eval_wall_s"),
                "seconds_per_step": r.get("seconds_per_step"), "fixed_loss_before": r.get("fixed_loss_before"),
                "fixed_loss_after": r.get("fixed_loss_after"), "loss_first20": r.get("loss_first20"),
                "loss_last20": r.get("loss_last20"), "lora": r.get("lora"), "grid": r.get("grid")})
    results["summary"] = summarise(results["runs"])
    results["comparisons"] = paired(per_item, results["runs"], profile.splits)
    results["targets"] = targets(results)
    results["grids"] = {r["name"]: r["grid"] for r in done if r.get("seed", 0) == seed and r.get("grid")}
    full = profile.name == "full"  # the earlier measurements are of the full profile's models
    results["history"] = HISTORY if full else []
    results["lora_history"] = LORA_HISTORY if full else []
    results["wall_s"] = time.perf_counter() - t_wall
    results["job_wall_s"] = sum((r.get("wall_s") or 0) + (r.get("eval_wall_s") or 0) for r in done)
    results["cached_jobs"] = sum(bool(r.get("cached")) for r in done)
    results["jobs"] = len(done)
    results["machine"] = machine()
    return results


def base_check(profile, work, base_key, base_state, unet, codec, te, test_chars, seed) -> dict:
    """Text-to-image on held-out characters with full captions (CFG ``t2i_cfg`` and 1), and sheets; cached."""
    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.miniature import sprites

    from . import data, evaluate, lora_runs

    path = work / f"base-eval-{base_key}-{profile.t2i_samples}-{profile.sample_steps}-{profile.t2i_cfg:g}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    model = lora_runs.load_with_lora(unet, base_state, None)
    rng = np.random.default_rng(seed + 77)
    picks = [(test_chars[int(rng.integers(len(test_chars)))], sprites.ALL_POSES[int(rng.integers(18))])
             for _ in range(profile.t2i_samples)]
    caps = [data.full_caption(c, p) for c, p in picks]
    items = [evaluate.EvalItem(data.PairSpec(c, p, p), *_render_pair(sprites, c, p, profile.size)) for c, p in picks]
    out: dict = {"t2i_samples": len(caps), "t2i_cfg": profile.t2i_cfg, "sample_steps": profile.sample_steps}
    images = {}
    for cfg in (profile.t2i_cfg, 1.0):
        o = evaluate.sample_text_to_image(model, codec, te, caps, size=profile.size, steps=profile.sample_steps,
                                          seed=seed, cfg=cfg)
        m = evaluate.score(o, items, None)["mean"]
        key = "cfg1" if cfg == 1.0 else "main"
        vals = {k: m[k] for k in ("part_color_acc", "part_color_acc_se", "sil_iou", "sil_iou_se", "part_color_err",
                                  "part_color_err_se", "speckle", "speckle_se")}
        if key == "main":
            out.update(vals)
        else:
            out["cfg1"] = vals
        images[key] = o
    gts = np.stack([it.target.astype(np.float32) / 255 for it in items[:16]])
    evaluate.t2i_png(work / "images" / "base_text_to_image.png",
                     np.concatenate([gts[:8], images["main"][:8], gts[8:16], images["main"][8:16]]), caps,
                     f"base, text to image (CFG {profile.t2i_cfg:g}), held-out characters: rows 1, 3 ground truth, "
                     "rows 2, 4 samples")
    # sheets: two views of one held-out character, described, both poses named
    sheet_caps = []
    for i in range(8):
        c = test_chars[(i * 13) % len(test_chars)]
        sheet_caps.append(sprites.sheet_caption(c, [sprites.ALL_POSES[(i * 5) % 18], sprites.ALL_POSES[(i * 7 + 4) % 18]]))
    sheets = evaluate.sample_text_to_image(model, codec, te, sheet_caps, size=profile.size, width=2 * profile.size,
                                           steps=profile.sample_steps, seed=seed + 1, cfg=profile.t2i_cfg)
    evaluate.t2i_png(work / "images" / "base_sheets.png", sheets, sheet_caps,
                     "base, text to image of two-view sheets (held-out characters, described)", cols=4)
    out["eval_wall_s"] = time.perf_counter() - t0
    atomic_write_text(path, json.dumps(out))
    return out


def caption_probe(work, base_file, stage, unet, codec, te, test_chars, seed, profile) -> dict:
    """``evaluate.caption_probe`` on one pre-training stage's weights (48 held-out items); cached."""
    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.miniature import load_state

    from . import evaluate, lora_runs

    path = work / f"caption-probe-{stage['key']}.json"
    if path.is_file():
        return json.loads(path.read_text())
    state, _, _ = load_state(base_file)
    items = evaluate.probe_items(test_chars, profile.size, seed=seed)
    model = lora_runs.load_with_lora(unet, state, None)
    out = {"key": stage["key"], "steps": stage["pretrain"]["steps"], "items": len(items),
           **evaluate.caption_probe(model, codec, te, items, seed=seed)}
    atomic_write_text(path, json.dumps(out))
    return out


def _render_pair(sprites, c, p, size):
    img, masks = sprites.render(c, p, size)
    return img, img, masks, masks


def oracles(profile: Profile, job: dict) -> dict:
    from . import evaluate, jobs

    charis = evaluate.CharisColor()
    out = {}
    for split in profile.splits:
        items = jobs.eval_items(job, split)
        out[split] = {
            "ground truth": evaluate.score(np.stack([it.target / 255.0 for it in items]), items, charis)["mean"],
            "copy of the reference": evaluate.score(np.stack([it.reference / 255.0 for it in items]), items, charis)["mean"]}
    return out


def _se(values) -> float:
    v = np.asarray(values, np.float64)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def summarise(runs: list[dict]) -> dict:
    """Per configuration and split: mean over training seeds and its standard error (over seeds)."""
    out: dict = {}
    for r in runs:
        out.setdefault(r["name"], {}).setdefault(r["split"], []).append(r)
    summary = {}
    for name, splits in out.items():
        summary[name] = {}
        for split, rs in splits.items():
            row = {"seeds": sorted(r["seed"] for r in rs)}
            for m in METRICS:
                vals = [r["metrics"][m] for r in rs]
                row[m] = {"mean": float(np.mean(vals)), "se": _se(vals), "values": vals}
            hl = [r["heldout_loss"] for r in rs if r.get("heldout_loss") is not None]
            row["heldout_loss"] = {"mean": float(np.mean(hl)), "se": _se(hl)} if hl else None
            summary[name][split] = row
    return summary


def paired(per_item: dict, runs: list[dict], splits) -> dict:
    """``a - b`` per split and metric, paired by training seed (same seed, same items, same sampling noise):
    the per-seed difference of means, then its mean and standard error over seeds; also the item-level
    standard error of the seed-averaged difference."""
    seeds = {}
    for r in runs:
        seeds.setdefault(r["name"], set()).add(r["seed"])
    out = {}
    for a, b in COMPARISONS:
        common = sorted(seeds.get(a, set()) & seeds.get(b, set()))
        if not common:
            continue
        row = {}
        for split in splits:
            row[split] = {"seeds": common}
            for m in METRICS:
                per_seed = [float(np.mean(per_item[(a, s, split)][m]) - np.mean(per_item[(b, s, split)][m]))
                            for s in common]
                items = np.mean([np.asarray(per_item[(a, s, split)][m]) - np.asarray(per_item[(b, s, split)][m])
                                 for s in common], axis=0)
                row[split][m] = {"diff": float(np.mean(per_seed)), "se": _se(per_seed), "per_seed": per_seed,
                                 "se_items": _se(items)}
        out[f"{a} - {b}"] = row
    return out


def targets(results: dict) -> dict:
    """The issue's targets; the LoRA's are read on ``TARGET_LORA_RUN`` (the paper's method at the longest
    step budget this run trains with 3 seeds), or on the ablation's B-masked where that run is absent."""
    b = results["base"]
    run = TARGET_LORA_RUN if TARGET_LORA_RUN in results["summary"] else "B-masked"
    bm = results["summary"].get(run, {}).get("distinct")
    out = {
        "base_part_color_acc": {"target": TARGETS["base_part_color_acc"], "value": b["part_color_acc"],
                                "met": b["part_color_acc"] >= TARGETS["base_part_color_acc"]},
        "base_sil_iou": {"target": TARGETS["base_sil_iou"], "value": b["sil_iou"],
                         "met": b["sil_iou"] >= TARGETS["base_sil_iou"]},
        "lora_part_color_acc": {"target": TARGETS["lora_part_color_acc"], "run": run,
                                "value": bm["part_color_acc"]["mean"] if bm else None,
                                "se": bm["part_color_acc"]["se"] if bm else None,
                                "seeds": len(bm["seeds"]) if bm else 0,
                                "met": bool(bm and bm["part_color_acc"]["mean"] >= TARGETS["lora_part_color_acc"])},
        "lora_sil_iou": {"target": TARGETS["lora_sil_iou"], "run": run, "value": bm["sil_iou"]["mean"] if bm else None,
                         "se": bm["sil_iou"]["se"] if bm else None,
                         "met": bool(bm and bm["sil_iou"]["mean"] >= TARGETS["lora_sil_iou"])},
    }
    if b.get("speckle") is not None:  # bases evaluated before the speckle rate existed have none
        out["base_speckle"] = {"target": TARGETS["base_speckle"], "goal": "at most", "value": b["speckle"],
                               "met": b["speckle"] <= TARGETS["base_speckle"]}
    if bm and "speckle" in bm:
        out["lora_speckle"] = {"target": TARGETS["lora_speckle"], "goal": "at most", "run": run,
                               "value": bm["speckle"]["mean"], "se": bm["speckle"]["se"],
                               "met": bm["speckle"]["mean"] <= TARGETS["lora_speckle"]}
    return out


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg": os.getloadavg()}


# --------------------------------------------------------------------------------------------------
# outputs: pictures, JSON, demo files


def publish_images(results: dict, work: Path, images: Path) -> None:
    """Copy the pictures of this run (base, zero-shot, one grid per configuration at the first seed)."""
    from instruct_identity.core.files import atomic_write_bytes

    images.mkdir(parents=True, exist_ok=True)
    for name in ("base_text_to_image.png", "base_sheets.png"):
        src = work / "images" / name
        if src.is_file():
            atomic_write_bytes(images / name, src.read_bytes(), fsync=False)
    for name, src in results["grids"].items():
        if Path(src).is_file():
            atomic_write_bytes(images / f"{name}.png", Path(src).read_bytes(), fsync=False)


def export_demo(results: dict, work: Path, command: str, demo: Path) -> dict:
    """The demo's files: the base, the best B-masked LoRA (distinct split, part colour accuracy), a few
    held-out reference sprites; provenance in the safetensors metadata and in ``demo/models/README``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from instruct_identity.core.files import atomic_save_safetensors, atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes
    from instruct_identity.miniature import BaseSpec, load_state, save_base, sprites

    state, spec, _ = load_state(results["base"]["file"])
    base_metrics = {k: results["base"][k] for k in ("part_color_acc", "sil_iou", "part_color_err", "speckle")
                    if k in results["base"]}
    base_metrics["t2i_cfg"] = results["base"]["t2i_cfg"]
    zero = results["zero_shot"].get("zero-shot", {}).get("splits", {}).get("distinct", {})
    provenance = {"command": command, "issue": 11, "pretrain": results["base"]["pretrain"].get("pretrain"),
                  "metrics_text_to_image": base_metrics,
                  "metrics_zero_shot_distinct": {k: zero.get(k) for k in METRICS},
                  "doc": "docs/toy-replication.md"}
    models = demo / "models"
    base_out = save_base(models / "ii_demo_base.safetensors", state, BaseSpec(spec.unet_config, spec.image_size,
                                                                                spec.codec, spec.text_encoder), provenance)
    candidates = [r for r in results["runs"] if r["name"] in DEMO_LORA_RUNS and r["split"] == "distinct" and r.get("lora")]
    out = {"base": str(base_out.relative_to(REPO)) if base_out.is_relative_to(REPO) else str(base_out)}
    if candidates:
        best = max(candidates, key=lambda r: r["metrics"]["part_color_acc"])
        with safe_open(best["lora"], framework="pt") as f:
            meta = dict(f.metadata() or {})
        meta["ii_provenance"] = json.dumps({"command": command, "issue": 11, "run": best["name"], "seed": best["seed"],
                                            "trainer_options": {"preset": "B", "loss": "masked", "rank": best["rank"],
                                                                "steps": best["steps"], "lr": best["lr"],
                                                                "batch": best["batch"],
                                                                "timestep_sampling": results["profile"]["lora"].get(
                                                                    "timestep_sampling", "uniform"),
                                                                **best.get("extra", {})},
                                            "metrics_distinct": best["metrics"],
                                            "base": "ii_demo_base.safetensors"}, sort_keys=True, default=str)
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(best["lora"]).items()}
        lora_out = atomic_save_safetensors(tensors, models / "ii_demo_identity_lora.safetensors", meta)
        out["lora"] = str(lora_out.relative_to(REPO)) if lora_out.is_relative_to(REPO) else str(lora_out)
        out["lora_seed"] = best["seed"]
        out["lora_run"] = best["name"]
    # held-out reference sprites (characters the LoRA never saw), with their suggested prompts
    _, test_chars = sprites.split_characters(100_000, 200, seed=0)
    refs = demo / "references"
    index = []
    for i in range(DEMO_REFERENCES):
        c = test_chars[i * 7]
        pose = sprites.ALL_POSES[[1, 4, 10, 13, 7, 16][i]]
        fname = f"sprite_{i + 1:02d}_{c.head}-{c.torso}-{c.legs}.png"
        atomic_write_bytes(refs / fname, png_bytes(sprites.render(c, pose, spec.image_size)[0]), fsync=False)
        index.append({"file": fname, "character": c.describe(), "pose": pose.caption(),
                      "try": [p.caption() for p in sprites.ALL_POSES if p.pose != pose.pose][:3]})
    atomic_write_text(refs / "references.json", json.dumps(index, indent=1))
    size = sum(f.stat().st_size for f in list(models.glob("ii_demo_*.safetensors")) + list(refs.glob("*.png")))
    out["bytes"] = size
    if size > 25 * 1024 * 1024:
        raise RuntimeError(f"demo files are {size / 2**20:.1f} MB, over the 25 MB budget")
    return out


def _finite(obj):
    """NaN / inf -> None, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    from instruct_identity.core.files import atomic_write_text

    atomic_write_text(path, json.dumps(_finite(obj), indent=1, default=str, allow_nan=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    from . import jobs, report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the whole pipeline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    ap.add_argument("--workers", type=int, default=2, help="jobs in parallel processes (default 2: this machine's cores)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default .cache/toy/<profile>)")
    ap.add_argument("--json", type=Path, default=None, help="results (default docs/toy-replication.json; --quick: <work>)")
    ap.add_argument("--doc", type=Path, default=None, help="report (default docs/toy-replication.md; --quick: <work>)")
    ap.add_argument("--images", type=Path, default=None, help="PNG folder (default docs/images/toy; --quick: <work>)")
    ap.add_argument("--demo", type=Path, default=None, help="demo folder (default demo/ for the full run; --quick: none)")
    ap.add_argument("--runs", nargs="+", default=None, metavar="NAME",
                    help="(re)run only these configurations (others come from the cache when there)")
    ap.add_argument("--retrain-base", action="store_true", help="ignore the cached base model")
    ap.add_argument("--report-only", action="store_true", help="regenerate the markdown from the JSON")
    ap.add_argument("--no-export", action="store_true", help="do not write the demo files")
    args = ap.parse_args(argv)

    jobs.quiet()
    profile = PROFILES["quick" if args.quick else "full"]
    full = profile.name == "full"
    work = (args.work or REPO / ".cache" / "toy" / profile.name).resolve()
    json_path = args.json or (REPO / "docs" / "toy-replication.json" if full else work / "results.json")
    doc = args.doc or (REPO / "docs" / "toy-replication.md" if full else work / "report.md")
    images = args.images or (REPO / "docs" / "images" / "toy" if full else work / "published-images")
    demo = args.demo or (REPO / "demo" if full else None)
    command = ".venv/bin/python -m benchmarks.toy.run" + (" --quick" if args.quick else "")

    if args.report_only:
        results = json.loads(json_path.read_text())
        report.write(results, doc, os.path.relpath(images, doc.parent))
        log.info("report: %s", doc)
        return 0
    jobs.setup(args.threads)
    results = run_profile(profile, work, args.seed, args.threads, args.workers,
                          set(args.runs) if args.runs else None, retrain_base=args.retrain_base)
    results["generated_by"] = command + (f" --runs {' '.join(args.runs)}" if args.runs else "")
    publish_images(results, work, images)
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    for entry in ("multi", "capacity"):  # benchmarks.toy.multi's and benchmarks.toy.capacity's entries, rerun on their own
        if entry in previous:
            results[entry] = previous[entry]
    if demo is not None and not args.no_export:
        results["demo"] = export_demo(results, work, command, demo)
    write_json(json_path, results)
    report.write(results, doc, os.path.relpath(images, doc.parent))
    log.info("results: %s\nreport: %s\nimages: %s\ntotal %.1f min wall", json_path, doc, images, results["wall_s"] / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
