"""Evaluation of the toy runs: sampling through the project's own patch, and the metrics.

Sampling is the pack's one recipe, ``engine.sampling.sample_identity`` (what the Reference node hands
to a stock sampler: the reference patch, an ``[empty target | reference]`` latent and the target-half
noise mask, then ``comfy.sample.sample``); the target half of the result is decoded.

Metrics per item (held-out character, reference pose, requested target pose):

* ``charis_color``: CHARIS's colour axis (``charis.scoring.color`` with its weight-free
  ``ClusterSegmenter``) between the reference and the output; position-independent. Pictures are
  upscaled 4x (nearest) first, since the segmenter erodes masks by a pixel.
* ``part_color_acc``: for each body part, the mean output colour inside the ground-truth target's part
  mask, classified to the nearest of the 10 palette colours (or white background); the share of parts
  classified as the true colour. ``part_color_err``: RGB distance (0..1 units) of that mean colour to the
  ground truth's mean colour in the same mask. Both need the part in the right place.
* ``sil_iou``: silhouette IoU of the output with the ground-truth target (pose / position / size).
* ``copy_paste``: whether the output silhouette overlaps the reference's silhouette more than the
  requested target's (pairs are chosen with IoU(reference, target) < 0.35, so the two differ).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from instruct_identity.miniature import sprites

from . import data

log = logging.getLogger(__name__)

BACKGROUND_THRESHOLD = 0.25  # max over channels of (1 - value): farther from white than this is "figure"


@dataclass
class EvalItem:
    pair: data.PairSpec
    reference: np.ndarray   # uint8 [S, S, 3]
    target: np.ndarray      # uint8 [S, S, 3]
    target_masks: dict
    ref_masks: dict


def make_items(pairs: list[data.PairSpec], size: int) -> list[EvalItem]:
    out = []
    for p in pairs:
        ref, ref_masks = sprites.render(p.char, p.ref_pose, size)
        tgt, tgt_masks = sprites.render(p.char, p.tgt_pose, size)
        out.append(EvalItem(p, ref, tgt, tgt_masks, ref_masks))
    return out


# --------------------------------------------------------------------------------------------------
# sampling (the pack's one recipe: engine.sampling)


def encode_captions(text_encoder, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, tokens, dim]`` token vectors and ``[N, dim]`` pooled vectors for ``captions``."""
    conds, pooled = zip(*(text_encoder.encode(c) for c in captions), strict=True)
    return torch.stack(conds), torch.stack(pooled)


def conditioning(text_encoder, captions: list[str]):
    from instruct_identity.engine.sampling import conditioning as make

    return make(*encode_captions(text_encoder, captions))


@torch.no_grad()
def sample_identity(model, codec, text_encoder, items: list[EvalItem], *, steps: int, seed: int, captions=None,
                    sampler: str = "euler", scheduler: str = "simple", cfg: float = 1.0, batch: int = 32,
                    route: str = "patch") -> np.ndarray:
    """Outputs (target halves) for ``items`` as float RGB ``[N, S, S, 3]`` in 0..1, through
    ``engine.sampling.sample_identity`` (``route="patch"``: the clean reference in the right half of every
    model call) or ``engine.sampling.sample_diptych_inpaint`` (``"inpaint"``: no patch, ComfyUI's masked
    sampling re-noises the reference half). ``captions``: the prompts (default: each item's target-pose caption)."""
    from instruct_identity.core import layout
    from instruct_identity.engine import sampling

    if route not in ("patch", "inpaint"):
        raise ValueError(f"unknown route {route!r}; use patch or inpaint")
    sample = sampling.sample_identity if route == "patch" else sampling.sample_diptych_inpaint

    captions = captions or [it.pair.caption for it in items]
    outs = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        refs = codec.encode(torch.cat([data.to_image(it.reference) for it in chunk]))
        positive = conditioning(text_encoder, captions[start:start + batch])
        negative = conditioning(text_encoder, [""] * len(chunk))
        grid = sample(model, refs, positive, negative, seed=seed + start, steps=steps, cfg=cfg, sampler=sampler,
                      scheduler=scheduler)
        target, reference = layout.split(grid)
        if not torch.allclose(reference, refs, atol=1e-4):
            raise AssertionError("the patch did not keep the reference half clean")
        outs.append(codec.decode(target).numpy())
    return np.concatenate(outs)


@torch.no_grad()
def sample_text_to_image(model, codec, text_encoder, captions: list[str], *, size: int, steps: int, seed: int,
                         cfg: float = 1.0, sampler: str = "euler", scheduler: str = "simple", width: int | None = None,
                         batch: int = 32) -> np.ndarray:
    """Plain text-to-image samples of the base model (no patch), ``[N, S, W, 3]``."""
    from instruct_identity.engine.sampling import sample_text_to_image as sample
    from instruct_identity.miniature import components

    outs = []
    d = components.DOWNSCALE
    for start in range(0, len(captions), batch):
        caps = captions[start:start + batch]
        shape = (len(caps), components.LATENT_CHANNELS, size // d, (width or size) // d)
        out = sample(model, shape, conditioning(text_encoder, caps), conditioning(text_encoder, [""] * len(caps)),
                     seed=seed + start, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler)
        outs.append(codec.decode(out).numpy())
    return np.concatenate(outs)


# --------------------------------------------------------------------------------------------------
# metrics


def figure_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a float RGB image (0..1) that are not white background."""
    return (1.0 - rgb).max(-1) > BACKGROUND_THRESHOLD


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


_NAMES = list(sprites.PALETTE)
_PALETTE = np.array([sprites.PALETTE[n] for n in _NAMES], np.float32) / 255.0


def part_guesses(out: np.ndarray, item: EvalItem) -> dict[str, tuple[str | None, float]]:
    """Per body part the character has: the palette colour the output's mean colour inside the
    ground-truth part mask is nearest to (None: white background), and the RGB distance of that mean
    to the ground truth's mean there."""
    out_parts = {}
    gt = item.target.astype(np.float32) / 255.0
    char = item.pair.char
    for part, mask in item.target_masks.items():
        if not mask.any():
            continue
        true = getattr(char, part) if part != "hat" else char.hat
        gt_mean = gt[mask].mean(0)
        out_mean = out[mask].mean(0)
        # candidates as rendered in this mask: a patterned torso darkens a fixed share of its pixels
        dark = float((item.target[mask] != np.array(sprites.PALETTE[true], np.uint8)).any(-1).mean())
        cands = np.concatenate([_PALETTE * (1 - 0.55 * dark), np.ones((1, 3), np.float32)])
        guess = int(np.argmin(((cands - out_mean) ** 2).sum(-1)))
        out_parts[part] = (_NAMES[guess] if guess < len(_NAMES) else None, float(np.linalg.norm(out_mean - gt_mean)))
    return out_parts


_FIT_CHARS = (sprites.Character("red", "blue", "green", "plain", "red"),
              sprites.Character("red", "blue", "green", "plain", "none"))


def best_pose(rgb: np.ndarray) -> tuple[sprites.Pose, dict, float]:
    """The sprite pose (and hat or not) whose silhouette best overlaps a picture's figure (``[H, W, 3]``
    0..1): (pose, its part masks, IoU). How the miniature reads a picture it has no ground truth for."""
    fig = figure_mask(rgb)
    best = (None, None, -1.0)
    for pose in sprites.ALL_POSES:
        for char in _FIT_CHARS:
            masks = sprites.render(char, pose, rgb.shape[0])[1]
            score = iou(fig, sprites.silhouette(masks))
            if score > best[2]:
                best = (pose, masks, score)
    return best


def part_colours_seen(rgb: np.ndarray, masks: dict) -> dict[str, str | None]:
    """Per part: the majority palette colour inside its mask (a pattern's shade counts as its colour;
    ``"none"`` for white or a hat mask that is empty; None for an empty body-part mask)."""
    names = palette_names(rgb)
    out = {}
    for part, m in masks.items():
        if not m.any():
            out[part] = "none" if part == "hat" else None
            continue
        k = int(np.bincount(names[m], minlength=len(_NAMES) + 1).argmax())
        out[part] = _NAMES[k] if k < len(_NAMES) else "none"
    return out


def true_color(char: sprites.Character, part: str) -> str:
    return getattr(char, part) if part != "hat" else char.hat


def part_colors(out: np.ndarray, item: EvalItem) -> tuple[float, float, int]:
    """(correct parts, summed RGB error, parts) for one output against its ground truth."""
    guesses = part_guesses(out, item)
    correct = sum(int(g == true_color(item.pair.char, part)) for part, (g, _) in guesses.items())
    return correct, sum(e for _, e in guesses.values()), len(guesses)


def _upscale(rgb: np.ndarray, k: int = 4) -> np.ndarray:
    return np.repeat(np.repeat(rgb, k, 0), k, 1)


class CharisColor:
    """CHARIS's colour axis if ``charis`` is importable (it is written in parallel), else None."""

    def __init__(self):
        self.error = None
        try:
            from instruct_identity.charis import scoring
            from instruct_identity.charis.color import ColorScales
            from instruct_identity.charis.images import Picture
            from instruct_identity.charis.segment import ClusterSegmenter

            self._scoring, self._picture = scoring, Picture
            self._segmenter, self._scales = ClusterSegmenter(), ColorScales()
        except Exception as e:  # noqa: BLE001 - report it, keep the other metrics
            self.error = f"{type(e).__name__}: {e}"
            log.warning("CHARIS colour axis unavailable (%s): column left empty", self.error)

    @property
    def available(self) -> bool:
        return self.error is None

    def __call__(self, reference: np.ndarray, generated: np.ndarray) -> float:
        if not self.available:
            return math.nan

        def pic(rgb):
            return self._picture(torch.from_numpy(_upscale(rgb.astype(np.float32))).permute(2, 0, 1).contiguous())

        res = self._scoring.color(pic(reference), pic(generated), self._segmenter, None, self._scales)
        return float(res.value) if res.value is not None else 0.0


# palette colours and their pattern shade (sprites.render darkens a patterned torso to 0.45): one name each
_SHADES = np.concatenate([_PALETTE, _PALETTE * 0.45, np.ones((1, 3), np.float32)])
_SHADE_NAMES = _NAMES + _NAMES + [None]


def palette_names(out: np.ndarray) -> np.ndarray:
    """Per pixel of a ``[H, W, 3]`` 0..1 picture: the index into ``_SHADE_NAMES`` folded onto the colour
    (a palette colour or its pattern shade -> that colour; white -> ``len(_NAMES)``)."""
    d = ((out[..., None, :] - _SHADES) ** 2).sum(-1)
    idx = d.argmin(-1)
    return np.where(idx < 2 * len(_NAMES), idx % len(_NAMES), len(_NAMES))


def _inner(mask: np.ndarray) -> np.ndarray:
    """``mask`` eroded by one pixel (4-neighbourhood), or ``mask`` itself where that leaves < 4 pixels:
    speckle is about the inside of a part, not about a silhouette drawn one pixel off."""
    m = mask.copy()
    m[1:] &= mask[:-1]
    m[:-1] &= mask[1:]
    m[:, 1:] &= mask[:, :-1]
    m[:, :-1] &= mask[:, 1:]
    return m if m.sum() >= 4 else mask


def speckle(out: np.ndarray, masks: dict) -> float:
    """Speckle rate of one picture (``[H, W, 3]`` in 0..1), defined before any result was looked at: the
    share of pixels inside the ground-truth part masks (each eroded by one pixel) whose nearest palette
    colour -- a pattern's darker shade counts as its colour, white as background -- is not the majority
    colour of that part's pixels. 0 = every part drawn in one clean colour; NaN when there are no parts."""
    names = palette_names(out.astype(np.float32))
    bad = total = 0
    for mask in masks.values():
        if not mask.any():
            continue
        inner = names[_inner(mask)]
        bad += int(inner.size - np.bincount(inner).max())
        total += int(inner.size)
    return bad / total if total else math.nan


METRICS = ("charis_color", "part_color_acc", "part_color_err", "sil_iou", "copy_paste", "speckle")


def score(outputs: np.ndarray, items: list[EvalItem], charis: CharisColor | None = None) -> dict:
    """Per-item metric lists and their means / standard errors."""
    per = {m: [] for m in METRICS}
    if len(outputs) != len(items):
        raise ValueError(f"{len(outputs)} outputs for {len(items)} items")
    for raw, it in zip(outputs, items, strict=True):
        out = raw.astype(np.float32)
        fig = figure_mask(out)
        tgt_sil = sprites.silhouette(it.target_masks)
        ref_sil = sprites.silhouette(it.ref_masks)
        i_t, i_r = iou(fig, tgt_sil), iou(fig, ref_sil)
        correct, err, n = part_colors(out, it)
        per["sil_iou"].append(i_t)
        per["copy_paste"].append(float(i_r > i_t))
        per["part_color_acc"].append(correct / n)
        per["part_color_err"].append(err / n)
        per["charis_color"].append(charis(it.reference.astype(np.float32) / 255.0, out) if charis else math.nan)
        per["speckle"].append(speckle(out, it.target_masks))
    summary = {}
    for m, vals in per.items():
        v = np.asarray(vals, np.float64)
        summary[m] = float(v.mean())
        summary[m + "_se"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": summary, "items": per}


PROBE_SIGMAS = (0.95, 0.8, 0.6)


def probe_items(chars: list, size: int, n: int = 48, seed: int = 0) -> list[EvalItem]:
    """``n`` text-to-image items for :func:`caption_probe`: characters drawn from ``chars``, poses at random."""
    rng = np.random.default_rng(seed + 91)
    picks = [(chars[int(rng.integers(len(chars)))], sprites.ALL_POSES[int(rng.integers(len(sprites.ALL_POSES)))])
             for _ in range(n)]
    return make_items([data.PairSpec(c, p, p) for c, p in picks], size)


@torch.no_grad()
def caption_probe(model, codec, text_encoder, items: list[EvalItem], sigmas=PROBE_SIGMAS, seed: int = 0) -> dict:
    """Does the model read colours from the caption? For each noise level ``s``: the ground truth noised
    to ``s`` (the same noise for every caption), the model's one-step denoised estimate ``x - s v``,
    scored with ``part_color_acc``, once with the full caption (colours + pose) and once with the pose
    only. At high noise the picture itself says little about colours, so a gap between the two rows is
    colour read from the words; no gap means the colour words are ignored.
    Returns ``{"full": {s: acc}, "pose": {s: acc}}`` (keys ``f"{s:g}"``)."""
    from instruct_identity.training.model import FluxForward

    base = model.model
    dm = base.diffusion_model
    forward = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)
    x0 = base.process_latent_in(codec.encode(torch.cat([data.to_image(it.target) for it in items])))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out: dict = {}
    for kind in ("full", "pose"):
        caps = [data.full_caption(it.pair.char, it.pair.tgt_pose) if kind == "full" else it.pair.tgt_pose.caption()
                for it in items]
        cond, pooled = encode_captions(text_encoder, caps)
        row = {}
        for s in sigmas:
            sig = torch.full((len(items),), float(s))
            xt = (1 - s) * x0 + s * noise
            estimate = xt - s * forward(dm, xt, sig, cond, pooled)
            row[f"{s:g}"] = score(codec.decode(base.process_latent_out(estimate)).numpy(), items)["mean"]["part_color_acc"]
        out[kind] = row
    return out


# --------------------------------------------------------------------------------------------------
# pictures


def grid_png(path, items: list[EvalItem], outputs: np.ndarray, title: str, n: int = 12, cols: int = 3,
             scale: int = 4) -> None:
    """Rows of ``reference | ground truth | output`` triplets (``cols`` triplets per row), atomically."""
    from PIL import Image, ImageDraw

    n = min(n, len(items))
    s = items[0].reference.shape[0] * scale
    gap, head = 6, 18
    rows = math.ceil(n / cols)
    w = cols * (3 * s + 2) + (cols - 1) * gap
    h = head + rows * (s + gap)
    canvas = Image.new("RGB", (w, h), (200, 200, 200))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill=(0, 0, 0))
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = c * (3 * s + 2 + gap), head + r * (s + gap)
        out = (np.clip(outputs[i], 0, 1) * 255).round().astype(np.uint8)
        for j, img in enumerate((items[i].reference, items[i].target, out)):
            tile = Image.fromarray(img).resize((s, s), Image.NEAREST)
            canvas.paste(tile, (x0 + j * (s + 1), y0))
    _save_png(path, canvas)


def t2i_png(path, images: np.ndarray, captions: list[str], title: str, scale: int = 4, cols: int = 8) -> None:
    from PIL import Image, ImageDraw

    h, w = images.shape[1] * scale, images.shape[2] * scale
    rows = math.ceil(len(images) / cols)
    canvas = Image.new("RGB", (cols * (w + 2), 18 + rows * (h + 2)), (200, 200, 200))
    ImageDraw.Draw(canvas).text((4, 3), title, fill=(0, 0, 0))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (c * (w + 2), 18 + r * (h + 2)))
    _save_png(path, canvas)


def _save_png(path, canvas) -> None:
    from instruct_identity.core.files import atomic_write_bytes
    from instruct_identity.core.imagefile import png_bytes

    atomic_write_bytes(path, png_bytes(np.asarray(canvas)), fsync=False)
