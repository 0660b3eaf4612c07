"""The built-in demo in a ComfyUI graph: the miniature base as MODEL + VAE + CLIP, and bundled references.

ComfyUI's stock loaders cannot load a FLUX with a small hidden size (its detection fixes 24 heads), so
the *Instruct Identity Demo Model* node (``nodes/demo.py``) calls :func:`load_demo` instead. Everything
after it is the real path: the LoRA through stock *LoraLoaderModelOnly* (ComfyUI's own LoRA code), the
*Instruct Identity Reference* node, stock *KSampler*, *Decode Target*, *Save Image*.

* The base file is rebuilt from its safetensors metadata (``miniature.load_base``): any size or
  configuration the file says, nothing assumed here.
* :class:`DemoVae` gives the pixel codec ComfyUI's VAE interface (``encode``, ``decode``,
  ``spacial_compression_encode``, ...), so stock *VAE Encode* / *VAE Decode* work on it too.
* :class:`DemoClip` gives the word encoder ComfyUI's CLIP interface (``tokenize`` +
  ``encode_from_tokens_scheduled``), so stock *CLIP Text Encode* makes the prompt's CONDITIONING.
* :func:`demo_template_first` puts the demo first in the pack's template list: ComfyUI lists a pack's
  ``workflows/*.json`` in directory order (``glob``, unsorted: hash order on ext4) and the frontend keeps
  that order by default, so the pack reorders its own entry of ``/workflow_templates``.
* :func:`register_folders` adds the pack's ``demo/models`` (the shipped LoRA) and ``output/demo-lora``
  (what ``ii-train --config training/examples/demo.toml`` writes) to ComfyUI's ``loras`` folder list
  (no file is copied), and lists base files from ``demo/models`` and ``models/instruct_identity_demo``.

Only safetensors files are read, only from those folders.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import InputError
from . import files
from .base_file import spec_of

log = logging.getLogger(__name__)

PACK = Path(__file__).resolve().parents[1]
DEMO_DIR = PACK / "demo"
MODELS_DIR = DEMO_DIR / "models"
REFERENCES_DIR = DEMO_DIR / "references"
TRAINED_DIR = PACK / "output" / "demo-lora"  # output_dir of training/examples/demo.toml
BASE_FOLDER = "instruct_identity_demo"     # folder_paths key of miniature base files
BASE_NAME = "ii_demo_base.safetensors"
TEMPLATE = "instruct_identity_demo_cpu"          # workflows/instruct_identity_demo_cpu.json
REFERENCE_SUFFIXES = (".png",)


# --------------------------------------------------------------------------------------------------
# ComfyUI's folder lists


def register_folders() -> None:
    """Make the demo's files findable through ``folder_paths`` (idempotent)."""
    import folder_paths

    folder_paths.add_model_folder_path(BASE_FOLDER, str(MODELS_DIR))
    folder_paths.add_model_folder_path(BASE_FOLDER, os.path.join(folder_paths.models_dir, BASE_FOLDER))
    folder_paths.add_model_folder_path("loras", str(MODELS_DIR))
    folder_paths.add_model_folder_path("loras", str(TRAINED_DIR))


_BASE_CACHE: dict[str, tuple[float, int, bool]] = {}


def is_base_file(path: str | Path) -> bool:
    """A safetensors file whose metadata says it is a miniature base (header only; cached by mtime)."""
    path = str(path)
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        return False
    st = os.stat(path)
    hit = _BASE_CACHE.get(path)
    if hit and hit[:2] == (st.st_mtime, st.st_size):
        return hit[2]
    try:
        ok = spec_of(path) is not None
    except (ValueError, KeyError):  # the format says miniature but the metadata is broken: load_demo explains
        ok = True
    _BASE_CACHE[path] = (st.st_mtime, st.st_size, ok)
    return ok


def base_names() -> list[str]:
    """Names of the miniature base files in the demo model folders, the shipped base first."""
    import folder_paths

    names = [n for n in folder_paths.get_filename_list(BASE_FOLDER)
             if is_base_file(folder_paths.get_full_path(BASE_FOLDER, n) or "")]
    return sorted(names, key=lambda n: (n != BASE_NAME, n))


def base_path(name: str) -> Path:
    """The file of base ``name``, or an :class:`InputError` saying where base files are looked for."""
    import folder_paths

    found = folder_paths.get_full_path(BASE_FOLDER, name) if name else None
    where = " or ".join(folder_paths.get_folder_paths(BASE_FOLDER))
    if not found:
        raise InputError("base", f"no demo base file '{name}'.",
                         f"Put a miniature base (.safetensors) in {where}; the pack ships {BASE_NAME} in demo/models.")
    if not is_base_file(found):
        raise InputError("base", f"{name} is not a miniature base file (its metadata has no "
                                 f"format = {files.FORMAT}).", "Pick ii_demo_base.safetensors, or a file written by "
                                 "miniature.save_base.")
    return Path(found)


def demo_template_first(listing: dict) -> dict:
    """``/workflow_templates`` (pack folder -> template names) with the demo first in its pack's list and
    the pack's other templates by name; other packs' lists are left as they are."""
    out = dict(listing)
    for key, names in listing.items():
        if isinstance(names, list) and TEMPLATE in names:
            out[key] = [TEMPLATE] + sorted(n for n in names if n != TEMPLATE)
    return out


def install_template_order(app) -> bool:
    """Add an aiohttp middleware to ComfyUI's ``app`` that applies :func:`demo_template_first` to the
    ``/workflow_templates`` answer (before the server starts; False if the app no longer takes one)."""
    from aiohttp import web

    @web.middleware
    async def instruct_identity_template_order(request, handler):
        response = await handler(request)
        if (request.method == "GET" and request.path.rstrip("/") in ("/workflow_templates", "/api/workflow_templates")
                and isinstance(response, web.Response) and response.status == 200 and response.body is not None):
            try:
                listing = json.loads(response.body)
            except (TypeError, ValueError):
                return response
            if isinstance(listing, dict):
                return web.json_response(demo_template_first(listing))
        return response

    if any(getattr(m, "__name__", "") == instruct_identity_template_order.__name__ for m in app.middlewares):
        return True
    try:
        app.middlewares.append(instruct_identity_template_order)
    except RuntimeError:  # frozen: the server already started (e.g. the pack was reloaded)
        log.warning("Instruct Identity: could not put the demo first in the template browser (server already started)")
        return False
    return True


# --------------------------------------------------------------------------------------------------
# ComfyUI interfaces over the miniature's codec and text encoder


class DemoVae:
    """ComfyUI's VAE interface over the miniature's lossless pixel codec (see ``miniature.components``)."""

    latent_dim = 2
    output_channels = 3

    def __init__(self, codec):
        self.codec = codec
        self.latent_channels = int(codec.spec.get("channels", 16))
        self.downscale_ratio = self.upscale_ratio = int(codec.downscale)

    def spacial_compression_encode(self) -> int:
        return int(self.codec.downscale)

    def spacial_compression_decode(self) -> int:
        return int(self.codec.downscale)

    def temporal_compression_decode(self):
        return None

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE ``[B, H, W, C]`` -> latent ``[B, 16, H/2, W/2]`` (odd edges cropped, as ComfyUI's VAE does)."""
        if pixels.ndim != 4 or pixels.shape[-1] < 3:
            raise InputError("pixels", f"expected an IMAGE [batch, height, width, 3], got shape {tuple(pixels.shape)}.",
                             "Connect a Load Image (or another IMAGE output).")
        d = self.spacial_compression_encode()
        h, w = (pixels.shape[1] // d) * d, (pixels.shape[2] // d) * d
        if h == 0 or w == 0:
            raise InputError("pixels", f"the picture is {pixels.shape[2]}x{pixels.shape[1]} px, smaller than the codec's "
                                       f"{d} px cell.", "Use a larger picture.")
        return self.codec.encode(pixels[:, :h, :w, :3].float().cpu())

    def decode(self, samples: torch.Tensor, vae_options: dict | None = None) -> torch.Tensor:
        if samples.ndim != 4 or samples.shape[1] != self.latent_channels:
            raise InputError("samples", f"expected a {self.latent_channels}-channel latent [batch, "
                                        f"{self.latent_channels}, h, w], got shape {tuple(samples.shape)}.",
                             "Decode latents made with the demo model.")
        return self.codec.decode(samples)

    def encode_tiled(self, pixels, *args, **kwargs):
        return self.encode(pixels)

    def decode_tiled(self, samples, *args, **kwargs):
        return self.decode(samples)

    def throw_exception_if_invalid(self) -> None:
        return None

    def get_sd(self) -> dict:
        return {}


@dataclass
class DemoTokens:
    """What :meth:`DemoClip.tokenize` returns: the text itself (the word encoder tokenises by words)."""

    text: str


class DemoClip:
    """ComfyUI's CLIP interface over the miniature's word encoder: stock *CLIP Text Encode* works on it,
    and so does the trainer's ``TextEncoder`` wrapper. It has no weights, so a LoRA leaves it unchanged
    (stock *LoraLoader* patches only the model)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.cond_stage_model = torch.nn.Module()  # no weights: comfy.lora finds no text-encoder keys
        self.patcher = None

    def clone(self) -> DemoClip:
        return self  # stateless

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0) -> list:
        return []

    def clip_layer(self, layer_idx) -> None:
        return None

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> DemoTokens:
        if not isinstance(text, str):
            raise InputError("text", f"expected text, got {type(text).__name__}.", "Connect a text (STRING) input.")
        return DemoTokens(text)

    def _encode(self, tokens) -> tuple[torch.Tensor, torch.Tensor]:
        text = tokens.text if isinstance(tokens, DemoTokens) else str(tokens)
        cond, pooled = self.encoder.encode(text)
        return cond.unsqueeze(0), pooled.unsqueeze(0)

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        cond, pooled = self._encode(tokens)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict: dict | None = None, show_pbar=True):
        cond, pooled = self._encode(tokens)
        return [[cond, {"pooled_output": pooled, **(add_dict or {})}]]

    def encode(self, text: str) -> torch.Tensor:
        return self._encode(self.tokenize(text))[0]

    def load_model(self):
        return None

    def get_sd(self) -> dict:
        return {}


# --------------------------------------------------------------------------------------------------
# loading


@dataclass
class DemoModel:
    model: object          # ModelPatcher on ComfyUI's device (the accelerator, or the CPU under --cpu)
    vae: DemoVae
    clip: DemoClip
    path: Path
    image_size: int
    provenance: dict

    @property
    def info(self) -> str:
        unet = self.model.model.model_config.unet_config
        params = sum(p.numel() for p in self.model.model.diffusion_model.parameters())
        prov = {k: v for k, v in self.provenance.items() if k in ("command", "metrics", "created")}
        return (f"{self.path.name}: ComfyUI FLUX, hidden {unet['hidden_size']}, {unet['num_heads']} heads, "
                f"{unet['depth']}+{unet['depth_single_blocks']} blocks, {params / 1e6:.2f}M parameters; "
                f"{self.image_size} px sprites; provenance {json.dumps(prov, sort_keys=True, default=str)}")


def load_demo(name: str = BASE_NAME) -> DemoModel:
    """The base file ``name`` as what a ComfyUI graph needs (ComfyUI must be imported)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    path = base_path(name)
    try:
        base = files.load_base(path)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise InputError("base", f"{path.name} cannot be rebuilt from its metadata ({e}).",
                         "Re-export it with miniature.save_base.") from e
    patcher = comfy.model_patcher.ModelPatcher(base.model.model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    demo = DemoModel(patcher, DemoVae(base.codec), DemoClip(base.text_encoder), path, int(base.spec.image_size),
                     base.provenance)
    log.info("Instruct Identity demo model: %s", demo.info)
    return demo


def file_fingerprint(resolve, name: str) -> str:
    """Changes when the file ``resolve(name)`` is replaced, so ComfyUI reloads it instead of reusing a
    cached output ("" when it cannot be resolved: execution then reports why)."""
    try:
        path = resolve(name)
        st = path.stat()
    except (InputError, OSError):
        return ""
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def reference_names() -> list[str]:
    """The bundled reference pictures (``demo/references/*.png``), sorted."""
    if not REFERENCES_DIR.is_dir():
        return []
    return sorted(p.name for p in REFERENCES_DIR.iterdir() if p.suffix.lower() in REFERENCE_SUFFIXES and p.is_file())


def reference_path(name: str) -> Path:
    names = reference_names()
    if name not in names:
        from ..core.errors import closest

        near = closest(name, names)
        raise InputError("reference", f"no bundled reference '{name}' in {REFERENCES_DIR}.",
                         (f"Did you mean {near}? " if near else "") + "Pick one from the list, or use Load Image "
                         "for your own picture.")
    return REFERENCES_DIR / name


def load_reference(name: str) -> torch.Tensor:
    """A bundled reference as a ComfyUI IMAGE ``[1, H, W, 3]``."""
    from ..core.imagefile import load_comfy

    return load_comfy(reference_path(name), name="reference")
