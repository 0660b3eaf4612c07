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
import logging
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from ..core.errors import InputError, closest
from .axes import CORE_AXES, DREAMBENCH_AXES, get_axis
from .composite import MODES

log = logging.getLogger(__name__)


@dataclass
class ClipConfig:
    path: str | None = None  # folder (open_clip local-dir) or weights file
    arch: str | None = None  # open_clip architecture name when the file name does not say
    rescale: list[float] | None = None  # [lo, hi] linear cosine rescaling instead of CLIPScore's 2.5*cos

    def __post_init__(self):
        r = self.rescale
        if r is not None and not (isinstance(r, (list, tuple)) and len(r) == 2
                                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)
                                  and r[0] < r[1]):
            raise InputError("clip.rescale", f"must be [lo, hi] with lo < hi, got {r!r}.", "E.g. rescale = [0.15, 0.35].")


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
    allow_partial: bool = False  # a composite over the axes present when some are missing, labelled partial
    require_all: bool | None = None  # old key: composites are complete-only by default now; kept so old configs load
    prompt_threshold: float | None = None  # filter mode: also require prompt adherence >= this (the paper's curation)


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
        _choice("mode", self.mode, MODES)
        for a in self.axes or []:
            try:
                get_axis(a)
            except KeyError as e:
                raise InputError("axes", str(e).strip("'\""), "Fix the name in --axes / axes.") from None
        _choice("vlm.backend", self.vlm.backend, ("openai", "transformers", "none"))
        _choice("quality.backend", self.quality.backend, ("open_clip", "pyiqa", "none"))
        _choice("color.segmenter", self.color.segmenter, ("cluster", "grounded-sam"))
        check_key_env(self.vlm.api_key_env)
        if self.composite.require_all is False and not self.composite.allow_partial:
            log.warning("composite.require_all = false no longer gives partial composites; set allow_partial = true")

    def selected_axes(self) -> list[str]:
        axes = list(self.axes) if self.axes else list(CORE_AXES)
        if self.dreambench:
            axes += [a for a in DREAMBENCH_AXES if a not in axes]
        return axes

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def check_key_env(name: str | None, input_name: str = "vlm.api_key_env (--vlm-key-env)") -> None:
    """``api_key_env`` must be the NAME of an environment variable. A pasted key is refused without
    ever echoing it (error messages end up in logs and results)."""
    if not name:
        return
    looks_like_key = len(name) >= 20 and any(c.isdigit() for c in name) and any(c.islower() for c in name) \
        and name not in os.environ
    if not _ENV_NAME.fullmatch(name) or looks_like_key:
        raise InputError(input_name, "is not the name of an environment variable (it looks like "
                         "a key; the value is not repeated here).",
                         "Put the API key in an environment variable and give only its NAME, e.g. OPENAI_API_KEY.")


def _choice(name: str, value, options) -> None:
    if value not in options:
        near = closest(value, options)
        hint = f" Did you mean '{near}'?" if near else ""
        raise InputError(name, f"'{value}' is not one of {', '.join(options)}.{hint}", "Pick one of those.")


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses; unknown keys raise."""
    if not isinstance(data, dict):
        raise InputError(where.rstrip(".") or "config", f"expected a table, got {type(data).__name__}.",
                         "Write it as a [table] (TOML) or an object (JSON).")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            near = closest(key, known)
            hint = f" (did you mean '{near}'?)" if near else ""
            raise InputError(f"{where}{key}", f"unknown config key '{where}{key}'{hint}.",
                             "Fix the spelling; see charis/config.py for every key.")
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
        if not path.is_file():
            raise InputError("--config", f"{path} does not exist.", "Check the path of the CHARIS config file.")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    raise InputError("--config", f"{path}: TOML configs need Python 3.11+.",
                                     "Write the config as JSON (same keys).") from None
                data = tomllib.loads(text)
        except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            if isinstance(e, InputError):
                raise
            raise InputError("--config", f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} "
                             f"({e}).", "Fix the syntax at the place named.") from None
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update({k: v for k, v in value.items() if v is not None})
        elif value is not None:
            data[key] = value
    return from_dict(CharisConfig, data)
