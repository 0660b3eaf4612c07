"""Dataset reading and checking, buckets, and the content-keyed caches."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from ii_train_helpers import make_pairs, write_image
from instruct_identity.core.errors import InputError
from instruct_identity.training import dataset as D
from instruct_identity.training.cache import FileHashes, TensorCache
from instruct_identity.training.data import Encoders, build_items
from instruct_identity.engine.synthetic import SyntheticTextEncoder, SyntheticVae

DEFAULTS = {"resolution": 64, "enable_bucket": False, "min_bucket_reso": 256, "max_bucket_reso": 1024,
            "bucket_reso_steps": 64, "bucket_no_upscale": False, "batch_size": 1, "caption_extension": ".txt",
            "num_repeats": 1, "allow_size_mismatch": False}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def bad_dataset(root: Path) -> Path:
    """2 good pairs + a missing file, a corrupt image, an empty caption, a size mismatch, a broken line."""
    manifest = make_pairs(root, n=2)
    write_image(root / "ref_x.png", 50)
    write_image(root / "tgt_x.png", 51)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    write_image(root / "big.png", 52, size=(96, 64))
    lines = manifest.read_text().splitlines()
    lines += [json.dumps({"reference": "ref_x.png", "target": "missing.png", "caption": "a"}),
              json.dumps({"reference": "corrupt.png", "target": "tgt_x.png", "caption": "b"}),
              json.dumps({"reference": "ref_x.png", "target": "tgt_x.png", "caption": "   "}),
              json.dumps({"reference": "big.png", "target": "tgt_x.png", "caption": "c"}),
              "{not json"]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_bad_pairs_are_reported_and_skipped_never_fatal(tmp_path):
    manifest = bad_dataset(tmp_path / "ds")
    before = snapshot(tmp_path / "ds")
    _specs, pairs, problems = D.read_dataset(manifest, DEFAULTS, "identity")
    report = D.check(pairs, problems)
    assert len(report.pairs) == 2 and report.total == 7
    text = report.text()
    assert "missing target file" in text and "missing.png" in text
    assert "unreadable image" in text and "corrupt.png" in text
    assert "empty caption" in text
    assert "size mismatch: target 64x64, reference 96x64" in text
    assert "not a JSON object" in text
    assert snapshot(tmp_path / "ds") == before  # nothing written into the dataset folder
    assert json.loads(report.to_json())["usable"] == 2


def test_kohya_dataset_toml_with_image_dirs(tmp_path):
    tg, rf = tmp_path / "targets", tmp_path / "refs"
    tg.mkdir(), rf.mkdir()
    for i in range(3):
        write_image(tg / f"p{i}.png", i)
        write_image(rf / f"p{i}.jpg", 10 + i)
        (tg / f"p{i}.caption").write_text(f"pose {i}\n")
    write_image(tg / "orphan.png", 9)  # no reference with that name
    (tg / "orphan.caption").write_text("orphan")
    write_image(tg / "nocap.png", 8)
    (tmp_path / "ds.toml").write_text(
        '[general]\nresolution = 64\ncaption_extension = ".caption"\n'
        '[[datasets]]\nbatch_size = 2\n  [[datasets.subsets]]\n  image_dir = "targets"\n'
        '  conditioning_data_dir = "refs"\n  num_repeats = 3\n')
    specs, pairs, problems = D.read_dataset(tmp_path / "ds.toml", DEFAULTS, "identity")
    report = D.check(pairs, problems)
    assert specs[0].batch_size == 2 and specs[0].resolution == (64, 64)
    assert sorted(p.caption for p in report.pairs) == ["pose 0", "pose 1", "pose 2"]
    assert all(p.repeats == 3 and p.reference.parent == rf for p in report.pairs)
    assert "missing reference file" in report.text() and "no caption file nocap.caption" in report.text()


def test_dataset_keys_are_checked(tmp_path):
    (tmp_path / "ds.toml").write_text('[[datasets]]\nresolutoin = 64\n[[datasets.subsets]]\nmanifest = "x.jsonl"\n')
    with pytest.raises(InputError, match='resolutoin.*Did you mean "resolution"'):
        D.read_dataset(tmp_path / "ds.toml", DEFAULTS, "identity")
    (tmp_path / "ds.toml").write_text('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "."\nflip_aug = true\n')
    with pytest.raises(InputError, match="flip_aug.*not support"):
        D.read_dataset(tmp_path / "ds.toml", DEFAULTS, "identity")
    with pytest.raises(InputError, match="multiple of 16"):
        D._resolution(100, "datasets[0]")


def test_buckets_keep_area_and_aspect():
    spec = D.DatasetSpec((512, 512), True, 256, 1024, 64, False, 1)
    buckets = D.make_buckets(spec)
    assert (512, 512) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert D.choose_bucket((1200, 800), spec, buckets) == (640, 384)  # kohya: nearest aspect ratio
    assert D.choose_bucket((800, 1200), spec, buckets) == (384, 640)
    fixed = D.DatasetSpec((512, 512), False, 256, 1024, 64, False, 1)
    assert D.choose_bucket((1200, 800), fixed, D.make_buckets(fixed)) == (512, 512)
    img = D.load_image(write_image(Path("/tmp") / "ii_bucket_test.png", 3, size=(120, 80)), (96, 64))
    assert img.shape == (1, 64, 96, 3) and 0 <= img.min() and img.max() <= 1


class CountingVae(SyntheticVae):
    def __init__(self, identity_suffix=""):
        super().__init__()
        self.identity += identity_suffix
        self.calls = 0

    def encode(self, pixels):
        self.calls += 1
        return super().encode(pixels)


class CountingText(SyntheticTextEncoder):
    def __init__(self, identity_suffix=""):
        super().__init__()
        self.identity += identity_suffix
        self.calls = 0

    def encode(self, text):
        self.calls += 1
        return super().encode(text)


def _build(manifest, cache_dir, vae, te, defaults=DEFAULTS):
    specs, pairs, problems = D.read_dataset(manifest, defaults, "identity")
    report = D.check(pairs, problems)
    lat, txt = TensorCache(cache_dir, "latents"), TensorCache(cache_dir, "text")
    items = build_items(report.pairs, specs, Encoders.of(vae, te), FileHashes(cache_dir), lat, txt)
    return items, lat, txt


def test_disk_cache_is_reused_and_invalidated_by_content(tmp_path):
    manifest = make_pairs(tmp_path / "ds", n=3)
    cache = tmp_path / "cache"
    vae, te = CountingVae(), CountingText()
    items, lat, _ = _build(manifest, cache, vae, te)
    assert (vae.calls, te.calls) == (6, 3)
    assert lat.get(items[0].target)["latent"].shape == lat.get(items[0].reference)["latent"].shape == (16, 8, 8)
    vae2, te2 = CountingVae(), CountingText()
    _build(manifest, cache, vae2, te2)  # another run: everything reused
    assert (vae2.calls, te2.calls) == (0, 0)
    write_image(tmp_path / "ds" / "tgt1.png", 777)  # one image changes
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    rows[2]["caption"] = "a new caption"  # one caption changes
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    vae3, te3 = CountingVae(), CountingText()
    _build(manifest, cache, vae3, te3)
    assert (vae3.calls, te3.calls) == (1, 1)
    vae4, te4 = CountingVae("-other"), CountingText()
    _build(manifest, cache, vae4, te4)  # another VAE: every latent again, captions still cached
    assert (vae4.calls, te4.calls) == (6, 0)


def test_reference_and_target_share_the_bucket(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    write_image(root / "r.png", 1, size=(160, 96))
    write_image(root / "t.png", 2, size=(160, 96))
    (root / "m.jsonl").write_text(json.dumps({"reference": "r.png", "target": "t.png", "caption": "x"}) + "\n")
    defaults = {**DEFAULTS, "resolution": 128, "enable_bucket": True, "min_bucket_reso": 64, "max_bucket_reso": 256,
                "bucket_reso_steps": 32}
    items, lat, _ = _build(root / "m.jsonl", None, SyntheticVae(), SyntheticTextEncoder(), defaults)
    w, h = items[0].bucket
    assert (w, h) == (160, 96)
    assert lat.get(items[0].target)["latent"].shape == lat.get(items[0].reference)["latent"].shape == (16, h // 8, w // 8)
    assert torch.isfinite(lat.get(items[0].target)["latent"]).all()
