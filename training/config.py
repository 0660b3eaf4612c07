"""Trainer configuration: one dataclass, loaded from TOML, with kohya's argument names.

Defaults live here, each with the reason it was chosen. Keys that kohya's ``flux_train_network.py``
also has keep kohya's name and meaning; keys specific to this method (``mode``, ``preset``, ``loss``)
are new. An unknown key is an error that suggests the nearest known one; kohya keys this trainer does
not implement are errors that say why (or, if harmless, a warning).

Like kohya, top-level tables are only groupings: ``[model]``, ``[training]``... are flattened.
Relative paths are resolved against the folder of the config file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path


from ..core import toml
from ..core.errors import InputError, closest
from ..core.limits import MAX_TRAIN_BATCH, MAX_TRAIN_SIDE

log = logging.getLogger(__name__)

MODES = ("identity", "grid")
PRESETS = ("A", "B", "C")
LOSSES = ("masked", "full", "full_noised", "full_consistent")  # see training/objective.py
REFERENCE_ATTENTIONS = ("joint", "one_way")  # see engine/oneway.py
TIMESTEP_SAMPLINGS = ("uniform", "sigmoid", "shift", "flux_shift")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("float", "fp16", "bf16")
OPTIMIZERS = ("AdamW", "AdamW8bit")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")

# Keys that are paths (resolved against the config file's folder).
PATH_KEYS = ("pretrained_model_name_or_path", "ae", "clip_l", "t5xxl", "dataset_config", "output_dir", "cache_dir",
             "logging_dir", "sample_prompts", "comfyui_path")

# Model keys may be bare ComfyUI model names (``flux1-dev.safetensors``): unless such a file sits next to
# the config they stay as given and are looked up in ComfyUI's model folders.
MODEL_KEYS = ("pretrained_model_name_or_path", "ae", "clip_l", "t5xxl")

# kohya keys that are accepted and ignored (they only tune kohya's own machinery).
IGNORED_KOHYA_KEYS = {
    "max_data_loader_n_workers": "latents and text embeddings are cached before training, there is no loader to tune",
    "persistent_data_loader_workers": "latents and text embeddings are cached before training, there is no loader to tune",
    "sdpa": "ComfyUI picks the attention implementation",
    "xformers": "ComfyUI picks the attention implementation",
    "mem_eff_attn": "ComfyUI picks the attention implementation",
    "highvram": "models are placed by this trainer",
    "lowram": "models are placed by this trainer",
    "network_module": "this trainer always trains its own FLUX LoRA (peft)",
    "network_train_unet_only": "only the diffusion transformer is trained",
    "model_prediction_type": "the prediction is always the raw velocity (kohya's 'raw')",
    "save_model_as": "LoRAs are always saved as safetensors",
    "apply_t5_attn_mask": "ComfyUI's FLUX text encoding is used as is",
    "log_with": "the loss goes to a CSV file and a PNG curve in logging_dir",
}

# kohya keys that change what is trained but are not implemented here: refusing beats ignoring.
UNSUPPORTED_KOHYA_KEYS = {
    "blocks_to_swap": "block swapping is not implemented; use fp8_base + gradient_checkpointing (24 GB) or FSDP",
    "network_weights": "starting from an existing LoRA is not implemented; use --resume with a saved state",
    "network_args": "LoRA targets are chosen by `preset` (A, B or C)",
    "weighting_scheme": "the loss is unweighted, as in the paper's Eq. 2",
    "timestep_sampling_sigma": "use timestep_sampling = uniform | sigmoid | shift | flux_shift",
    "flip_aug": "augmentation would need encoding on the fly; latents are cached",
    "random_crop": "augmentation would need encoding on the fly; latents are cached",
    "color_aug": "augmentation would need encoding on the fly; latents are cached",
    "shuffle_caption": "captions are encoded once and cached",
    "full_bf16": "LoRA weights are kept in fp32 (mixed_precision = bf16 casts the computation)",
    "full_fp16": "LoRA weights are kept in fp32 (mixed_precision = fp16 casts the computation)",
    "t5xxl_max_token_length": "ComfyUI's T5 tokenizer decides the length (at least 256 tokens)",
    "masked_loss": "use loss = masked (the target half) or full / full_noised / full_consistent",
}


@dataclass
class TrainConfig:
    # --- what to train ---------------------------------------------------------------------------
    mode: str = "identity"            # identity: [noisy target | clean reference] LoRA; grid: plain T2I (Stage II)
    preset: str | None = None         # A attention, B +FFN, C +modulation; None -> B (identity), A (grid)
    loss: str | None = None           # masked (Eq. 2); full / full_noised / full_consistent: three readings of
                                      # Table 2's "full loss" ablation (objective.py); None -> masked / full (grid)
    reference_attention: str = "joint"  # joint: every token sees every token (the paper's); one_way: the reference
                                      # sees only itself, so samplers compute it once (engine/oneway.py)
    network_dim: int | None = None    # LoRA rank; None -> 128 (identity), 16 (grid: the paper's Stage II r=16)
    network_alpha: float | None = None  # None -> = network_dim (scale 1; kohya's default 1 would scale rank 512 by 1/512)
    network_dropout: float = 0.0      # kohya's meaning: dropout on the LoRA down-projection's output

    # --- model files (ComfyUI model files; bare names are looked up in ComfyUI's model folders) ---
    pretrained_model_name_or_path: str | None = None  # models/diffusion_models/flux1-dev.safetensors
    ae: str | None = None             # models/vae/ae.safetensors
    clip_l: str | None = None         # models/text_encoders/clip_l.safetensors
    t5xxl: str | None = None          # models/text_encoders/t5xxl_fp16.safetensors (optional: CLIP-L alone works)
    comfyui_path: str | None = None   # ComfyUI checkout; None -> $COMFYUI_PATH or the one this pack sits in
    fp8_base: bool = False            # base weights stored as float8_e4m3fn, computed in bf16/fp16 (24 GB cards)

    # --- data -------------------------------------------------------------------------------------
    dataset_config: str | None = None  # kohya-shaped dataset TOML, or a JSONL manifest (reference, target, caption)
    resolution: int | list[int] = 512  # per image (each half of the H x 2W grid); [width, height] allowed
    enable_bucket: bool = False       # kohya's default; turn on for mixed aspect ratios
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64       # kohya's default; must be a multiple of 16 (VAE 8 x patch 2)
    bucket_no_upscale: bool = False
    train_batch_size: int = 1
    caption_extension: str = ".txt"
    cache_latents: bool = True        # always on: latents are computed before training
    cache_latents_to_disk: bool = False
    cache_text_encoder_outputs: bool = True  # always on: T5/CLIP are freed before training
    cache_text_encoder_outputs_to_disk: bool = False
    cache_dir: str | None = None      # None -> <output_dir>/cache (content-keyed, safe to share between runs)

    # --- objective --------------------------------------------------------------------------------
    timestep_sampling: str = "uniform"  # the paper's Eq. 2 takes t ~ U(0, 1); kohya recommends shift 3.1582
    sigmoid_scale: float = 1.0
    discrete_flow_shift: float = 3.0  # kohya's default for `shift`
    guidance_scale: float = 1.0       # FLUX-dev guidance embedding value while training (kohya: 1.0)

    # --- optimisation -----------------------------------------------------------------------------
    optimizer_type: str = "AdamW"
    optimizer_args: dict | list | None = None  # {weight_decay = 0.01, betas = [0.9, 0.999]} or ["weight_decay=0.01"]
    learning_rate: float = 1e-4       # the paper's value
    lr_scheduler: str = "constant"
    lr_warmup_steps: int | float = 0  # steps, or a fraction (< 1) of max_train_steps (kohya)
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    lr_scheduler_min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0        # 0 disables clipping
    max_train_steps: int = 1600       # optimizer steps (kohya's default)
    max_train_epochs: int | None = None  # overrides max_train_steps when set
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"     # no | fp16 | bf16; base weights load in this dtype (fp32 for "no")
    gradient_checkpointing: bool = False  # per-block, non-reentrant; needed for 24 GB
    seed: int = 42

    # --- output -----------------------------------------------------------------------------------
    output_dir: str = "output"
    output_name: str = "instruct-identity-lora"
    save_precision: str = "float"     # float | fp16 | bf16 (fp32 reproduces the trained weights exactly)
    save_every_n_steps: int | None = None
    save_last_n_steps: int | None = None  # keep only step LoRAs of the last N steps
    save_state: bool = True           # resumable state at every save (needed for --resume)
    save_last_n_steps_state: int | None = None  # None -> keep only the newest complete state
    logging_dir: str | None = None    # None -> <output_dir>/logs (CSV loss log and loss-curve PNG)
    sample_every_n_steps: int | None = None
    sample_at_first: bool = False
    sample_prompts: str | None = None  # .txt (kohya lines with --ref/--w/--h/--s/--d/--g) or .jsonl
    sample_sampler: str = "euler"     # a ComfyUI sampler name
    sample_scheduler: str = "simple"  # a ComfyUI scheduler name

    # resolved at load time
    config_path: str | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------------------------------
    def finalize(self) -> TrainConfig:
        """Fill mode-dependent defaults and check values; returns self."""
        _choice("mode", self.mode, MODES)
        grid = self.mode == "grid"
        if self.preset is None:
            self.preset = "A" if grid else "B"
        self.preset = str(self.preset).upper()
        _choice("preset", self.preset, PRESETS)
        if self.loss is None:
            self.loss = "full" if grid else "masked"
        _choice("loss", self.loss, LOSSES)
        if grid and self.loss != "full":
            raise InputError("loss", "grid mode trains whole images, there is no reference half to mask or noise.",
                             "Use loss = \"full\" with mode = \"grid\".")
        _choice("reference_attention", self.reference_attention, REFERENCE_ATTENTIONS)
        if self.reference_attention == "one_way" and (grid or self.loss != "masked"):
            raise InputError("reference_attention", "one_way predicts the target half only (the reference is an "
                             f"attention context, not an output), so it trains identity mode with the masked loss, "
                             f"not mode = \"{self.mode}\" with loss = \"{self.loss}\".",
                             "Use mode = \"identity\" and loss = \"masked\", or reference_attention = \"joint\".")
        if self.network_dim is None:
            self.network_dim = 16 if grid else 128
        if not 1 <= int(self.network_dim) <= 4096:
            raise InputError("network_dim", f"{self.network_dim} is not a LoRA rank.", "Use 1 .. 4096 (e.g. 16, 128, 512).")
        if self.network_alpha is None:
            self.network_alpha = float(self.network_dim)
        if not 0.0 <= self.network_dropout < 1.0:
            raise InputError("network_dropout", f"{self.network_dropout} is not a dropout rate.", "Use 0 <= p < 1.")
        _choice("timestep_sampling", self.timestep_sampling, TIMESTEP_SAMPLINGS)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        _choice("save_precision", self.save_precision, SAVE_PRECISIONS)
        _choice("optimizer_type", self.optimizer_type, OPTIMIZERS)
        _choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        if self.fp8_base and self.mixed_precision == "no":
            raise InputError("fp8_base", "fp8 base weights need a 16-bit compute dtype.",
                             "Set mixed_precision = \"bf16\" (or \"fp16\").")
        for key in ("max_train_steps", "gradient_accumulation_steps", "train_batch_size", "lr_scheduler_num_cycles"):
            if int(getattr(self, key)) < 1:
                raise InputError(key, f"{getattr(self, key)} must be at least 1.")
        for key in ("save_every_n_steps", "save_last_n_steps", "save_last_n_steps_state", "sample_every_n_steps",
                    "max_train_epochs"):
            v = getattr(self, key)
            if v is not None and int(v) < 1:
                raise InputError(key, f"{v} must be at least 1 (or left out).")
        if self.learning_rate <= 0:
            raise InputError("learning_rate", f"{self.learning_rate} is not a learning rate.", "Use e.g. 1e-4.")
        self._check_values()
        if self.bucket_reso_steps % 16:
            raise InputError("bucket_reso_steps", f"{self.bucket_reso_steps} px is not a multiple of 16.",
                             "FLUX needs multiples of 16 px (VAE 8 x patch 2): use 64 (kohya's default) or 16, 32.")
        for key in ("cache_latents", "cache_text_encoder_outputs"):
            if not getattr(self, key):
                log.warning("config: %s = false is ignored: latents and text embeddings are always computed before "
                            "training (in memory, or on disk with %s_to_disk)", key, key)
        if self.dataset_config is None:
            raise InputError("dataset_config", "no dataset is configured.",
                             "Set dataset_config to a dataset TOML or a JSONL manifest of (reference, target, caption).")
        return self

    def _check_values(self) -> None:
        """Numbers that are not finite or out of range would train silently into NaN (or nowhere)."""
        ranges = {  # key: (low, high, low inclusive, fix)
            "learning_rate": (0.0, 1.0, False, "Use a small positive number, e.g. 1e-4 (the paper's value)."),
            "network_alpha": (0.0, math.inf, False, "Use a positive number; alpha = network_dim (the default) scales by 1."),
            "sigmoid_scale": (0.0, math.inf, False, "Use a positive number, e.g. 1.0."),
            "discrete_flow_shift": (0.0, math.inf, False, "Use a positive number, e.g. 3.1582."),
            "guidance_scale": (0.0, math.inf, True, "Use 0 or more, e.g. 1.0."),
            "max_grad_norm": (0.0, math.inf, True, "Use e.g. 1.0 (0 turns clipping off)."),
            "lr_warmup_steps": (0.0, math.inf, True, "Use a number of steps, or a fraction below 1 of max_train_steps."),
            "lr_scheduler_power": (0.0, math.inf, False, "Use a positive number, e.g. 1.0."),
            "lr_scheduler_min_lr_ratio": (0.0, 1.0, True, "Use 0 .. 1."),
        }
        for key, (low, high, inclusive, fix) in ranges.items():
            value = float(getattr(self, key))
            if not math.isfinite(value):
                raise InputError(key, f"{getattr(self, key)} is not a finite number.", fix)
            if value < low or (value == low and not inclusive) or value > high:
                raise InputError(key, f"{getattr(self, key)} is out of range.", fix)
        if not 0 <= int(self.seed) < 2 ** 63:
            raise InputError("seed", f"{self.seed} is out of range.", "Use a whole number from 0 to 2**63 - 1.")
        sides = self.resolution if isinstance(self.resolution, list) else [self.resolution]
        for key, values in (("resolution", sides), ("min_bucket_reso", [self.min_bucket_reso]),
                            ("max_bucket_reso", [self.max_bucket_reso])):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not 16 <= v <= MAX_TRAIN_SIDE:
                    raise InputError(key, f"{v!r} px is not a size from 16 to {MAX_TRAIN_SIDE} px.",
                                     "Use e.g. 512 or 1024 (the limit is II_MAX_TRAIN_SIDE, docs/limits.md).")
        if int(self.train_batch_size) > MAX_TRAIN_BATCH:
            raise InputError("train_batch_size", f"{self.train_batch_size} pairs per step on one process is over the "
                             f"{MAX_TRAIN_BATCH} limit.", "Use gradient_accumulation_steps for a larger effective batch "
                             "(the limit is II_MAX_TRAIN_BATCH, docs/limits.md).")
        name = str(self.output_name)
        if (not name.strip() or name != name.strip() or name.startswith(".") or "\x00" in name
                or any(sep in name for sep in ("/", "\\", os.sep))):
            raise InputError("output_name", f"{name!r} is not a plain file name.",
                             "Use letters, digits, - and _ (the folder goes in output_dir).")

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"

    @property
    def resolved_logging_dir(self) -> Path:
        return Path(self.logging_dir) if self.logging_dir else Path(self.output_dir) / "logs"

    def optimizer_kwargs(self) -> dict:
        """``optimizer_args`` as keyword arguments (a table, or kohya's list of "key=value" strings)."""
        args = self.optimizer_args or {}
        if isinstance(args, list):
            out = {}
            for item in args:
                if not isinstance(item, str) or "=" not in item:
                    raise InputError("optimizer_args", f"{item!r} is not \"key=value\".", "Write e.g. [\"weight_decay=0.01\"].")
                k, v = item.split("=", 1)
                out[k.strip()] = _parse_value(v.strip())
            return out
        return dict(args)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config_path"}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        near = closest(value, choices)
        hint = f" Did you mean \"{near}\"?" if near else ""
        raise InputError(name, f"\"{value}\" is not one of {', '.join(map(str, choices))}.{hint}")


def _parse_value(text: str):
    try:
        return toml.loads(f"v = {text}")["v"]
    except toml.TOMLDecodeError:
        return text


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "config_path"}


def _check_type(key: str, value, annotation):
    """Light type check against the dataclass annotation (TOML already gives typed values)."""
    hint = typing.get_type_hints(TrainConfig)[key]
    allowed = typing.get_args(hint) or (hint,)
    allowed = tuple(typing.get_origin(a) or a for a in allowed)
    if value is None and type(None) in allowed:
        return value
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and (int in allowed or float in allowed):
        return float(value) if int not in allowed else value
    elif isinstance(value, float) and float in allowed or isinstance(value, str) and str in allowed or isinstance(value, list) and list in allowed or isinstance(value, dict) and dict in allowed:
        return value
    names = " or ".join(sorted({getattr(a, "__name__", str(a)) for a in allowed if a is not type(None)}))
    raise InputError(key, f"{value!r} is a {type(value).__name__}, expected {names}.",
                     "In TOML, numbers and true/false go without quotes, text in quotes (see docs/trainer.md).")


def flatten(raw: dict) -> dict:
    """kohya's rule: a top-level table is a grouping, its keys count as top-level keys.
    ``optimizer_args`` is a value that happens to be a table, so it is kept."""
    out: dict = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key not in FIELDS:
            for k, v in value.items():
                if k in out:
                    raise InputError(k, f"is set twice (again in [{key}]).", "Keep one.")
                out[k] = v
        else:
            if key in out:
                raise InputError(key, "is set twice.", "Keep one.")
            out[key] = value
    return out


def from_dict(raw: dict, base_dir: Path | None = None) -> TrainConfig:
    values: dict = {}
    for key, value in flatten(raw).items():
        if key in FIELDS:
            values[key] = _check_type(key, value, FIELDS[key].type)
        elif key in IGNORED_KOHYA_KEYS:
            log.warning("config: %s is ignored here (%s)", key, IGNORED_KOHYA_KEYS[key])
        elif key in UNSUPPORTED_KOHYA_KEYS:
            raise InputError(key, f"is a kohya option this trainer does not support: {UNSUPPORTED_KOHYA_KEYS[key]}.",
                             "Remove it from the config.")
        else:
            near = closest(key, FIELDS)
            fix = f"Did you mean \"{near}\"?" if near else "See docs/trainer.md for the keys."
            raise InputError(key, "is not a trainer option.", fix)
    if base_dir is not None:
        for key in PATH_KEYS:
            v = values.get(key)
            if not isinstance(v, str) or not v:
                continue
            v = os.path.expanduser(v)
            if not os.path.isabs(v) and (key not in MODEL_KEYS or (base_dir / v).exists()):
                v = str((base_dir / v).resolve())
            values[key] = v
    return TrainConfig(**values).finalize()


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """Read a trainer TOML; ``overrides`` (key -> value) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("--config", f"{path} does not exist.", "Give the path of a trainer TOML (see training/examples/).")
    try:
        raw = toml.loads(path.read_text(encoding="utf-8"))
    except toml.TOMLDecodeError as e:
        raise InputError("--config", f"{path} is not valid TOML ({e}).",
                         'Fix that line: key = value, strings in quotes (e.g. output_dir = "out"); see training/examples/.') from e
    except UnicodeDecodeError:
        raise InputError("--config", f"{path} is not UTF-8 text.", "Give a trainer TOML file (see training/examples/).") from None
    raw = flatten(raw)
    for k, v in (overrides or {}).items():
        raw[k] = v
    cfg = from_dict(raw, base_dir=path.parent.resolve())
    cfg.config_path = str(path.resolve())
    return cfg


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` from the command line; the value is read as TOML (numbers, booleans, lists)."""
    if "=" not in text:
        raise InputError("--set", f"'{text}' is not key=value.", "Write e.g. --set max_train_steps=100.")
    key, value = text.split("=", 1)
    return key.strip(), _parse_value(value.strip())
