"""Region-wise colour fidelity (the paper's Algorithm 1), as pure functions.

``color_score(seg_ref, seg_gen)``:

1. both images come segmented into regions (see :mod:`.segment`);
2. regions are matched: by label when the segmenter names them (GroundingDINO + SAM), otherwise by
   where they sit inside the subject (bounding-box normalised occupancy, tried as is and mirrored,
   so translation and flips do not matter) with colour only as a tie-breaker;
3. for each matched pair and each colour space sigma in {RGB, HSV, LAB} the distance between the
   region mean colours ``delta = ||mu(r1) - mu(r2)||`` is mapped to a similarity
   ``S = exp(-delta / scale_sigma)``;
4. the score is the area-weighted mean over the matches and the three spaces. Matching is done in
   both directions (every reference region to its best generated region and every generated region
   to its best reference region) and the two directions are averaged: our reading of the paper's
   ``1 / (2 |M| |Omega|)`` normaliser.

Colour spaces (all from kornia): RGB in 0..1; HSV with the hue as an angle, averaged circularly
(``atan2`` of the mean sine and cosine, over the pixels with saturation >= ``min_saturation`` only,
since the hue of grey pixels means nothing) and compared by circular distance; CIELAB (D65), whose
Euclidean distance is Delta E 1976.

Distances become similarities through ``S = 1 / (1 + (delta / scale)**2)``: flat near zero (a
just-noticeable difference costs almost nothing), 0.5 at ``delta = scale``, strictly decreasing with
a long tail (large shifts stay ordered instead of all collapsing to 0). Default scales
(``ColorScales``), i.e. the distance that halves the similarity:

* RGB: 0.2 (Euclidean distance of 0..1 RGB; pure red vs pure blue is 1.41 -> S = 0.02);
* HSV: 0.2 on ``sqrt((s_min * dh / pi)**2 + ds**2 + dv**2)``, ``dh`` the circular hue distance
  (0..pi) weighted by the lower of the two mean saturations, or left out when either region is
  mostly unsaturated;
* LAB: 20 Delta E units (Delta E 2.3, about one JND -> S = 0.99; Delta E 10 -> S = 0.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import kornia
import torch
import torch.nn.functional as F

TAU = 2 * math.pi


@dataclass(frozen=True)
class ColorScales:
    rgb: float = 0.2
    hsv: float = 0.2
    lab: float = 20.0
    min_saturation: float = 0.15  # pixels below this saturation carry no hue
    min_value: float = 0.08  # ... nor do near-black pixels
    min_hue_fraction: float = 0.05  # a region needs this share of hue-carrying pixels to have a hue at all


DEFAULT_SCALES = ColorScales()


@dataclass
class RegionColor:
    """Mean colour of one region in the three spaces."""

    rgb: tuple[float, float, float]
    hue: float | None  # radians in [0, 2pi), None when the region is mostly unsaturated
    saturation: float
    value: float
    lab: tuple[float, float, float]
    pixels: int

    def hex(self) -> str:
        return "#" + "".join(f"{int(round(min(max(c, 0.0), 1.0) * 255)):02x}" for c in self.rgb)

    def as_dict(self) -> dict:
        return {"hex": self.hex(), "rgb": [round(c, 4) for c in self.rgb],
                "hsv": [None if self.hue is None else round(math.degrees(self.hue), 2), round(self.saturation, 4),
                        round(self.value, 4)],
                "lab": [round(c, 3) for c in self.lab], "pixels": self.pixels}


# --------------------------------------------------------------------------------------------------
# Pure colour maths


def circular_mean(angles: torch.Tensor, weights: torch.Tensor | None = None) -> float | None:
    """Mean direction (radians in [0, 2pi)) of ``angles``; None when they cancel out or are empty."""
    if angles.numel() == 0:
        return None
    w = torch.ones_like(angles) if weights is None else weights.to(angles)
    s = float((w * torch.sin(angles)).sum())
    c = float((w * torch.cos(angles)).sum())
    if math.hypot(s, c) <= 1e-9 * max(float(w.sum()), 1e-12):
        return None
    return math.atan2(s, c) % TAU


def circular_distance(a: float, b: float) -> float:
    """Shortest angle between two directions, in [0, pi] (359 deg vs 1 deg -> 2 deg)."""
    d = abs(a - b) % TAU
    return min(d, TAU - d)


def region_color(rgb_pixels: torch.Tensor, scales: ColorScales = DEFAULT_SCALES) -> RegionColor:
    """Mean colour of ``[N, 3]`` RGB pixels (0..1) in RGB, HSV (circular hue) and LAB."""
    if rgb_pixels.ndim != 2 or rgb_pixels.shape[1] != 3 or rgb_pixels.shape[0] == 0:
        raise ValueError(f"region_color: expected [N>0, 3] pixels, got {tuple(rgb_pixels.shape)}")
    px = rgb_pixels.float().clamp(0, 1)
    img = px.T.reshape(1, 3, -1, 1)
    hsv = kornia.color.rgb_to_hsv(img).reshape(3, -1)
    lab = kornia.color.rgb_to_lab(img).reshape(3, -1)
    h, s, v = hsv
    chromatic = (s >= scales.min_saturation) & (v >= scales.min_value)
    hue = None
    if float(chromatic.float().mean()) >= scales.min_hue_fraction:
        hue = circular_mean(h[chromatic])
    return RegionColor(rgb=tuple(float(c) for c in px.mean(0)), hue=hue, saturation=float(s.mean()),
                       value=float(v.mean()), lab=tuple(float(c) for c in lab.mean(1)), pixels=int(px.shape[0]))


def rgb_distance(a: RegionColor, b: RegionColor) -> float:
    return math.dist(a.rgb, b.rgb)


def hsv_distance(a: RegionColor, b: RegionColor) -> float:
    """``sqrt((s_min * dh / pi)^2 + ds^2 + dv^2)``; the hue term is dropped when either hue is undefined."""
    dh = 0.0
    if a.hue is not None and b.hue is not None:
        dh = min(a.saturation, b.saturation) * circular_distance(a.hue, b.hue) / math.pi
    return math.sqrt(dh * dh + (a.saturation - b.saturation) ** 2 + (a.value - b.value) ** 2)


def lab_distance(a: RegionColor, b: RegionColor) -> float:
    """CIE76 Delta E."""
    return math.dist(a.lab, b.lab)


def similarity(distance: float, scale: float) -> float:
    """Distance -> similarity in (0, 1]: ``1 / (1 + (distance / scale)^2)`` (strictly decreasing)."""
    return 1.0 / (1.0 + (max(distance, 0.0) / scale) ** 2)


def pair_similarity(a: RegionColor, b: RegionColor, scales: ColorScales = DEFAULT_SCALES) -> dict[str, float]:
    """Per-space distances and similarities of two region colours, and their mean similarity."""
    d = {"rgb": rgb_distance(a, b), "hsv": hsv_distance(a, b), "lab": lab_distance(a, b)}
    s = {k: similarity(d[k], getattr(scales, k)) for k in d}
    return {"distance": d, "similarity": s, "mean": sum(s.values()) / 3.0}


# --------------------------------------------------------------------------------------------------
# Matching


@dataclass
class RegionInfo:
    """What matching needs to know about a region."""

    color: RegionColor
    area: float  # share of the subject (or of all regions) it covers
    label: str | None = None
    occupancy: torch.Tensor | None = None  # [G, G] distribution over the subject's bounding box


@dataclass
class Match:
    ref: int
    gen: int
    weight: float
    direction: str  # "ref->gen" or "gen->ref"
    similarity: dict = field(default_factory=dict)


def occupancy(mask: torch.Tensor, box: tuple[int, int, int, int], grid: int = 12) -> torch.Tensor:
    """Where ``mask`` lies inside ``box`` (y0, x0, y1, x1 inclusive) as a blurred ``grid x grid``
    distribution summing to 1."""
    y0, x0, y1, x1 = box
    crop = mask[y0:y1 + 1, x0:x1 + 1].float()[None, None]
    hist = F.adaptive_avg_pool2d(crop, grid) if min(crop.shape[-2:]) >= grid else \
        F.interpolate(crop, size=(grid, grid), mode="area")
    hist = F.avg_pool2d(F.pad(hist, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0, 0]
    total = hist.sum()
    return hist / total if total > 0 else torch.full((grid, grid), 1.0 / grid ** 2)


def geometric_affinity(a: RegionInfo, b: RegionInfo, mirrored: bool = False) -> float:
    """How well two regions coincide inside their subjects: 0.7 * histogram intersection of the
    occupancy maps + 0.3 * area ratio, in [0, 1]."""
    area = min(a.area, b.area) / max(a.area, b.area, 1e-12)
    if a.occupancy is None or b.occupancy is None:
        return area
    q = b.occupancy.flip(-1) if mirrored else b.occupancy
    return 0.7 * float(torch.minimum(a.occupancy, q).sum()) + 0.3 * area


def _best(aff: torch.Tensor, dim: int) -> torch.Tensor:
    return aff.argmax(dim=dim)


def match_regions(ref: list[RegionInfo], gen: list[RegionInfo], scales: ColorScales = DEFAULT_SCALES,
                  color_weight: float = 0.25, orientation_margin: float = 0.02) -> tuple[list[Match], str]:
    """Symmetric best-match of regions. Labelled regions match by label; unlabelled ones by geometry
    (+ ``color_weight`` x LAB colour affinity as a tie-breaker), trying the generated image as is and
    mirrored and keeping the geometrically better orientation."""
    if not ref or not gen:
        return [], "none"
    if all(r.label for r in ref) and all(g.label for g in gen):
        return _match_labelled(ref, gen), "labels"
    col = torch.tensor([[similarity(lab_distance(r.color, g.color), scales.lab) for g in gen] for r in ref])
    best = None
    for mirrored in (False, True):
        geo = torch.tensor([[geometric_affinity(r, g, mirrored) for g in gen] for r in ref])
        fwd = torch.tensor([r.area for r in ref])
        bwd = torch.tensor([g.area for g in gen])
        fit = float((geo.max(1).values * fwd).sum() / fwd.sum() + (geo.max(0).values * bwd).sum() / bwd.sum())
        aff = geo + color_weight * col
        total = float((aff.max(1).values * fwd).sum() / fwd.sum() + (aff.max(0).values * bwd).sum() / bwd.sum())
        cand = (fit, total, mirrored, aff)
        if best is None:
            best = cand
        elif fit > best[0] + orientation_margin or (abs(fit - best[0]) <= orientation_margin and total > best[1]):
            best = cand
    _, _, mirrored, aff = best
    ref_w = _normalise([r.area for r in ref])
    gen_w = _normalise([g.area for g in gen])
    to_gen, to_ref = _best(aff, 1), _best(aff, 0)
    matches = [Match(i, int(to_gen[i]), ref_w[i], "ref->gen") for i in range(len(ref))]
    matches += [Match(int(to_ref[j]), j, gen_w[j], "gen->ref") for j in range(len(gen))]
    return matches, "mirrored" if mirrored else "direct"


def _normalise(ws: list[float]) -> list[float]:
    total = sum(ws)
    return [w / total for w in ws] if total > 0 else [1.0 / len(ws)] * len(ws)


def _match_labelled(ref: list[RegionInfo], gen: list[RegionInfo]) -> list[Match]:
    gen_by_label: dict[str, int] = {}
    for j, g in enumerate(gen):
        if g.label not in gen_by_label or g.area > gen[gen_by_label[g.label]].area:
            gen_by_label[g.label] = j
    ref_by_label: dict[str, int] = {}
    for i, r in enumerate(ref):
        if r.label not in ref_by_label or r.area > ref[ref_by_label[r.label]].area:
            ref_by_label[r.label] = i
    common = [lab for lab in ref_by_label if lab in gen_by_label]
    ref_w = _normalise([ref[ref_by_label[lab]].area for lab in common]) if common else []
    gen_w = _normalise([gen[gen_by_label[lab]].area for lab in common]) if common else []
    out = []
    for k, lab in enumerate(common):
        i, j = ref_by_label[lab], gen_by_label[lab]
        out.append(Match(i, j, ref_w[k], "ref->gen"))
        out.append(Match(i, j, gen_w[k], "gen->ref"))
    return out


# --------------------------------------------------------------------------------------------------
# The score


@dataclass
class ColorResult:
    value: float | None
    matches: list[Match]
    orientation: str
    missing: str | None = None
    per_space: dict[str, float] = field(default_factory=dict)


def color_score_regions(ref: list[RegionInfo], gen: list[RegionInfo],
                        scales: ColorScales = DEFAULT_SCALES) -> ColorResult:
    """Algorithm 1 on already-described regions."""
    if not ref or not gen:
        side = "reference" if not ref else "generated image"
        return ColorResult(None, [], "none", f"no colour regions found in the {side}")
    matches, orientation = match_regions(ref, gen, scales)
    if not matches:
        return ColorResult(None, [], orientation, "no region of the reference could be matched in the generated image")
    per_space = {"rgb": 0.0, "hsv": 0.0, "lab": 0.0}
    total = 0.0
    for m in matches:
        ps = pair_similarity(ref[m.ref].color, gen[m.gen].color, scales)
        m.similarity = {k: round(v, 5) for k, v in ps["similarity"].items()}
        m.similarity["mean"] = round(ps["mean"], 5)
        for k in per_space:
            per_space[k] += m.weight * ps["similarity"][k]
        total += m.weight
    per_space = {k: v / total for k, v in per_space.items()}
    value = sum(per_space.values()) / 3.0
    return ColorResult(value, matches, orientation, None, per_space)
