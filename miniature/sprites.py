"""Procedural characters of the miniature world: exact ground truth for identity transfer.

A character is a set of coloured body parts (head, torso with a pattern, legs, optional hat);
a pose places it (where, how big, standing / arms up / lying). Rendering returns the RGB picture and
one mask per part, so every metric can be computed against the exact target.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

PALETTE = {
    "red": (220, 40, 40), "orange": (240, 140, 20), "yellow": (235, 210, 30), "green": (40, 170, 60),
    "cyan": (30, 190, 200), "blue": (40, 70, 220), "purple": (140, 50, 190), "pink": (240, 120, 180),
    "brown": (120, 70, 30), "black": (25, 25, 25),
}
PATTERNS = ("plain", "striped", "dotted")
HATS = ("none", "red", "blue", "yellow", "green")
PLACES = ("left", "center", "right")
SIZES = ("small", "large")
POSES = ("standing", "arms up", "lying")
PARTS = ("head", "torso", "legs", "hat")
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Character:
    head: str
    torso: str
    legs: str
    pattern: str
    hat: str

    def describe(self) -> str:
        hat = "" if self.hat == "none" else f", a {self.hat} hat"
        return f"a {self.head} head, a {self.pattern} {self.torso} torso, {self.legs} legs{hat}"


@dataclass(frozen=True)
class Pose:
    place: str
    size: str
    pose: str

    def caption(self) -> str:
        return f"the character {self.pose}, {self.size}, on the {self.place}" if self.place != "center" \
            else f"the character {self.pose}, {self.size}, in the center"


ALL_POSES = [Pose(p, s, q) for p, s, q in itertools.product(PLACES, SIZES, POSES)]


def all_characters() -> list[Character]:
    colours = list(PALETTE)
    out = []
    for head, torso, legs in itertools.product(colours, colours, colours):
        if len({head, torso, legs}) < 3:
            continue
        for pattern in PATTERNS:
            for hat in HATS:
                out.append(Character(head, torso, legs, pattern, hat))
    return out


def split_characters(n_train: int, n_test: int, seed: int = 0) -> tuple[list[Character], list[Character]]:
    """Train and held-out characters; held-out ones use (head, torso) colour pairs never seen in training."""
    rng = random.Random(seed)
    pairs = sorted({(c.head, c.torso) for c in all_characters()})
    rng.shuffle(pairs)
    held = set(pairs[: len(pairs) // 5])
    chars = all_characters()
    rng.shuffle(chars)
    train = [c for c in chars if (c.head, c.torso) not in held][:n_train]
    test = [c for c in chars if (c.head, c.torso) in held][:n_test]
    return train, test


def _rect(masks, name, y0, x0, y1, x1, size):
    y0, x0 = max(0, int(round(y0))), max(0, int(round(x0)))
    y1, x1 = min(size, int(round(y1))), min(size, int(round(x1)))
    if y1 > y0 and x1 > x0:
        masks[name][y0:y1, x0:x1] = True


def render(char: Character, pose: Pose, size: int = 32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RGB uint8 [size, size, 3] and a boolean mask per part (parts the character lacks are empty)."""
    masks = {p: np.zeros((size, size), bool) for p in PARTS}
    s = (0.42 if pose.size == "small" else 0.7) * size  # figure height
    cx = {"left": 0.27, "center": 0.5, "right": 0.73}[pose.place] * size
    u = s / 10.0  # body unit
    if pose.pose == "lying":  # horizontal figure, head on the left, resting near the bottom
        base = size * 0.82
        x0 = cx - 5 * u
        _rect(masks, "head", base - 3 * u, x0, base, x0 + 3 * u, size)
        _rect(masks, "torso", base - 2.6 * u, x0 + 3 * u, base, x0 + 7 * u, size)
        _rect(masks, "legs", base - 2.0 * u, x0 + 7 * u, base, x0 + 10 * u, size)
        if char.hat != "none":
            _rect(masks, "hat", base - 3 * u, x0 - 1.2 * u, base, x0, size)
    else:
        top = size * 0.9 - s
        _rect(masks, "head", top + 1 * u, cx - 1.5 * u, top + 4 * u, cx + 1.5 * u, size)
        _rect(masks, "torso", top + 4 * u, cx - 2 * u, top + 7 * u, cx + 2 * u, size)
        _rect(masks, "legs", top + 7 * u, cx - 1.8 * u, top + 10 * u, cx - 0.4 * u, size)
        _rect(masks, "legs", top + 7 * u, cx + 0.4 * u, top + 10 * u, cx + 1.8 * u, size)
        if pose.pose == "arms up":
            _rect(masks, "torso", top + 1.5 * u, cx - 3 * u, top + 5 * u, cx - 2 * u, size)
            _rect(masks, "torso", top + 1.5 * u, cx + 2 * u, top + 5 * u, cx + 3 * u, size)
        else:
            _rect(masks, "torso", top + 4 * u, cx - 3 * u, top + 7.5 * u, cx - 2 * u, size)
            _rect(masks, "torso", top + 4 * u, cx + 2 * u, top + 7.5 * u, cx + 3 * u, size)
        if char.hat != "none":
            _rect(masks, "hat", top, cx - 2 * u, top + 1 * u, cx + 2 * u, size)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[0:size, 0:size]
    for part in PARTS:
        m = masks[part]
        if not m.any():
            continue
        colour = np.array(PALETTE[getattr(char, part)] if part != "hat" else PALETTE[char.hat])
        img[m] = colour
        if part == "torso" and char.pattern != "plain":
            darker = (colour * 0.45).astype(np.uint8)
            sel = (yy % 3 == 0) if char.pattern == "striped" else ((yy % 3 == 1) & (xx % 3 == 1))
            img[m & sel] = darker
    return img, masks


def silhouette(masks: dict[str, np.ndarray]) -> np.ndarray:
    return np.logical_or.reduce([m for m in masks.values()])


def render_sheet(char: Character, poses: list[Pose], size: int = 32) -> np.ndarray:
    """Several views of one character side by side: RGB uint8 ``[size, size * len(poses), 3]``."""
    return np.concatenate([render(char, p, size)[0] for p in poses], axis=1)


def sheet_caption(char: Character | None, poses: list[Pose | None]) -> str:
    """Caption of a character sheet (several views of one character, left to right): the character's
    description (``char`` None: left out) and each view's pose (``None``: not named)."""
    ordinals = ("first", "second", "third", "fourth")
    parts = [f"{len(poses)} views" if len(poses) != 2 else "two views"]
    if char is not None:
        parts.append(char.describe())
    for i, p in enumerate(poses):
        if p is not None:
            parts.append(f"{ordinals[i]} view: {p.caption()}")
    return ". ".join(parts)
