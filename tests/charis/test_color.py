"""Colour axis (Algorithm 1) on pictures with known answers, plus its maths and both segmenters."""

from __future__ import annotations

import io
import math

import kornia
import numpy as np
import pytest
import torch
from charis_models import character
from PIL import Image, ImageFilter

from instruct_identity.charis import scoring
from instruct_identity.charis.color import (ColorScales, RegionColor, circular_distance, circular_mean, hsv_distance,
                                            pair_similarity, region_color, similarity)
from instruct_identity.charis.images import Picture, from_pil
from instruct_identity.charis.segment import ClusterSegmenter, GroundedSamSegmenter, alignment

SEG = ClusterSegmenter()


def score(a: Picture, b: Picture) -> float:
    res = scoring.color(a, b, SEG)
    assert res.value is not None, res.missing
    return res.value


def hue_shift(pic: Picture, degrees: float) -> Picture:
    """Rotate every pixel's HSV hue, then round-trip through 8 bits like a saved file."""
    hsv = kornia.color.rgb_to_hsv(pic.rgb[None])
    hsv[:, 0] = (hsv[:, 0] + math.radians(degrees)) % (2 * math.pi)
    return from_pil(Picture(kornia.color.hsv_to_rgb(hsv)[0].clamp(0, 1)).pil())


def photo_like(img: Image.Image, seed: int = 0) -> Image.Image:
    """Shading, sensor noise, blur and JPEG: the flat drawing made to look like a real picture."""
    arr = np.asarray(img, dtype=np.float32)
    h, w, _ = arr.shape
    shade = np.linspace(0.8, 1.05, w)[None, :, None] * np.linspace(1.05, 0.85, h)[:, None, None]
    rng = np.random.default_rng(seed)
    arr = np.clip(arr * shade + rng.normal(0, 6, arr.shape), 0, 255).astype(np.uint8)
    out = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(1.2))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def shifted(img: Image.Image, dx: int, dy: int) -> Image.Image:
    """The whole picture moved (content wraps around the border, as torch.roll does)."""
    return Picture(torch.roll(from_pil(img).rgb, shifts=(dy, dx), dims=(1, 2))).pil()


SUBJECTS = {
    "flat": lambda **kw: character(**kw),
    "photo": lambda **kw: photo_like(character(**kw)),
}


# --------------------------------------------------------------------------------------------------
# maths


def test_circular_hue_wraps_around():
    a, b = math.radians(359), math.radians(1)
    assert circular_distance(a, b) == pytest.approx(math.radians(2))
    assert circular_distance(math.radians(10), math.radians(190)) == pytest.approx(math.pi)
    mean = circular_mean(torch.tensor([a, b]))
    assert min(mean, 2 * math.pi - mean) < 1e-6  # 0 deg, not 180 deg (the arithmetic mean)
    assert circular_mean(torch.tensor([0.0, math.pi])) is None or True  # opposite angles cancel: no crash


def test_hue_is_ignored_for_grey_pixels():
    grey = torch.tensor([[0.5, 0.5, 0.52]] * 50)  # a faint blue tint, saturation ~0.04
    tinted = torch.tensor([[0.52, 0.5, 0.5]] * 50)  # same, tinted red: hue 240 deg away
    a, b = region_color(grey), region_color(tinted)
    assert a.hue is None and b.hue is None
    assert hsv_distance(a, b) < 0.01


def test_similarity_is_one_at_zero_and_strictly_decreasing():
    vals = [similarity(d, 0.2) for d in (0, 0.01, 0.1, 0.2, 1, 10)]
    assert vals[0] == 1.0 and vals[3] == pytest.approx(0.5)
    assert all(x > y for x, y in zip(vals, vals[1:]))


def test_pair_similarity_of_identical_colours_is_one():
    c = region_color(torch.tensor([[0.8, 0.2, 0.1]] * 10))
    assert pair_similarity(c, c)["mean"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# known answers on pictures


@pytest.mark.parametrize("kind", list(SUBJECTS))
def test_growing_hue_shift_scores_strictly_lower_step_by_step(kind):
    ref = from_pil(SUBJECTS[kind]())
    scores = [score(ref, hue_shift(ref, d)) for d in (0, 10, 20, 40, 60, 90, 120, 150, 180)]
    assert scores[0] > 0.99
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] < 0.5


def test_hue_shift_by_other_libraries_is_monotone_too():
    """The shift done with torchvision's adjust_hue (hue as a fraction of the circle)."""
    import torchvision.transforms.functional as TF

    ref = from_pil(character())
    shifted = [from_pil(Picture(TF.adjust_hue(ref.rgb, f)).pil()) for f in (0.0, 0.05, 0.1, 0.2, 0.35, 0.5)]
    scores = [score(ref, s) for s in shifted]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


@pytest.mark.parametrize("kind", list(SUBJECTS))
def test_translation_flip_and_background_barely_move_it(kind):
    make = SUBJECTS[kind]
    ref = from_pil(make())
    variants = {
        "redrawn right": make(dx=40) if kind == "flat" else shifted(make(), 40, 0),
        "rolled up-left": shifted(make(), -35, -20),
        "flip": ImageFromPicture(Picture(ref.rgb.flip(-1))),
        "grey background": make(background=(128, 128, 128)),
        "black background": make(background=(0, 0, 0)),
        "green background": make(background=(60, 200, 80)),
    }
    for name, img in variants.items():
        s = score(ref, from_pil(img))
        assert s > 0.95, (name, s)
    recoloured = score(ref, hue_shift(ref, 20))
    assert recoloured < 0.95  # while a real colour change does move it


def ImageFromPicture(p: Picture) -> Image.Image:  # noqa: N802 - reads like a constructor
    return p.pil()


def test_hue_359_vs_1_counts_as_close():
    def solid(h_deg):
        hsv = torch.tensor([math.radians(h_deg), 0.85, 0.9]).view(3, 1, 1).expand(3, 64, 64).clone()
        body = kornia.color.hsv_to_rgb(hsv[None])[0]
        img = torch.ones(3, 128, 128)
        img[:, 32:96, 32:96] = body
        return Picture(img)

    near = score(solid(359), solid(1))
    far = score(solid(359), solid(180))
    assert near > 0.97
    assert far < 0.3
    a = region_color(solid(359).rgb[:, 40:90, 40:90].reshape(3, -1).T)
    b = region_color(solid(1).rgb[:, 40:90, 40:90].reshape(3, -1).T)
    assert circular_distance(a.hue, b.hue) < math.radians(3)


def test_alpha_channel_is_the_subject_mask():
    rgba = character().convert("RGBA")
    arr = np.asarray(rgba).copy()
    white = (arr[..., :3] == 255).all(-1)
    arr[white, 3] = 0
    cut = Image.fromarray(arr, "RGBA")
    pic = from_pil(cut)
    seg = SEG(pic)
    assert "alpha" in " ".join(seg.notes)
    on_green = Image.new("RGB", cut.size, (60, 200, 80))
    on_green.paste(cut, mask=cut.split()[3])
    assert score(pic, from_pil(on_green)) > 0.95


def test_different_subject_scores_low():
    ref = from_pil(character())
    other = Image.new("RGB", (256, 256), "white")
    other.paste((250, 120, 200), (70, 40, 190, 230))
    assert score(ref, from_pil(other)) < 0.5


def test_axis_details_are_reported():
    ref = from_pil(character())
    res = scoring.color(ref, hue_shift(ref, 30), SEG)
    d = res.details
    assert set(d["per_space"]) == {"rgb", "hsv", "lab"}
    assert d["reference_regions"] and d["generated_regions"] and d["matches"]
    assert d["correspondence"] in ("carried", "independent")
    assert 0 < res.value < 1


def test_silhouette_alignment_sees_flips():
    ref = from_pil(character())
    seg_a, seg_b = SEG(ref), SEG(Picture(ref.rgb.flip(-1)))
    iou, mirrored = alignment(seg_a.subject, seg_b.subject)
    assert iou > 0.9


# --------------------------------------------------------------------------------------------------
# GroundingDINO + SAM (transformers) with tiny random models


def test_grounded_sam_code_path(tiny_grounded_sam):
    gdino, sam = tiny_grounded_sam
    seg = GroundedSamSegmenter(gdino, sam, box_threshold=0.0, work_size=128)
    ref = from_pil(character())
    found = seg.detect(ref, seg.queries(["hair", "jacket"]))
    assert found and {q for q, _, _ in found} <= {"hair", "jacket"}
    for _, s, box in found:
        assert 0 <= s <= 1 and 0 <= box[0] < box[2] <= 256 and 0 <= box[1] < box[3] <= 256
    masks = seg.masks(ref, [b for _, _, b in found])
    assert masks.shape == (len(found), 256, 256) and masks.dtype == torch.bool
    segmentation = seg(ref, ["hair", "jacket"])
    assert segmentation.backend in ("grounded-sam", "grounded-sam->cluster")
    res = scoring.color(ref, hue_shift(ref, 40), seg, queries=["hair", "jacket"])
    assert res.value is not None and 0.0 <= res.value <= 1.0, res.missing
    same = scoring.color(ref, ref, seg, queries=["hair", "jacket"])
    assert same.value == pytest.approx(1.0, abs=1e-6)


def test_grounded_sam_falls_back_when_nothing_is_found(tiny_grounded_sam):
    gdino, sam = tiny_grounded_sam
    seg = GroundedSamSegmenter(gdino, sam, box_threshold=1.01)  # nothing can pass
    out = seg(from_pil(character()), ["hair"])
    assert out.backend == "grounded-sam->cluster" and out.regions
    assert any("weight-free" in n for n in out.notes)


def test_region_colour_reports_hex_and_spaces():
    c = region_color(torch.tensor([[1.0, 0.0, 0.0]] * 4))
    assert isinstance(c, RegionColor) and c.hex() == "#ff0000"
    d = c.as_dict()
    assert d["hsv"][0] == pytest.approx(0.0, abs=1e-3) and d["lab"][0] == pytest.approx(53.24, abs=0.1)
    assert ColorScales().lab == 20.0


def test_metric_class_and_factory():
    from instruct_identity.charis.metrics import ColorMetric, create_metric

    m = create_metric("color")
    assert isinstance(m, ColorMetric) and m.higher_is_better and m.value_range == (0.0, 1.0)
    ref = from_pil(character())
    assert m(ref, hue_shift(ref, 30)).value == pytest.approx(score(ref, hue_shift(ref, 30)))
    with pytest.raises(KeyError, match="color"):
        create_metric("colour")
