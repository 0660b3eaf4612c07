"""Region-wise colour fidelity (the paper's Algorithm 1), as pure functions.

``color_score_regions(ref_regions, gen_regions)``:

1. both images come segmented into regions (see :mod:`.segment`), each described by its area share
   of the subject, its colour and where it lies inside the subject's bounding box (an occupancy map);
2. **one correspondence rule**, fixed before any colour is compared: regions named by the segmenter
   (GroundingDINO + SAM) correspond by name; unnamed regions by geometry -- the generated image is
   taken as is or mirrored, whichever makes the region layouts coincide better (colour plays no part
   in that choice), then every reference region goes to the generated region it overlaps most inside
   the subject and every generated region to the reference region it overlaps most (colour only
   breaks near-ties, weight ``color_weight`` = 0.1 against an affinity in [0, 1]);
3. **lost and added parts cost their area**: a reference region with no counterpart (its name absent
   from the generated image, or no generated region overlapping it by ``min_affinity``) is a lost
   part, a generated region with no counterpart covering at least ``min_extra`` (5 %) of the
   generated subject an added one (smaller ones are ignored as segmentation noise). They score 0 over
   their area, on both sides: with ``L`` the lost share of the reference subject and ``X`` the added
   share of the generated one, the two sides below are scaled by ``(1 - X)`` and ``(1 - L)``, so
   losing a part costs as much as the part's area (no less than recolouring it);
4. each corresponding pair is compared by mean colour in RGB, HSV and CIELAB: distance
   ``delta = ||mu(r1) - mu(r2)||`` in each space, similarity ``S = 1 / (1 + (delta / scale)**2)``;
5. the score is ``1/2 * ((1 - X) sum_i a_i S_i + (1 - L) sum_j b_j S_j)`` over the matched regions:
   the area-weighted mean similarity seen from the reference's regions (areas ``a_i``) and from the
   generated image's regions (``b_j``), each averaged over the three spaces -- our reading of the
   paper's ``1 / (2 |M| |Omega|)``.

Colour spaces (all from kornia): RGB in 0..1; HSV with the hue as an angle, averaged circularly
(``atan2`` of the mean sine and cosine, over the pixels with saturation >= ``min_saturation`` only,
since the hue of grey pixels means nothing) and compared by circular distance; CIELAB (D65), whose
Euclidean distance is Delta E 1976.

``S = 1 / (1 + (delta / scale)**2)`` is flat near zero (a just-noticeable difference costs almost
nothing), 0.5 at ``delta = scale``, strictly decreasing with a long tail (large shifts stay ordered
instead of all collapsing to 0). Default scales (``ColorScales``), i.e. the distance that halves the
similarity:

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


@dataclass
class Correspondence:
    """Which region goes with which (indices into the two region lists), decided before any colour
    similarity is computed."""

    matches: list[Match]
    orientation: str  # "labels", "direct", "mirrored" or "none"
    missing: list[int] = field(default_factory=list)  # reference regions with no counterpart
    extra: list[int] = field(default_factory=list)  # large generated regions with no counterpart
    ignored: list[int] = field(default_factory=list)  # small generated regions with no counterpart


MIN_AFFINITY = 0.15  # below this geometric affinity two regions are not the same part
MIN_EXTRA = 0.05  # an unmatched generated region this large (share of its subject) is an added part
COLOR_WEIGHT = 0.1  # colour's share in the matching affinity: it only breaks near-ties


def match_regions(ref: list[RegionInfo], gen: list[RegionInfo], scales: ColorScales = DEFAULT_SCALES,
                  color_weight: float = COLOR_WEIGHT, orientation_margin: float = 0.02,
                  min_affinity: float = MIN_AFFINITY, min_extra: float = MIN_EXTRA) -> Correspondence:
    """The one correspondence rule (see the module docstring): by label when every region has one,
    otherwise by geometry in the better-fitting orientation."""
    if not ref or not gen:
        return Correspondence([], "none", list(range(len(ref))))
    if all(r.label for r in ref) and all(g.label for g in gen):
        return _match_labelled(ref, gen, min_extra)
    best = None
    for mirrored in (False, True):
        geo = torch.tensor([[geometric_affinity(r, g, mirrored) for g in gen] for r in ref])
        fit = _fit(geo, ref, gen)
        if best is None or fit > best[0] + orientation_margin:
            best = (fit, mirrored, geo)
    _, mirrored, geo = best
    col = torch.tensor([[similarity(lab_distance(r.color, g.color), scales.lab) for g in gen] for r in ref])
    aff = geo + color_weight * col
    to_gen, to_ref = aff.argmax(1), aff.argmax(0)
    out = Correspondence([], "mirrored" if mirrored else "direct")
    for i in range(len(ref)):
        j = int(to_gen[i])
        if float(geo[i, j]) < min_affinity:
            out.missing.append(i)
        else:
            out.matches.append(Match(i, j, ref[i].area, "ref->gen"))
    for j in range(len(gen)):
        i = int(to_ref[j])
        if float(geo[i, j]) >= min_affinity:
            out.matches.append(Match(i, j, gen[j].area, "gen->ref"))
        elif gen[j].area >= min_extra:
            out.extra.append(j)
        else:
            out.ignored.append(j)
    return out


def _fit(geo: torch.Tensor, ref: list[RegionInfo], gen: list[RegionInfo]) -> float:
    fwd = torch.tensor([r.area for r in ref])
    bwd = torch.tensor([g.area for g in gen])
    return float((geo.max(1).values * fwd).sum() / fwd.sum() + (geo.max(0).values * bwd).sum() / bwd.sum())


def _match_labelled(ref: list[RegionInfo], gen: list[RegionInfo], min_extra: float) -> Correspondence:
    """Regions with the same name correspond (the largest when a name repeats); a reference name the
    generated image lacks is a missing part, a generated name the reference lacks an added one."""
    def by_label(regions):
        out: dict[str, int] = {}
        for k, r in enumerate(regions):
            if r.label not in out or r.area > regions[out[r.label]].area:
                out[r.label] = k
        return out

    ref_by, gen_by = by_label(ref), by_label(gen)
    out = Correspondence([], "labels")
    for i, r in enumerate(ref):
        j = gen_by.get(r.label)
        if j is None:
            out.missing.append(i)
        else:
            out.matches.append(Match(ref_by[r.label], j, r.area, "ref->gen"))
    for j, g in enumerate(gen):
        i = ref_by.get(g.label)
        if i is not None:
            out.matches.append(Match(i, gen_by[g.label], g.area, "gen->ref"))
        elif g.area >= min_extra:
            out.extra.append(j)
        else:
            out.ignored.append(j)
    return out


# --------------------------------------------------------------------------------------------------
# The score


@dataclass
class ColorResult:
    value: float | None
    matches: list[Match]
    orientation: str
    missing: str | None = None  # why there is no value
    per_space: dict[str, float] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)  # reference regions with no counterpart (scored 0)
    added: list[int] = field(default_factory=list)  # large generated regions with no counterpart (scored 0)
    lost_area: float = 0.0  # their share of the reference subject
    added_area: float = 0.0  # their share of the generated subject


def color_score_regions(ref: list[RegionInfo], gen: list[RegionInfo], scales: ColorScales = DEFAULT_SCALES,
                        **matching) -> ColorResult:
    """Algorithm 1 on already-described regions (see the module docstring for the rule)."""
    if not ref or not gen:
        side = "reference" if not ref else "generated image"
        return ColorResult(None, [], "none", f"no colour regions found in the {side}")
    cor = match_regions(ref, gen, scales, **matching)
    ref_total = sum(r.area for r in ref) or 1.0
    gen_total = sum(gen[j].area for j in range(len(gen)) if j not in cor.ignored) or 1.0
    spaces = ("rgb", "hsv", "lab")
    sides = {"ref->gen": dict.fromkeys(spaces, 0.0), "gen->ref": dict.fromkeys(spaces, 0.0)}
    for m in cor.matches:
        ps = pair_similarity(ref[m.ref].color, gen[m.gen].color, scales)
        m.similarity = {k: round(v, 5) for k, v in ps["similarity"].items()}
        m.similarity["mean"] = round(ps["mean"], 5)
        m.weight = m.weight / (ref_total if m.direction == "ref->gen" else gen_total)
        for k in spaces:
            sides[m.direction][k] += m.weight * ps["similarity"][k]
    # lost and added parts score 0 over their area, seen from both sides: the reference's side loses the
    # lost parts (nothing added to its sum) and is scaled by the share of the generated subject that is
    # not an added part; the generated side the other way round
    lost = sum(ref[i].area for i in cor.missing) / ref_total
    added = sum(gen[j].area for j in cor.extra) / gen_total
    per_space = {k: (sides["ref->gen"][k] * (1.0 - added) + sides["gen->ref"][k] * (1.0 - lost)) / 2.0
                 for k in spaces}
    value = sum(per_space.values()) / 3.0
    return ColorResult(value, cor.matches, cor.orientation, None, per_space, cor.missing, cor.extra, lost, added)
