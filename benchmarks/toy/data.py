"""Synthetic data of the toy replication: captions, pre-training batches, identity pairs on disk.

* Pre-training (text to image) mixes two kinds of pictures:
  - single renders, captioned with the character and the pose (``"a red head, a striped blue torso,
    green legs, a yellow hat. the character lying, large, on the left"``); 30 % name the pose only and
    10 % are empty (so CFG has an unconditional model, and a pose-only prompt draws some character);
  - character sheets: two views of one character side by side (the H x 2W grid of the identity
    layout), captioned as such (``miniature.sprites.sheet_caption``: "two views. <description>. first
    view: <pose>. second view: <pose>"); the description is left out half of the time (a stage's
    ``sheet_describe`` sets the share), each view's pose a quarter of the time. This is the toy's "web
    images with several views of one subject", the data that gives FLUX its zero-shot in-context ability.
* Identity pairs (the LoRA data): reference = a training character in one pose, target = the same
  character in any other pose (uniform over the 17, so some targets are close to the reference and
  copying it is nearly right: the shortcut the masked loss is meant to avoid); caption = the target
  pose only, so the colours can only come from the reference.
* Evaluation splits (held-out characters, fixed before any result was seen):
  - ``distinct``: target silhouette overlaps the reference's by IoU < 0.35 (pose following and copying
    are told apart cleanly);
  - ``near``: the target differs from the reference in exactly one of place / size / pose and their
    silhouettes overlap by 0.15 <= IoU <= 0.6: copying the reference is a tempting shortcut that a
    silhouette still tells apart from following the caption.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from instruct_identity.miniature import sprites

MAX_DISTINCT_IOU = 0.35
NEAR_IOU = (0.15, 0.6)
SPLITS = ("distinct", "near")


def full_caption(char: sprites.Character, pose: sprites.Pose) -> str:
    return f"{char.describe()}. {pose.caption()}"


def pretrain_caption(char: sprites.Character, pose: sprites.Pose, rng: random.Random) -> str:
    u = rng.random()
    if u < 0.1:
        return ""
    if u < 0.4:
        return pose.caption()
    return full_caption(char, pose)


def pretrain_sheet_caption(char: sprites.Character, poses: list, rng: random.Random, describe: float = 0.5) -> str:
    """``describe``: the chance that the caption names the character's colours (otherwise only the other
    view can tell them: the sheets that teach in-context copying)."""
    desc = char if rng.random() < describe else None
    named = [p if rng.random() < 0.75 else None for p in poses]
    return sprites.sheet_caption(desc, named)


def zero_shot_caption(target_pose: sprites.Pose) -> str:
    """The base model's prompt for ``[target | reference]`` without a LoRA: a sheet caption naming the
    target view's pose only (the description and the reference's pose are not given)."""
    return sprites.sheet_caption(None, [target_pose, None])


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


def _differences(a: sprites.Pose, b: sprites.Pose) -> int:
    return int(a.place != b.place) + int(a.size != b.size) + int(a.pose != b.pose)


def pose_pair(rng: random.Random, size: int, hat: bool, split: str) -> tuple[sprites.Pose, sprites.Pose]:
    """(reference pose, target pose) for ``split``: ``train`` (any two distinct poses), ``distinct`` or ``near``."""
    while True:
        ref, tgt = rng.sample(sprites.ALL_POSES, 2)
        if split == "train":
            return ref, tgt
        v = iou(pose_silhouette(ref, size, hat), pose_silhouette(tgt, size, hat))
        if split == "distinct" and v < MAX_DISTINCT_IOU:
            return ref, tgt
        if split == "near" and _differences(ref, tgt) == 1 and NEAR_IOU[0] <= v <= NEAR_IOU[1]:
            return ref, tgt
        if split not in ("train", "distinct", "near"):
            raise ValueError(f"unknown split {split!r}")


@dataclass(frozen=True)
class PairSpec:
    char: sprites.Character
    ref_pose: sprites.Pose
    tgt_pose: sprites.Pose

    @property
    def caption(self) -> str:
        return self.tgt_pose.caption()


def make_pairs(chars: list[sprites.Character], n: int, size: int, seed: int, split: str = "train") -> list[PairSpec]:
    """``n`` identity pairs; characters are cycled in a shuffled order, poses drawn per pair."""
    rng = random.Random(f"pairs:{split}:{seed}")
    order = chars[:]
    rng.shuffle(order)
    out = []
    for i in range(n):
        c = order[i % len(order)]
        ref, tgt = pose_pair(rng, size, c.hat != "none", split)
        out.append(PairSpec(c, ref, tgt))
    return out


def write_manifest(pairs: list[PairSpec], root: Path, size: int) -> Path:
    """PNG files and ``pairs.jsonl`` (reference, target, caption) for the project's trainer."""
    from instruct_identity.core.files import atomic_write_bytes, atomic_write_text
    from instruct_identity.core.imagefile import png_bytes

    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, p in enumerate(pairs):
        for kind, pose in (("ref", p.ref_pose), ("tgt", p.tgt_pose)):
            f = root / f"{i:05d}_{kind}.png"
            if not f.is_file():
                atomic_write_bytes(f, png_bytes(sprites.render(p.char, pose, size)[0]), fsync=False)
        lines.append(json.dumps({"reference": f"{i:05d}_ref.png", "target": f"{i:05d}_tgt.png", "caption": p.caption}))
    manifest = root / "pairs.jsonl"
    atomic_write_text(manifest, "\n".join(lines) + "\n")
    return manifest


def to_image(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> ComfyUI IMAGE ``[1, H, W, 3]`` in 0..1."""
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).unsqueeze(0)


class PretrainStream:
    """Endless text-to-image batches of training characters (deterministic per seed): single renders
    (``batch``) and two-view sheets (``sheet_batch``)."""

    def __init__(self, chars: list[sprites.Character], size: int, codec, text_encoder, seed: int,
                 sheet_describe: float = 0.5):
        self.chars, self.size, self.codec, self.te = chars, size, codec, text_encoder
        self.sheet_describe = sheet_describe
        self.rng = random.Random(f"pretrain:{seed}")

    def _encode(self, imgs, captions):
        conds, pooled = zip(*(self.te.encode(c) for c in captions), strict=True)
        with torch.no_grad():
            latent = self.codec.encode(torch.cat(imgs))
        return latent, torch.stack(conds), torch.stack(pooled)

    def batch(self, n: int):
        imgs, caps = [], []
        for _ in range(n):
            c = self.rng.choice(self.chars)
            p = self.rng.choice(sprites.ALL_POSES)
            imgs.append(to_image(sprites.render(c, p, self.size)[0]))
            caps.append(pretrain_caption(c, p, self.rng))
        return self._encode(imgs, caps)

    def sheet_batch(self, n: int, views: int = 2):
        imgs, caps = [], []
        for _ in range(n):
            c = self.rng.choice(self.chars)
            poses = self.rng.sample(sprites.ALL_POSES, views)
            imgs.append(to_image(sprites.render_sheet(c, poses, self.size)))
            caps.append(pretrain_sheet_caption(c, poses, self.rng, self.sheet_describe))
        return self._encode(imgs, caps)
