"""Images as CHARIS sees them: ``Picture`` = RGB float tensor ``[3, H, W]`` in 0..1, an optional
subject mask (from an alpha channel) and a content hash (of the 8-bit pixels, so the same picture
from a PNG file, a JPEG-free copy or a ComfyUI IMAGE tensor hashes the same).

Files are read and pixels converted by the pack's one loader, :mod:`instruct_identity.core.imagefile`
(16-bit PNGs at their real values, EXIF orientation, a pixel cap checked before decoding, errors that
name the file); this module only wraps its arrays into :class:`Picture`.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core import imagefile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Picture:
    rgb: torch.Tensor  # [3, H, W] float32 in 0..1
    alpha: torch.Tensor | None = None  # [H, W] float32 in 0..1 (None: opaque)
    source: str | None = None
    _hash: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    @property
    def subject_mask(self) -> torch.Tensor | None:
        """The alpha channel as a subject mask, when it actually marks a subject."""
        if self.alpha is None:
            return None
        m = self.alpha > 0.5
        frac = float(m.float().mean())
        return m if 0.0 < frac < 1.0 else None

    @property
    def hash(self) -> str:
        if self._hash is None:
            h = hashlib.sha256()
            arr = to_uint8(self.rgb)
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
            if self.subject_mask is not None:
                h.update(np.ascontiguousarray(to_uint8(self.alpha[None])[..., 0]).tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def pil(self, max_side: int | None = None) -> Image.Image:
        img = Image.fromarray(to_uint8(self.rgb))
        if max_side and max(img.size) > max_side:
            img = img.copy()
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return img


def to_uint8(chw: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` floats -> ``[H, W, 3]`` uint8 (the pack's converter, channels first)."""
    return imagefile.to_uint8(chw, channels_first=True)


def _picture(rgb: np.ndarray, alpha: np.ndarray | None, source: str | None) -> Picture:
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).contiguous()
    a = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32)) if alpha is not None else None
    return Picture(t, a, source)


def from_pil(img: Image.Image, source: str | None = None, background=(1.0, 1.0, 1.0)) -> Picture:
    """Any PIL image -> Picture. Transparency is composited over ``background`` and kept as the
    subject mask; 16-bit and float images keep their real values."""
    rgb, alpha = imagefile.pil_to_rgb(img, background)
    return _picture(rgb, alpha, source)


def load(path: str | Path, name: str = "image") -> Picture:
    """A picture file; :class:`~instruct_identity.core.errors.InputError` naming the file (and
    ``name``, the input it came from) when it is missing, empty, truncated, too large or too small."""
    rgb, alpha = imagefile.load_rgb(path, name=name)
    return _picture(rgb, alpha, str(path))


def from_comfy(image: torch.Tensor, index: int = 0, source: str | None = None) -> Picture:
    """One picture of a ComfyUI IMAGE batch ``[B, H, W, C]`` (C = 1, 3 or 4)."""
    x = image[index] if image.ndim == 4 else image
    x = x.detach().float().cpu()
    alpha = None
    if x.shape[-1] == 4:
        alpha = x[..., 3].clamp(0, 1)
        x = x[..., :3] * alpha[..., None] + (1 - alpha[..., None])
    elif x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return Picture(x[..., :3].permute(2, 0, 1).contiguous().clamp(0, 1), alpha, source)


def resize_max(rgb: torch.Tensor, max_side: int) -> torch.Tensor:
    """Downscale ``[C, H, W]`` so its longest side is at most ``max_side`` (antialiased); never upscales."""
    h, w = rgb.shape[-2:]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(rgb[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt.upper() == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def data_url(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> str:
    mime = "image/jpeg" if fmt.upper() == "JPEG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(encode(img, fmt, quality)).decode("ascii")
