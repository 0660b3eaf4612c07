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


# --------------------------------------------------------------------------------------------------
# Issue 13: known answers in their expected order, lost and added parts, one correspondence rule


def with_leg(fill, background=(255, 255, 255)) -> Image.Image:
    """The character with its right (green) leg painted ``fill``."""
    from PIL import ImageDraw

    img = character(background=background)
    ImageDraw.Draw(img).rectangle([128 + 10, 18 + 160, 128 + 45, 18 + 210], fill=fill)
    return img


@pytest.mark.parametrize("kind", list(SUBJECTS))
def test_known_answers_come_in_the_expected_order(kind):
    """Same character moved, mirrored or on a new background ~ 1; one part recoloured or removed costs
    about that part's area (~11 % of the subject); every part recoloured (a 90 deg hue shift) costs most."""
    look = (lambda im: im) if kind == "flat" else (lambda im: photo_like(im, seed=1))
    ref = from_pil(look(character()))
    scores = {
        "moved subject": score(ref, from_pil(look(character(dx=40, dy=10)))),
        "mirrored pose": score(ref, Picture(ref.rgb.flip(-1))),
        "changed background": score(ref, from_pil(look(character(background=(90, 90, 110))))),
        "recoloured part": score(ref, from_pil(look(with_leg((150, 40, 160))))),
        "removed part": score(ref, from_pil(look(with_leg((255, 255, 255))))),
        "hue-shifted whole": score(ref, hue_shift(ref, 90)),
    }
    for same in ("moved subject", "mirrored pose", "changed background"):
        assert scores[same] > 0.95, scores
    for part in ("recoloured part", "removed part"):
        assert 0.8 < scores[part] < 0.93, scores  # about 1 - the leg's share of the subject
    assert scores["removed part"] < scores["recoloured part"] + 0.02, scores  # losing a part: no cheaper
    assert scores["hue-shifted whole"] < 0.3, scores


class LabelledSegmenter:
    """Named parts of given areas and colours (what GroundingDINO + SAM would return)."""

    def __init__(self, parts_by_source):
        self.parts_by_source = parts_by_source

    def __call__(self, picture, queries=None):
        from instruct_identity.charis.segment import Region, Segmentation

        parts = self.parts_by_source[picture.source]
        h = 100
        rgb = torch.zeros(3, h, 100)
        subject = torch.zeros(h, 100, dtype=torch.bool)
        regions, row = [], 0
        for label, rows, colour in parts:
            mask = torch.zeros(h, 100, dtype=torch.bool)
            mask[row:row + rows] = True
            rgb[:, row:row + rows] = torch.tensor(colour, dtype=torch.float32)[:, None, None]
            subject |= mask
            regions.append(Region(mask=mask, label=label))
            row += rows
        return Segmentation(rgb=rgb, subject=subject, regions=regions, backend="labelled")


def test_a_lost_labelled_part_costs_its_area_and_a_large_added_one_too():
    red, blue, gold, grey = (0.8, 0.1, 0.1), (0.1, 0.2, 0.8), (0.9, 0.8, 0.1), (0.5, 0.5, 0.5)
    seg = LabelledSegmenter({
        "ref": [("hat", 20, gold), ("hair", 30, red), ("jacket", 50, blue)],
        "no hat": [("hair", 40, red), ("jacket", 60, blue)],
        "cape": [("hat", 16, gold), ("hair", 24, red), ("jacket", 40, blue), ("cape", 20, grey)],
        "speck": [("hat", 20, gold), ("hair", 29, red), ("jacket", 49, blue), ("speck", 2, grey)],
    })
    pic = {name: Picture(torch.zeros(3, 100, 100), source=name) for name in ("ref", "no hat", "cape", "speck")}
    lost = scoring.color(pic["ref"], pic["no hat"], seg)
    assert lost.value == pytest.approx(0.8, abs=1e-6)  # the hat was 20 % of the subject (it used to cost 0)
    assert lost.details["lost_area"] == pytest.approx(0.2) and lost.details["correspondence"] == "labels"
    assert lost.details["reference_regions"][0]["unmatched"] is True
    added = scoring.color(pic["ref"], pic["cape"], seg)
    assert added.value == pytest.approx(0.8, abs=1e-6) and added.details["added_area"] == pytest.approx(0.2)
    assert scoring.color(pic["ref"], pic["speck"], seg).value == pytest.approx(1.0)  # 2 %: noise, ignored


def test_the_correspondence_is_decided_before_colours_are_compared(monkeypatch):
    """One rule, chosen from names and silhouettes: the score never takes the better of two."""
    from instruct_identity.charis import color as color_mod

    calls = []
    real = color_mod.color_score_regions

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(scoring, "color_score_regions", spy)
    ref = from_pil(character())
    for gen in (hue_shift(ref, 40), from_pil(character(dx=30)), from_pil(character(scale=0.6).rotate(90))):
        calls.clear()
        res = scoring.color(ref, gen, SEG)
        assert len(calls) == 1 and res.details["correspondence"] in ("carried", "geometry")


def test_docstring_states_the_similarity_the_code_computes():
    from instruct_identity.charis import color as color_mod

    assert "1 / (1 + (delta / scale)**2)" in color_mod.__doc__ and "exp(" not in color_mod.__doc__
    assert similarity(0.2, 0.2) == pytest.approx(1 / (1 + 1)) and similarity(0.4, 0.2) == pytest.approx(1 / 5)
