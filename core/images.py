"""Reference-picture preparation on ComfyUI IMAGE tensors (``[B, H, W, C]``, floats in 0..1).

Pure torch: channel normalisation (RGBA composited, grayscale expanded), fitting to a target size
(pad with a colour, centre-crop, stretch) and optional subject masking.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from .errors import InputError

FIT_MODES = ("pad", "crop", "stretch")


def parse_color(text: str, name: str = "pad_color") -> tuple[float, float, float]:
    """``#rrggbb``, ``#rgb`` or ``r,g,b`` (0-255) to floats in 0..1."""
    s = str(text).strip()
    m = re.fullmatch(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})", s)
    if m:
        h = m.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    parts = [p.strip() for p in s.split(",")]
    if len(parts) == 3 and all(re.fullmatch(r"\d{1,3}", p) for p in parts) and all(int(p) <= 255 for p in parts):
        return tuple(int(p) / 255.0 for p in parts)  # type: ignore[return-value]
    raise InputError(name, f"'{text}' is not a colour.", "Write it as #rrggbb (e.g. #ffffff) or r,g,b (e.g. 255,255,255).")


def to_rgb(image: torch.Tensor, background=(1.0, 1.0, 1.0), name: str = "reference") -> tuple[torch.Tensor, str]:
    """Three-channel version of ``image`` and a note saying what was done (empty if nothing).

    RGBA (and gray+alpha) is composited over ``background``; grayscale is repeated to RGB.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise InputError(name, f"expected an IMAGE [batch, height, width, channels], got shape {tuple(image.shape)}.")
    b, h, w, c = image.shape
    if b == 0 or h == 0 or w == 0:
        raise InputError(name, f"the image is empty (shape {tuple(image.shape)}).", "Connect a loaded picture.")
    image = image.float()
    if c == 3:
        return image, ""
    if c in (2, 4):
        color, alpha = image[..., :-1], image[..., -1:].clamp(0, 1)
        if c == 2:
            color = color.expand(b, h, w, 3)
        bg = torch.tensor(background, dtype=image.dtype, device=image.device)
        kind = "RGBA" if c == 4 else "grayscale+alpha"
        return color * alpha + bg * (1 - alpha), f"{name}: {kind} image composited over the pad colour {_hex(background)}."
    if c == 1:
        return image.expand(b, h, w, 3).contiguous(), f"{name}: grayscale image expanded to RGB."
    raise InputError(name, f"{c} colour channels is not a picture this node understands.", "Use an RGB, RGBA or grayscale image.")


def _hex(color) -> str:
    return "#" + "".join(f"{int(round(v * 255)):02x}" for v in color)


def _resize(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x = image.movedim(-1, 1)
    x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return x.movedim(1, -1).clamp(0, 1)


def fit(image: torch.Tensor, height: int, width: int, mode: str = "pad", color=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Fit ``[B, H, W, 3]`` into ``height`` x ``width``.

    ``pad`` keeps the whole picture and aspect ratio and fills the rest with ``color`` (centred);
    ``crop`` fills the frame and cuts the overflow from the centre; ``stretch`` ignores the aspect.
    """
    if mode not in FIT_MODES:
        raise InputError("fit", f"'{mode}' is not a fit mode.", f"Choose one of {', '.join(FIT_MODES)}.")
    b, h0, w0, c = image.shape
    if (h0, w0) == (height, width) or mode == "stretch":
        return image if (h0, w0) == (height, width) else _resize(image, height, width)
    scale = min(height / h0, width / w0) if mode == "pad" else max(height / h0, width / w0)
    nh, nw = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    resized = _resize(image, nh, nw)
    if mode == "crop":
        top, left = (nh - height) // 2, (nw - width) // 2
        return resized[:, top:top + height, left:left + width, :]
    canvas = torch.empty(b, height, width, c, dtype=image.dtype, device=image.device)
    canvas[:] = torch.tensor(color, dtype=image.dtype, device=image.device)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, top:top + nh, left:left + nw, :] = resized
    return canvas


def apply_subject_mask(image: torch.Tensor, mask: torch.Tensor, color=(1.0, 1.0, 1.0), name: str = "reference_mask") -> torch.Tensor:
    """Replace everything outside the subject (``mask`` = 1 on the subject) with ``color``.

    ``mask`` is a ComfyUI MASK (``[B, H, W]`` or ``[H, W]``) at any resolution; it is resized to the
    image and its batch broadcast like the reference's.
    """
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise InputError(name, f"expected a MASK [batch, height, width], got shape {tuple(mask.shape)}.")
    b, h, w, _ = image.shape
    if mask.shape[0] not in (1, b):
        raise InputError(name, f"{mask.shape[0]} masks for {b} reference images.", "Give one mask, or one per reference.")
    m = mask.float().unsqueeze(1)
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    m = m.movedim(1, -1).clamp(0, 1).to(image.device)
    bg = torch.tensor(color, dtype=image.dtype, device=image.device)
    return image * m + bg * (1 - m)


def side_by_side(left: torch.Tensor, right: torch.Tensor, gutter: int = 8, color=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Two IMAGE batches next to each other with a gutter; heights are matched by resizing ``right``."""
    b = max(left.shape[0], right.shape[0])
    left = left.expand(b, *left.shape[1:]) if left.shape[0] == 1 else left
    right = right.expand(b, *right.shape[1:]) if right.shape[0] == 1 else right
    if left.shape[0] != right.shape[0]:
        raise InputError("images", f"{left.shape[0]} and {right.shape[0]} images cannot be paired.", "Give equal batches or one image.")
    h = left.shape[1]
    if right.shape[1] != h:
        w = max(1, round(right.shape[2] * h / right.shape[1]))
        right = _resize(right[..., :3], h, w)
    gap = torch.empty(b, h, gutter, 3, dtype=left.dtype, device=left.device)
    gap[:] = torch.tensor(color, dtype=left.dtype, device=left.device)
    return torch.cat([left[..., :3], gap, right[..., :3].to(left.device, left.dtype)], dim=2)
