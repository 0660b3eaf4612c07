"""The miniature world: procedural sprite characters and a small ComfyUI FLUX that draws them.

Used by the toy replication (``benchmarks/toy``) and by the pack's built-in demo. Stable API (the demo
codes against it; keep it):

* ``sprites``: ``Character(head, torso, legs, pattern, hat)`` (``.describe()``), ``Pose(place, size, pose)``
  (``.caption()``, e.g. "the character lying, large, on the left"), ``ALL_POSES`` (18), ``PALETTE``,
  ``all_characters()``, ``split_characters(n_train, n_test, seed)`` (held-out characters have (head,
  torso) colour pairs never seen in training), ``render(char, pose, size) -> (uint8 [S, S, 3], part
  masks)``, ``render_sheet(char, poses, size)`` (views side by side), ``silhouette(masks)``,
  ``sheet_caption(char | None, poses)``.
* ``PixelCodec`` (VAE stand-in): ``encode(IMAGE [B, H, W, 3] in 0..1) -> latent [B, 16, H/2, W/2]``,
  ``decode(latent) -> IMAGE [B, H, W, 3]``, ``downscale`` (2), ``identity`` (a cache key string).
  Lossless: the latent is the pixels (2x2 space-to-depth), pre-scaled for ComfyUI's FLUX latent format.
* ``WordEncoder`` (text-encoder stand-in): ``encode(text) -> (cond [tokens, dim], pooled [dim])``;
  ``engine.sampling.conditioning(cond, pooled)`` makes a ComfyUI CONDITIONING of it.
* ``unet_config(hidden, heads, double, single, text_dim)`` and ``build_model(config, seed, state_dict)``:
  ComfyUI's own FLUX (a ModelPatcher), so stock sampling and ComfyUI's LoRA loader work on it.
* ``save_base(path, state_dict, spec: BaseSpec, provenance: dict)``: an fp16 safetensors file whose
  metadata holds ``unet_config``, ``codec``, ``text_encoder`` (dim / tokens / seed), ``image_size`` and
  ``provenance`` (command, config, metrics), all as JSON strings (see ``miniature.files``).
* ``load_base(path) -> MiniatureBase`` with ``.model`` (ModelPatcher, fp32), ``.codec``,
  ``.text_encoder``, ``.spec`` (``BaseSpec``: ``unet_config``, ``image_size``, ``codec``,
  ``text_encoder``), ``.provenance`` (dict). ComfyUI must be importable first
  (``engine.runtime.setup_comfyui()``; a no-op inside a running ComfyUI).

Identity sampling with a base (what the demo graph does with stock nodes)::

    base = load_base("demo/models/ii_demo_base.safetensors")
    ref = base.codec.encode(image)                                # IMAGE [1, 32, 32, 3]
    pos = conditioning(*base.text_encoder.encode("the character lying, small, on the left"))
    neg = conditioning(*base.text_encoder.encode(""))
    grid = sample_identity(model_with_lora, ref, pos, neg, seed=0, steps=30)   # engine.sampling
    target = base.codec.decode(layout.split(grid)[0])
"""

from . import sprites
from .components import DOWNSCALE, LATENT_CHANNELS, PixelCodec, WordEncoder, build_model, unet_config
from .files import FORMAT, BaseSpec, MiniatureBase, load_base, load_state, read_metadata, save_base

__all__ = ["sprites", "PixelCodec", "WordEncoder", "build_model", "unet_config", "DOWNSCALE", "LATENT_CHANNELS",
           "FORMAT", "BaseSpec", "MiniatureBase", "load_base", "load_state", "read_metadata", "save_base"]
