"""Training pairs: kohya-shaped dataset TOML or a JSONL manifest, checked before training, bucketed.

Dataset TOML (kohya's shape; every key may sit in ``[general]``, a ``[[datasets]]`` or a subset)::

    [general]
    resolution = 512            # per image: each half of the H x 2W grid
    enable_bucket = true
    caption_extension = ".txt"

    [[datasets]]
    batch_size = 1

      [[datasets.subsets]]
      image_dir = "targets"                  # target images + captions (<stem><caption_extension>)
      conditioning_data_dir = "references"   # the reference with the same stem (alias: reference_dir)
      num_repeats = 1

      [[datasets.subsets]]
      manifest = "pairs.jsonl"               # {"reference": ..., "target": ..., "caption": ...} per line
      reference_views = [1, 3]               # optional: lines with "references": [a, b, c] (several views of
                                             # the character) use 1..3 of them, drawn anew each epoch

A manifest line may give several references, ``"references": ["front.png", "back.png"]``: the grid
is then ``[target | ref_1 | ... | ref_K]`` (``core.layout``). Without ``reference_views`` every listed
reference is used; with it (an int K or ``[lo, hi]``) each epoch draws that many of them, in random
order, per pair. Batches hold pairs of one bucket and one K.

Grid mode needs no reference (``image_dir`` + captions, or manifest lines with ``target``/``image``).
Every pair is checked before training (missing files, unreadable images, empty captions, reference and
target of different sizes); bad pairs are listed in one report and skipped. Nothing in the dataset
folders is written.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core import toml
from ..core.errors import InputError, closest

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SPATIAL_MULTIPLE = 16  # FLUX: VAE downscale 8 x patch 2

DATASET_KEYS = ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                "bucket_no_upscale", "batch_size")
SUBSET_KEYS = ("image_dir", "conditioning_data_dir", "reference_dir", "manifest", "caption_extension", "num_repeats",
               "allow_size_mismatch", "reference_views")
KOHYA_UNSUPPORTED = {
    "class_tokens": "every pair needs its own caption",
    "keep_tokens": "captions are encoded once and cached",
    "shuffle_caption": "captions are encoded once and cached",
    "caption_dropout_rate": "captions are encoded once and cached",
    "flip_aug": "latents are cached, so there is no image augmentation",
    "color_aug": "latents are cached, so there is no image augmentation",
    "random_crop": "latents are cached, so there is no image augmentation",
    "is_reg": "regularisation images are not used by this method",
    "metadata_file": "use a JSONL manifest (reference, target, caption) instead",
}


# --------------------------------------------------------------------------------------------------
# records


@dataclass
class Pair:
    target: Path
    reference: Path | None
    caption: str
    source: str                  # where it came from, for the report
    dataset: int = 0             # index of its [[datasets]] entry
    repeats: int = 1
    size: tuple[int, int] = (0, 0)            # target (width, height), filled by the check
    allow_size_mismatch: bool = False
    extra_references: list[Path] = field(default_factory=list)   # references 2..K (several views)
    views: tuple[int, int] | None = None      # draw lo..hi of the references each epoch (None: all of them)

    @property
    def references(self) -> list[Path]:
        return ([self.reference] if self.reference is not None else []) + list(self.extra_references)


@dataclass
class Problem:
    source: str
    problems: list[str]
    files: list[str]


@dataclass
class DatasetSpec:
    resolution: tuple[int, int]  # (width, height)
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    batch_size: int


@dataclass
class Report:
    pairs: list[Pair] = field(default_factory=list)        # usable
    problems: list[Problem] = field(default_factory=list)  # skipped

    @property
    def total(self) -> int:
        return len(self.pairs) + len(self.problems)

    def text(self) -> str:
        head = f"dataset check: {self.total} pairs found, {len(self.pairs)} usable, {len(self.problems)} skipped"
        lines = [head]
        for p in self.problems:
            lines.append(f"  - {p.source}: {'; '.join(p.problems)}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"usable": len(self.pairs), "skipped": [asdict(p) for p in self.problems],
                           "pairs": [{"target": str(p.target), "reference": str(p.reference) if p.reference else None,
                                      **({"references": [str(r) for r in p.references]} if p.extra_references else {}),
                                      "caption": p.caption, "source": p.source} for p in self.pairs]}, indent=1)


# --------------------------------------------------------------------------------------------------
# reading the dataset description


def _check_keys(table: dict, allowed: tuple, where: str) -> None:
    for key in table:
        if key in allowed or key in ("subsets", "datasets", "general"):
            continue
        if key in KOHYA_UNSUPPORTED:
            raise InputError(f"{where}.{key}", f"is a kohya option this trainer does not support: {KOHYA_UNSUPPORTED[key]}.",
                             "Remove it from the dataset config.")
        near = closest(key, allowed)
        raise InputError(f"{where}.{key}", "is not a dataset option.",
                         f"Did you mean \"{near}\"?" if near else "See docs/trainer.md for the dataset keys.")


def _resolution(value, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        w = h = value
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        w, h = int(value[0]), int(value[1])
    else:
        raise InputError(f"{where}.resolution", f"{value!r} is not a resolution.", "Use 512 or [width, height].")
    for v in (w, h):
        if v < SPATIAL_MULTIPLE or v % SPATIAL_MULTIPLE:
            raise InputError(f"{where}.resolution", f"{v} px is not a positive multiple of {SPATIAL_MULTIPLE}.",
                             "FLUX needs multiples of 16 px (VAE 8 x patch 2), e.g. 512 or 1024.")
    return w, h


def _spec(values: dict, where: str) -> DatasetSpec:
    spec = DatasetSpec(
        resolution=_resolution(values["resolution"], where),
        enable_bucket=bool(values["enable_bucket"]),
        min_bucket_reso=int(values["min_bucket_reso"]),
        max_bucket_reso=int(values["max_bucket_reso"]),
        bucket_reso_steps=int(values["bucket_reso_steps"]),
        bucket_no_upscale=bool(values["bucket_no_upscale"]),
        batch_size=int(values["batch_size"]),
    )
    if spec.bucket_reso_steps % SPATIAL_MULTIPLE or spec.bucket_reso_steps <= 0:
        raise InputError(f"{where}.bucket_reso_steps", f"{spec.bucket_reso_steps} is not a multiple of 16.", "Use 64 or 16, 32.")
    if spec.batch_size < 1:
        raise InputError(f"{where}.batch_size", f"{spec.batch_size} is not a batch size.", "Use 1 or more.")
    return spec


def defaults_from(cfg) -> dict:
    """Trainer-config values that act as the dataset defaults (kohya: args fill what [general] leaves)."""
    return {"resolution": cfg.resolution, "enable_bucket": cfg.enable_bucket, "min_bucket_reso": cfg.min_bucket_reso,
            "max_bucket_reso": cfg.max_bucket_reso, "bucket_reso_steps": cfg.bucket_reso_steps,
            "bucket_no_upscale": cfg.bucket_no_upscale, "batch_size": cfg.train_batch_size,
            "caption_extension": cfg.caption_extension, "num_repeats": 1, "allow_size_mismatch": False}


def read_dataset(path: str | Path, defaults: dict, mode: str) -> tuple[list[DatasetSpec], list[Pair], list[Problem]]:
    """Dataset specs and candidate pairs (not yet checked) from a dataset TOML or a JSONL manifest."""
    path = Path(path)
    if not path.exists():
        raise InputError("dataset_config", f"{path} does not exist.", "Point it at a dataset TOML or a JSONL manifest.")
    if path.suffix.lower() in (".jsonl", ".json"):
        spec = _spec(defaults, "dataset")
        pairs, problems = read_manifest(path, mode, dataset=0, repeats=1, allow_mismatch=bool(defaults["allow_size_mismatch"]),
                                        views=reference_views(defaults.get("reference_views"), "reference_views"))
        return [spec], pairs, problems
    try:
        raw = toml.loads(path.read_text(encoding="utf-8"))
    except toml.TOMLDecodeError as e:
        raise InputError("dataset_config", f"{path} is not valid TOML ({e}).") from e
    _check_keys(raw, (), "dataset")
    general = raw.get("general", {})
    _check_keys(general, DATASET_KEYS + SUBSET_KEYS, "general")
    datasets = raw.get("datasets")
    if not datasets:
        raise InputError("dataset_config", f"{path} has no [[datasets]].", "Add [[datasets]] with [[datasets.subsets]].")
    base = path.parent
    specs, pairs, problems = [], [], []
    for di, ds in enumerate(datasets):
        where = f"datasets[{di}]"
        _check_keys(ds, DATASET_KEYS + SUBSET_KEYS, where)
        values = {**defaults, **general, **ds}
        specs.append(_spec(values, where))
        subsets = ds.get("subsets") or []
        if not subsets:
            raise InputError(where, "has no [[datasets.subsets]].", "Add one with image_dir (+ conditioning_data_dir) or manifest.")
        for si, sub in enumerate(subsets):
            swhere = f"{where}.subsets[{si}]"
            _check_keys(sub, SUBSET_KEYS, swhere)
            sv = {**values, **sub}
            repeats = int(sv.get("num_repeats", 1))
            if repeats < 1:
                raise InputError(f"{swhere}.num_repeats", f"{repeats} must be at least 1.")
            allow = bool(sv.get("allow_size_mismatch", False))
            views = reference_views(sv.get("reference_views"), f"{swhere}.reference_views")
            if "manifest" in sub:
                p, q = read_manifest(_path(base, sub["manifest"]), mode, dataset=di, repeats=repeats, allow_mismatch=allow,
                                     views=views)
            elif "image_dir" in sub:
                ref_dir = sub.get("conditioning_data_dir", sub.get("reference_dir"))
                if mode == "identity" and ref_dir is None:
                    raise InputError(f"{swhere}.conditioning_data_dir", "identity mode needs the reference images.",
                                     "Set conditioning_data_dir (or reference_dir) to the folder of references with "
                                     "the same file names as the targets.")
                p, q = read_image_dir(_path(base, sub["image_dir"]), _path(base, ref_dir) if ref_dir else None,
                                      str(sv["caption_extension"]), mode, dataset=di, repeats=repeats,
                                      allow_mismatch=allow, where=swhere)
            else:
                raise InputError(swhere, "has neither image_dir nor manifest.", "Set one of them.")
            pairs += p
            problems += q
    return specs, pairs, problems


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def reference_views(value, where: str) -> tuple[int, int] | None:
    """``reference_views`` as (lo, hi): an int K is (K, K); None stays None (use every reference)."""
    from ..core import layout

    if value is None or value == 0:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        lo, hi = int(value[0]), int(value[1])
    else:
        raise InputError(where, f"{value!r} is not a number of views.", "Use an int K or [lo, hi], e.g. [1, 3].")
    if lo > hi:
        raise InputError(where, f"{lo} is more than {hi}.", "Write [lo, hi] with lo <= hi.")
    layout.check_references(lo, where)
    layout.check_references(hi, where)
    return lo, hi


def _reference_fields(row: dict, mode: str) -> tuple[list | None, str | None]:
    """The references of one manifest line (None: none given) and a problem, if any."""
    one, many = row.get("reference"), row.get("references")
    if mode != "identity":
        return None, None
    if one is not None and many is not None:
        return None, "both reference and references are given (use one of them)"
    if many is not None:
        if not isinstance(many, list) or not many or not all(isinstance(r, str) and r for r in many):
            return None, "references is not a non-empty list of file names"
        from ..core import limits

        if len(many) > limits.MAX_REFERENCES:
            return None, f"{len(many)} references, more than the {limits.MAX_REFERENCES} one grid may hold"
        return many, None
    return ([one] if one is not None else None), None


def read_manifest(path: Path, mode: str, *, dataset: int, repeats: int, allow_mismatch: bool,
                  views: tuple[int, int] | None = None) -> tuple[list[Pair], list[Problem]]:
    """JSONL: one ``{"reference" (or "references": [...]), "target", "caption"}`` object per line, paths
    relative to the manifest."""
    if not path.is_file():
        raise InputError("manifest", f"{path} does not exist.", "Point it at a JSONL file of (reference, target, caption).")
    pairs, problems = [], []
    base = path.parent
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError as e:
            problems.append(Problem(where, [f"not a JSON object ({e})"], []))
            continue
        target = row.get("target", row.get("image"))
        refs, bad = _reference_fields(row, mode)
        caption = row.get("caption")
        if bad:
            problems.append(Problem(where, [bad], []))
            continue
        missing = [k for k, v in (("target", target), ("caption", caption)) if v is None]
        if mode == "identity" and refs is None:
            missing.append("reference")
        if missing:
            problems.append(Problem(where, [f"no {', '.join(missing)} field"], []))
            continue
        paths = [_path(base, str(r)) for r in refs] if refs else []
        if views is not None and len(paths) < views[0]:
            problems.append(Problem(where, [f"{len(paths)} reference(s), fewer than the {views[0]} views reference_views "
                                            "asks for"], [str(p) for p in paths]))
            continue
        pairs.append(Pair(_path(base, str(target)), paths[0] if paths else None, str(caption), where, dataset, repeats,
                          allow_size_mismatch=allow_mismatch, extra_references=paths[1:],
                          views=views if views is not None and paths else None))
    return pairs, problems


def read_image_dir(image_dir: Path, ref_dir: Path | None, caption_ext: str, mode: str, *, dataset: int, repeats: int,
                   allow_mismatch: bool, where: str) -> tuple[list[Pair], list[Problem]]:
    if not image_dir.is_dir():
        raise InputError(f"{where}.image_dir", f"{image_dir} is not a folder.")
    if ref_dir is not None and not ref_dir.is_dir():
        raise InputError(f"{where}.conditioning_data_dir", f"{ref_dir} is not a folder.")
    refs = {}
    if ref_dir is not None:
        for f in sorted(ref_dir.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                refs.setdefault(f.stem, f)
    pairs, problems = [], []
    for f in sorted(image_dir.iterdir()):
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        src = f"{image_dir.name}/{f.name}"
        cap_file = f.with_name(f.stem + caption_ext)
        caption = cap_file.read_text(encoding="utf-8", errors="replace") if cap_file.is_file() else None
        reference = None
        if mode == "identity":
            reference = refs.get(f.stem, (ref_dir / (f.stem + f.suffix)) if ref_dir else None)
        if caption is None:
            problems.append(Problem(src, [f"no caption file {cap_file.name}"], [str(f)]))
            continue
        pairs.append(Pair(f, reference, caption, src, dataset, repeats, allow_size_mismatch=allow_mismatch))
    return pairs, problems


# --------------------------------------------------------------------------------------------------
# checking


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after decoding the whole file (a truncated, corrupt or oversized image raises)."""
    from ..core.imagefile import open_image

    with open_image(path) as im:
        return im.size


def check(pairs: list[Pair], problems: list[Problem] | None = None) -> Report:
    """Keep the usable pairs; list every other one with all its problems. Never raises for bad data."""
    report = Report(problems=list(problems or []))
    sizes: dict[Path, tuple[int, int] | str] = {}

    def size_of(p: Path):
        if p not in sizes:
            try:
                sizes[p] = image_size(p)
            except InputError as e:
                sizes[p] = f"unreadable image: {e.problem}"
            except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
                sizes[p] = f"unreadable image {p} ({type(e).__name__}: {str(e)[:80]})"
        return sizes[p]

    for pair in pairs:
        issues: list[str] = []
        files = [str(pair.target)] + [str(r) for r in pair.references]
        got = {}
        many = len(pair.references) > 1
        roles = [("target", pair.target)] + [(f"reference {j + 1}" if many else "reference", r)
                                             for j, r in enumerate(pair.references)]
        for role, p in roles:
            if not p.is_file():
                issues.append(f"missing {role} file {p}")
                continue
            s = size_of(p)
            if isinstance(s, str):
                issues.append(f"{role}: {s}")
            else:
                got[role] = s
        if not pair.caption.strip():
            issues.append("empty caption")
        for role, size in got.items():
            if (role != "target" and "target" in got and got["target"] != size and not pair.allow_size_mismatch):
                issues.append(f"size mismatch: target {got['target'][0]}x{got['target'][1]}, {role} "
                              f"{size[0]}x{size[1]} (set allow_size_mismatch = true to resize both to the same bucket)")
        if issues:
            report.problems.append(Problem(pair.source, issues, files))
        else:
            pair.caption = pair.caption.strip()
            pair.size = got["target"]
            report.pairs.append(pair)
    return report


# --------------------------------------------------------------------------------------------------
# buckets


def make_buckets(spec: DatasetSpec) -> list[tuple[int, int]]:
    """kohya's bucket list: sizes of about ``resolution``'s area in ``bucket_reso_steps`` steps."""
    w0, h0 = spec.resolution
    if not spec.enable_bucket:
        return [(w0, h0)]
    area, step = w0 * h0, spec.bucket_reso_steps
    lo = max(step, spec.min_bucket_reso // step * step)
    hi = max(lo, spec.max_bucket_reso // step * step)
    out = set()
    w = lo
    while w <= hi:
        h = min(hi, (area // w) // step * step)
        if h >= lo:
            out.add((w, h))
            out.add((h, w))
        w += step
    out.add((w0 // step * step or step, h0 // step * step or step))
    return sorted(out)


def choose_bucket(size: tuple[int, int], spec: DatasetSpec, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket with the nearest aspect ratio (kohya); ``bucket_no_upscale`` keeps small images small."""
    w, h = size
    if not spec.enable_bucket:
        return buckets[0]
    step = spec.bucket_reso_steps
    if spec.bucket_no_upscale and w * h <= spec.resolution[0] * spec.resolution[1]:
        return max(step, w // step * step), max(step, h // step * step)
    ar = math.log(w / h)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ar), -b[0] * b[1]))


def load_image(path: Path, bucket: tuple[int, int]) -> torch.Tensor:
    """An image resized to cover ``bucket`` (w, h) and centre-cropped: ``[1, h, w, 3]`` floats in 0..1.
    Transparency is composited on white; 16-bit pictures keep their values."""
    from ..core.imagefile import load_comfy

    bw, bh = bucket
    img = load_comfy(path, name="image")  # [1, H, W, 3]
    h, w = img.shape[1:3]
    s = max(bw / w, bh / h)
    nw, nh = max(bw, round(w * s)), max(bh, round(h * s))
    if (nw, nh) != (w, h):
        x = torch.nn.functional.interpolate(img.movedim(-1, 1), size=(nh, nw), mode="bicubic", antialias=True,
                                            align_corners=False)
        img = x.clamp(0, 1).movedim(1, -1)
    left, top = (nw - bw) // 2, (nh - bh) // 2
    return img[:, top:top + bh, left:left + bw, :].contiguous()
