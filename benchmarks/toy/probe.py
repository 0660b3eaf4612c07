"""Does a miniature base read the colour words of its captions? ``evaluate.caption_probe`` on any base file.

    .venv/bin/python -m benchmarks.toy.probe .cache/toy/base-cache/base-<key>.safetensors [--items 48] [--json F]

The file's own text encoder and model config come from its metadata, so bases of earlier designs can
be compared with the current one; the toy run records the same probe for each of its pre-training
stages (``base.caption_probe`` in ``docs/toy-replication.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("toy.probe")


def probe_file(path: Path, items: int = 48, seed: int = 0) -> dict:
    from instruct_identity.miniature import files, load_state, sprites

    from . import evaluate, lora_runs

    state, spec, _ = load_state(path)
    codec, te = files.make_codec(spec.codec), files.make_text_encoder(spec.text_encoder)
    _, test_chars = sprites.split_characters(100_000, 200, seed=0)
    eval_items = evaluate.probe_items(test_chars, spec.image_size, items, seed)
    model = lora_runs.load_with_lora(spec.unet_config, state, None)
    return {"file": str(path), "text_encoder": spec.text_encoder, "items": items,
            **evaluate.caption_probe(model, codec, te, eval_items, seed=seed)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path, help="a miniature base file (.safetensors)")
    ap.add_argument("--items", type=int, default=48, help="held-out items (default 48)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if not args.base.is_file():
        ap.error(f"base: no file at {args.base}")
    if not 1 <= args.items <= 1024:
        ap.error("--items: give 1..1024")
    from . import jobs

    jobs.quiet()
    log.setLevel(logging.INFO)
    jobs.setup(1)
    out = probe_file(args.base, args.items, args.seed)
    for kind in ("full", "pose"):
        log.info("%-4s caption: %s", kind, "  ".join(f"s={k}: {v:.2f}" for k, v in out[kind].items()))
    if args.json:
        from instruct_identity.core.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
