"""CHARIS configuration: dataclasses loaded from TOML or JSON. Unknown keys are errors (with the
nearest valid key suggested), so a typo never silently falls back to a default.

Example (``charis.toml``)::

    mode = "benchmark"
    device = "cpu"
    cache_dir = "charis-cache"

    [clip]
    path = "models/charis/clip/ViT-L-14-quickgelu.safetensors"

    [quality]
    backend = "open_clip"            # or "pyiqa" (optional extra, non-commercial licence) or "none"
    path = "models/charis/clip/RN50-quickgelu.pt"

    [color]
    segmenter = "cluster"            # or "grounded-sam"

    [vlm]
    backend = "openai"               # "openai" (any OpenAI-compatible server), "transformers" or "none"
    base_url = "http://localhost:11434/v1"
    model = "qwen2.5vl:7b"
    api_key_env = "OPENAI_API_KEY"   # the variable's NAME; the key itself never goes in a file
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from ..core.errors import closest
from .axes import CORE_AXES, DREAMBENCH_AXES, get_axis
from .composite import MODES


@dataclass
class ClipConfig:
    path: str | None = None  # folder (open_clip local-dir) or weights file
    arch: str | None = None  # open_clip architecture name when the file name does not say
    rescale: list[float] | None = None  # [lo, hi] linear cosine rescaling instead of CLIPScore's 2.5*cos


@dataclass
class QualityConfig:
    backend: str = "open_clip"  # open_clip | pyiqa | none
    path: str | None = None  # CLIP for CLIP-IQA (default: the [clip] model); for pyiqa a TorchScript RN50
    arch: str | None = None
    native_resolution: bool | None = None  # None: native for ResNet CLIPs, resized for ViTs
    max_side: int = 512  # longest side CLIP-IQA sees (0 = full resolution, as in the original method)


@dataclass
class ColorConfig:
    segmenter: str = "cluster"  # cluster | grounded-sam
    grounding_dino: str | None = None
    sam: str | None = None
    box_threshold: float = 0.3
    work_size: int = 128
    max_regions: int = 6
    rgb_scale: float = 0.2
    hsv_scale: float = 0.2
    lab_scale: float = 20.0


@dataclass
class VLMConfig:
    backend: str = "none"  # openai | transformers | none
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 1024
    image_max_side: int = 768
    json_mode: bool = False
    parse_retries: int = 2
    path: str | None = None  # transformers: local model folder
    dtype: str = "auto"
    max_new_tokens: int = 768


@dataclass
class CompositeConfig:
    weights: dict[str, float] | None = None
    thresholds: dict[str, float] | None = None
    min_composite: float | None = None
    require_all: bool = False


@dataclass
class CharisConfig:
    mode: str = "benchmark"  # benchmark | filter
    axes: list[str] | None = None  # None: the five core axes
    dreambench: bool = False  # also the DreamBench++-style CP/PF (+ debiased) axes
    device: str = "cpu"
    cache_dir: str | None = None
    clip: ClipConfig = field(default_factory=ClipConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode: '{self.mode}' is not one of {', '.join(MODES)}")
        for a in self.axes or []:
            get_axis(a)
        if self.vlm.backend not in ("openai", "transformers", "none"):
            raise ValueError(f"vlm.backend: '{self.vlm.backend}' is not one of openai, transformers, none")
        if self.quality.backend not in ("open_clip", "pyiqa", "none"):
            raise ValueError(f"quality.backend: '{self.quality.backend}' is not one of open_clip, pyiqa, none")
        if self.color.segmenter not in ("cluster", "grounded-sam"):
            raise ValueError(f"color.segmenter: '{self.color.segmenter}' is not one of cluster, grounded-sam")

    def selected_axes(self) -> list[str]:
        axes = list(self.axes) if self.axes else list(CORE_AXES)
        if self.dreambench:
            axes += [a for a in DREAMBENCH_AXES if a not in axes]
        return axes

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses; unknown keys raise."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            near = closest(key, known)
            hint = f" (did you mean '{near}'?)" if near else ""
            raise ValueError(f"unknown config key '{where}{key}'{hint}")
        default = known[key].default_factory() if callable(known[key].default_factory) else None  # type: ignore[misc]
        if is_dataclass(default):
            value = from_dict(type(default), value, f"{where}{key}.")
        kwargs[key] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> CharisConfig:
    """Read a TOML or JSON config file (or none) and apply ``overrides`` (same nested shape)."""
    data: dict = {}
    if path:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ValueError(f"{path}: TOML configs need Python 3.11+; write the config as JSON") from None
            data = tomllib.loads(text)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update({k: v for k, v in value.items() if v is not None})
        elif value is not None:
            data[key] = value
    return from_dict(CharisConfig, data)
