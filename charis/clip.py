"""CLIP on open_clip, from local files only: the CLIP half of the prompt axis and CLIP-IQA (quality).

Model files:

* a folder with ``open_clip_config.json`` and ``open_clip_model.safetensors`` (open_clip's own
  ``local-dir:`` layout), or
* a single weights file (``.safetensors``, ``.pt``, ``.bin``) plus the open_clip architecture name,
  given explicitly or taken from the file name (``RN50-quickgelu.pt``, ``ViT-L-14-quickgelu.safetensors``;
  use the ``-quickgelu`` names for OpenAI's weights).

Nothing is ever downloaded (``pretrained`` is always a local path).

CLIP score rescaling (documented choice): ``S_clip = clamp(2.5 * max(cos, 0), 0, 1)``, i.e. the
CLIPScore of Hessel et al. (2021, w = 2.5) clipped to [0, 1]. A cosine of 0.4 or more counts as a
perfect match; typical matching pairs (cos 0.25-0.35) land at 0.6-0.9, unrelated ones (about 0.1) near
0.25. ``rescale_clip(cos, lo, hi)`` with explicit bounds gives a linear map instead.

CLIP-IQA (Wang et al., AAAI 2023): for each antonym pair ("Good image" / "bad image", ...) the
softmax over the two image-text logits gives the probability of the positive prompt; the score is
the mean over pairs. As in the original method, a ResNet CLIP sees the image at its own resolution
with the attention-pool positional embedding left out (``native_resolution=True``; the longest side is
capped at ``max_side``, 512 px by default, for speed; ``max_side=0`` keeps the full size); ViT CLIPs
see it resized to their input size.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from .images import Picture

log = logging.getLogger(__name__)

# The same five antonym pairs pyiqa's ``clipiqa`` ensembles (plain English prompts).
DEFAULT_IQA_PAIRS = (
    ("Good image", "bad image"),
    ("Sharp image", "blurry image"),
    ("sharp edges", "blurry edges"),
    ("High resolution image", "low resolution image"),
    ("Noise-free image", "noisy image"),
)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
CLIPSCORE_W = 2.5


def rescale_clip(cos: float, lo: float | None = None, hi: float | None = None) -> float:
    """CLIP cosine -> [0, 1]. Default: ``clamp(2.5 * max(cos, 0), 0, 1)`` (CLIPScore, w = 2.5).
    With ``lo``/``hi``: ``clamp((cos - lo) / (hi - lo), 0, 1)``."""
    if lo is not None and hi is not None:
        if hi <= lo:
            raise InputError("clip.rescale", f"needs lo < hi, got lo={lo}, hi={hi}.", "E.g. rescale = [0.15, 0.35].")
        return min(max((cos - lo) / (hi - lo), 0.0), 1.0)
    return min(max(CLIPSCORE_W * max(cos, 0.0), 0.0), 1.0)


def arch_from_filename(path: str | Path) -> str | None:
    """open_clip architecture name from a weights file name, if it names one."""
    import open_clip

    stem = Path(path).name
    for suf in WEIGHT_SUFFIXES:
        if stem.endswith(suf):
            stem = stem[: -len(suf)]
    known = set(open_clip.list_models())
    for cand in (stem, re.split(r"__|@", stem)[0]):
        if cand in known:
            return cand
    # longest known name the file starts with (e.g. "ViT-B-32-quickgelu_openai")
    best = [m for m in known if stem.startswith(m)]
    return max(best, key=len) if best else None


class ClipModel:
    """An open_clip model loaded from local files, with its tokenizer and preprocessing."""

    def __init__(self, path: str | Path, arch: str | None = None, device: str | torch.device = "cpu"):
        import open_clip

        path = Path(path)
        self.path = path
        self.device = torch.device(device)
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise FileNotFoundError(f"{path} has no open_clip_config.json (expected open_clip's local-dir layout)")
            name = f"local-dir:{path}"
            model, _, preprocess = open_clip.create_model_and_transforms(name, device=self.device)
            self.tokenizer = open_clip.get_tokenizer(name)
            self.arch = f"local-dir:{path.name}"
        else:
            if not path.is_file():
                raise InputError("clip.path (--clip)", f"CLIP weights not found: {path}.", "Check the path.")
            arch = arch or arch_from_filename(path)
            if not arch:
                raise InputError("clip.arch (--clip-arch)", f"cannot tell the open_clip architecture of {path.name}.",
                                 "Name the file after it (e.g. RN50-quickgelu.pt) or give --clip-arch.")
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(path), device=self.device)
            self.tokenizer = open_clip.get_tokenizer(arch)
            self.arch = arch
        self.model = model.eval()
        self.preprocess = preprocess
        self.mean, self.std = _mean_std(model)
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def is_resnet(self) -> bool:
        from open_clip.modified_resnet import ModifiedResNet

        return isinstance(self.model.visual, ModifiedResNet)

    @property
    def image_size(self) -> int:
        size = getattr(self.model.visual, "image_size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        todo = [t for t in texts if t not in self._text_cache]
        if todo:
            feats = self.model.encode_text(self.tokenizer(todo).to(self.device)).float()
            for t, f in zip(todo, feats):
                self._text_cache[t] = f
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def image_features(self, pictures: list[Picture]) -> torch.Tensor:
        batch = torch.stack([self.preprocess(p.pil()) for p in pictures]).to(self.device)
        return self.model.encode_image(batch).float()

    @torch.no_grad()
    def cosine(self, picture: Picture, text: str) -> float:
        img = F.normalize(self.image_features([picture]), dim=-1)
        txt = F.normalize(self.text_features([text]), dim=-1)
        return float((img * txt).sum())

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _mean_std(model):
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))


def resnet_features_without_position(visual, x: torch.Tensor) -> torch.Tensor:
    """open_clip ``ModifiedResNet`` forward at any input size, with the attention pool's positional
    embedding left out (what CLIP-IQA does so the image needs no resizing)."""
    x = visual.stem(x.to(visual.conv1.weight.dtype))
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    pool = visual.attnpool
    x = x.flatten(2).permute(2, 0, 1)  # (HW)NC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    return x[0]


def clip_iqa_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """``[N, 2P]`` image-text logits ordered (positive, negative) per pair -> ``[N]`` mean positive
    probability (softmax within each pair)."""
    probs = logits.reshape(logits.shape[0], -1, 2).softmax(dim=-1)
    return probs[..., 0].mean(dim=1)


class ClipIQA:
    """CLIP-IQA on an open_clip model (default backend)."""

    name = "clipiqa-open_clip"

    def __init__(self, clip: ClipModel, pairs=DEFAULT_IQA_PAIRS, native_resolution: bool | None = None,
                 max_side: int | None = 512):
        self.clip = clip
        self.pairs = tuple(tuple(p) for p in pairs)
        self.native = clip.is_resnet if native_resolution is None else bool(native_resolution)
        if self.native and not clip.is_resnet:
            raise InputError("quality.native_resolution", "native-resolution CLIP-IQA needs a ResNet CLIP (e.g. RN50).",
                             "Set native_resolution = false for a ViT CLIP (it is then resized).")
        self.max_side = max_side

    def prompts(self) -> list[str]:
        return [t for pair in self.pairs for t in pair]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` RGB in 0..1 -> ``[N, 2P]`` logits against the antonym prompts."""
        m = self.clip.model
        x = x.to(self.clip.device).float()
        if self.native:
            feats = resnet_features_without_position(m.visual, self.clip.normalise(x))
        else:
            size = self.clip.image_size
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            feats = m.encode_image(self.clip.normalise(x))
        img = F.normalize(feats.float(), dim=-1)
        txt = F.normalize(self.clip.text_features(self.prompts()), dim=-1)
        return m.logit_scale.exp().float() * img @ txt.T

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return clip_iqa_from_logits(self.logits(x))

    def score(self, picture: Picture) -> float:
        from .images import resize_max

        x = picture.rgb if not self.max_side else resize_max(picture.rgb, self.max_side)
        return float(self(x[None])[0])


class PyiqaClipIQA:
    """pyiqa's ``clipiqa`` metric (optional; PolyForm Noncommercial licence) on a local CLIP file.

    ``backbone`` is a path to an OpenAI-format CLIP checkpoint (TorchScript or state dict), which
    pyiqa loads itself; nothing is downloaded."""

    name = "clipiqa-pyiqa"

    def __init__(self, backbone: str | Path, device: str | torch.device = "cpu", pos_embedding: bool = False,
                 max_side: int | None = 512):
        try:
            import pyiqa
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise ImportError("the pyiqa quality backend needs `pip install comfyui-instruct-identity[pyiqa]` "
                              "(pyiqa is PolyForm Noncommercial licensed)") from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.metric = pyiqa.create_metric("clipiqa", device=torch.device(device), backbone=str(backbone),
                                          pretrained=False, pos_embedding=pos_embedding)
        self.max_side = max_side

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.metric(x.float().clamp(0, 1)).reshape(-1)

    def score(self, picture: Picture) -> float:
        from .images import resize_max

        x = picture.rgb if not self.max_side else resize_max(picture.rgb, self.max_side)
        return float(self(x[None])[0])
