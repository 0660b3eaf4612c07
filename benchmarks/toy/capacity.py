"""How much does the miniature base's size buy in clean pixels? Equal-step pre-training probes (issue 20).

    .venv/bin/python -m benchmarks.toy.capacity                     # the documented probe (~20 min on 2 cores)
    .venv/bin/python -m benchmarks.toy.capacity --steps 4 --configs tiny=64,2,1,1 --json /tmp/c.json  # smoke

Each configuration (``name=hidden,heads,double,single``) is pre-trained from scratch with the toy's
first pre-training stage (single renders, the full profile's batch, learning rate and warm-up) for the
same number of steps, then samples text to image for the held-out characters of the curation benchmark
(``curation.heldout_singles``, full captions, 24 euler steps) at CFG 4, 2 and 1: part colour accuracy,
silhouette IoU and the speckle rate (``evaluate.speckle``). Equal steps, not equal compute: the seconds
per step are recorded beside. Each configuration's result is cached (``.cache/toy/capacity``) under a key
of everything it depends on; the results go to the ``capacity`` entry of ``docs/toy-replication.json``
(kept when the toy run rewrites that file) and a section of its generated report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORMAT = "toy-capacity-v1"
DEFAULT_CONFIGS = ("shipped-until-2026-12=192,3,2,2", "wider-deeper=256,4,3,3")
CFGS = (4.0, 2.0, 1.0)
EVAL_ITEMS = 32
MAX_STEPS = 100_000

log = logging.getLogger("toy")


def parse_config(text: str) -> tuple[str, dict]:
    """``name=hidden,heads,double,single`` -> (name, ``components.unet_config`` keywords)."""
    name, sep, dims = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--configs: {text!r} has no name (write name=hidden,heads,double,single)")
    try:
        hidden, heads, double, single = (int(x) for x in dims.split(","))
    except ValueError:
        raise ValueError(f"--configs: {text!r} is not name=hidden,heads,double,single (four integers)") from None
    if not (8 <= hidden <= 1024 and 1 <= heads <= 16 and hidden % heads == 0 and (hidden // heads) % 8 == 0
            and 0 <= double <= 8 and 0 <= single <= 8 and double + single >= 1):
        raise ValueError(f"--configs: {text!r}: hidden 8..1024 divisible by heads into head sizes that are multiples "
                         "of 8, heads 1..16, 0..8 blocks of each kind (at least one block)")
    return name, {"hidden": hidden, "heads": heads, "double": double, "single": single}


def setup(unet_kw: dict, steps: int):
    """(pre-training config, model config, training characters, result key) of one probe: the full profile's first stage at
    ``steps``; the key covers everything the result depends on."""
    from instruct_identity.miniature import components, sprites

    from . import pretrain
    from .profiles import PROFILES

    cfg = pretrain.PretrainConfig(**{**PROFILES["full"].pretrain, "steps": steps})
    unet = components.unet_config(**unet_kw)
    train_chars, _ = sprites.split_characters(100_000, 200, seed=0)
    pkey = pretrain.cache_key(unet, cfg, components.WordEncoder().identity, train_chars)
    key = hashlib.sha256(json.dumps({"format": FORMAT, "pretrain": pkey, "eval": [EVAL_ITEMS, CFGS]}).encode()).hexdigest()
    return cfg, unet, train_chars, key[:16]


def probe(unet_kw: dict, steps: int, work: Path, threads: int) -> dict:
    """Pre-train one configuration for ``steps`` and score its text to image; cached."""
    import torch
    from instruct_identity.core.files import atomic_write_text
    from instruct_identity.miniature import components

    from . import curation, data, evaluate, pretrain

    cfg, unet, train_chars, key = setup(unet_kw, steps)
    path = work / f"capacity-{key}.json"
    if path.is_file():
        return {**json.loads(path.read_text()), "cached": True}
    codec, te = components.PixelCodec(), components.WordEncoder()
    torch.set_num_threads(threads)
    log.info("capacity: %s, %d steps", unet_kw, steps)
    t = time.perf_counter()
    ema, info = pretrain.pretrain(unet, cfg, train_chars, codec, te)
    res = {"unet": unet_kw, "steps": steps, "pretrain": asdict(cfg), "key": key, "wall_s": time.perf_counter() - t,
           "loss_last50": info["loss_last50"], "params": sum(v.numel() for v in ema.values())}
    res["s_per_step"] = res["wall_s"] / steps
    res["fp16_mb"] = 2 * res["params"] / 1e6
    patcher = components.build_model(unet, state_dict=ema)
    picks, items = curation.heldout_singles(EVAL_ITEMS, "curation-t2i:0")
    caps = [data.full_caption(c, p) for c, p in picks]
    for cfg_scale in CFGS:
        out = evaluate.sample_text_to_image(patcher, codec, te, caps, size=cfg.size, steps=24, seed=0, cfg=cfg_scale)
        m = evaluate.score(out, items)["mean"]
        res[f"cfg{cfg_scale:g}"] = {k: m[k] for k in ("part_color_acc", "sil_iou", "speckle", "speckle_se")}
    atomic_write_text(path, json.dumps(res, indent=1))
    return {**res, "cached": False}


def section(cap: dict) -> list[str]:
    """The report's "Base capacity" section (numbers from the ``capacity`` entry only)."""
    rows = cap["configs"]
    lines = ["## Base capacity and clean pixels", "",
             (f"Each configuration pre-trained from scratch for {rows[0]['steps']} steps of the first pre-training "
             f"stage (equal steps, not equal compute), then text to image for {cap['eval_items']} held-out "
             "characters. Speckle = share of the pixels inside the true part masks drawn in another palette colour "
             f"than the part's majority (↓). Command: `{cap['generated_by']}`."), "",
             ("| configuration | hidden / heads / double / single | parameters | fp16 MB | s/step | loss (last 50) | "
             "part colour (CFG 4) | speckle CFG 4 | speckle CFG 2 | speckle CFG 1 |"), "|" + "---|" * 10]
    for r in rows:
        u = r["unet"]
        sp = [f"{r[f'cfg{c:g}']['speckle']:.3f} ± {r[f'cfg{c:g}']['speckle_se']:.3f}" for c in CFGS]
        lines.append(f"| {r['name']} | {u['hidden']} / {u['heads']} / {u['double']} / {u['single']} | "
                     f"{r['params'] / 1e6:.2f} M | {r['fp16_mb']:.1f} | {r['s_per_step']:.2f} | {r['loss_last50']:.4f} | "
                     f"{r['cfg4']['part_color_acc']:.3f} | " + " | ".join(sp) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    from . import jobs
    from .run import write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="NAME=H,HEADS,D,S")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "toy" / "capacity")
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "toy-replication.json",
                    help="the JSON whose 'capacity' entry this writes (default docs/toy-replication.json)")
    args = ap.parse_args(argv)
    if not 1 <= args.steps <= MAX_STEPS:
        ap.error(f"--steps: give 1..{MAX_STEPS}")
    try:
        configs = [parse_config(c) for c in args.configs]
    except ValueError as e:
        ap.error(str(e))
    jobs.quiet()
    jobs.setup(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [{"name": name, **probe(kw, args.steps, args.work, args.threads)} for name, kw in configs]
    everything = json.loads(args.json.read_text()) if args.json.is_file() else {}
    command = " ".join([".venv/bin/python -m benchmarks.toy.capacity", *(sys.argv[1:] if argv is None else argv)])
    everything["capacity"] = {"format": FORMAT, "generated_by": command, "eval_items": EVAL_ITEMS, "cfgs": list(CFGS),
                              "configs": rows}
    write_json(args.json, everything)
    for line in section(everything["capacity"]):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
