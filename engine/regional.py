"""Regional prompting for FLUX-family models through ComfyUI's supported hooks.

Two parts work together:

* the **conditioning** (built by :func:`regional_conditioning`) carries the text of
  ``[base | region 1..R | background]`` and the joint-attention mask as the standard
  ``attention_mask`` / ``attention_mask_img_shape`` keys. On its own it masks every block at every
  step (ComfyUI passes the mask to all FLUX blocks and resizes it to the token grid);
* the **model patch** (:func:`patch_model`) refines that: a ``DIFFUSION_MODEL`` wrapper (key
  ``instruct_identity.regional``) recognises the regional conditioning, drops the regional text
  outside the injection window (so those steps are exactly the base prompt alone), and inside the
  window hands the exact mask, rebuilt at the sampled token grid, to the chosen double/single
  blocks through ``set_model_patch_replace``; the other blocks attend without a mask. Base-prompt
  blending mixes, for image tokens, the masked attention with an unmasked attention over
  ``[base text | image]``: ``(1 - base_ratio) * regional + base_ratio * base``. It runs inside the
  block's own attention call via the ``optimized_attention_override`` entry of the block's
  ``transformer_options`` (set only for that block call); if a ComfyUI release ever stops honouring
  that entry, the patch notices and blends the two block outputs instead.

No ComfyUI class or function is replaced.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from dataclasses import dataclass, field

import comfy.model_base
import comfy.patcher_extension
import torch
from comfy.patcher_extension import WrappersMP

from ..core import limits, regions as R
from ..core.errors import InputError

log = logging.getLogger(__name__)

PATCH_KEY = "instruct_identity.regional"
CALL_KEY = "instruct_identity.regional.call"
OVERRIDE_KEY = "optimized_attention_override"
CONDITIONING_KEY = "instruct_identity_regions"   # private entry in the conditioning dict (not sent to the model)
COND_BLOCKED = -10000.0                          # blocked value of the conditioning mask (finite: ComfyUI may resize it)


# --------------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class RegionalOptions:
    """``start``/``end`` are fractions of the sampling schedule's steps (0 = first step); blocks
    are specs like ``all``, ``none``, ``0-9``, ``0,2,4`` or ``every 2``."""

    base_ratio: float = 0.2
    start: float = 0.0
    end: float = 0.3
    double_blocks: str = "all"
    single_blocks: str = "all"
    positions: str = "sheet"      # "cell": each region's tokens get the positions of a picture of its own

    def validate(self) -> "RegionalOptions":
        if not 0.0 <= self.base_ratio <= 1.0:
            raise InputError("base_ratio", f"{self.base_ratio} is outside 0..1.", "Use 0 (regional only) to 1 (base only); 0.1-0.3 works well.")
        if not 0.0 <= self.start <= 1.0 or not 0.0 <= self.end <= 1.0:
            raise InputError("start" if not 0.0 <= self.start <= 1.0 else "end", "the window is a fraction of the schedule.", "Use values from 0 to 1.")
        if self.end <= self.start:
            raise InputError("end", f"the window ends ({self.end}) before it starts ({self.start}).", "Make end larger than start.")
        if self.positions not in R.POSITION_MODES:
            raise InputError("positions", f"'{self.positions}' is not a position mode.", f"Choose one of {', '.join(R.POSITION_MODES)}.")
        return self

    def in_window(self, fraction: float) -> bool:
        return self.start <= fraction < self.end or (self.end >= 1.0 and fraction >= self.start)


def parse_blocks(spec: str, count: int, name: str) -> frozenset[int]:
    """Block indices from a spec: ``all``, ``none``, ``3``, ``0-9``, ``every 2`` (comma-separated
    items combine). Indices beyond the model's ``count`` blocks are ignored."""
    s = str(spec or "").strip().lower()
    if s in ("", "none"):
        return frozenset()
    out: set[int] = set()
    for item in (p.strip() for p in s.split(",")):
        if not item:
            continue
        if item == "all":
            out.update(range(count))
        elif m := re.fullmatch(r"every\s+(\d+)(?:\s+from\s+(\d+))?", item):
            step, first = int(m.group(1)), int(m.group(2) or 0)
            if step < 1:
                raise InputError(name, f"'{item}' steps by {step}.", "Write 'every 2' (or any step of 1 or more).")
            out.update(range(first, count, step))
        elif m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", item):
            a, b = int(m.group(1)), int(m.group(2))
            out.update(range(min(a, b), min(max(a, b), count - 1) + 1))
        elif item.isdigit():
            if int(item) < count:
                out.add(int(item))
        else:
            raise InputError(name, f"'{item}' is not a block spec.", "Write all, none, 3, 0-9, 0,2,4 or every 2.")
    return frozenset(i for i in out if 0 <= i < count)


def step_fraction(sigma: torch.Tensor | None, sample_sigmas: torch.Tensor | None) -> float | None:
    """Where ``sigma`` lies in the schedule, as (step index) / (number of steps); ``None`` if unknown."""
    if sigma is None or sample_sigmas is None or len(sample_sigmas) < 2:
        return None
    s = float(torch.as_tensor(sigma).flatten().max())
    sched = torch.as_tensor(sample_sigmas).flatten().float().cpu()
    steps = len(sched) - 1
    tol = 1e-4 * max(1.0, abs(s))
    idx = int((sched[:-1] >= s - tol).sum()) - 1
    return min(max(idx, 0), steps - 1) / steps


# --------------------------------------------------------------------------------------------------
# The conditioning


def regional_conditioning(conditioning: list, region_embeds: list[torch.Tensor | None], layout: R.RegionLayout,
                          image_attention: str = "blocked", background_embed: torch.Tensor | None = None,
                          vae_downscale: int = 8, patch_size: int = 2, pad_text_to: int = 0) -> tuple[list, list[R.TextLayout]]:
    """Append the regional prompts' embeddings to every entry of ``conditioning`` and attach the
    joint-attention mask (``attention_mask`` at the layout's token grid). Returns the new
    conditioning and the :class:`TextLayout` of each entry.

    ``pad_text_to``: models that left-pad short text with zeros (FLUX.2 pads to 512 tokens) get that
    padding here already, as part of the base group, so the mask matches what the model sees."""
    if len(region_embeds) != len(layout):
        raise InputError("layout", f"{len(region_embeds)} prompt embeddings for {len(layout)} regions.")
    rows, cols = R.token_grid(layout.height, layout.width, vae_downscale, patch_size)
    labels = layout.labels(rows, cols)
    out, texts = [], []
    for entry in conditioning:
        base, extra = entry[0], dict(entry[1])
        total = base.shape[1] + sum(0 if e is None else e.shape[1] for e in region_embeds)
        total += 0 if background_embed is None else background_embed.shape[1]
        if total < pad_text_to:
            base = torch.cat([base.new_zeros(base.shape[0], pad_text_to - total, base.shape[2]), base], dim=1)
        if "attention_mask" in extra:
            raise InputError("conditioning", "it already carries an attention mask (another regional or style node).",
                             "Feed the regional node a plain text conditioning (CLIP Text Encode + FluxGuidance).")
        pieces = [base]
        lengths = []
        for i, emb in enumerate(region_embeds):
            n = 0 if emb is None else emb.shape[1]
            lengths.append(n)
            if n:
                pieces.append(_match(emb, base, f"region {i + 1}"))
        bg_n = 0 if background_embed is None else background_embed.shape[1]
        if bg_n:
            pieces.append(_match(background_embed, base, "background"))
        text = R.TextLayout(base.shape[1], tuple(lengths), bg_n)
        allowed = R.joint_attention_mask(labels, text, image_attention)
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, COND_BLOCKED)
        extra["attention_mask"] = mask.unsqueeze(0)
        extra["attention_mask_img_shape"] = (rows, cols)
        extra[CONDITIONING_KEY] = {"text": text, "layout": layout.to_dict(), "image_attention": image_attention}
        out.append([torch.cat(pieces, dim=1), extra])
        texts.append(text)
    return out, texts


def _match(emb: torch.Tensor, base: torch.Tensor, what: str) -> torch.Tensor:
    if emb.shape[-1] != base.shape[-1]:
        raise InputError("clip", f"the {what} prompt encodes to width {emb.shape[-1]}, the base conditioning to {base.shape[-1]}.",
                         "Encode the base prompt with the same text encoder (CLIP) that this node uses.")
    emb = emb.to(device=base.device, dtype=base.dtype)
    if emb.shape[0] != base.shape[0]:
        emb = emb[:1].expand(base.shape[0], -1, -1)
    return emb


# --------------------------------------------------------------------------------------------------
# The model patch


class RegionalHolder:
    """Per-model settings of the patch (lives in ``transformer_options[PATCH_KEY]``)."""

    def __init__(self, layout: R.RegionLayout, texts: list[R.TextLayout], image_attention: str, options: RegionalOptions,
                 double: frozenset[int], single: frozenset[int], min_text: int = 0):
        self.layout = layout
        self.min_text = min_text          # the model left-pads shorter text with zeros to this many tokens
        self.texts = {t.total: t for t in texts}
        self.image_attention = image_attention
        self.options = options
        self.selected = {"double": double, "single": single}
        self.override_works: bool | None = None
        self.active: CallState | None = None     # the model call in progress inside the window (for the ids patch)
        self._warned: set[str] = set()
        self._masks: dict = {}            # masks reused across steps (same grid, text and device)

    def reset(self) -> None:
        """Forget the cached masks (after each sampling run, so no device memory is held between runs)."""
        self._masks = {}

    def cached(self, key, build):
        if key not in self._masks:
            if len(self._masks) >= 6:     # a few sizes at most (e.g. cond + uncond, hires passes)
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = build()
        return self._masks[key]

    def __deepcopy__(self, memo):   # model clones deep-copy model_options; settings are immutable
        return self

    def warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


@dataclass
class CallState:
    """What the selected blocks need during one model call (masks are cached on the holder)."""

    holder: RegionalHolder
    text: R.TextLayout | None     # None: a call without the regional conditioning (only positions move)
    rows: int
    cols: int
    _cache: dict = field(default_factory=dict)
    ids_moved: bool = False

    def _get(self, key, build):
        if key not in self._cache:
            self._cache[key] = self.holder.cached((self.text, self.rows, self.cols) + key, build)
        return self._cache[key]

    @property
    def n_txt(self) -> int:
        return self.text.total

    @property
    def n_img(self) -> int:
        return self.rows * self.cols

    def allowed(self, seq: int, device) -> torch.Tensor:
        extra = seq - self.n_txt - self.n_img
        if extra < 0:
            raise RuntimeError(f"regional prompting: sequence of {seq} tokens is shorter than text + image ({self.n_txt} + {self.n_img})")
        return self._get(("bool", seq, str(device)), lambda: R.regional_mask(
            self.holder.layout, self.text, self.rows, self.cols, self.holder.image_attention, extra_tokens=extra, device=device))

    def additive(self, seq: int, dtype, device) -> torch.Tensor:
        return self._get(("add", seq, dtype, str(device)), lambda: R.additive_mask(self.allowed(seq, device), dtype))

    def cell_ids(self, img_ids: torch.Tensor) -> torch.Tensor:
        labels = self._get(("labels",), lambda: self.holder.layout.labels(self.rows, self.cols))
        return R.cell_local_ids(img_ids, labels)

    def base_mask(self, seq: int, dtype, device) -> torch.Tensor:
        """Fallback blending: image rows see ``[base text | image | extra]`` unmasked."""

        def build():
            allowed = self.allowed(seq, device).clone()
            rows = slice(self.n_txt, self.n_txt + self.n_img)
            allowed[rows, :] = False
            allowed[rows, : self.text.base] = True
            allowed[rows, self.n_txt:] = True
            return R.additive_mask(allowed, dtype)

        return self._get(("base", seq, dtype, str(device)), build)


def _bind(executor, args, kwargs):
    try:
        sig = inspect.signature(executor.original)
        return sig.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None


def diffusion_model_wrapper(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: find the regional conditioning and decide what this call does."""
    bound = _bind(executor, args, kwargs)
    if bound is None:
        return executor(*args, **kwargs)
    a = bound.arguments
    extra_kw = a.get("kwargs", {})
    to = a.get("transformer_options")
    holder = to.get(PATCH_KEY) if isinstance(to, dict) else None
    context, x = a.get("context"), a.get("x")
    mask = extra_kw.get("attention_mask")
    if holder is None or context is None or x is None:
        return executor(*args, **kwargs)
    patch = int(getattr(executor.class_obj, "patch_size", 2))
    rows, cols = math.ceil(x.shape[-2] / patch), math.ceil(x.shape[-1] / patch)
    fraction = step_fraction(to.get("sigmas"), to.get("sample_sigmas"))
    if mask is None:
        # a call without the regional conditioning (the negative prompt): with positions="cell" it gets the
        # same positions as the regional call, so classifier-free guidance compares like with like
        if holder.options.positions == "cell" and holder.options.in_window(holder.options.start if fraction is None else fraction):
            return _with_cell_ids(holder, CallState(holder, None, rows, cols), executor, bound.args, bound.kwargs)
        return executor(*args, **kwargs)
    text = holder.texts.get(int(context.shape[1]))
    if text is None or mask.shape[-1] != text.total + rows * cols:
        holder.warn_once("foreign", "Instruct Identity regional: a conditioning with an attention mask that this patch did not "
                         "build reached the model; it is used as it is (pair the MODEL and CONDITIONING of the same node).")
        return executor(*args, **kwargs)
    if text.total + rows * cols > limits.MAX_REGIONAL_TOKENS:
        raise InputError("latent", f"regional prompting here needs {text.total + rows * cols} tokens, over the limit of "
                         f"{limits.MAX_REGIONAL_TOKENS}.", "Sample at the layout's size and upscale afterwards (or raise "
                         "II_MAX_REGIONAL_TOKENS, docs/limits.md).")
    if fraction is None:
        holder.warn_once("window", "Instruct Identity regional: the sampler gave no schedule, so the injection window "
                         "cannot be placed; regional masks are used at every step.")
        fraction = holder.options.start
    new_kw = {k: v for k, v in extra_kw.items() if k != "attention_mask"}
    new_to = dict(to)
    state = None
    if holder.options.in_window(fraction):
        state = new_to[CALL_KEY] = CallState(holder, text, rows, cols)
    else:                                           # base prompt alone: exactly what it would be without regions
        base = context[:, : text.base]
        if base.shape[1] < holder.min_text:
            base = torch.cat([base.new_zeros(base.shape[0], holder.min_text - base.shape[1], base.shape[2]), base], dim=1)
        a["context"] = base
    a["transformer_options"] = new_to
    if "kwargs" in a:
        a["kwargs"] = new_kw
    if state is None or holder.options.positions != "cell":
        return executor(*bound.args, **bound.kwargs)
    return _with_cell_ids(holder, state, executor, bound.args, bound.kwargs)


def _with_cell_ids(holder: RegionalHolder, state: CallState, executor, args, kwargs):
    """Run one model call with the ``post_input`` ids patch active (``positions="cell"``)."""
    holder.active, state.ids_moved = state, False
    try:
        out = executor(*args, **kwargs)
    finally:
        holder.active = None
    if not state.ids_moved:
        holder.warn_once("positions", "Instruct Identity regional: this model (%s) has no post_input patch point, so "
                         "positions='cell' has no effect; the regions keep the sheet's positions.",
                         type(executor.class_obj).__name__)
    return out


def make_ids_patch(holder: RegionalHolder):
    """A ``post_input`` patch (``positions="cell"``): inside the window, each region's image tokens get
    the positions of a picture of its own (:func:`regions.cell_local_ids`); other calls pass through."""

    def patch(inputs: dict) -> dict:
        state = holder.active
        if state is None or inputs.get("img_ids") is None:
            return inputs
        state.ids_moved = True
        return {**inputs, "img_ids": state.cell_ids(inputs["img_ids"])}

    patch._instruct_identity_regional_ids = True    # lets a later patch find and replace this one
    return patch


def outer_sample_wrapper(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: drop the cached masks when a sampling run ends."""
    guider = getattr(executor, "class_obj", None)
    patcher = getattr(guider, "model_patcher", None)
    holder = getattr(patcher, "model_options", {}).get("transformer_options", {}).get(PATCH_KEY) if patcher else None
    try:
        return executor(*args, **kwargs)
    finally:
        if holder is not None:
            holder.reset()


def _make_override(state: CallState, seq: int, prev, flag: dict):
    """Attention override for one block call: masked attention, blended for image rows with the
    unmasked attention over ``[base text | image | extra]``."""
    n_txt, n_img, n_base = state.n_txt, state.n_img, state.text.base
    ratio = state.holder.options.base_ratio

    def override(func, *args, **kwargs):
        call = (lambda *a, **kw: prev(func, *a, **kw)) if prev is not None else func
        out = call(*args, **kwargs)
        q, k, v = args[:3]
        if not kwargs.get("skip_reshape", False) or q.ndim != 4 or q.shape[2] != seq or k.shape[2] != seq:
            return out
        flag["fired"] = True
        keep = torch.cat([torch.arange(0, n_base), torch.arange(n_txt, seq)]).to(k.device)
        img = slice(n_txt, n_txt + n_img)
        kw = dict(kwargs)
        kw["mask"] = None
        base = call(q[:, :, img], k.index_select(2, keep), v.index_select(2, keep), *args[3:], **kw)
        if kwargs.get("skip_output_reshape", False):
            out[:, :, img] = R.blend_rows(out[:, :, img], base, ratio).to(out.dtype)
        else:
            out[:, img] = R.blend_rows(out[:, img], base, ratio).to(out.dtype)
        return out

    return override


def make_block_replace(kind: str, index: int, previous=None):
    """A ``set_model_patch_replace`` function for one block; chains to a patch that was there before."""

    def run(args, extra):
        return previous(args, extra) if previous is not None else extra["original_block"](args)

    def block(args, extra):
        to = args.get("transformer_options") or {}
        state: CallState | None = to.get(CALL_KEY)
        if state is None or index not in state.holder.selected[kind]:
            return run(args, extra)
        img = args["img"]
        seq = img.shape[1] + (args["txt"].shape[1] if kind == "double" else 0)
        masked = dict(args)
        masked["attn_mask"] = state.additive(seq, img.dtype, img.device)
        holder = state.holder
        if holder.options.base_ratio <= 0:
            return run(masked, extra)
        if holder.override_works is False:
            return _blend_outputs(kind, state, seq, masked, extra, run)
        saved = _clone_inputs(args) if holder.override_works is None else None
        flag = {"fired": False}
        new_to = dict(to)
        new_to[OVERRIDE_KEY] = _make_override(state, seq, to.get(OVERRIDE_KEY), flag)
        masked["transformer_options"] = new_to
        out = run(masked, extra)
        if holder.override_works is None:
            holder.override_works = flag["fired"]
            if not flag["fired"]:
                holder.warn_once("override", "Instruct Identity regional: this ComfyUI does not call attention overrides; "
                                 "base blending falls back to blending block outputs.")
                restored = {**masked, **saved, "transformer_options": to}
                return _blend_outputs(kind, state, seq, restored, extra, run)
        return out

    block._instruct_identity_regional = (kind, index, previous)   # lets a later patch unwrap this one
    return block


def _clone_inputs(args: dict) -> dict:
    return {k: args[k].clone() for k in ("img", "txt") if torch.is_tensor(args.get(k))}


def _blend_outputs(kind: str, state: CallState, seq: int, masked: dict, extra, run):
    """Fallback blending: run the block with the regional mask and with the base mask (image rows
    see ``[base text | image]``), then mix the image rows of the two outputs."""
    img = masked["img"]
    base_args = {**masked, **_clone_inputs(masked), "attn_mask": state.base_mask(seq, img.dtype, img.device)}
    base_out = run(base_args, extra)
    out = run(masked, extra)
    ratio = state.holder.options.base_ratio
    if kind == "double":
        out["img"] = R.blend_rows(out["img"], base_out["img"], ratio)
    else:
        rows = slice(state.n_txt, state.n_txt + state.n_img)
        out["img"][:, rows] = R.blend_rows(out["img"][:, rows], base_out["img"][:, rows], ratio)
    return out


def flux_block_counts(model) -> tuple[int, int]:
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    double = getattr(dm, "double_blocks", None)
    single = getattr(dm, "single_blocks", None)
    if double is None or single is None:
        raise InputError("model", f"{type(dm).__name__} is not a FLUX-family transformer (no double/single blocks).",
                         "Regional prompting needs FLUX.1, FLUX.2 or another model built from FLUX blocks.")
    return len(double), len(single)


def text_padding(model) -> int:
    """Token count a model left-pads shorter text to (FLUX.2: 512), else 0."""
    flux2 = getattr(comfy.model_base, "Flux2", None)
    return 512 if flux2 is not None and isinstance(getattr(model, "model", None), flux2) else 0


def patch_model(model, layout: R.RegionLayout, texts: list[R.TextLayout], image_attention: str, options: RegionalOptions):
    """A clone of ``model`` with the regional patch (the input model is not changed)."""
    options.validate()
    n_double, n_single = flux_block_counts(model)
    double = parse_blocks(options.double_blocks, n_double, "double_blocks")
    single = parse_blocks(options.single_blocks, n_single, "single_blocks")
    m = model.clone()
    holder = RegionalHolder(layout, texts, image_attention, options, double, single, text_padding(model))
    m.model_options.setdefault("transformer_options", {})[PATCH_KEY] = holder
    for kind, fn in ((WrappersMP.DIFFUSION_MODEL, diffusion_model_wrapper), (WrappersMP.OUTER_SAMPLE, outer_sample_wrapper)):
        m.remove_wrappers_with_key(kind, PATCH_KEY)
        m.add_wrapper_with_key(kind, PATCH_KEY, fn)
    existing = m.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    for kind, chosen in (("double", double), ("single", single)):
        for i in sorted(chosen):
            prev = existing.get((f"{kind}_block", i))
            while prev is not None and hasattr(prev, "_instruct_identity_regional"):
                prev = prev._instruct_identity_regional[2]     # replace our own earlier patch, keep others
            m.set_model_patch_replace(make_block_replace(kind, i, prev), "dit", f"{kind}_block", i)
    patches = m.model_options["transformer_options"].setdefault("patches", {})
    if "post_input" in patches:     # our own earlier ids patch goes; other packs' stay
        patches["post_input"] = [p for p in patches["post_input"] if not hasattr(p, "_instruct_identity_regional_ids")]
    if options.positions == "cell":
        m.set_model_patch(make_ids_patch(holder), "post_input")
    return m


def wrappers_present() -> bool:
    """True where this ComfyUI has the hooks the patch uses (checked by the tests)."""
    return hasattr(comfy.patcher_extension, "WrapperExecutor") and hasattr(WrappersMP, "DIFFUSION_MODEL")
