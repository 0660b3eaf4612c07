"""Segmentation backends for the colour axis.

* :class:`ClusterSegmenter` (default, no model files): finds the subject by estimating the
  background from the image border (each side's median colour, flood-filled inwards through
  similar colours; an alpha channel, when present, is used instead), then clusters the subject's
  pixels into colour regions with a deterministic bisecting k-means. Clustering happens in the HSV
  cone ``(S*V*cos H, S*V*sin H, V)``, where a hue rotation is a rigid rotation, so a hue-shifted copy
  of an image is cut into the same regions.
* :class:`GroundedSamSegmenter`: GroundingDINO boxes for text queries (identity attributes or a
  default list of parts) refined into masks by SAM, both from ``transformers`` and loaded from local
  folders. Regions carry the query as label and are matched by label.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import kornia
import torch
import torch.nn.functional as F

from .color import DEFAULT_SCALES, ColorScales, RegionInfo, occupancy, region_color
from .images import Picture, resize_max

log = logging.getLogger(__name__)

DEFAULT_PARTS = ("hair", "face", "skin", "eyes", "hat", "shirt", "jacket", "dress", "pants", "skirt", "shoes",
                 "fur", "body")


@dataclass
class Region:
    mask: torch.Tensor  # [H, W] bool at the segmentation's resolution
    label: str | None = None
    score: float | None = None


@dataclass
class Segmentation:
    rgb: torch.Tensor  # [3, H, W] the image the masks refer to
    subject: torch.Tensor  # [H, W] bool
    regions: list[Region]
    backend: str
    notes: list[str] = field(default_factory=list)
    core: torch.Tensor | None = None  # [H, W] bool: pixels away from edges, whose colour is trusted for stats
    _described: dict = field(default_factory=dict, repr=False, compare=False)

    def describe(self, scales: ColorScales = DEFAULT_SCALES, grid: int = 12) -> list[RegionInfo]:
        """Colours, area shares and occupancy maps of the regions (what matching needs).

        A region's colour is taken over its trusted pixels (``core``: away from outlines and colour
        edges, where neighbouring colours blend) and trimmed: the fifth of them farthest from the
        region's median colour are left out (:func:`trimmed`), so a few stray pixels (a small
        detail folded into a larger region, anti-aliasing) do not drag its mean."""
        if (scales, grid) not in self._described:
            self._described[(scales, grid)] = self._describe(scales, grid)
        return self._described[(scales, grid)]

    def _describe(self, scales: ColorScales, grid: int) -> list[RegionInfo]:
        subject = self.subject
        ys, xs = torch.nonzero(subject, as_tuple=True)
        if ys.numel() == 0:
            return []
        box = (int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max()))
        inner = erode(subject, 1) if self.core is None else self.core
        pixels = self.rgb.permute(1, 2, 0)
        total = float(sum(int(r.mask.sum()) for r in self.regions)) or 1.0
        out = []
        for r in self.regions:
            n = int(r.mask.sum())
            if n == 0:
                continue
            core = r.mask & inner
            use = core if int(core.sum()) >= max(4, n // 2) else r.mask
            out.append(RegionInfo(color=region_color(trimmed(pixels[use]), scales), area=n / total, label=r.label,
                                  occupancy=occupancy(r.mask, box, grid)))
        return out


def trimmed(px: torch.Tensor, floor: float = 0.1, spread: float = 3.0) -> torch.Tensor:
    """``[N, 3]`` pixels without the outliers: those farther from the per-channel median than
    ``max(floor, spread * median distance)`` (a stray detail folded into the region, blended edges)."""
    if px.shape[0] < 10:
        return px
    d = (px - px.median(dim=0).values).norm(dim=1)
    keep = d <= max(floor, spread * float(d.median()))
    return px[keep] if int(keep.sum()) >= 4 else px


# --------------------------------------------------------------------------------------------------
# Silhouettes


def _box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return None
    return int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())


def _normalised(mask: torch.Tensor, box, size: int = 32) -> torch.Tensor:
    y0, x0, y1, x1 = box
    crop = mask[y0:y1 + 1, x0:x1 + 1].float()[None, None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0]


def alignment(ref: torch.Tensor, gen: torch.Tensor) -> tuple[float, bool]:
    """Soft IoU of two subject masks after normalising each to its bounding box, and whether the
    mirrored generated mask fits better. (1.0, False) means same silhouette, same orientation."""
    rb, gb = _box(ref), _box(gen)
    if rb is None or gb is None:
        return 0.0, False
    a, b = _normalised(ref, rb), _normalised(gen, gb)

    def iou(x, y):
        return float(torch.minimum(x, y).sum() / torch.maximum(x, y).sum().clamp_min(1e-9))

    direct, mirrored = iou(a, b), iou(a, b.flip(-1))
    return (mirrored, True) if mirrored > direct + 1e-6 else (direct, False)


def carry_regions(ref: Segmentation, gen: Segmentation, mirrored: bool,
                  min_extra: float = 0.05) -> tuple[Segmentation, Segmentation]:
    """For aligned silhouettes: give the generated picture the reference's regions, mapped through
    the two subjects' bounding boxes (mirrored if asked), whatever the generated picture's own
    segmentation found there (so a part the background flood swallowed is still compared). Regions
    are named ``region-<i>`` on both sides; generated subject pixels outside the mapped reference
    subject, when they cover ``min_extra`` of it or more, become one region named ``added``."""
    labels = torch.full(ref.subject.shape, -1.0)
    for i, r in enumerate(ref.regions):
        labels[r.mask] = float(i)
    ry0, rx0, ry1, rx1 = _box(ref.subject)
    gy0, gx0, gy1, gx1 = _box(gen.subject)
    h, w = gen.subject.shape
    v = ((torch.arange(h, dtype=torch.float32) - gy0) / max(gy1 - gy0, 1))
    u = ((torch.arange(w, dtype=torch.float32) - gx0) / max(gx1 - gx0, 1))
    u = 1 - u if mirrored else u
    inside = ((v >= 0) & (v <= 1))[:, None] & ((u >= 0) & (u <= 1))[None, :]
    ry = (ry0 + v.clamp(0, 1) * (ry1 - ry0)).round().long()
    rx = (rx0 + u.clamp(0, 1) * (rx1 - rx0)).round().long()
    carried = labels[ry[:, None], rx[None, :]].long()
    carried[~inside] = -1
    named_ref = [Region(mask=r.mask, label=f"region-{i}") for i, r in enumerate(ref.regions)]
    named_gen = [Region(mask=carried == i, label=f"region-{i}") for i in range(len(ref.regions))]
    added = gen.subject & (carried < 0)
    mapped = int((carried >= 0).sum())
    if mapped and int(added.sum()) >= min_extra * mapped:
        named_gen.append(Region(mask=added, label="added"))
    note = f"reference regions carried over ({'mirrored' if mirrored else 'direct'} silhouette alignment)"
    gen_subject = (carried >= 0) | added
    return (Segmentation(ref.rgb, ref.subject, named_ref, ref.backend, list(ref.notes), ref.core),
            Segmentation(gen.rgb, gen_subject, [r for r in named_gen if bool(r.mask.any())], gen.backend,
                         list(gen.notes) + [note]))


# --------------------------------------------------------------------------------------------------
# Morphology and feature helpers (torch only)


def dilate(mask: torch.Tensor, r: int = 1) -> torch.Tensor:
    return F.max_pool2d(mask.float()[None, None], 2 * r + 1, stride=1, padding=r)[0, 0] > 0.5


def erode(mask: torch.Tensor, r: int = 1) -> torch.Tensor:
    return ~dilate(~mask, r)


def _fill_runs(region: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Along each row: every run of ``allowed`` pixels that holds a ``region`` pixel joins ``region``."""
    h, w = allowed.shape
    run = (~allowed).long().cumsum(1) + torch.arange(h).unsqueeze(1) * (w + 1)
    seeded = torch.zeros(h * (w + 1) + 1, dtype=torch.long)
    seeded.scatter_reduce_(0, run[allowed], region[allowed].long(), reduce="amax")
    out = torch.zeros_like(allowed)
    out[allowed] = seeded[run[allowed]].bool()
    return out


def flood(seeds: torch.Tensor, allowed: torch.Tensor, max_passes: int = 64) -> torch.Tensor:
    """Pixels of ``allowed`` 4-connected to ``seeds``: whole runs are filled along rows, then
    columns, alternating until nothing changes (a handful of passes instead of one dilation per
    pixel of path length)."""
    region = seeds & allowed
    for _ in range(max_passes):
        grown = _fill_runs(region, allowed)
        grown = _fill_runs(grown.T.contiguous(), allowed.T.contiguous()).T
        if torch.equal(grown, region):
            break
        region = grown
    return region


def local_variation(feats: torch.Tensor) -> torch.Tensor:
    """Largest feature difference between each pixel and its 4 neighbours (``[C, H, W]`` -> ``[H, W]``)."""
    pad = F.pad(feats[None], (1, 1, 1, 1), mode="replicate")[0]
    c = pad[:, 1:-1, 1:-1]
    diffs = [(c - pad[:, :-2, 1:-1]), (c - pad[:, 2:, 1:-1]), (c - pad[:, 1:-1, :-2]), (c - pad[:, 1:-1, 2:])]
    return torch.stack([d.norm(dim=0) for d in diffs]).amax(0)


def cone_features(rgb: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` RGB -> ``[3, H, W]`` HSV-cone coordinates ``(C cos H, C sin H, V)``, C = S*V."""
    hsv = kornia.color.rgb_to_hsv(rgb[None])[0]
    h, s, v = hsv
    c = s * v
    return torch.stack([c * torch.cos(h), c * torch.sin(h), v])


def unique_weighted(points: torch.Tensor, bins: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collapse ``[N, D]`` points onto a ``1/bins`` grid: (bin means [M, D], counts [M], inverse [N])."""
    keys = torch.round(points * bins).to(torch.int64)
    uniq, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    means = torch.zeros(uniq.shape[0], points.shape[1], dtype=points.dtype).index_add_(0, inverse, points)
    return means / counts[:, None].to(points.dtype), counts.to(points.dtype), inverse


def _sq_dist(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    return ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)


def _centres(points, weights, labels, k):
    sums = torch.zeros(k, points.shape[1], dtype=points.dtype).index_add_(0, labels, points * weights[:, None])
    mass = torch.zeros(k, dtype=points.dtype).index_add_(0, labels, weights)
    return sums / mass.clamp_min(1e-12)[:, None], mass


def bisecting_kmeans(points: torch.Tensor, weights: torch.Tensor, k: int, iters: int = 10,
                     min_sse: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-means grown by repeatedly splitting the cluster with the largest weighted squared
    error along its principal axis, with Lloyd refinement after each split.

    Deterministic and independent of point order, and equivariant under rotations of the feature
    space (so a hue-rotated image clusters the same way). Returns (centres [k', D], labels [N])."""
    labels = torch.zeros(points.shape[0], dtype=torch.long)
    total = float(weights.sum())
    for n in range(1, k):
        centres, _ = _centres(points, weights, labels, n)
        err = (weights * ((points - centres[labels]) ** 2).sum(1))
        sse = torch.zeros(n, dtype=points.dtype).index_add_(0, labels, err)
        c = int(sse.argmax())
        if float(sse[c]) / total < min_sse:
            break
        sel = labels == c
        p, w = points[sel], weights[sel]
        mu = (p * w[:, None]).sum(0) / w.sum()
        cov = ((p - mu) * w[:, None]).T @ (p - mu) / w.sum()
        axis = torch.linalg.eigh(cov).eigenvectors[:, -1]
        side = ((p - mu) @ axis) > 0
        if bool(side.all()) or not bool(side.any()):
            break
        idx = torch.nonzero(sel, as_tuple=True)[0]
        labels[idx[side]] = n
        for _ in range(iters):
            centres, mass = _centres(points, weights, labels, n + 1)
            new = _sq_dist(points, centres).argmin(1)
            if torch.equal(new, labels):
                break
            labels = new
    centres, mass = _centres(points, weights, labels, int(labels.max()) + 1)
    used = torch.nonzero(mass > 0, as_tuple=True)[0]
    remap = torch.full((centres.shape[0],), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    return centres[used], remap[labels]


# --------------------------------------------------------------------------------------------------
# Weight-free backend


@dataclass
class ClusterSegmenter:
    """Background estimate from the border + colour clustering of the subject. No model files."""

    work_size: int = 128  # longest side the analysis runs at
    max_regions: int = 6
    merge_distance: float = 0.08  # clusters closer than this in the HSV cone are merged
    min_region: float = 0.03  # clusters smaller than this share of the subject are folded into neighbours
    border: float = 0.03  # border strip width (share of the shorter side) sampled for the background
    background_tolerance: tuple[float, float] = (0.05, 0.2)  # min/max HSV-cone distance to a background mode
    side_share: float = 0.5  # a side counts as background when this share of it is near its median colour
    edge_threshold: float = 0.1  # pixels differing more than this from a neighbour are edges / blends
    name: str = "cluster"

    memo: int = 16  # segmentations kept (by picture hash): a reference scored against many generations is cut once

    def __post_init__(self):
        self._memo: OrderedDict[str, Segmentation] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, picture: Picture, queries=None) -> Segmentation:
        """The segmentation of ``picture`` (the same object for the same pixels: treat it as read-only)."""
        key = picture.hash
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        seg = self._segment(picture)
        with self._lock:
            self._memo[key] = seg
            while len(self._memo) > self.memo:
                self._memo.popitem(last=False)
        return seg

    def _segment(self, picture: Picture) -> Segmentation:
        rgb = resize_max(picture.rgb.float(), self.work_size)
        feats = cone_features(rgb)
        notes: list[str] = []
        alpha_mask = picture.subject_mask
        if alpha_mask is not None:
            subject = F.interpolate(alpha_mask.float()[None, None], size=rgb.shape[-2:], mode="bilinear",
                                    align_corners=False)[0, 0] > 0.5
            notes.append("subject from the alpha channel")
        else:
            subject = self.subject_mask(feats, notes)
        core = erode(subject, 1) & (local_variation(feats) <= self.edge_threshold)
        if int(core.sum()) < 0.3 * int(subject.sum()):
            core = erode(subject, 1)
        regions = self.regions(feats, subject, core)
        return Segmentation(rgb=rgb, subject=subject, regions=regions, backend=self.name, notes=notes, core=core)

    def subject_mask(self, feats: torch.Tensor, notes: list[str]) -> torch.Tensor:
        """Background = what floods inwards from each side of the image through pixels close to that
        side's median colour (tolerance from the side's own spread). A side that is mostly subject
        (or too busy) floods nothing. Medians keep the estimate stable under small changes of the
        picture (a hue shift cuts the same silhouette); flooding each side through its own colour
        keeps a subject part of a background-like colour from being reached through another side's
        colour. Limitation: a background that changes colour a lot along a side (a strong gradient,
        a checkerboard) is only partly found."""
        _, h, w = feats.shape
        b = max(2, round(self.border * min(h, w)))
        sides = [torch.zeros(h, w, dtype=torch.bool) for _ in range(4)]
        sides[0][:b], sides[1][-b:], sides[2][:, :b], sides[3][:, -b:] = True, True, True, True
        lo, hi = self.background_tolerance
        flat = feats.reshape(3, -1).T
        floods: list[tuple[torch.Tensor, torch.Tensor]] = []  # (candidate, seeds); equal candidates share one flood
        for side in sides:
            px = feats[:, side].T
            centre = px.median(dim=0).values
            spread = float((px - centre).norm(dim=1).median())
            tol = min(max(2.5 * spread, lo), hi)
            candidate = ((flat - centre).norm(dim=1) <= tol).reshape(h, w)
            seeds = side & candidate
            if float(seeds.sum()) < self.side_share * float(side.sum()):
                continue
            for k, (cand, old) in enumerate(floods):
                if torch.equal(cand, candidate):
                    floods[k] = (cand, old | seeds)
                    break
            else:
                floods.append((candidate, seeds))
        background = torch.zeros(h, w, dtype=torch.bool)
        for candidate, seeds in floods:
            background |= flood(seeds, candidate)
        subject = ~background
        neighbours = F.avg_pool2d(subject.float()[None, None], 3, stride=1, padding=1)[0, 0] * 9
        subject = subject & (neighbours >= 3)  # drop isolated specks
        frac = float(subject.float().mean())
        if frac < 0.005 or frac > 0.995:
            notes.append("no background found: the whole image is treated as the subject")
            return torch.ones(h, w, dtype=torch.bool)
        return subject

    def regions(self, feats: torch.Tensor, subject: torch.Tensor, core: torch.Tensor | None = None) -> list[Region]:
        """Colour clusters of the subject. Clustering uses only ``core`` pixels (away from the outline
        and from colour edges, where neighbouring colours blend), then every subject pixel joins its
        nearest cluster."""
        if core is None or int(core.sum()) == 0:
            core = subject
        pts = feats[:, core].T
        if pts.shape[0] == 0:
            return []
        uniq, counts, _ = unique_weighted(pts)
        centres, labels = bisecting_kmeans(uniq, counts, self.max_regions)
        centres, labels = _merge_close(uniq, counts, centres, labels, self.merge_distance)
        centres, labels = _fold_small(uniq, counts, centres, labels, self.min_region)
        full = torch.full(subject.shape, -1, dtype=torch.long)
        full[subject] = _sq_dist(feats[:, subject].T, centres).argmin(1)
        return [Region(mask=full == c) for c in range(centres.shape[0])]


def _merge_close(pts, w, centres, labels, dist):
    """Merge the closest pair of clusters while their centres are nearer than ``dist``."""
    while centres.shape[0] > 1:
        d = torch.cdist(centres, centres)
        d.fill_diagonal_(float("inf"))
        i, j = divmod(int(d.argmin()), d.shape[1])
        if float(d[i, j]) >= dist:
            break
        i, j = min(i, j), max(i, j)
        labels = torch.where(labels == j, torch.full_like(labels, i), labels)
        labels = torch.where(labels > j, labels - 1, labels)
        centres, _ = _centres(pts, w, labels, centres.shape[0] - 1)
    return centres, labels


def _fold_small(pts, w, centres, labels, min_share):
    """Dissolve clusters holding less than ``min_share`` of the weight into their nearest neighbours."""
    total = float(w.sum())
    while centres.shape[0] > 1:
        _, mass = _centres(pts, w, labels, centres.shape[0])
        small = int(mass.argmin())
        if float(mass[small]) >= min_share * total:
            break
        keep = [c for c in range(centres.shape[0]) if c != small]
        centres = centres[keep]
        labels = _sq_dist(pts, centres).argmin(1)
        centres, _ = _centres(pts, w, labels, centres.shape[0])
    return centres, labels


def __getattr__(name: str):
    if name == "GroundedSamSegmenter":  # lives beside, in segment_sam.py (it needs transformers)
        from .segment_sam import GroundedSamSegmenter

        return GroundedSamSegmenter
    raise AttributeError(name)


__all__ = ["ClusterSegmenter", "GroundedSamSegmenter", "Segmentation", "Region", "DEFAULT_PARTS", "bisecting_kmeans",
           "cone_features"]
