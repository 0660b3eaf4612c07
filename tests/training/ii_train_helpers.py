"""Helpers of the trainer tests (importable as ``ii_train_helpers``; tests/training/conftest.py puts
this folder on the path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_image(path: Path, seed: int, size=(64, 64)) -> Path:
    """A structured random picture (blocks of colour), so a LoRA can fit it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 255, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    Image.fromarray(small).resize((w, h), Image.NEAREST).save(path)
    return path


def make_pairs(root: Path, n: int = 4, size=(64, 64), seed: int = 0) -> Path:
    """``root/pairs.jsonl`` with n (reference, target, caption) pairs."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        write_image(root / f"ref{i}.png", seed * 100 + 2 * i, size)
        write_image(root / f"tgt{i}.png", seed * 100 + 2 * i + 1, size)
        lines.append(json.dumps({"reference": f"ref{i}.png", "target": f"tgt{i}.png", "caption": f"character {i} waving"}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def tiny_config(pairs: Path, out_dir: Path, **overrides):
    """A finalised TrainConfig for a few fast CPU steps on the tiny model (``overrides`` win)."""
    from instruct_identity.training.config import from_dict

    values = dict(dataset_config=str(pairs), resolution=64, output_dir=str(out_dir), max_train_steps=3,
                  mixed_precision="no", network_dim=4, learning_rate=1e-3, seed=0)
    values.update(overrides)
    return from_dict(values)
