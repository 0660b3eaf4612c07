"""Synthetic data of the toy replication: captions, text-to-image batches, identity pairs on disk.

* Pre-training (text to image, single renders): the caption describes the character and names the
  pose (``"a red head, a striped blue torso, green legs, a yellow hat. the character lying, large, on
  the left"``); 30 % of the captions name the pose only and 10 % are empty, so the base model also
  draws a character of its own choosing for a pose-only prompt (the untrained-LoRA baseline gets
  exactly such prompts).
* Identity pairs (the LoRA runs and the evaluation): reference = a character in one pose, target =
  the same character in another pose, caption = the target pose only (the transformation). The
  colours must come from the reference. Pairs whose two silhouettes overlap much (IoU >= 0.35) are
  not used, so "copied the reference" and "did what the caption says" are told apart.
* Held-out characters: ``sprites.split_characters``, whose (head, torso) colour pairs are in neither
  the pre-training nor the LoRA data.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import sprites

MAX_PAIR_IOU = 0.35


def full_caption(char: sprites.Character, pose: sprites.Pose) -> str:
    return f"{char.describe()}. {pose.caption()}"


def pretrain_caption(char: sprites.Character, pose: sprites.Pose, rng: random.Random) -> str:
    u = rng.random()
    if u < 0.1:
        return ""
    if u < 0.4:
        return pose.caption()
    return full_caption(char, pose)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


_SIL: dict = {}


def pose_silhouette(pose: sprites.Pose, size: int, hat: bool) -> np.ndarray:
    """Silhouette of any character in ``pose`` (it depends only on the pose and on having a hat)."""
    key = (pose, size, hat)
    if key not in _SIL:
        char = sprites.Character("red", "blue", "green", "plain", "red" if hat else "none")
        _SIL[key] = sprites.silhouette(sprites.render(char, pose, size)[1])
    return _SIL[key]


def distinct_pose_pair(rng: random.Random, size: int, hat: bool) -> tuple[sprites.Pose, sprites.Pose]:
    while True:
        ref, tgt = rng.sample(sprites.ALL_POSES, 2)
        if iou(pose_silhouette(ref, size, hat), pose_silhouette(tgt, size, hat)) < MAX_PAIR_IOU:
            return ref, tgt


@dataclass(frozen=True)
class PairSpec:
    char: sprites.Character
    ref_pose: sprites.Pose
    tgt_pose: sprites.Pose

    @property
    def caption(self) -> str:
        return self.tgt_pose.caption()


def make_pairs(chars: list[sprites.Character], n: int, size: int, seed: int) -> list[PairSpec]:
    """``n`` identity pairs; characters are cycled in a shuffled order, poses drawn per pair."""
    rng = random.Random(f"pairs:{seed}")
    order = chars[:]
    rng.shuffle(order)
    out = []
    for i in range(n):
        c = order[i % len(order)]
        ref, tgt = distinct_pose_pair(rng, size, c.hat != "none")
        out.append(PairSpec(c, ref, tgt))
    return out


def write_manifest(pairs: list[PairSpec], root: Path, size: int) -> Path:
    """PNG files and ``pairs.jsonl`` (reference, target, caption) for the project's trainer."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, p in enumerate(pairs):
        ref, _ = sprites.render(p.char, p.ref_pose, size)
        tgt, _ = sprites.render(p.char, p.tgt_pose, size)
        Image.fromarray(ref).save(root / f"{i:05d}_ref.png")
        Image.fromarray(tgt).save(root / f"{i:05d}_tgt.png")
        lines.append(json.dumps({"reference": f"{i:05d}_ref.png", "target": f"{i:05d}_tgt.png", "caption": p.caption}))
    manifest = root / "pairs.jsonl"
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(manifest)
    return manifest


def to_image(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> ComfyUI IMAGE ``[1, H, W, 3]`` in 0..1."""
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).unsqueeze(0)


class PretrainStream:
    """Endless text-to-image batches of training characters in random poses (deterministic per seed)."""

    def __init__(self, chars: list[sprites.Character], size: int, codec, text_encoder, seed: int):
        self.chars, self.size, self.codec, self.te = chars, size, codec, text_encoder
        self.rng = random.Random(f"pretrain:{seed}")

    def batch(self, n: int):
        imgs, conds, pooled = [], [], []
        for _ in range(n):
            c = self.rng.choice(self.chars)
            p = self.rng.choice(sprites.ALL_POSES)
            rgb, _ = sprites.render(c, p, self.size)
            imgs.append(to_image(rgb))
            cond, pool = self.te.encode(pretrain_caption(c, p, self.rng))
            conds.append(cond)
            pooled.append(pool)
        with torch.no_grad():
            latent = self.codec.encode(torch.cat(imgs))
        return latent, torch.stack(conds), torch.stack(pooled)
