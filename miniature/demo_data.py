"""Identity training pairs of the miniature world, for the trainer's demo (``training/examples/demo.toml``).

A pair is a training character (never one of the held-out characters the bundled references show)
drawn in two different poses: the reference, and the target captioned with its pose only (so the
colours can only come from the reference). Written as PNG files + a ``pairs.jsonl`` manifest
(``reference``, ``target``, ``caption``), the trainer's own dataset format::

    python -m instruct_identity.miniature.demo_data OUT_DIR [--pairs 1000] [--size 32] [--seed 0]

The trainer makes them itself when its dataset is a missing ``*.jsonl`` and its model is a miniature
base (:func:`prepare_for_training`), so ``ii-train --config training/examples/demo.toml`` needs no step
before it. Deterministic: the same arguments give the same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from . import sprites
from .base_file import spec_of

log = logging.getLogger(__name__)

PAIRS = 1000
SEED = 0
SPLIT_SEED = 0  # the split of characters that the toy replication and the bundled references use
HELD_OUT = 200


def training_characters(seed: int = SPLIT_SEED) -> list[sprites.Character]:
    """Every character whose (head, torso) colours are not held out for evaluation."""
    train, _ = sprites.split_characters(10**6, HELD_OUT, seed=seed)
    return train


def make_pairs(n: int, seed: int = SEED) -> list[tuple[sprites.Character, sprites.Pose, sprites.Pose]]:
    """``n`` (character, reference pose, target pose) triples, the two poses always different."""
    rng = random.Random(f"demo-pairs:{seed}")
    chars = training_characters()
    out = []
    for _ in range(n):
        ref, tgt = rng.sample(sprites.ALL_POSES, 2)
        out.append((rng.choice(chars), ref, tgt))
    return out


def write_pairs(out_dir: str | Path, n: int = PAIRS, size: int = 32, seed: int = SEED, progress=None) -> Path:
    """Write ``n`` pairs of ``size`` px sprites and ``pairs.jsonl`` into ``out_dir``; returns the manifest.
    Files are written atomically, the manifest last, so an interrupted run is simply redone."""
    from ..core.errors import InputError
    from ..core.files import atomic_write_bytes, atomic_write_text
    from ..core.imagefile import png_bytes

    if n < 1:
        raise InputError("pairs", f"{n} is not a number of pairs.", "Use 1 or more (the demo uses 1000).")
    if size < 8 or size % 4:
        raise InputError("size", f"{size} px cannot be drawn and encoded.", "Use a multiple of 4 px, at least 8 (the demo base draws 32 px).")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    triples = make_pairs(n, seed)
    for i, (char, ref, tgt) in enumerate(progress(triples) if progress else triples):
        names = {}
        for kind, pose in (("ref", ref), ("tgt", tgt)):
            names[kind] = f"images/{i:05d}_{kind}.png"
            atomic_write_bytes(out / names[kind], png_bytes(sprites.render(char, pose, size)[0]), fsync=False)
        lines.append(json.dumps({"reference": names["ref"], "target": names["tgt"], "caption": tgt.caption()}))
    manifest = out / "pairs.jsonl"
    atomic_write_text(manifest, "\n".join(lines) + "\n")
    log.info("wrote %d miniature identity pairs (%d px) to %s", n, size, manifest)
    return manifest


def prepare_for_training(dataset_config, model_file, acc=None) -> Path | None:
    """Make the demo pairs when the trainer's dataset (``dataset_config``) is a missing ``*.jsonl`` and
    its model (``model_file``, a resolved path) is a miniature base (the pictures take the base's sprite
    size). Returns the manifest it wrote, or None."""
    dataset = Path(str(dataset_config or ""))
    if dataset.suffix != ".jsonl" or dataset.exists() or not model_file:
        return None
    spec = spec_of(model_file)
    if spec is None:
        return None
    size = int(spec.image_size)
    main = acc is None or acc.is_main_process
    if main:
        log.info("dataset %s does not exist and the model is a miniature base: generating %d sprite pairs", dataset, PAIRS)
        write_pairs(dataset.parent, PAIRS, size, SEED)
    if acc is not None:
        acc.wait_for_everyone()
    return dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m instruct_identity.miniature.demo_data",
                                 description="Write miniature identity pairs (PNG + pairs.jsonl) for the trainer.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--pairs", type=int, default=PAIRS)
    ap.add_argument("--size", type=int, default=32, help="sprite size in px (the demo base's is 32)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..core.errors import InputError

    try:
        from tqdm.auto import tqdm

        write_pairs(args.out_dir, args.pairs, args.size, args.seed, progress=lambda it: tqdm(it, unit="pair"))
    except InputError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
