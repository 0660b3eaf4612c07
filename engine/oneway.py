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
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial

import torch
from comfy.ldm.flux import math as flux_math
from comfy.ldm.flux.layers import apply_mod, timestep_embedding
from comfy.patcher_extension import WrappersMP

from ..core import layout
from ..core.errors import InputError

log = logging.getLogger(__name__)

JOINT, ONE_WAY = "joint", "one_way"
MODES = (JOINT, ONE_WAY)
PATCH_KEY = "instruct_identity.one_way"
CALL_KEY = "instruct_identity.one_way.call"    # per-call state in transformer_options (set by the wrapper)
MODE_ATTACHMENT = "instruct_identity.reference_attention"  # ModelPatcher attachment: the LoRA's mode
METADATA_KEY = "reference_attention"           # LoRA file metadata key written by the trainer

REFERENCE_TIMESTEP = 0.0
REFERENCE_GUIDANCE = 1.0
DEFAULT_CACHE_MB = 4096   # one 1024^2 FLUX.1-dev reference in bf16 (2.7 GiB) or five 512^2 ones


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
# the block math (one definition: the trainer's forward and the sampler patch both run it)


@dataclass
class BlockKV:
    """One block's reference keys (RoPE applied) and values, ``[R, heads, N_ref, head_dim]``."""

    k: torch.Tensor
    v: torch.Tensor


@dataclass
class ReferenceKV:
    """The reference's K/V for every block: what the target attends to beside itself."""

    double: list[BlockKV]
    single: list[BlockKV]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.double + self.single for t in (kv.k, kv.v))

    def block(self, kind: str, index: int) -> BlockKV:
        return (self.double if kind == "double" else self.single)[index]


def _double_mods(block, vec):
    if block.modulation:
        return block.img_mod(vec) + block.txt_mod(vec)
    (img1, img2), (txt1, txt2) = vec
    return img1, img2, txt1, txt2


def _stream_qkv(norm, attn, x, mod, heads: int):
    """A double block stream's q, k, v (QK-normed, RoPE not yet applied): ``[B, heads, N, head_dim]``."""
    qkv = attn.qkv(apply_mod(norm(x), (1 + mod.scale), mod.shift))
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.norm(q, k, v)
    return q, k, v


def _single_qkv(block, x, mod):
    qkv, mlp = torch.split(block.linear1(apply_mod(block.pre_norm(x), (1 + mod.scale), mod.shift)),
                           [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = block.norm(q, k, v)
    return q, k, v, mlp


def _extend_mask(mask, extra: int):
    """An attention mask over ``[txt | image]`` keys, widened so every query may see ``extra`` more keys."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.cat([mask, mask.new_ones(mask.shape[:-1] + (extra,))], dim=-1)
    return torch.cat([mask, mask.new_zeros(mask.shape[:-1] + (extra,))], dim=-1)


def _attend(q, k, v, pe, mask, ref: BlockKV | None, transformer_options):
    """ComfyUI's FLUX attention; with ``ref``, the reference's keys and values are appended to the
    (RoPE-rotated) keys and values of the queries' own sequence."""
    if ref is None:
        return flux_math.attention(q, k, v, pe=pe, mask=mask, transformer_options=transformer_options)
    if pe is not None:
        q, k = flux_math.apply_rope(q, k, pe)
    rk = layout.match_batch(ref.k, q.shape[0], "reference").to(k.dtype)
    rv = layout.match_batch(ref.v, q.shape[0], "reference").to(v.dtype)
    k, v = torch.cat([k, rk], dim=2), torch.cat([v, rv], dim=2)
    return flux_math.attention(q, k, v, pe=None, mask=_extend_mask(mask, rk.shape[2]),
                               transformer_options=transformer_options)


def _finite(x):
    return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504) if x.dtype == torch.float16 else x


def double_block(block, img, txt, vec, pe, attn_mask=None, ref: BlockKV | None = None, transformer_options=None):
    """ComfyUI's ``DoubleStreamBlock.forward`` (text first), out of place, with the target and text
    queries also attending to ``ref``. ``ref=None`` is the stock block."""
    to = transformer_options if transformer_options is not None else {}
    img_mod1, img_mod2, txt_mod1, txt_mod2 = _double_mods(block, vec)
    img_q, img_k, img_v = _stream_qkv(block.img_norm1, block.img_attn, img, img_mod1, block.num_heads)
    txt_q, txt_k, txt_v = _stream_qkv(block.txt_norm1, block.txt_attn, txt, txt_mod1, block.num_heads)
    attn = _attend(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2), torch.cat((txt_v, img_v), dim=2),
                   pe, attn_mask, ref, to)
    txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1]:]
    img = img + apply_mod(block.img_attn.proj(img_attn), img_mod1.gate)
    img = img + apply_mod(block.img_mlp(apply_mod(block.img_norm2(img), (1 + img_mod2.scale), img_mod2.shift)), img_mod2.gate)
    txt = txt + apply_mod(block.txt_attn.proj(txt_attn), txt_mod1.gate)
    txt = txt + apply_mod(block.txt_mlp(apply_mod(block.txt_norm2(txt), (1 + txt_mod2.scale), txt_mod2.shift)), txt_mod2.gate)
    return img, _finite(txt)


def single_block(block, x, vec, pe, attn_mask=None, ref: BlockKV | None = None, transformer_options=None):
    """ComfyUI's ``SingleStreamBlock.forward``, out of place, with the queries also attending to ``ref``."""
    to = transformer_options if transformer_options is not None else {}
    mod = block.modulation(vec)[0] if block.modulation else vec
    q, k, v, mlp = _single_qkv(block, x, mod)
    attn = _attend(q, k, v, pe, attn_mask, ref, to)
    out = block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2))
    return _finite(x + apply_mod(out, mod.gate))


def reference_double(block, x, vec, pe, transformer_options=None):
    """The reference tokens through a double block (its image stream), attending only to themselves:
    (next hidden state, K with RoPE, V)."""
    mod1, mod2 = block.img_mod(vec) if block.modulation else vec[0]
    q, k, v = _stream_qkv(block.img_norm1, block.img_attn, x, mod1, block.num_heads)
    q, k = flux_math.apply_rope(q, k, pe)
    attn = flux_math.attention(q, k, v, pe=None, transformer_options=transformer_options or {})
    x = x + apply_mod(block.img_attn.proj(attn), mod1.gate)
    x = x + apply_mod(block.img_mlp(apply_mod(block.img_norm2(x), (1 + mod2.scale), mod2.shift)), mod2.gate)
    return x, k, v


def reference_single(block, x, vec, pe, transformer_options=None):
    """The reference tokens through a single block, attending only to themselves."""
    mod = block.modulation(vec)[0] if block.modulation else vec
    q, k, v, mlp = _single_qkv(block, x, mod)
    q, k = flux_math.apply_rope(q, k, pe)
    attn = flux_math.attention(q, k, v, pe=None, transformer_options=transformer_options or {})
    return _finite(x + apply_mod(block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2)), mod.gate)), k, v


def reference_modulation(dm, device, dtype):
    """(double-block vec, single-block vec) of the reference path: FLUX's embedding of timestep 0,
    guidance 1.0 (if embedded) and a zero pooled vector, for one sample (it broadcasts)."""
    t = torch.full((1,), REFERENCE_TIMESTEP, device=device, dtype=torch.float32)
    vec = dm.time_in(timestep_embedding(t, 256).to(dtype))
    if dm.params.guidance_embed:
        g = torch.full((1,), REFERENCE_GUIDANCE, device=device, dtype=torch.float32)
        vec = vec + dm.guidance_in(timestep_embedding(g, 256).to(dtype))
    if dm.vector_in is not None:
        vec = vec + dm.vector_in(torch.zeros((1, dm.params.vec_in_dim), device=device, dtype=dtype))
    if dm.params.global_modulation:
        return (dm.double_stream_modulation_img(vec), dm.double_stream_modulation_txt(vec)), dm.single_stream_modulation(vec)[0]
    return vec, vec


def call_block(fn, *args):
    return fn(*args)


def checkpointed(fn, *args):
    """Per-block non-reentrant gradient checkpointing (the trainer's memory saver)."""
    from torch.utils.checkpoint import checkpoint

    return checkpoint(fn, *args, use_reentrant=False)


def reference_kv(dm, reference: torch.Tensor, transformer_options=None, run=call_block) -> ReferenceKV:
    """The reference's keys and values at every block.

    ``reference``: ``[R, C, h, w]``, the clean reference in the model's input space and compute dtype
    (the right half of the grid the model is given). Its RoPE positions are the grid's right half:
    columns ``w .. 2w-1``, exactly where joint mode puts them. ``run(fn, *args)`` runs each block
    (plain, or :func:`checkpointed` while training)."""
    to = transformer_options if transformer_options is not None else {}
    tokens, ids = dm.process_img(reference, w_offset=reference.shape[-1], transformer_options=to)
    pe = dm.pe_embedder(ids[:1])
    x = dm.img_in(tokens)
    vec_double, vec_single = reference_modulation(dm, x.device, x.dtype)
    double, single = [], []
    for block in dm.double_blocks:
        x, k, v = run(reference_double, block, x, vec_double, pe, to)
        double.append(BlockKV(k, v))
    for block in dm.single_blocks:
        x, k, v = run(reference_single, block, x, vec_single, pe, to)
        single.append(BlockKV(k, v))
    return ReferenceKV(double, single)


# --------------------------------------------------------------------------------------------------
# the per-call seam: a DIFFUSION_MODEL wrapper and the block replacements


@dataclass
class CallState:
    """What the block patches of one model call need (kept in ``transformer_options[CALL_KEY]``)."""

    dm: object
    kv: ReferenceKV
    run: object = call_block


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
                                 args.get("attn_mask"), ref, to)
            return {"img": img, "txt": txt}
        return {"img": state.run(single_block, block, args["img"], args["vec"], args["pe"], args.get("attn_mask"), ref, to)}


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


def one_way_forward(executor, dm, x, kv_for, run, args: tuple, kwargs: dict) -> torch.Tensor:
    """Run the diffusion model on the target half of the grid ``x`` with the reference's K/V
    (``kv_for(reference_half, transformer_options)``); the reference half of the output is zero,
    the velocity that leaves the clean reference where it is."""
    if kwargs.get("attention_mask") is not None:
        raise InputError("reference_attention", "one_way does not combine with attention-mask conditioning "
                         "(e.g. regional prompting).", "Use reference_attention = joint for this graph.")
    timestep, context, y, guidance, ref_latents, control, transformer_options = args
    lay = layout.Layout.of(x)
    to = transformer_options if transformer_options is not None else {}
    kv = kv_for(x[..., lay.reference], to)
    out = executor(x[..., lay.target], timestep, context, y, guidance, ref_latents, control,
                   forward_options(to, CallState(dm, kv, run)), **kwargs)
    return torch.cat([out, torch.zeros_like(out)], dim=-1)


def training_options(checkpoint: bool) -> dict:
    """``transformer_options`` for the trainer's forward in one-way mode: the wrapper computes the
    reference's K/V for every sample (with gradients) at every call; blocks checkpointed if asked."""
    run = checkpointed if checkpoint else call_block

    def wrapper(executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                transformer_options=None, **kwargs):
        dm = executor.class_obj
        return one_way_forward(executor, dm, x, lambda ref, to: reference_kv(dm, ref, to, run), run,
                               (timestep, context, y, guidance, ref_latents, control, transformer_options), kwargs)

    return {"wrappers": {WrappersMP.DIFFUSION_MODEL: {PATCH_KEY: [wrapper]}}}


# --------------------------------------------------------------------------------------------------
# the cache: per reference, across sampling runs


def weights_fingerprint(dm) -> str:
    """Changes whenever a weight tensor is replaced or modified in place (ComfyUI patching a LoRA in,
    an optimizer step on a trained LoRA): storage address and version counter of every parameter.
    Weights ComfyUI loaded under ``torch.inference_mode`` have no version counter; ComfyUI changes
    those only through its patches, which the ModelPatcher's ``patches_uuid`` in the key covers."""
    h = hashlib.sha1()
    for p in dm.parameters():
        h.update(f"{p.data_ptr()}:{'i' if p.is_inference() else p._version};".encode())
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(repr(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


@dataclass
class _Entry:
    kv: ReferenceKV
    model: weakref.ref
    nbytes: int


class ReferenceCache:
    """Reference K/V by key, least recently used dropped first once their total exceeds
    ``max_bytes`` (the entry just added is always kept, even if it alone is larger; ``max_bytes``
    0 keeps nothing). Entries live on the device they were computed on; ComfyUI's memory manager
    does not see them, which is what the cap is for. On a GPU, recomputing a reference costs about
    one model call of H x W tokens, so the cache saves little more than that per queued run."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key, model) -> ReferenceKV | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.model() is model:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.kv
            if entry is not None:           # the model it was made for is gone (an id was reused)
                del self._entries[key]
            self.misses += 1
            return None

    def put(self, key, model, kv: ReferenceKV) -> None:
        if self.max_bytes <= 0:   # II_REFERENCE_CACHE_MB=0: nothing kept across runs (a run still reuses its own)
            return
        with self._lock:
            for k in [k for k, e in self._entries.items() if e.model() is None]:
                del self._entries[k]                 # made for a model that has been freed
            self._entries[key] = _Entry(kv, weakref.ref(model), kv.nbytes)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                _, entry = self._entries.popitem(last=False)
                log.info("one-way reference cache: dropped a reference (%.0f MiB) to stay under %.0f MiB",
                         entry.nbytes / 2**20, self.max_bytes / 2**20)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = ReferenceCache(int(float(os.environ.get("II_REFERENCE_CACHE_MB", DEFAULT_CACHE_MB)) * 2**20))


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
    computed: int = 0
    reused: int = 0
    _digest: str = ""
    _scope: object = None
    _last: tuple = (None, None)   # (key, K/V) of the latest call: the rest of a run reuses it

    def __post_init__(self):
        self._digest = tensor_digest(self.references)

    def key(self, dm, ref: torch.Tensor, transformer_options) -> tuple:
        return (self._digest, id(dm), self._scope, weights_fingerprint(dm), str(ref.dtype), str(ref.device),
                tuple(ref.shape[1:]), repr(transformer_options.get("rope_options")))

    def kv_for(self, dm, ref_half: torch.Tensor, transformer_options) -> ReferenceKV:
        if not self.reuse:
            self.computed += 1
            return reference_kv(dm, ref_half, transformer_options)
        ref = ref_half[: self.references.shape[0]]     # the grid tiles the references over the batch
        key = self.key(dm, ref, transformer_options)   # checked at every call: weights may change between runs
        if self._last[0] == key:
            return self._last[1]
        kv = self.cache.get(key, dm) if self.cache is not None else None
        if kv is None:
            with torch.no_grad():
                kv = reference_kv(dm, ref, transformer_options)
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
        return one_way_forward(executor, dm, x, partial(self.kv_for, dm), call_block,
                               (timestep, context, y, guidance, ref_latents, control, transformer_options), kwargs)

    def outer_sample(self, executor, *args, **kwargs):
        patcher = getattr(getattr(executor, "class_obj", None), "model_patcher", None)
        self._scope, self.computed, self.reused = getattr(patcher, "patches_uuid", None), 0, 0
        try:
            return executor(*args, **kwargs)
        finally:
            self._last = (None, None)   # the cache (if any) keeps it; the holder does not
            log.info("Instruct Identity one-way: reference keys/values computed %d time(s), taken from the cache "
                     "%d time(s) in this run", self.computed, self.reused)


def install(model, reference: torch.Tensor, *, cache: ReferenceCache | None = CACHE, reuse: bool = True) -> OneWayPatch:
    """Put one-way attention on ``model`` (a ModelPatcher clone, changed in place): the wrappers under
    :data:`PATCH_KEY` and a :class:`OneWayBlock` in every block slot (chaining other packs' patches)."""
    dm = model.model.diffusion_model
    check_model(dm)
    holder = OneWayPatch(reference.detach(), cache, reuse)
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
