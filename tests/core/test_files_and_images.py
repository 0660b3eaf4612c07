"""The pack's one atomic write (core.files) and one image loader (core.imagefile)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from instruct_identity.core import files, imagefile
from instruct_identity.core.errors import InputError


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "lora.bin"
    files.atomic_write_bytes(path, b"old")
    assert path.read_bytes() == b"old"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        files.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"                 # the old file survives a failed write
    assert list(path.parent.glob(".*.tmp")) == []      # and no temporary is left behind


def test_atomic_write_without_overwrite_keeps_the_first_file(tmp_path):
    path = tmp_path / "img.png"
    files.atomic_write_bytes(path, b"first", overwrite=False)
    files.atomic_write_bytes(path, b"second", overwrite=False)
    assert path.read_bytes() == b"first"
    assert list(tmp_path.glob(".*.tmp")) == []


def test_safetensors_round_trip_and_stale_temporaries(tmp_path):
    from safetensors.torch import load_file

    t = {"a": torch.arange(6.0).view(2, 3)}
    files.atomic_save_safetensors(t, tmp_path / "x.safetensors", {"k": "v"})
    assert torch.equal(load_file(str(tmp_path / "x.safetensors"))["a"], t["a"])
    stale, fresh = tmp_path / ".x.safetensors.abc.tmp", tmp_path / ".y.def.tmp"
    stale.write_bytes(b"half"), fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert files.clean_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists()


def test_16_bit_grey_png_keeps_its_values(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    rgb, alpha = imagefile.load_rgb(path)
    assert alpha is None and rgb.shape == (32, 64, 3)
    assert rgb.min() < 0.01 and rgb.max() > 0.99            # not clipped to white
    assert abs(float(rgb.mean()) - 0.5) < 0.02
    assert np.allclose(rgb[..., 0], ramp / 65535.0, atol=1e-6)


def test_rgba_composited_and_alpha_returned(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 255
    arr[:4, :, 3] = 255          # top half opaque red, bottom half transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    rgb, alpha = imagefile.load_rgb(tmp_path / "a.png", background=(0.0, 0.0, 1.0))
    assert np.allclose(rgb[0, 0], [1, 0, 0]) and np.allclose(rgb[7, 0], [0, 0, 1])
    assert alpha[0, 0] == 1.0 and alpha[7, 0] == 0.0


@pytest.mark.parametrize("case", ["empty", "truncated", "missing", "not_an_image", "tiny"])
def test_bad_files_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        Image.new("RGB", (64, 64), (10, 200, 30)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif case == "not_an_image":
        path.write_text("hello")
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(InputError) as e:
        imagefile.load_rgb(path, name="reference")
    assert e.value.input_name == "reference" and str(path) in e.value.problem and e.value.fix


def test_oversized_picture_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(InputError, match="MP limit"):
        imagefile.load_rgb(path, max_pixels=300 * 200 - 1)
    assert decoded == []
    assert imagefile.load_rgb(path, max_pixels=300 * 200)[0].shape == (200, 300, 3)


def test_to_uint8_accepts_every_layout():
    hwc = torch.rand(5, 7, 3)
    ref = np.round(hwc.numpy() * 255).astype(np.uint8)
    assert np.array_equal(imagefile.to_uint8(hwc), ref)
    assert np.array_equal(imagefile.to_uint8(hwc[None]), ref)                          # batch of one
    assert np.array_equal(imagefile.to_uint8(hwc.permute(2, 0, 1), channels_first=True), ref)
    assert np.array_equal(imagefile.to_uint8(ref), ref)                                # uint8 passes through
    grey = imagefile.to_uint8(np.full((4, 4), 0.5, np.float32))
    assert grey.shape == (4, 4, 3) and (grey == 128).all()
    rgba = np.zeros((2, 2, 4), np.float32)
    rgba[..., 3] = 0.0                                                                 # fully transparent
    assert (imagefile.to_uint8(rgba) == 255).all()                                     # over white
