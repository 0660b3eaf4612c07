"""One-way reference attention, the block math: ComfyUI's FLUX blocks out of place, with the
target's queries also attending to the reference's cached keys and values, and the reference path
itself (timestep-0 modulation, attending only to itself). One definition, run by the trainer's
forward (with gradients) and the sampler patch (``engine/oneway.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy.ldm.flux import math as flux_math
from comfy.ldm.flux.layers import apply_mod, timestep_embedding

from ..core import layout

REFERENCE_TIMESTEP = 0.0
REFERENCE_GUIDANCE = 1.0


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


def _attend(q, k, v, pe, mask, ref: BlockKV | None, transformer_options, ref_bias=None):
    """ComfyUI's FLUX attention; with ``ref``, the reference's keys and values are appended to the
    (RoPE-rotated) keys and values of the queries' own sequence. ``ref_bias``: an additive bias
    ``[1, Nq, Nk]`` over those queries and keys (``core.reference_bias``: strengths, bound regions)."""
    if ref is None:
        return flux_math.attention(q, k, v, pe=pe, mask=mask, transformer_options=transformer_options)
    if pe is not None:
        q, k = flux_math.apply_rope(q, k, pe)
    rk = layout.match_batch(ref.k, q.shape[0], "reference").to(k.dtype)
    rv = layout.match_batch(ref.v, q.shape[0], "reference").to(v.dtype)
    k, v = torch.cat([k, rk], dim=2), torch.cat([v, rv], dim=2)
    mask = _extend_mask(mask, rk.shape[2])
    if ref_bias is not None:
        ref_bias = ref_bias.to(device=q.device, dtype=q.dtype)
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, device=q.device, dtype=q.dtype).masked_fill_(~mask, -10000.0)
        mask = ref_bias if mask is None else mask.to(q.dtype) + ref_bias
    return flux_math.attention(q, k, v, pe=None, mask=mask, transformer_options=transformer_options)


def _finite(x):
    return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504) if x.dtype == torch.float16 else x


def double_block(block, img, txt, vec, pe, attn_mask=None, ref: BlockKV | None = None, transformer_options=None,
                 ref_bias=None):
    """ComfyUI's ``DoubleStreamBlock.forward`` (text first), out of place, with the target and text
    queries also attending to ``ref``. ``ref=None`` is the stock block."""
    to = transformer_options if transformer_options is not None else {}
    img_mod1, img_mod2, txt_mod1, txt_mod2 = _double_mods(block, vec)
    img_q, img_k, img_v = _stream_qkv(block.img_norm1, block.img_attn, img, img_mod1, block.num_heads)
    txt_q, txt_k, txt_v = _stream_qkv(block.txt_norm1, block.txt_attn, txt, txt_mod1, block.num_heads)
    attn = _attend(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2), torch.cat((txt_v, img_v), dim=2),
                   pe, attn_mask, ref, to, ref_bias)
    txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1]:]
    img = img + apply_mod(block.img_attn.proj(img_attn), img_mod1.gate)
    img = img + apply_mod(block.img_mlp(apply_mod(block.img_norm2(img), (1 + img_mod2.scale), img_mod2.shift)), img_mod2.gate)
    txt = txt + apply_mod(block.txt_attn.proj(txt_attn), txt_mod1.gate)
    txt = txt + apply_mod(block.txt_mlp(apply_mod(block.txt_norm2(txt), (1 + txt_mod2.scale), txt_mod2.shift)), txt_mod2.gate)
    return img, _finite(txt)


def single_block(block, x, vec, pe, attn_mask=None, ref: BlockKV | None = None, transformer_options=None,
                 ref_bias=None):
    """ComfyUI's ``SingleStreamBlock.forward``, out of place, with the queries also attending to ``ref``."""
    to = transformer_options if transformer_options is not None else {}
    mod = block.modulation(vec)[0] if block.modulation else vec
    q, k, v, mlp = _single_qkv(block, x, mod)
    attn = _attend(q, k, v, pe, attn_mask, ref, to, ref_bias)
    out = block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2))
    return _finite(x + apply_mod(out, mod.gate))


def reference_double(block, x, vec, pe, transformer_options=None, bias=None):
    """The reference tokens through a double block (its image stream), attending only to themselves
    (``bias``: between references, ``core.reference_bias``): (next hidden state, K with RoPE, V)."""
    mod1, mod2 = block.img_mod(vec) if block.modulation else vec[0]
    q, k, v = _stream_qkv(block.img_norm1, block.img_attn, x, mod1, block.num_heads)
    q, k = flux_math.apply_rope(q, k, pe)
    attn = flux_math.attention(q, k, v, pe=None, mask=_bias_mask(bias, q), transformer_options=transformer_options or {})
    x = x + apply_mod(block.img_attn.proj(attn), mod1.gate)
    x = x + apply_mod(block.img_mlp(apply_mod(block.img_norm2(x), (1 + mod2.scale), mod2.shift)), mod2.gate)
    return x, k, v


def _bias_mask(bias, q):
    return None if bias is None else bias.to(device=q.device, dtype=q.dtype)


def reference_single(block, x, vec, pe, transformer_options=None, bias=None):
    """The reference tokens through a single block, attending only to themselves."""
    mod = block.modulation(vec)[0] if block.modulation else vec
    q, k, v, mlp = _single_qkv(block, x, mod)
    q, k = flux_math.apply_rope(q, k, pe)
    attn = flux_math.attention(q, k, v, pe=None, mask=_bias_mask(bias, q), transformer_options=transformer_options or {})
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


def reference_kv(dm, reference: torch.Tensor, transformer_options=None, run=call_block, *, references: int = 1,
                 bias=None) -> ReferenceKV:
    """The references' keys and values at every block.

    ``reference``: ``[R, C, h, K*w]``, the clean reference strip (``references`` = K panels) in the
    model's input space and compute dtype (the grid's reference panels). Its RoPE positions are those
    panels': columns ``w .. (1 + K)w - 1``, exactly where joint mode puts them. ``bias``: the
    references' attention among themselves (``core.reference_bias.one_way_parts``; None: all see all).
    ``run(fn, *args)`` runs each block (plain, or :func:`checkpointed` while training)."""
    to = transformer_options if transformer_options is not None else {}
    tokens, ids = dm.process_img(reference, w_offset=reference.shape[-1] // references, transformer_options=to)
    pe = dm.pe_embedder(ids[:1])
    x = dm.img_in(tokens)
    vec_double, vec_single = reference_modulation(dm, x.device, x.dtype)
    double, single = [], []
    for block in dm.double_blocks:
        x, k, v = run(reference_double, block, x, vec_double, pe, to, bias)
        double.append(BlockKV(k, v))
    for block in dm.single_blocks:
        x, k, v = run(reference_single, block, x, vec_single, pe, to, bias)
        single.append(BlockKV(k, v))
    return ReferenceKV(double, single)


