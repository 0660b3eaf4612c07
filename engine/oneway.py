"""One-way reference attention: the reference's keys and values computed once and reused.

In the paper's (``joint``) mode every token of the ``[target | reference]`` grid and of the prompt
attends to every other one, so the clean reference is recomputed at every model call although it
never changes. In ``one_way`` mode:

* reference tokens attend only to reference tokens, with a modulation that depends on nothing that
  changes with the step or the prompt (:func:`reference_modulation`), so each block's reference keys
  and values are a function of the reference (and the weights) alone;
* target and text tokens attend to everything: their keys and values plus the reference's.

So a sampler can compute the reference's per-block K/V once (:func:`reference_kv`) and run every
model call on the target half only (H x W tokens, not H x 2W), appending the cached K/V inside each
block's attention. The block math is defined once here and used by the trainer's forward
(``training/model.py``, with gradients) and by the sampler patch (:func:`install`).

The reference path's modulation is FLUX's own time/guidance/pooled embedding for **timestep 0** (the
reference is clean: sigma 0, as upstream ComfyUI's ``index_timestep_zero`` reference method does),
**guidance 1.0** where the model embeds guidance (the value guidance-distilled FLUX.1-dev is trained
around and this trainer's default ``guidance_scale``; the user's guidance must not reach the
reference, or each guidance value would need its own cache entry) and a **zero pooled vector**
(what ComfyUI's FLUX feeds when no pooled vector is given; an empty prompt's CLIP vector would tie
the reference to a text encoder).

Seams, all ComfyUI's own: a ``DIFFUSION_MODEL`` wrapper (key ``instruct_identity.one_way``) crops the
model input to the target half and hands the per-call state to the blocks through
``transformer_options``; every double/single block is replaced through
``transformer_options["patches_replace"]["dit"]`` (``ModelPatcher.set_model_patch_replace``). A
block patch another pack installed is kept: it is called with ``original_block`` set to the one-way
block, whichever of the two was installed first (see :class:`OneWayBlock`).

The block math lives in ``engine/oneway_blocks.py``, the cross-run cache in ``engine/oneway_cache.py``;
this module holds the mode, the per-call seam and the sampler patch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import torch
from comfy.patcher_extension import WrappersMP

from ..core import layout, reference_bias
from ..core.errors import InputError
from .oneway_blocks import (  # noqa: F401  (the block math, re-exported for the one-way API's users)
    BlockKV,
    ReferenceKV,
    call_block,
    checkpointed,
    double_block,
    reference_kv,
    reference_modulation,
    single_block,
)
from .oneway_cache import CACHE, ReferenceCache, tensor_digest, weights_fingerprint  # noqa: F401

log = logging.getLogger(__name__)

JOINT, ONE_WAY = "joint", "one_way"
MODES = (JOINT, ONE_WAY)
PATCH_KEY = "instruct_identity.one_way"
CALL_KEY = "instruct_identity.one_way.call"    # per-call state in transformer_options (set by the wrapper)
MODE_ATTACHMENT = "instruct_identity.reference_attention"  # ModelPatcher attachment: the LoRA's mode
METADATA_KEY = "reference_attention"           # LoRA file metadata key written by the trainer



# --------------------------------------------------------------------------------------------------
# the mode a model is sampled in


def check_mode(value, name: str = "reference_attention") -> str:
    if value not in MODES:
        raise InputError(name, f"\"{value}\" is not a reference attention mode.",
                         f"Use \"{JOINT}\" (the paper's) or \"{ONE_WAY}\" (for LoRAs trained with it).")
    return value


def mode_of(model) -> str:
    """The reference attention ``model`` (a ModelPatcher) was tagged with by the trainer or
    :func:`apply_lora_file`; ``joint`` when untagged."""
    get = getattr(model, "get_attachment", None)
    return (get(MODE_ATTACHMENT) if get is not None else None) or JOINT


def tag(model, mode: str) -> None:
    """Record on ``model`` (in place) the reference attention its weights were trained for."""
    model.set_attachments(MODE_ATTACHMENT, check_mode(mode))


def mode_from_metadata(metadata: dict | None) -> str:
    """The mode a LoRA file's safetensors metadata records; ``joint`` for files without the key
    (trained before one-way existed, or by another trainer)."""
    value = (metadata or {}).get(METADATA_KEY) or JOINT
    return value if value in MODES else JOINT


def apply_lora_file(model, path: str, strength: float = 1.0, reference_attention: str = "auto"):
    """``model`` + the LoRA at ``path`` (ComfyUI's own loader), tagged with the reference attention
    from the file's metadata (``auto``) or the one given. Returns (patched clone, mode)."""
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    mode = mode_from_metadata(metadata) if reference_attention == "auto" else check_mode(reference_attention)
    patched, _ = comfy.sd.load_lora_for_models(model, None, sd, float(strength), 0.0)  # a clone
    tag(patched, mode)
    return patched, mode


def check_model(diffusion_model) -> None:
    """One-way attention needs ComfyUI's FLUX transformer (FLUX.1 dev/schnell, FLUX.2) with the
    latent as its only input."""
    from comfy.ldm.flux.model import Flux

    if not isinstance(diffusion_model, Flux):
        raise InputError("reference_attention", f"one_way needs a FLUX.1 or FLUX.2 transformer, not "
                         f"{type(diffusion_model).__name__}.", "Use reference_attention = joint with this model.")


# --------------------------------------------------------------------------------------------------
# the per-call seam: a DIFFUSION_MODEL wrapper and the block replacements


@dataclass
class CallState:
    """What the block patches of one model call need (kept in ``transformer_options[CALL_KEY]``)."""

    dm: object
    kv: ReferenceKV
    run: object = call_block
    bias: torch.Tensor | None = None   # [1, text + target, text + target + strip] (strengths, regions)


class OneWayBlock:
    """The ``patches_replace["dit"]`` entry of one block: the one-way block math.

    ``previous`` is the patch another pack had put in that slot: it is called with
    ``original_block`` set to the one-way block, so it still runs (and may change the block's inputs
    and outputs) while the block itself attends one way. A previous patch that computes the block
    itself without calling ``original_block`` bypasses one-way attention in that block (the target
    then does not see the reference there). Holds no tensors: ComfyUI deep-copies these on clone."""

    def __init__(self, kind: str, index: int, previous=None):
        self.kind, self.index, self.previous = kind, index, previous

    def __call__(self, args, extra):
        state: CallState | None = (args.get("transformer_options") or {}).get(CALL_KEY)
        if state is None:
            raise RuntimeError("Instruct Identity one-way block called without its per-call state: the model was "
                               "called around the instruct_identity.one_way DIFFUSION_MODEL wrapper.")
        if self.previous is not None:
            return self.previous(args, {**extra, "original_block": partial(self.compute, state)})
        return self.compute(state, args)

    def compute(self, state: CallState, args) -> dict:
        blocks = state.dm.double_blocks if self.kind == "double" else state.dm.single_blocks
        block, ref = blocks[self.index], state.kv.block(self.kind, self.index)
        to = args.get("transformer_options")
        if self.kind == "double":
            img, txt = state.run(double_block, block, args["img"], args["txt"], args["vec"], args["pe"],
                                 args.get("attn_mask"), ref, to, state.bias)
            return {"img": img, "txt": txt}
        return {"img": state.run(single_block, block, args["img"], args["vec"], args["pe"], args.get("attn_mask"), ref, to,
                                 state.bias)}


def _unwrap(patch):
    while isinstance(patch, OneWayBlock):
        patch = patch.previous
    return patch


def one_way_blocks(dit: dict, n_double: int, n_single: int) -> tuple[dict, int]:
    """``dit`` (a ``patches_replace["dit"]`` dict, not changed) with a :class:`OneWayBlock` in every
    block slot, chaining whatever else was there; and how many foreign patches were chained."""
    out, chained = dict(dit), 0
    for kind, n in (("double", n_double), ("single", n_single)):
        for i in range(n):
            slot = (f"{kind}_block", i)
            current = out.get(slot)
            if isinstance(current, OneWayBlock):
                continue
            chained += current is not None
            out[slot] = OneWayBlock(kind, i, current)
    return out, chained


def without_one_way_blocks(dit: dict) -> dict:
    """``dit`` with our block patches taken out (foreign ones they chained put back)."""
    out = {}
    for slot, patch in dit.items():
        patch = _unwrap(patch)
        if patch is not None:
            out[slot] = patch
    return out


def forward_options(transformer_options: dict, state: CallState) -> dict:
    """A copy of ``transformer_options`` for one one-way model call: the state, and every block slot
    holding a one-way block (a foreign patch registered after ours is chained here, per call)."""
    to = dict(transformer_options)
    to[CALL_KEY] = state
    replace = dict(to.get("patches_replace") or {})
    dit, chained = one_way_blocks(replace.get("dit") or {}, len(state.dm.double_blocks), len(state.dm.single_blocks))
    if chained:
        log.debug("one-way reference attention: %d block patch(es) of another pack chained around ours", chained)
    replace["dit"] = dit
    to["patches_replace"] = replace
    return to


def one_way_forward(executor, dm, x, kv_for, run, args: tuple, kwargs: dict, references: int = 1,
                    bias_for=None) -> torch.Tensor:
    """Run the diffusion model on the target panel of the grid ``x`` (``references`` reference panels)
    with the references' K/V (``kv_for(reference_strip, transformer_options)``); the reference panels
    of the output are zero, the velocity that leaves the clean references where they are.
    ``bias_for(text_tokens, rows, cols)``: the target path's part of the reference bias, or None."""
    if kwargs.get("attention_mask") is not None:
        raise InputError("reference_attention", "one_way does not combine with attention-mask conditioning "
                         "(e.g. regional prompting).", "Use reference_attention = joint for this graph, or bind "
                         "references to regions on the Add Reference node.")
    timestep, context, y, guidance, ref_latents, control, transformer_options = args
    lay = layout.Layout.of(x, references=references)
    to = transformer_options if transformer_options is not None else {}
    kv = kv_for(x[..., lay.reference], to)
    bias = None
    if bias_for is not None:
        patch = int(getattr(dm, "patch_size", 2))
        bias = bias_for(int(context.shape[1]), lay.height // patch, lay.width // patch)
    out = executor(x[..., lay.target], timestep, context, y, guidance, ref_latents, control,
                   forward_options(to, CallState(dm, kv, run, bias)), **kwargs)
    return torch.cat([out] + [torch.zeros_like(out)] * lay.references, dim=-1)


def training_options(checkpoint: bool, references: int = 1) -> dict:
    """``transformer_options`` for the trainer's forward in one-way mode: the wrapper computes the
    references' K/V for every sample (with gradients) at every call; blocks checkpointed if asked."""
    run = checkpointed if checkpoint else call_block

    def wrapper(executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                transformer_options=None, **kwargs):
        dm = executor.class_obj
        return one_way_forward(executor, dm, x, lambda ref, to: reference_kv(dm, ref, to, run, references=references),
                               run, (timestep, context, y, guidance, ref_latents, control, transformer_options), kwargs,
                               references)

    return {"wrappers": {WrappersMP.DIFFUSION_MODEL: {PATCH_KEY: [wrapper]}}}


@dataclass
class OneWayPatch:
    """The sampler side: K/V of ``references`` (``[R, C, h, w]``, VAE space) computed at the first
    model call of a run and reused at every later call, for every batch item, cond and uncond;
    through ``cache`` (default the process-wide :data:`CACHE`) also by later runs with the same
    reference, model weights and dtype. ``reuse=False`` recomputes them at every call (the uncached
    forward, for checking the cache)."""

    references: torch.Tensor
    cache: ReferenceCache | None = field(default_factory=lambda: CACHE)
    reuse: bool = True
    count: int = 1                 # reference panels in the strip
    controls: tuple = ()           # core.reference_bias.ReferenceControl per reference
    computed: int = 0
    reused: int = 0
    _digest: str = ""
    _scope: object = None
    _last: tuple = (None, None)   # (key, K/V) of the latest call: the rest of a run reuses it
    _bias: dict = field(default_factory=dict)

    def __post_init__(self):
        self._digest = tensor_digest(self.references)
        if not self.controls:
            self.controls = tuple(reference_bias.ReferenceControl() for _ in range(self.count))
        self._controls_digest = repr([(c.strength, None if c.region is None else tensor_digest(c.region))
                                      for c in self.controls])

    @property
    def biased(self) -> bool:
        return not reference_bias.neutral(self.controls)

    def biases(self, text: int, rows: int, cols: int, device):
        """(target-path bias, reference-path bias) for this call's sizes; (None, None) when neutral."""
        if not self.biased:
            return None, None
        key = (text, rows, cols, str(device))
        if key not in self._bias:
            full = reference_bias.bias(self.controls, text=text, rows=rows, cols=cols, device=device)
            self._bias = {key: reference_bias.one_way_parts(full, text=text, rows=rows, cols=cols,
                                                            references=self.count)}
        return self._bias[key]

    def reference_bias_for(self, dm, ref: torch.Tensor):
        if not self.biased:
            return None
        patch = int(getattr(dm, "patch_size", 2))
        rows, cols = ref.shape[-2] // patch, ref.shape[-1] // self.count // patch
        return self.biases(0, rows, cols, ref.device)[1]

    def key(self, dm, ref: torch.Tensor, transformer_options) -> tuple:
        return (self._digest, id(dm), self._scope, weights_fingerprint(dm), str(ref.dtype), str(ref.device),
                tuple(ref.shape[1:]), repr(transformer_options.get("rope_options")), self.count,
                self._controls_digest if self.count > 1 else "")

    def kv_for(self, dm, ref_half: torch.Tensor, transformer_options) -> ReferenceKV:
        bias = self.reference_bias_for(dm, ref_half)
        if not self.reuse:
            self.computed += 1
            return reference_kv(dm, ref_half, transformer_options, references=self.count, bias=bias)
        ref = ref_half[: self.references.shape[0]]     # the grid tiles the references over the batch
        key = self.key(dm, ref, transformer_options)   # checked at every call: weights may change between runs
        if self._last[0] == key:
            return self._last[1]
        kv = self.cache.get(key, dm) if self.cache is not None else None
        if kv is None:
            with torch.no_grad():
                kv = reference_kv(dm, ref, transformer_options, references=self.count, bias=bias)
            self.computed += 1
            if self.cache is not None:
                self.cache.put(key, dm, kv)
        else:
            self.reused += 1
        self._last = (key, kv)
        return kv

    def diffusion_model(self, executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                        transformer_options=None, **kwargs):
        dm = executor.class_obj
        bias_for = (lambda text, rows, cols: self.biases(text, rows, cols, x.device)[0]) if self.biased else None
        return one_way_forward(executor, dm, x, partial(self.kv_for, dm), call_block,
                               (timestep, context, y, guidance, ref_latents, control, transformer_options), kwargs,
                               self.count, bias_for)

    def outer_sample(self, executor, *args, **kwargs):
        patcher = getattr(getattr(executor, "class_obj", None), "model_patcher", None)
        self._scope, self.computed, self.reused = getattr(patcher, "patches_uuid", None), 0, 0
        try:
            return executor(*args, **kwargs)
        finally:
            self._last = (None, None)   # the cache (if any) keeps it; the holder does not
            log.info("Instruct Identity one-way: reference keys/values computed %d time(s), taken from the cache "
                     "%d time(s) in this run", self.computed, self.reused)


def install(model, reference: torch.Tensor, *, cache: ReferenceCache | None = CACHE, reuse: bool = True,
            references: int = 1, controls=None) -> OneWayPatch:
    """Put one-way attention on ``model`` (a ModelPatcher clone, changed in place): the wrappers under
    :data:`PATCH_KEY` and a :class:`OneWayBlock` in every block slot (chaining other packs' patches).
    ``reference``: the ``[R, C, h, K*w]`` strip of ``references`` = K panels; ``controls``: one
    ``core.reference_bias.ReferenceControl`` per reference (None: strength 1, no region)."""
    dm = model.model.diffusion_model
    check_model(dm)
    holder = OneWayPatch(reference.detach(), cache, reuse, int(references), tuple(controls or ()))
    for kind, fn in ((WrappersMP.DIFFUSION_MODEL, holder.diffusion_model), (WrappersMP.OUTER_SAMPLE, holder.outer_sample)):
        model.remove_wrappers_with_key(kind, PATCH_KEY)
        model.add_wrapper_with_key(kind, PATCH_KEY, fn)
    current = model.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    dit, _ = one_way_blocks(current, len(dm.double_blocks), len(dm.single_blocks))
    for (name, index), patch in dit.items():
        if isinstance(patch, OneWayBlock) and current.get((name, index)) is not patch:
            model.set_model_patch_replace(patch, "dit", name, index)
    return holder


def uninstall(model) -> None:
    """Take one-way attention off ``model`` (changed in place); nothing happens to an unpatched model."""
    for kind in (WrappersMP.DIFFUSION_MODEL, WrappersMP.OUTER_SAMPLE):
        if model.get_wrappers(kind, PATCH_KEY):
            model.remove_wrappers_with_key(kind, PATCH_KEY)
    replace = model.model_options.get("transformer_options", {}).get("patches_replace", {})
    if any(isinstance(p, OneWayBlock) for p in replace.get("dit", {}).values()):
        replace["dit"] = without_one_way_blocks(replace["dit"])


def one_way_patch_of(model) -> OneWayPatch | None:
    """The holder :func:`install` put on ``model`` (None: the model samples jointly)."""
    holders = (getattr(fn, "__self__", None) for fn in model.get_wrappers(WrappersMP.DIFFUSION_MODEL, PATCH_KEY))
    return next((h for h in holders if isinstance(h, OneWayPatch)), None)
