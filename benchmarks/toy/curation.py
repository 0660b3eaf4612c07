"""The paper's data curation, end to end, in the miniature world (issue 20).

    .venv/bin/python -m benchmarks.toy.curation                  # full profile (background it; cached per stage)
    .venv/bin/python -m benchmarks.toy.curation --profile quick  # minutes: every stage once, small

A text-only base (the shipped miniature FLUX, ``demo/models/ii_demo_base.safetensors``) makes its own
training pairs, through the user's path:

1. **Stage I sheets**: training characters given only as text (``name: description``) and pose
   prompts go into the shipped character-sheet batch workflow, queued on a real ComfyUI server with
   the miniature's loader in place of the FLUX loaders (``workflows/character_sheet_regional_batch_miniature.json``,
   API form ``miniature/sheets_prompt.json``): regional prompting, one two-view sheet per character and
   pose pair, saved 4x enlarged with its layout.
2. **Curation**: ``ii-curate`` (``curation.cli.main``, the console script's code) cuts, dedups and pairs
   the sheets, unfiltered and with ``--filter charis``: colour axis only (no judge), and with the
   simulated VLM judge (``judge.PaletteJudge``) at error rates 0, 0.2, 0.4 answering CHARIS's own prompts.
3. **Ground truth for every cell**: the character and pose it was asked for are known, so each cell
   is *consistent* when every part has the character's colour (``evaluate.part_guesses`` on the
   requested pose's part masks), and each candidate pair is *good* when both its cells are; the filter
   is then a detector of good pairs (precision, recall), beside the yield (sheets -> cells -> pairs kept,
   with the reasons for each drop) and the speckle rate of the cells.
4. **Stage II**: a grid LoRA (the trainer's ``mode = "grid"``) on the Stage I sheets the judge (error 0)
   kept whole; new sheets from it (same workflow, a LoraLoaderModelOnly after the loader); curated again.
5. **Identity LoRAs on curated data only** (the toy replication's job code and evaluation: held-out
   characters, distinct and near splits, seeds, paired differences), for Stage I + filter, Stage I
   unfiltered, Stage I + II + filter, and the ground-truth-pairs LoRA (pairs drawn by the renderer) as
   the reference row, all at the profile's step budget; and the *matched* ground-truth control: the renderer's
   drawing of the Stage I + filter pairs' own characters and poses (same size, clean and right), which tells
   how much of the gap is the curated data's quantity and how much its quality; and *sized*: as many
   renderer pairs as the curated set, with poses drawn per pair as the reference's (pose coverage vs count).

Results: ``docs/curation-replication.json`` (``--out``), ``docs/curation-replication.md`` generated from
it (``curation_report.py``), pictures under ``docs/images/toy/curation-*.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

log = logging.getLogger("toy.curation")

REPO = Path(__file__).resolve().parents[2]
BASE_FILE = REPO / "demo" / "models" / "ii_demo_base.safetensors"
SHEETS_PROMPT = REPO / "miniature" / "sheets_prompt.json"
SHEETS_TEMPLATE = REPO / "workflows" / "character_sheet_regional_batch_miniature.json"
REPAIR_PROMPT = REPO / "miniature" / "repair_prompt.json"
REPAIR_TEMPLATE = REPO / "workflows" / "outpaint_repair_miniature.json"
ZOOM = 4      # sheets are saved 4x enlarged (the template's ImageScaleBy)
SIZE = 32     # one cell of the miniature
SHEET_FOLDER = "character_sheets_miniature"
FORMAT = "toy-curation-v1"


@dataclass(frozen=True)
class CurationProfile:
    name: str
    characters: int                 # training characters, given as text only
    sheets_per_character: int       # one pose pair per sheet
    seeds: int                      # identity LoRA seeds per configuration
    identity_steps: int             # identity LoRA budget (B-masked-2400: 2400)
    grid_steps: int                 # Stage II grid LoRA budget
    eval_items: int = 32
    heldout_pairs: int = 24
    sample_steps: int = 24
    sheet_steps: int = 24
    sheet_cfg: float = 4.0
    judge_errors: tuple = (0.0, 0.2, 0.4)
    gt_pairs: int = 2000            # the ground-truth-pairs LoRA's data (as the toy replication)
    batch: int = 16
    rank: int = 16
    lr: float = 0.005
    grid_rank: int = 16
    grid_lr: float = 0.002
    regional: dict = field(default_factory=dict)   # Regional Prompting widgets over the template's (none: as shipped)
    sweep_characters: int = 24                     # characters (x 2 pose pairs) of the Stage I settings sweep
    base_template: str | None = None              # None: the template's
    cell_template: str | None = None
    whole_caption: bool = False                   # no regional prompting: one caption naming both views' poses
    grid_preset: str = "A"                        # the grid LoRA's layers (A: attention + image embedder)
    long_steps: int = 0                           # a second identity budget (B-masked-2400's) for LONG_RUNS; 0: none


LONG_RUNS = ("stage1-filtered", "ground-truth-pairs")  # the curated data and its reference, at long_steps too
REFERENCE = "ground-truth-pairs"
GRID_STEPS = 200  # the full profile's grid LoRA budget (see the report: more overfits the few kept sheets)

# Stage I settings compared on a subset (the shipped miniature template's against the FLUX template's)
SWEEP = {
    "shipped: description + pose per cell, blocked, cell positions, base ratio 0.2": {},
    "as shipped, base ratio 0": {"regional": {"base_ratio": 0.0}},
    "as shipped, sheet positions, base ratio 0 (shipped until 2026-12-07)": {"regional": {"positions": "sheet", "base_ratio": 0.0}},
    "description + pose per cell, global, cell positions": {"regional": {"image_attention": "global"}},
    "description + pose per cell, global, sheet positions": {"regional": {"image_attention": "global", "positions": "sheet"}},
    "FLUX template's settings: pose per cell, global, sheet positions, first 30 % of steps": {
        "cell_template": "{pose}", "regional": {"image_attention": "global", "positions": "sheet", "end": 0.3}},
    "no regional prompting: one caption with the description and both views' poses": {"whole_caption": True},
}

PROFILES = {
    "quick": CurationProfile("quick", characters=6, sheets_per_character=2, seeds=1, identity_steps=6, grid_steps=6,
                             eval_items=4, heldout_pairs=4, sample_steps=4, judge_errors=(0.0, 0.4), gt_pairs=16,
                             batch=4, sweep_characters=2, long_steps=8),
    "full": CurationProfile("full", characters=100, sheets_per_character=6, seeds=3, identity_steps=600, grid_steps=GRID_STEPS,
                            long_steps=2400),
}


# --------------------------------------------------------------------------------------------------
# characters and sheets


def training_characters(n: int):
    """The first ``n`` training characters of the toy replication (never held out)."""
    from instruct_identity.miniature import sprites

    train, _ = sprites.split_characters(100_000, 200, seed=0)
    return train[:n]


def pose_pairs(characters: int, n: int, seed: int) -> list[list[tuple]]:
    """Per character, ``n`` pose pairs (two different poses each), one per sheet, drawn for that character:
    the curated pairs then cover the poses as the ground-truth pairs do (every character the same few pose
    pairs would leave the identity LoRA's data only those)."""
    from instruct_identity.miniature import sprites

    out = []
    for ci in range(characters):
        rng = random.Random(f"curation-poses:{seed}:{ci}")
        out.append([tuple(rng.sample(sprites.ALL_POSES, 2)) for _ in range(n)])
    return out


def sheet_groups(chars: list, pairs: list[list[tuple]]) -> list[tuple[int, tuple, list]]:
    """The queue's prompts: (sheet index, pose pair, [(character index, character)]) for every set of
    characters drawn with the same pose pair on the same sheet index (one batch-node list each)."""
    groups: dict[tuple, list] = {}
    for ci, (c, pps) in enumerate(zip(chars, pairs, strict=True)):
        for j, poses in enumerate(pps):
            groups.setdefault((j, poses), []).append((ci, c))
    return [(j, poses, members) for (j, poses), members in groups.items()]


def char_name(ci: int, sheet: int) -> str:
    return f"c{ci:04d}s{sheet}"


def parse_name(name: str) -> tuple[int, int]:
    stem = Path(name).name.split("_")[0]
    return int(stem[1:5]), int(stem[6:])


def whole_sheet_template(poses: tuple) -> str:
    """The batch node's base template that, filled with a description, is the miniature's own sheet caption
    (``sprites.sheet_caption``: the description, then each view's pose), the caption the base was trained on."""
    from instruct_identity.miniature import sprites

    head, rest = sprites.sheet_caption(None, list(poses)).split(". ", 1)
    return f"{head}. {{description}}. {rest}"


def sheets_prompt(members: list, poses: tuple, sheet: int, p: CurationProfile, seed: int, folder: str,
                  lora: str | None = None) -> dict:
    """The template's API graph for one pose pair: each of ``members`` ((index, character)) once (the batch
    node's list).
    ``p.whole_caption``: the Regional Prompting node is taken out; the sampler gets the base model and one
    caption for the whole sheet (the layout still cuts the saved sheet into its cells)."""
    prompt = json.loads(SHEETS_PROMPT.read_text())
    by_type = {v["class_type"]: k for k, v in prompt.items()}
    batch = prompt[by_type["InstructIdentityCharacterSheetBatch"]]["inputs"]
    batch["characters"] = "\n".join(f"{char_name(ci, sheet)}: {c.describe()}" for ci, c in members)
    batch["poses"] = "\n".join(pose.caption() for pose in poses)
    batch["seed"] = int(seed) + 7919 * sheet
    batch["folder"] = folder
    for key in ("base_template", "cell_template"):
        if getattr(p, key) is not None:
            batch[key] = getattr(p, key)
    sampler = prompt[by_type["KSampler"]]["inputs"]
    sampler.update(steps=p.sheet_steps, cfg=p.sheet_cfg)
    regional = prompt[by_type["InstructIdentityRegionalPrompting"]]["inputs"]
    regional.update(p.regional)
    if p.whole_caption:
        batch["base_template"] = whole_sheet_template(poses)
        sampler.update(model=regional["model"], positive=regional["conditioning"])
        del prompt[by_type["InstructIdentityRegionalPrompting"]]
    if lora is not None:  # Stage II: the grid LoRA between the loader and everything that uses its model
        loader = by_type["InstructIdentityDemoModel"]
        prompt["lora"] = {"class_type": "LoraLoaderModelOnly",
                          "inputs": {"model": [loader, 0], "lora_name": lora, "strength_model": 1.0}}
        for node in prompt.values():
            for k, v in node["inputs"].items():
                if v == [loader, 0] and node is not prompt["lora"]:
                    node["inputs"][k] = ["lora", 0]
    return prompt


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage_key(sheets: Path) -> str | None:
    """The cache key of a folder of sheets (its ``done.json``): later stages made from it key on it."""
    done = Path(sheets) / "done.json"
    return json.loads(done.read_text()).get("key") if done.is_file() else None


def _file_key(path: Path) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if Path(path).is_file() else None


def make_sheets(server, out: Path, stage: str, chars: list, pairs: list[list[tuple]], p: CurationProfile, seed: int,
                lora: str | None = None) -> dict:
    """Queue one prompt per (sheet, pose pair) group on ``server`` (``pairs``: per character, its sheets'
    pose pairs); the sheets and their layouts land in ``out``. Cached."""
    done = out / "done.json"
    key = _key({"chars": [c.describe() for c in chars], "pairs": [[[q.caption() for q in pp] for pp in pps] for pps in pairs],
                "seed": seed, "lora": _file_key(server.loras / lora) if lora and server else lora,
                **{k: getattr(p, k) for k in ("sheet_steps", "sheet_cfg", "regional", "base_template", "cell_template",
                                              "whole_caption")}})
    if done.is_file() and json.loads(done.read_text()).get("key") in (key, None):
        return json.loads(done.read_text())  # (None: cached before keys were written)
    if server is None:
        raise RuntimeError(f"{stage}: the sheets must be made again, but no ComfyUI server was started")
    folder = f"{SHEET_FOLDER}/{stage}"
    target = server.output / folder
    if target.exists():
        shutil.rmtree(target)  # a half-made stage: start it again
    template = json.loads(SHEETS_TEMPLATE.read_text())
    t0 = time.perf_counter()
    groups = sheet_groups(chars, pairs)
    for k, (j, poses, members) in enumerate(groups):
        server.run(sheets_prompt(members, poses, j, p, seed, folder, lora), template)
        if (k + 1) % 50 == 0 or k + 1 == len(groups):
            log.info("%s: %d/%d prompts queued and done", stage, k + 1, len(groups))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(target, out)
    info = {"sheets": len(list(out.glob("*.png"))), "wall_s": time.perf_counter() - t0, "key": key}
    from instruct_identity.core.files import atomic_write_text

    atomic_write_text(done, json.dumps(info))
    return info


# --------------------------------------------------------------------------------------------------
# out-paint repair (the miniature has no Fill model: masked sampling with the base)


def _node(prompt: dict, class_type: str) -> dict:
    return next(v for v in prompt.values() if v["class_type"] == class_type)


def repair_prompt(image: str, text: str, seed: int, p: CurationProfile, prefix: str) -> dict:
    """The repair template's API graph for one cell: ``image`` (a file in ComfyUI's input folder) padded on
    its cut-off sides, the padding drawn with the cell's own prompt ``text``."""
    prompt = json.loads(REPAIR_PROMPT.read_text())
    _node(prompt, "LoadImage")["inputs"]["image"] = image
    sampler = _node(prompt, "KSampler")["inputs"]
    sampler.update(seed=int(seed), steps=p.sheet_steps, cfg=p.sheet_cfg)
    prompt[sampler["positive"][0]]["inputs"]["text"] = text
    _node(prompt, "SaveImage")["inputs"]["filename_prefix"] = prefix
    return prompt


def border_settings() -> dict:
    """The repair template's Find Cut-off Borders widgets (one definition: the graph's)."""
    inputs = _node(json.loads(REPAIR_PROMPT.read_text()), "InstructIdentityOutpaintBorders")["inputs"]
    return {k: v for k, v in inputs.items() if not isinstance(v, list)}


def reframe(picture: np.ndarray, size: int = SIZE) -> np.ndarray:
    """A ``size`` x ``size`` window of an out-painted (larger) cell around its subject's bounding box, so the
    repaired cell keeps the miniature's size (a FLUX user keeps the larger picture)."""
    import torch

    from instruct_identity.curation import outpaint

    h, w = picture.shape[:2]
    mask = outpaint.subject_mask(torch.from_numpy(picture.astype(np.float32) / 255.0)).numpy() > 0.5
    ys, xs = np.nonzero(mask)
    cy, cx = ((ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2) if len(ys) else (h / 2, w / 2)
    top = int(min(max(round(cy - size / 2), 0), h - size))
    left = int(min(max(round(cx - size / 2), 0), w - size))
    return picture[top:top + size, left:left + size]


def repair_sheets(server, src: Path, out: Path, p: CurationProfile, seed: int) -> dict:
    """Every cell of the sheets in ``src`` that Find Cut-off Borders calls cut off goes through the repair
    template on ``server`` (padding drawn by the base with the cell's prompt), is reframed to the cell size
    and put back; the repaired sheets (with their layouts) land in ``out``. Cached."""
    import torch
    from PIL import Image

    from instruct_identity.core.files import atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes
    from instruct_identity.curation import outpaint
    from instruct_identity.curation.pipeline import load_picture, split_sheet
    from instruct_identity.curation.sheets import read_sheet_info, sidecar_path
    from instruct_identity.miniature import demo_run

    done = out / "done.json"
    key = _key({"sheets": _stage_key(src), "graph": _file_key(REPAIR_PROMPT),
                "seed": seed, "steps": p.sheet_steps, "cfg": p.sheet_cfg})
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    if server is None:
        raise RuntimeError("repair: the cells must be repaired again, but no ComfyUI server was started")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings, workflow = border_settings(), json.loads(REPAIR_TEMPLATE.read_text())
    inbox = server.base / "input" / "repair"
    inbox.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cells_info: dict[str, list] = {}
    sides_count: dict[str, int] = {}
    for k, path in enumerate(sorted(src.glob("*.png"))):
        info = read_sheet_info(path)
        sheet = (shrink(np.asarray(load_picture(path))[..., :3]) * 255).round().astype(np.uint8)
        per = []
        for i, (cell, region) in enumerate(zip(split_sheet(sheet, info), info.layout.regions)):
            report, _ = outpaint.border_padding(torch.from_numpy(cell.astype(np.float32) / 255.0), **settings)
            entry = {"sides": report.sides, "padding": report.padding}
            if report.sides:
                name = f"{path.stem}_{i}.png"
                atomic_write_bytes(inbox / name, png_bytes(cell), fsync=False)
                prompt = repair_prompt(f"repair/{name}", region.prompt, seed + 131 * k + i, p,
                                       f"repair/{path.stem}_{i}")
                saved = demo_run.saved_images(server.run(prompt, workflow), prompt)
                padded = np.asarray(Image.open(server.output / saved[0]["subfolder"] / saved[0]["filename"]).convert("RGB"))
                fixed = reframe(padded, cell.shape[0])
                x, y, w, h = region.box
                sheet[y:y + h, x:x + w] = fixed
                after, _ = outpaint.border_padding(torch.from_numpy(fixed.astype(np.float32) / 255.0), **settings)
                entry.update(padded_size=list(padded.shape[:2]), still_cut_off=after.sides)
                for side in report.sides:
                    sides_count[side] = sides_count.get(side, 0) + 1
            per.append(entry)
        cells_info[path.name] = per
        big = np.repeat(np.repeat(sheet, ZOOM, 0), ZOOM, 1)
        atomic_write_bytes(out / path.name, png_bytes(big), fsync=False)
        shutil.copy2(sidecar_path(path), sidecar_path(out / path.name))
        if (k + 1) % 50 == 0:
            log.info("repair: %d sheets", k + 1)
    cells = [c for v in cells_info.values() for c in v]
    repaired = [c for c in cells if c["sides"]]
    info = {"sheets": len(cells_info), "cells": len(cells), "repaired": len(repaired),
            "still_cut_off": sum(1 for c in repaired if c.get("still_cut_off")), "sides": sides_count,
            "settings": settings, "per_sheet": cells_info, "wall_s": time.perf_counter() - t0, "key": key}
    atomic_write_text(done, json.dumps(info))
    return info


def repair_effect(before: dict[str, dict], after: dict[str, dict], repair: dict, chars: list | None = None) -> dict:
    """Ground truth of the repaired cells before and after repair (the rest are unchanged); with ``chars``,
    also how many of them the renderer itself draws touching the same side (a figure placed at the edge
    by its pose, which the detector cannot tell from a cut-off one)."""
    import torch

    from instruct_identity.curation import outpaint
    from instruct_identity.miniature import sprites

    keys = [(n, i) for n, cells in repair["per_sheet"].items() for i, c in enumerate(cells)
            if c["sides"] and n in before and n in after]
    out = {"cells": len(keys)}
    for label, truth in (("before", before), ("after", after)):
        cs = [truth[n]["cells"][i] for n, i in keys]
        out[label] = {"cells_consistent": _share(c["consistent"] for c in cs),
                      "cells_on_prompt": _share(c["on_prompt"] for c in cs),
                      "speckle": float(np.nanmean([c["speckle"] for c in cs])) if cs else math.nan}
    if chars is not None:
        settings, by_design = border_settings(), 0
        for n, i in keys:
            pose = pose_of(before[n]["cells"][i]["pose"])
            img = sprites.render(chars[before[n]["character"]], pose, SIZE)[0]
            touch, _ = outpaint.border_padding(torch.from_numpy(img.astype(np.float32) / 255.0), **settings)
            by_design += bool(set(touch.sides) & set(repair["per_sheet"][n][i]["sides"]))
        out["touching_by_design"] = by_design
    return out


# --------------------------------------------------------------------------------------------------
# ground truth


def shrink(cell: np.ndarray) -> np.ndarray:
    """A 4x-enlarged uint8 cell back to 32 px, 0..1: the mean of each 4 x 4 block (exact for nearest)."""
    h, w = cell.shape[0] // ZOOM, cell.shape[1] // ZOOM
    return cell[: h * ZOOM, : w * ZOOM].reshape(h, ZOOM, w, ZOOM, 3).astype(np.float32).mean((1, 3)) / 255.0


def pose_of(caption: str):
    from instruct_identity.miniature import sprites

    return next((q for q in sprites.ALL_POSES if q.caption() == caption.strip()), None)


def cell_truth(cell: np.ndarray, char, pose) -> dict:
    """Ground truth of one generated cell asked to show ``char`` in ``pose``: *consistent* when every part
    of the best-fitting sprite pose has the character's colour (and a hat exactly when it has one) --
    identity, whatever pose was drawn; *on prompt* when the figure overlaps the requested pose's
    silhouette by IoU >= 0.5; speckle inside the drawn parts."""
    from instruct_identity.miniature import sprites

    from . import evaluate

    out = shrink(cell)
    drawn, masks, fit = evaluate.best_pose(out)
    seen = evaluate.part_colours_seen(out, masks)
    want = {part: evaluate.true_color(char, part) for part in sprites.PARTS}
    wrong = [part for part in sprites.PARTS if seen[part] != want[part]]
    asked = sprites.silhouette(sprites.render(char, pose, SIZE)[1])
    sil = evaluate.iou(evaluate.figure_mask(out), asked)
    return {"pose": pose.caption(), "drawn_pose": drawn.caption(), "fit": fit, "consistent": not wrong,
            "wrong_parts": wrong, "parts_right": len(sprites.PARTS) - len(wrong), "parts": len(sprites.PARTS),
            "sil_iou": sil, "on_prompt": sil >= 0.5, "speckle": evaluate.speckle(out, masks)}


def sheets_truth(folder: Path, chars: list) -> dict[str, dict]:
    """Per sheet file name: its character and each cell's ground-truth check."""
    from instruct_identity.curation.pipeline import load_picture, split_sheet
    from instruct_identity.curation.sheets import read_sheet_info

    truth = {}
    for path in sorted(folder.glob("*.png")):
        info = read_sheet_info(path)
        ci, sheet = parse_name(path.name)
        cells = split_sheet(load_picture(path), info)
        checks = [cell_truth(c, chars[ci], pose_of(cap)) for c, cap in zip(cells, info.layout.captions)]
        truth[path.name] = {"character": ci, "sheet": sheet, "cells": checks,
                            "consistent": all(c["consistent"] for c in checks)}
    return truth


def consistency(truth: dict[str, dict]) -> dict:
    cells = [c for t in truth.values() for c in t["cells"]]
    return {"sheets": len(truth), "cells": len(cells),
            "cells_consistent": _share(c["consistent"] for c in cells),
            "sheets_consistent": _share(t["consistent"] for t in truth.values()),
            "part_colour_acc": float(np.mean([c["parts_right"] / c["parts"] for c in cells])) if cells else math.nan,
            "cells_on_prompt": _share(c["on_prompt"] for c in cells),
            "sil_iou": float(np.mean([c["sil_iou"] for c in cells])) if cells else math.nan,
            "speckle": float(np.nanmean([c["speckle"] for c in cells])) if cells else math.nan,
            # per cell of the sheet, left to right: a model that draws one side worse shows here
            "by_cell": [{"cells_consistent": _share(t["cells"][i]["consistent"] for t in truth.values() if len(t["cells"]) > i),
                         "cells_on_prompt": _share(t["cells"][i]["on_prompt"] for t in truth.values() if len(t["cells"]) > i)}
                        for i in range(max((len(t["cells"]) for t in truth.values()), default=0))]}


def _share(values) -> float:
    v = [bool(x) for x in values]
    return sum(v) / len(v) if v else math.nan


# --------------------------------------------------------------------------------------------------
# curation and the filter as a detector


def filter_configs(p: CurationProfile) -> list[dict]:
    """Unfiltered; CHARIS colour axis alone (no judge); the simulated judge at each error rate, with the
    colour axis (identity + colour + diversity) and without it (identity + diversity)."""
    out = [{"name": "unfiltered", "filter": "off", "judge_error": None, "colour": None},
           {"name": "colour-only", "filter": "charis", "judge_error": None, "colour": True}]
    for colour in (True, False):
        out += [{"name": f"judge-{e:g}" + ("" if colour else "-no-colour"), "filter": "charis", "judge_error": float(e),
                 "colour": colour} for e in p.judge_errors]
    return out


def f1(c: dict) -> float:
    pr, rc = c.get("precision"), c.get("recall")
    if pr is None or rc is None or not (pr + rc > 0) or math.isnan(pr) or math.isnan(rc):
        return 0.0
    return 2 * pr * rc / (pr + rc)


def downstream_filter(curation: dict) -> str:
    """The filter the later stages use: the best detector (F1) among the judge at error 0 with and
    without the colour axis -- chosen with the ground truth, which a real run does not have (said so in
    the report); ties go to the full filter."""
    names = [n for n, c in curation.items() if c.get("judge_error") == 0.0]
    return max(names, key=lambda n: (f1(curation[n]), curation[n].get("colour") is True))


def curate(sheets: Path, dataset: Path, config: dict, work: Path, seed: int) -> dict:
    """``ii-curate SHEETS DATASET [--filter charis --charis-config CFG]``; returns its report. Cached."""
    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.curation import cli

    from . import judge as J

    report_file = dataset.parent / f"{dataset.name}.report.json"
    key = _key({"sheets": _stage_key(sheets), "config": config, "seed": seed})
    if report_file.is_file() and json.loads(report_file.read_text()).get("key") == key:
        return json.loads(report_file.read_text())
    if dataset.exists():
        shutil.rmtree(dataset)
    argv = [str(sheets), str(dataset), "--report", str(report_file)]
    server = None
    try:
        if config["filter"] == "charis":
            server = J.PaletteJudge(config["judge_error"], seed=seed) if config["judge_error"] is not None else None
            cfg_file = dataset.parent / f"{dataset.name}.charis.json"
            atomic_write_text(cfg_file, json.dumps(J.charis_config(server, cache_dir=None,
                                                                   colour=config.get("colour") is not False), indent=1))
            argv += ["--filter", "charis", "--charis-config", str(cfg_file)]
        t0 = time.perf_counter()
        code = cli.main(argv)
        if code != 0:
            raise RuntimeError(f"ii-curate {' '.join(argv)} exited with {code}")
        report = json.loads(report_file.read_text())
        report["wall_s"] = time.perf_counter() - t0
        report["key"] = key
        if server is not None:
            report["judge"] = {"requests": server.requests, "corrupted": server.corrupted, "by_task": server.by_task}
    finally:
        if server is not None:
            server.close()
    atomic_write_text(report_file, json.dumps(report))
    return report


def manifest_rows(dataset: Path) -> list[dict]:
    """The dataset's manifest lines (none when the filter kept nothing: then ii-curate writes no manifest)."""
    f = dataset / "pairs.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def _pair_cells(item: str) -> tuple[int, int] | None:
    if not item.startswith("pair "):
        return None
    a, b = item[5:].split("->")
    return int(a), int(b)


def detector(truth: dict[str, dict], dataset: Path, report: dict) -> dict:
    """The filter as a detector of good pairs (both cells consistent with the character asked for)."""
    kept = {(Path(row["sheet"]).name, *row["cells"]) for row in manifest_rows(dataset)}
    considered: dict[tuple, str] = {(Path(s).name, *c): "kept" for s, *c in kept}
    for d in report.get("dropped", []):
        cells = _pair_cells(d["item"])
        if cells is not None:
            considered[(Path(d["sheet"]).name, *cells)] = d["reason"]

    def good(key):
        t = truth[key[0]]["cells"]
        return t[key[1] - 1]["consistent"] and t[key[2] - 1]["consistent"]

    tp = sum(1 for k in kept if good(k))
    positives = sum(1 for k in considered if good(k))
    return {"candidates": len(considered), "kept": len(kept), "good_candidates": positives,
            "good_share_before": positives / len(considered) if considered else math.nan,
            "precision": tp / len(kept) if kept else math.nan,
            "recall": tp / positives if positives else math.nan,
            "sheets": report["sheets"], "cells": report["cells"], "pairs_considered": report["pairs_considered"],
            "written": report["written"], "dropped_by_reason": report.get("dropped_by_reason", {}),
            "curate_wall_s": report.get("wall_s"), "judge": report.get("judge")}


def kept_sheets(truth: dict[str, dict], dataset: Path) -> list[str]:
    """Sheets every one of whose candidate pairs the filter kept (the "filtered sheets" of Stage II)."""
    counts: dict[str, int] = {}
    for row in manifest_rows(dataset):
        name = Path(row["sheet"]).name
        counts[name] = counts.get(name, 0) + 1
    return sorted(n for n, k in counts.items() if k >= len(truth[n]["cells"]) * (len(truth[n]["cells"]) - 1))


def matched_ground_truth(dataset: Path, sheets: Path, chars: list) -> list:
    """The renderer's drawing of exactly what the curated ``dataset``'s pairs were asked to show: per pair, the
    sheet's character in its reference and target cells' requested poses. Same size and poses as the curated
    data, with clean pixels and every pair right: the control that splits the curated LoRA's gap to the
    ground-truth-pairs LoRA into data quantity and data quality."""
    from instruct_identity.curation.sheets import read_sheet_info

    from . import data

    out, captions = [], {}
    for row in manifest_rows(dataset):
        name = Path(row["sheet"]).name
        if name not in captions:
            captions[name] = read_sheet_info(sheets / name).layout.captions
        ref, tgt = (pose_of(captions[name][c - 1]) for c in row["cells"])
        if ref is None or tgt is None:
            raise ValueError(f"{name}: a cell caption of pair {row['cells']} is not a miniature pose")
        out.append(data.PairSpec(chars[parse_name(name)[0]], ref, tgt))
    return out


def merged_training_copy(datasets: list[Path], out: Path) -> Path:
    """The curated datasets' pairs at the miniature's own size (4x4 block means) in one manifest, lines as
    written by ii-curate (images are content-addressed, so merging never clashes)."""
    from PIL import Image

    from instruct_identity.core.files import atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes

    manifest = out / "pairs.jsonl"
    if manifest.is_file():
        return manifest
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for dataset in datasets:
        for row in manifest_rows(dataset):
            for key in ("reference", "target"):
                dst = out / row[key]
                if not dst.is_file():
                    arr = np.asarray(Image.open(dataset / row[key]).convert("RGB"))
                    atomic_write_bytes(dst, png_bytes((shrink(arr) * 255).round().astype(np.uint8)), fsync=False)
            lines.append(json.dumps(row))
    atomic_write_text(manifest, "\n".join(lines) + "\n")
    return manifest


# --------------------------------------------------------------------------------------------------
# Stage II: the grid LoRA


def train_grid_lora(sheets: Path, names: list[str], chars: list, out: Path, p: CurationProfile, seed: int) -> dict:
    """A text-to-image LoRA (trainer ``mode = "grid"``, ``p.grid_preset`` layers) on whole sheets at 64 x 32,
    each captioned with the whole sheet: the character's description and each view's pose, as asked
    (``whole_sheet_template``). Cached under a key of its data and settings."""
    from PIL import Image

    from instruct_identity.core.files import atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes
    from instruct_identity.curation.sheets import read_sheet_info
    from instruct_identity.miniature import files as mfiles
    from instruct_identity.training.config import from_dict
    from instruct_identity.training.model import Components
    from instruct_identity.training.trainer import train

    done = out / "grid_lora.json"
    key = _key({"names": names, "sheets": _stage_key(sheets), "seed": seed, **{k: getattr(p, k) for k in ("grid_steps", "grid_rank", "grid_lr",
                                                                            "grid_preset", "batch")}})
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    if not names:
        raise RuntimeError("no Stage I sheet passed the filter whole: nothing to train the grid LoRA on")
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in names:
        arr = np.asarray(Image.open(sheets / name).convert("RGB"))
        atomic_write_bytes(data / name, png_bytes((shrink(arr) * 255).round().astype(np.uint8)), fsync=False)
        info = read_sheet_info(sheets / name)
        poses = tuple(pose_of(c) for c in info.layout.captions)
        caption = whole_sheet_template(poses).format(description=chars[parse_name(name)[0]].describe())
        atomic_write_text((data / name).with_suffix(".txt"), caption + "\n")
    toml = out / "grid_dataset.toml"
    atomic_write_text(toml, f'[general]\nresolution = [{2 * SIZE}, {SIZE}]\nenable_bucket = false\n'
                            f'caption_extension = ".txt"\n\n[[datasets]]\nbatch_size = {p.batch}\n\n'
                            f'  [[datasets.subsets]]\n  image_dir = "data"\n')
    if (out / "cache").exists():
        shutil.rmtree(out / "cache")  # latents and text of another set of sheets
    cfg = from_dict(dict(mode="grid", preset=p.grid_preset, loss="full", network_dim=p.grid_rank, network_alpha=float(p.grid_rank),
                         dataset_config=str(toml), train_batch_size=p.batch, max_train_steps=p.grid_steps,
                         learning_rate=p.grid_lr, lr_scheduler="cosine", lr_warmup_steps=0.05, optimizer_type="AdamW",
                         timestep_sampling="shift", discrete_flow_shift=3.0, guidance_scale=1.0, mixed_precision="no",
                         save_precision="fp16", seed=seed, output_dir=str(out), output_name="stage2-grid",
                         cache_dir=str(out / "cache"), save_state=False))
    base = mfiles.load_base(BASE_FILE)
    t0 = time.perf_counter()
    result = train(cfg, Components(base.model, base.codec, base.text_encoder, str(BASE_FILE), "ii-demo-base"))
    info = {"lora": str(result.lora_path), "sheets": len(names), "steps": result.step,
            "wall_s": time.perf_counter() - t0, "loss_first20": float(np.mean(result.losses[:20])),
            "loss_last20": float(np.mean(result.losses[-20:])), "preset": p.grid_preset, "rank": p.grid_rank,
            "lr": p.grid_lr, "key": key}
    atomic_write_text(done, json.dumps(info))
    return info


# --------------------------------------------------------------------------------------------------
# identity LoRAs (the toy replication's job code)


def long_name(name: str, steps: int) -> str:
    """The run name of ``name`` trained for ``steps`` (the toy replication's B-masked-2400 convention)."""
    return f"{name}-{steps}"


def budget_of(name: str, p: CurationProfile) -> int:
    """The identity LoRA steps of run ``name``."""
    return p.long_steps if p.long_steps and name.endswith(f"-{p.long_steps}") else p.identity_steps


def reference_of(name: str, p: CurationProfile) -> str:
    """The ground-truth-pairs run that ``name`` is paired against: the one at its own budget."""
    return long_name(REFERENCE, p.long_steps) if budget_of(name, p) != p.identity_steps else REFERENCE


def identity_jobs(p: CurationProfile, work: Path, manifests: dict[str, Path], seed: int, threads: int,
                  steps: int | None = None) -> list[dict]:
    """One job per (training data, seed). ``steps``: another budget than the profile's (names get it as suffix)."""
    base_key = _file_key(BASE_FILE)
    lora = {"steps": steps or p.identity_steps, "batch": p.batch, "rank": p.rank, "lr": p.lr, "timestep_sampling": "shift",
            "shift": 3.0, "scheduler": "cosine", "warmup": 0.05}
    common = {"unet": None, "base_file": str(BASE_FILE), "base_key": base_key, "base_hash": f"toy-base:{base_key}",
              "work": str(work / "identity"), "size": SIZE, "seed": seed, "threads": threads, "train_seed": seed,
              "eval_items": p.eval_items, "heldout_pairs": p.heldout_pairs, "sample_steps": p.sample_steps,
              "grid_items": 6, "lora": lora, "splits": ["distinct", "near"], "caption": "plain"}
    jobs_ = []
    for name, manifest in manifests.items():
        digest = _file_key(manifest)
        run_name = long_name(name, steps) if steps else name
        for s in range(p.seeds):
            spec = {"name": run_name, "preset": "B", "loss": "masked", "seed": seed + s, "extra": {}}
            jobs_.append({**common, "kind": "lora", "name": run_name, "label": run_name, "spec": spec,
                          "manifest": str(manifest), "train_pairs": f"{name}:{digest}"})
    return jobs_


def paired(a: list[float], b: list[float]) -> dict:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan,
            "n": int(len(d))}


def identity_summary(done: list[dict], reference_for) -> dict:
    """Mean ± SE over seeds per (run, split), and each run minus its reference run (``reference_for(name)``),
    paired by seed."""
    runs, by = [], {}
    for r in done:
        for split, m in r["splits"].items():
            row = {"name": r["name"], "seed": r["seed"], "split": split, "steps": r.get("steps"),
                   "train_wall_s": r.get("wall_s"), "eval_wall_s": r.get("eval_wall_s"), "heldout_loss": r.get("heldout_loss"),
                   "metrics": {k: m[k] for k in m}, "grid": r.get("grid")}
            runs.append(row)
            by.setdefault(r["name"], {}).setdefault(split, {})[r["seed"]] = m
    summary = {}
    for name, splits in by.items():
        summary[name] = {}
        for split, seeds in splits.items():
            vals = {k: [seeds[s][k] for s in sorted(seeds)] for k in ("part_color_acc", "sil_iou", "speckle")}
            row = {"seeds": sorted(seeds)}
            for k, v in vals.items():
                row[k] = {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1
                          else math.nan}
            ref_name = reference_for(name)
            ref = by.get(ref_name, {}).get(split, {})
            common = sorted(set(seeds) & set(ref))
            if name != ref_name and common:
                row["reference"] = ref_name
                row["minus_reference"] = {k: paired([seeds[s][k] for s in common], [ref[s][k] for s in common])
                                          for k in ("part_color_acc", "sil_iou", "speckle")}
            summary[name][split] = row
    return {"runs": runs, "summary": summary}


def seed_difference(runs: list[dict], a: str, b: str, split: str, metric: str = "part_color_acc") -> dict | None:
    """Mean ± SE over seeds of run ``a`` minus run ``b`` (paired by seed) on one split; None without common seeds."""
    by = {}
    for r in runs:
        if r["split"] == split and r["name"] in (a, b):
            by.setdefault(r["seed"], {})[r["name"]] = r["metrics"][metric]
    both = [v for v in by.values() if a in v and b in v]
    return paired([v[a] for v in both], [v[b] for v in both]) if both else None


TARGETS = {"curated_gap": 0.05, "speckle": 0.05, "wall_s": 7200.0}  # issue 20's: at most each


def is_curated(name: str) -> bool:
    return not name.startswith("ground-truth")  # the reference and its controls are drawn by the renderer


def targets(results: dict, p: CurationProfile) -> dict:
    """Issue 20's targets, judged from the measured numbers: the best curated-data LoRA within
    ``curated_gap`` part colour of the ground-truth-pairs LoRA (per budget, every split); every filtered
    configuration above the unfiltered one; speckle of the base and of the final identity LoRA; the wall."""
    ident = results.get("identity") or {}
    summary, runs = ident.get("summary", {}), ident.get("runs", [])
    out: dict = {}
    for steps in [s for s in (p.identity_steps, p.long_steps) if s]:
        at = {n: r for n, r in summary.items() if is_curated(n) and budget_of(n, p) == steps}
        if not at:
            continue
        best = max(at, key=lambda n: np.mean([row["part_color_acc"]["mean"] for row in at[n].values()]))
        gaps = {split: -row["minus_reference"]["part_color_acc"]["mean"] for split, row in at[best].items()
                if "minus_reference" in row}
        out[f"curated_within_ground_truth_{steps}"] = {
            "steps": steps, "run": best, "reference": reference_of(best, p), "target": TARGETS["curated_gap"],
            "goal": "ground truth minus best curated, at most", "value": gaps,
            "met": bool(gaps) and all(g <= TARGETS["curated_gap"] for g in gaps.values())}
    unfiltered = "stage1-unfiltered"
    filtered = [n for n in summary if n.endswith("-filtered")] if unfiltered in summary else []
    if filtered:
        diffs = {n: {split: seed_difference(runs, n, unfiltered, split) for split in summary[n]} for n in filtered}
        out["filtered_above_unfiltered"] = {
            "reference": unfiltered, "goal": "part colour minus the unfiltered LoRA's, above 0 (paired by seed)",
            "value": diffs, "met": all(d and d["mean"] > 0 for per in diffs.values() for d in per.values())}
    base = results.get("base_text_to_image") or {}
    if "speckle" in base:
        out["base_speckle"] = {"target": TARGETS["speckle"], "goal": "at most", "value": base["speckle"],
                               "met": base["speckle"] <= TARGETS["speckle"]}
    final = out.get(f"curated_within_ground_truth_{p.long_steps}") or out.get(f"curated_within_ground_truth_{p.identity_steps}")
    if final:
        value = {split: row["speckle"]["mean"] for split, row in summary[final["run"]].items()}
        out["lora_speckle"] = {"run": final["run"], "target": TARGETS["speckle"], "goal": "at most", "value": value,
                               "met": all(v <= TARGETS["speckle"] for v in value.values())}
    wall = results.get("pipeline_wall") or {}
    if "total_s" in wall:
        out["pipeline_wall"] = {"target": TARGETS["wall_s"], "goal": "at most", "value": wall["total_s"],
                                "met": wall["total_s"] <= TARGETS["wall_s"]}
    return out


def pipeline_wall(results: dict, p: CurationProfile, workers: int) -> dict:
    """The pipeline's wall time from what each cached stage recorded when it ran (a rerun from the caches
    takes minutes, so its own wall says nothing): sheets, repair, every curation, the grid LoRA, Stage II's
    sheets and the identity LoRAs at the profile's budget (their summed wall / workers, as they run in
    parallel). Diagnostics (the settings sweep, probes) and the long-budget runs are listed apart."""
    st = results.get("stages", {})
    parts = {"stage1_sheets": st.get("stage1", {}).get("sheets", {}).get("wall_s"),
             "repair": st.get("stage1_repaired", {}).get("repair", {}).get("wall_s"),
             "grid_lora": st.get("stage2", {}).get("grid_lora", {}).get("wall_s"),
             "stage2_sheets": st.get("stage2", {}).get("sheets", {}).get("wall_s")}
    parts["curation"] = sum(c.get("curate_wall_s") or 0.0 for s in st.values() for c in s.get("curation", {}).values())
    runs = [r for r in results.get("identity", {}).get("runs", []) if r["split"] == "distinct"]  # one row per job

    def job(r: dict) -> float:
        return (r.get("train_wall_s") or 0.0) + (r.get("eval_wall_s") or 0.0)

    short = [r for r in runs if budget_of(r["name"], p) == p.identity_steps]
    long_ = [r for r in runs if budget_of(r["name"], p) != p.identity_steps]
    parts["identity_loras"] = sum(job(r) for r in short) / max(1, workers)
    out = {k: v for k, v in parts.items() if v is not None}
    out["total_s"] = sum(out.values())
    out["long_budget_loras_s"] = sum(job(r) for r in long_) / max(1, workers)
    out["workers"] = workers
    return out


def heldout_singles(n: int, key: str) -> tuple[list, list]:
    """``n`` (held-out character, pose) picks drawn with ``random.Random(key)`` and their renders as
    evaluation items (reference = target: single pictures)."""
    from instruct_identity.miniature import sprites

    from . import data, evaluate

    _, test = sprites.split_characters(100_000, 200, seed=0)
    rng = random.Random(key)
    picks = [(rng.choice(test), rng.choice(sprites.ALL_POSES)) for _ in range(n)]
    items = []
    for c, pose in picks:
        img, masks = sprites.render(c, pose, SIZE)
        items.append(evaluate.EvalItem(data.PairSpec(c, pose, pose), img, img, masks, masks))
    return picks, items


def base_text_to_image(work: Path, p: CurationProfile, seed: int) -> dict:
    """The base's own text-to-image on held-out characters (full captions, the sheets' CFG): part colour,
    silhouette and speckle of single pictures, the floor under every sheet. Cached."""
    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.miniature import files as mfiles

    from . import data, evaluate

    path = work / "base-t2i.json"
    if path.is_file():
        return json.loads(path.read_text())
    picks, items = heldout_singles(p.eval_items, f"curation-t2i:{seed}")
    base = mfiles.load_base(BASE_FILE)
    out = evaluate.sample_text_to_image(base.model, base.codec, base.text_encoder,
                                        [data.full_caption(c, pose) for c, pose in picks], size=SIZE,
                                        steps=p.sheet_steps, seed=seed, cfg=p.sheet_cfg)
    m = evaluate.score(out, items)["mean"]
    res = {k: m[k] for k in ("part_color_acc", "part_color_acc_se", "sil_iou", "sil_iou_se", "speckle", "speckle_se")}
    res.update(samples=len(items), steps=p.sheet_steps, cfg=p.sheet_cfg)
    atomic_write_text(path, json.dumps(res))
    return res


SPECKLE_SAMPLERS = (("euler", 24, 4.0), ("euler", 96, 4.0), ("heun", 24, 4.0), ("dpmpp_2m", 24, 4.0),
                    ("euler_ancestral", 24, 4.0), ("euler", 24, 2.0), ("euler", 24, 1.0))
SPECKLE_SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.7, 1.0)


def speckle_probe(work: Path, p: CurationProfile, seed: int) -> dict:
    """Where the base's speckle comes from (held-out characters, full captions): text-to-image speckle per
    sampler / steps / CFG, and the speckle of the model's one-step clean estimate x0 = x_t - sigma v from
    a renderer picture noised to each sigma (low sigma: the model only has to denoise). Cached."""
    import torch

    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.miniature import files as mfiles
    from instruct_identity.training.model import FluxForward

    from . import data, evaluate

    path = work / "speckle-probe.json"
    if path.is_file():
        return json.loads(path.read_text())
    picks, items = heldout_singles(p.eval_items, f"curation-speckle:{seed}")
    pixels = [it.target for it in items]
    captions = [data.full_caption(c, pose) for c, pose in picks]
    base = mfiles.load_base(BASE_FILE)
    keys = ("part_color_acc", "speckle", "speckle_se")
    samplers = []
    for name, steps, cfg in (SPECKLE_SAMPLERS if p.name == "full" else SPECKLE_SAMPLERS[:1]):
        out = evaluate.sample_text_to_image(base.model, base.codec, base.text_encoder, captions, size=SIZE,
                                            steps=steps, seed=seed, cfg=cfg, sampler=name)
        m = evaluate.score(out, items)["mean"]
        samplers.append({"sampler": name, "steps": steps, "cfg": cfg, **{k: m[k] for k in keys}})
    model = base.model.model
    dm = model.diffusion_model
    forward = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)
    cond = evaluate.conditioning(base.text_encoder, captions)
    context, pooled = cond[0][0], cond[0][1]["pooled_output"]
    x0 = model.process_latent_in(base.codec.encode(torch.from_numpy(np.stack(pixels)).float() / 255.0))
    g = torch.Generator().manual_seed(seed)
    one_step = []
    for sigma in SPECKLE_SIGMAS:
        noise = torch.randn(x0.shape, generator=g)
        s = torch.full((len(x0),), float(sigma))
        xt = (1 - sigma) * x0 + sigma * noise
        with torch.no_grad():
            est = xt - sigma * forward(dm, xt, s, context, pooled)
        m = evaluate.score(base.codec.decode(model.process_latent_out(est)).numpy(), items)["mean"]
        one_step.append({"sigma": sigma, **{k: m[k] for k in keys}})
    res = {"samples": len(items), "samplers": samplers, "one_step_x0": one_step}
    atomic_write_text(path, json.dumps(res))
    return res


# --------------------------------------------------------------------------------------------------
# the whole pipeline


def run(p: CurationProfile, work: Path, seed: int, workers: int) -> dict:
    from . import data, jobs
    from .comfy_server import ComfyServer

    t_wall = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    chars = training_characters(p.characters)
    pairs = pose_pairs(len(chars), p.sheets_per_character, seed)
    results: dict = {"format": FORMAT, "profile": asdict(p), "seed": seed, "base": str(BASE_FILE.relative_to(REPO)),
                     "characters": len(chars), "sheets_per_character": p.sheets_per_character,
                     "distinct_pose_pairs": len({pp for pps in pairs for pp in pps}),
                     "stages": {}}
    template = json.loads(SHEETS_PROMPT.read_text())
    widgets = next(v["inputs"] for v in template.values() if v["class_type"] == "InstructIdentityRegionalPrompting")
    results["regional_settings"] = {k: v for k, v in {**widgets, **p.regional}.items() if not isinstance(v, list)}
    results["base_text_to_image"] = base_text_to_image(work, p, seed)
    results["speckle_probe"] = speckle_probe(work, p, seed)
    stage1 = work / "stage1" / "sheets"
    server = None
    try:
        if not (stage1 / "done.json").is_file():
            server = ComfyServer(work / "comfy").start()
        info1 = make_sheets(server, stage1, "stage1", chars, pairs, p, seed)
        repaired = work / "stage1-repaired" / "sheets"
        if server is None and not (repaired / "done.json").is_file():
            server = ComfyServer(work / "comfy").start()
        repair = repair_sheets(server, stage1, repaired, p, seed)
        results["regional_sweep"] = {}
        sweep_chars, sweep_pairs = chars[: p.sweep_characters], [pps[:2] for pps in pairs[: p.sweep_characters]]
        for i, (label, change) in enumerate(SWEEP.items()):
            folder = work / "sweep" / f"v{i}"
            if not (folder / "done.json").is_file() and server is None:
                server = ComfyServer(work / "comfy").start()
            variant = replace(p, **{k: ({**p.regional, **v} if k == "regional" else v) for k, v in change.items()})
            make_sheets(server, folder, f"sweep-v{i}", sweep_chars, sweep_pairs, variant, seed)
            results["regional_sweep"][label] = {"change": change, **consistency(sheets_truth(folder, sweep_chars))}
        truth1 = sheets_truth(stage1, chars)
        s1 = {"sheets": info1, "consistency": consistency(truth1), "curation": {}}
        for cfg in filter_configs(p):
            rep = curate(stage1, work / "stage1" / f"dataset-{cfg['name']}", cfg, work, seed)
            s1["curation"][cfg["name"]] = {**cfg, **detector(truth1, work / "stage1" / f"dataset-{cfg['name']}", rep)}
            log.info("stage I, %s: kept %d of %d pairs, precision %.3f, recall %.3f", cfg["name"],
                     s1["curation"][cfg["name"]]["kept"], s1["curation"][cfg["name"]]["candidates"],
                     s1["curation"][cfg["name"]]["precision"], s1["curation"][cfg["name"]]["recall"])
        results["stages"]["stage1"] = s1
        chosen = downstream_filter(s1["curation"])
        filtered1, filtered2 = work / "stage1" / f"dataset-{chosen}", work / "stage2" / f"dataset-{chosen}"
        truth_r = sheets_truth(repaired, chars)
        s1r = {"repair": {k: v for k, v in repair.items() if k != "per_sheet"}, "consistency": consistency(truth_r),
               "repaired_cells": repair_effect(truth1, truth_r, repair, chars), "curation": {}}
        for cfg in [c for c in filter_configs(p) if c["name"] in ("unfiltered", chosen)]:
            folder = work / "stage1-repaired" / f"dataset-{cfg['name']}"
            s1r["curation"][cfg["name"]] = {**cfg, **detector(truth_r, folder, curate(repaired, folder, cfg, work, seed))}
        results["stages"]["stage1_repaired"] = s1r

        # Stage II: grid LoRA on the sheets the chosen filter kept whole
        results["downstream_filter"] = chosen
        keep = kept_sheets(truth1, filtered1)
        stage2, grid, info2 = work / "stage2" / "sheets", None, None
        if keep:
            # the paper's Stage II: the grid LoRA makes whole sheets from one caption (no region-wise passes)
            grid = train_grid_lora(stage1, keep, chars, work / "stage2" / "grid", p, seed)
            if server is None:
                server = ComfyServer(work / "comfy").start()
            shutil.copy2(grid["lora"], server.loras / "ii_curation_stage2_grid.safetensors")
            info2 = make_sheets(server, stage2, "stage2", chars, pairs, replace(p, whole_caption=True), seed + 1,
                                lora="ii_curation_stage2_grid.safetensors")
    finally:
        if server is not None:
            server.stop()
    truth2 = sheets_truth(stage2, chars) if info2 is not None else {}
    if info2 is None:
        results["stages"]["stage2"] = {"skipped": f"no Stage I sheet passed the filter ({chosen}) whole"}
    else:
        seen = {parse_name(n)[0] for n in keep}
        sub = lambda truth, keep_: {n: t for n, t in truth.items() if keep_(*parse_name(n))}  # noqa: E731
        s2 = {"grid_lora": {k: v for k, v in grid.items() if k != "lora"}, "sheets": info2,
              "sampling": "one caption per sheet naming the description and both views' poses, no regional prompting",
              "consistency": consistency(truth2), "curation": {},
              # characters with a sheet in the grid LoRA's data vs the rest (memorised or learnt?)
              "consistency_seen": consistency(sub(truth2, lambda ci, _: ci in seen)),
              "consistency_unseen": consistency(sub(truth2, lambda ci, _: ci not in seen)),
              "stage1_seen": consistency(sub(truth1, lambda ci, _: ci in seen)),
              "stage1_unseen": consistency(sub(truth1, lambda ci, _: ci not in seen)),
              # the sweep's subset: against the same settings without the LoRA
              "consistency_sweep_subset": consistency(sub(truth2, lambda ci, sh: ci < p.sweep_characters and sh < 2))}
        for cfg in [c for c in filter_configs(p) if c["name"] in ("unfiltered", chosen)]:
            rep = curate(stage2, work / "stage2" / f"dataset-{cfg['name']}", cfg, work, seed)
            s2["curation"][cfg["name"]] = {**cfg, **detector(truth2, work / "stage2" / f"dataset-{cfg['name']}", rep)}
        results["stages"]["stage2"] = s2

    # identity LoRAs on curated data only, and on ground-truth pairs (same characters, renderer-drawn)
    sources = {"stage1-filtered": [filtered1],
               "stage1-unfiltered": [work / "stage1" / "dataset-unfiltered"],
               "stage1+repair-filtered": [work / "stage1-repaired" / f"dataset-{chosen}"],
               "stage1+2-filtered": [filtered1, filtered2]}
    manifests, skipped = {}, {}
    for name, folders in sources.items():
        rows = [(f, r) for f in folders for r in manifest_rows(f)]
        if not rows:
            skipped[name] = "the curated dataset holds no pairs"
            continue
        manifests[name] = merged_training_copy(folders, work / "train" / name)
    manifests["ground-truth-pairs"] = data.write_manifest(data.make_pairs(chars, p.gt_pairs, SIZE, seed),
                                                          work / "gt-pairs", SIZE)
    matched = matched_ground_truth(filtered1, stage1, chars)
    if matched:  # the controls: the curated set's size with renderer pixels, its own poses / poses drawn per pair
        manifests["ground-truth-matched"] = data.write_manifest(matched, work / "gt-matched", SIZE)
        manifests["ground-truth-sized"] = data.write_manifest(data.make_pairs(chars, len(matched), SIZE, seed),
                                                              work / "gt-sized", SIZE)
    results["identity_data"] = {k: len(Path(v).read_text().splitlines()) for k, v in manifests.items()}
    if p.long_steps:
        results["identity_data"].update({long_name(k, p.long_steps): results["identity_data"][k] for k in LONG_RUNS
                                         if k in results["identity_data"]})
    results["identity_skipped"] = skipped
    todo = identity_jobs(p, work, manifests, seed, 1)
    if p.long_steps:
        todo += identity_jobs(p, work, {k: v for k, v in manifests.items() if k in LONG_RUNS}, seed, 1, p.long_steps)
    done = jobs.run_all(todo, workers)
    results["identity"] = identity_summary(done, lambda name: reference_of(name, p))
    results["identity"]["budget"] = {"steps": p.identity_steps, "batch": p.batch, "rank": p.rank, "lr": p.lr,
                                     "seeds": p.seeds, "long_steps": p.long_steps, "long_runs": list(LONG_RUNS)}
    results["pictures"] = pictures(work, truth1, truth2, stage1, stage2, done,
                                   kept_cells(filtered1), kept_cells(filtered2) if truth2 else None, p.long_steps)
    results["pictures"]["repaired_cells"] = repaired_page(stage1, repaired, repair, work / "images" / "repaired_cells.png")
    results["wall_s"] = time.perf_counter() - t_wall  # this invocation's (most stages may come from the cache)
    results["pipeline_wall"] = pipeline_wall(results, p, workers)
    results["targets"] = targets(results, p)
    return results


def kept_cells(dataset: Path) -> set[tuple[str, int]]:
    """(sheet name, cell) of every cell the curated ``dataset`` uses, as reference or target."""
    return {(Path(row["sheet"]).name, c) for row in manifest_rows(dataset) for c in row["cells"]}


def pictures(work: Path, truth1: dict, truth2: dict, stage1: Path, stage2: Path, done: list[dict],
             kept1: set | None = None, kept2: set | None = None, long_steps: int = 0) -> dict:
    """Pages of sheets, per stage: each cell framed by the filter's decision (green: in a kept pair, red:
    dropped; grey without a filtered dataset) with a corner square for the ground truth (filled: the
    character asked for, hollow: drifted); every identity LoRA's first-seed grid, and ``beside``: the curated-data
    LoRA's grid above the ground-truth-pairs LoRA's (same items; at ``long_steps`` where set)."""
    from PIL import Image, ImageDraw

    def page(truth, folder, path, kept, n=24, cols=4):
        # up to half the page from sheets with a kept cell (rare at a low yield), the rest in name order
        used = sorted({name for name, _ in kept or ()} & set(truth))[: n // 2]
        names = sorted(used + [name for name in sorted(truth) if name not in used][: n - len(used)])
        tiles = []
        for name in names:
            img = Image.open(folder / name).convert("RGB")
            d = ImageDraw.Draw(img)
            w = img.width // len(truth[name]["cells"])
            for i, c in enumerate(truth[name]["cells"]):
                frame = (150, 150, 150) if kept is None else (0, 170, 0) if (name, i + 1) in kept else (220, 0, 0)
                d.rectangle([i * w, 0, (i + 1) * w - 1, img.height - 1], outline=frame, width=3)
                d.rectangle([i * w + 6, 6, i * w + 17, 17], outline=(0, 0, 0), width=2,
                            fill=(0, 0, 0) if c["consistent"] else None)
            tiles.append(img)
        if not tiles:
            return None
        tw, th = tiles[0].size
        rows = math.ceil(len(tiles) / cols)
        canvas = Image.new("RGB", (cols * (tw + 8), rows * (th + 8)), (255, 255, 255))
        for k, t in enumerate(tiles):
            canvas.paste(t, ((k % cols) * (tw + 8), (k // cols) * (th + 8)))
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path)
        return str(path)

    out = {"stage1_sheets": page(truth1, stage1, work / "images" / "stage1_sheets.png", kept1),
           "stage2_sheets": page(truth2, stage2, work / "images" / "stage2_sheets.png", kept2) if truth2 else None}
    first = {r["name"]: r["grid"] for r in done if r.get("grid") and r.get("seed") == min(x["seed"] for x in done)}
    out.update({f"identity_{name}": grid for name, grid in first.items()})
    # the curated-data LoRA above the ground-truth-pairs LoRA, on the same items (the longest budget run)
    curated, reference = (long_name(n, long_steps) if long_steps else n for n in (LONG_RUNS[0], REFERENCE))
    if curated in first and reference in first:
        out["beside"] = stack_pngs([first[curated], first[reference]], work / "images" / "identity_beside.png")
    return out


def stack_pngs(paths: list[str], path: Path) -> str:
    """The pictures ``paths`` one above the other (white gaps), saved to ``path``."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (max(i.width for i in ims), sum(i.height for i in ims) + 8 * (len(ims) - 1)), (255, 255, 255))
    y = 0
    for im in ims:
        canvas.paste(im, (0, y))
        y += im.height + 8
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return str(path)


def repaired_page(before: Path, after: Path, repair: dict, path: Path, n: int = 16, cols: int = 4) -> str | None:
    """Up to ``n`` repaired cells, each as (Stage I cell | repaired cell), 4x."""
    from PIL import Image

    from instruct_identity.curation.pipeline import load_picture, split_sheet
    from instruct_identity.curation.sheets import read_sheet_info

    tiles = []
    for name, cells in sorted(repair["per_sheet"].items()):
        for i, c in enumerate(cells):
            if c["sides"] and len(tiles) < n:
                pair = [split_sheet(np.asarray(load_picture(f / name))[..., :3], read_sheet_info(f / name))[i]
                        for f in (before, after)]
                tiles.append(np.concatenate([pair[0], np.full((pair[0].shape[0], 4, 3), 255, np.uint8), pair[1]], 1))
    if not tiles:
        return None
    th, tw = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    canvas = np.full((rows * (th + 12), cols * (tw + 12), 3), 200, np.uint8)
    for k, t in enumerate(tiles):
        y, x = (k // cols) * (th + 12), (k % cols) * (tw + 12)
        canvas[y:y + th, x:x + tw] = t
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return str(path)


def publish(results: dict, images: Path) -> None:
    """Copy the pictures into docs/images/toy/ and point the results at the copies (repo-relative)."""
    images.mkdir(parents=True, exist_ok=True)
    for key, src in list(results.get("pictures", {}).items()):
        if not src or not Path(src).is_file():
            continue
        dst = images / f"curation-{key.replace('_', '-').replace('+', 'and')}.png"
        shutil.copy2(src, dst)
        results["pictures"][key] = str(dst.relative_to(REPO)) if dst.is_relative_to(REPO) else str(dst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--work", type=Path, help="cache folder (default .cache/toy/curation-<profile>)")
    ap.add_argument("--out", type=Path, help="results JSON (default docs/curation-replication.json for full)")
    ap.add_argument("--report", type=Path, help="generated Markdown (default next to --out)")
    ap.add_argument("--images", type=Path, help="where the pictures go (default docs/images/toy for full)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    from instruct_identity.engine.runtime import setup_comfyui
    import torch

    setup_comfyui(cpu=True)
    torch.set_num_threads(max(1, args.workers))
    p = PROFILES[args.profile]
    full = p.name == "full"
    work = args.work or REPO / ".cache" / "toy" / f"curation-{p.name}"
    out = args.out or (REPO / "docs" / "curation-replication.json" if full else work / "curation-replication.json")
    report = args.report or out.with_suffix(".md")
    images = args.images or (REPO / "docs" / "images" / "toy" if full else work / "published")
    results = run(p, work, args.seed, args.workers)
    publish(results, images)
    results["generated_by"] = ".venv/bin/python -m benchmarks.toy.curation" + ("" if full else f" --profile {p.name}")
    from instruct_identity.core.files import atomic_write_text

    from . import curation_report
    from .run import _finite, machine

    results["machine"] = machine()
    atomic_write_text(out, json.dumps(_finite(results), indent=1) + "\n")
    atomic_write_text(report, curation_report.render(results, out))
    log.info("wrote %s and %s", out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
