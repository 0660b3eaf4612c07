"""Image files in and out: the one loader and converter for the whole pack.

* :func:`open_image` decodes a file with Pillow, names the file in every error, refuses pictures over
  :data:`MAX_IMAGE_PIXELS` *before* decoding them, applies the EXIF orientation and reads 16-bit and
  float images at their real values (Pillow's ``convert("RGB")`` clips 16-bit grey to white).
* :func:`load_rgb` gives ``[H, W, 3]`` floats in 0..1 plus the alpha channel (or None), transparency
  composited over a background colour; :func:`load_comfy` the same as a ComfyUI IMAGE ``[1, H, W, 3]``.
* :func:`to_uint8` turns any float/uint8 picture (torch or numpy, HWC or CHW, batch of one) into
  ``[H, W, 3]`` uint8; :func:`png_bytes` encodes it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

#: Largest picture accepted (width x height), checked from the header before decoding. 64 MP is an
#: 8192 x 8192 canvas; ``II_MAX_IMAGE_PIXELS`` raises or lowers it.
MAX_IMAGE_PIXELS = int(os.environ.get("II_MAX_IMAGE_PIXELS", 8192 * 8192))
#: Smallest side accepted: below this a picture has no content to score or train on.
MIN_SIDE = 2

_HIGH_DEPTH = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _pil():
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with a clear message
    return Image


def open_image(path: str | Path, *, name: str = "image", max_pixels: int | None = None, decode: bool = True):
    """A decoded, EXIF-oriented Pillow image of ``path``; :class:`InputError` naming the file otherwise.
    ``decode=False`` stops after the checks that need only the header (existence, empty file, format,
    size limit): the pixels are not read (e.g. to look at text chunks that precede them)."""
    Image = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    if not path.is_file():
        raise InputError(name, f"{path} does not exist (or is not a file).", "Check the path.")
    if path.stat().st_size == 0:
        raise InputError(name, f"{path} is an empty (0-byte) file.", "Replace or delete the file.")
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(name, f"{path} is not a picture Pillow can read ({e}).",
                         "Use a PNG, JPEG or WebP file.") from e
    w, h = im.size
    if w * h > limit:
        im.close()
        raise InputError(name, f"{path} is {w}x{h} px ({w * h / 1e6:.0f} MP), over the {limit / 1e6:.0f} MP limit.",
                         "Downscale it first (or raise II_MAX_IMAGE_PIXELS if you have the memory).")
    if min(w, h) < MIN_SIDE:
        im.close()
        raise InputError(name, f"{path} is only {w}x{h} px.", f"Use a picture at least {MIN_SIDE} px on each side.")
    if not decode:
        return im
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(name, f"{path} is truncated or corrupt ({e}).", "Re-export or replace the file.") from e
    return im


def pil_to_rgb(im, background=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow image -> (``[H, W, 3]`` float32 in 0..1, alpha ``[H, W]`` or None)."""
    if im.mode in _HIGH_DEPTH:
        arr = np.asarray(im, dtype=np.float32)
        if im.mode == "F":
            peak = float(arr.max()) if arr.size else 1.0
            arr = arr / (255.0 if peak > 1.0 else 1.0)
        else:  # 16-bit (or 32-bit int) grey: scale by the depth the values actually use
            arr = arr / (65535.0 if float(arr.max(initial=0)) > 255 or im.mode.startswith("I;16") else 255.0)
        arr = np.clip(arr, 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=-1), None
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        a = rgba[..., 3:4]
        rgb = rgba[..., :3] * a + np.asarray(background, dtype=np.float32) * (1.0 - a)
        return np.ascontiguousarray(rgb), np.ascontiguousarray(a[..., 0])
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, None


def load_rgb(path: str | Path, *, name: str = "image", background=(1.0, 1.0, 1.0),
             max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``path`` as (``[H, W, 3]`` float32 in 0..1, alpha or None); see :func:`open_image`."""
    with open_image(path, name=name, max_pixels=max_pixels) as im:
        return pil_to_rgb(im, background)


def load_comfy(path: str | Path, *, name: str = "image", background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """``path`` as a ComfyUI IMAGE ``[1, H, W, 3]`` (transparency composited over ``background``)."""
    rgb, _ = load_rgb(path, name=name, background=background)
    return torch.from_numpy(np.ascontiguousarray(rgb)).unsqueeze(0)


def to_uint8(image, *, channels_first: bool = False, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Any picture -> ``[H, W, 3]`` uint8.

    Accepts torch or numpy, float (0..1) or uint8, ``[H, W]``, ``[H, W, C]`` (or ``[C, H, W]`` with
    ``channels_first``), and a leading batch of one. One channel is repeated; an alpha channel is
    composited over ``background``."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float().numpy() if image.is_floating_point() else image.numpy()
    arr = np.asarray(image)
    if arr.ndim == 4:
        arr = arr[0]
    if channels_first and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
    c = arr.shape[-1]
    if c in (2, 4):
        color, a = arr[..., :-1], arr[..., -1:]
        arr = color * a + np.asarray(background, dtype=np.float32)[: color.shape[-1]] * (1 - a)
        c = arr.shape[-1]
    if c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(np.round(arr[..., :3] * 255.0).astype(np.uint8))


def png_bytes(image, **kw) -> bytes:
    """PNG encoding of :func:`to_uint8` (``image``); keyword ``pnginfo`` is passed to Pillow."""
    Image = _pil()
    pnginfo = kw.pop("pnginfo", None)
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image, **kw)).save(buf, format="PNG", pnginfo=pnginfo)
    return buf.getvalue()
