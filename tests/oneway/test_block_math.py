"""One-way reference attention, the math: ``engine.oneway``'s blocks against ComfyUI's own blocks, and
the whole one-way forward against a second, independent formulation of the same attention pattern.

The independent formulation (:func:`masked_full_grid`) runs the whole H x 2W grid as ONE sequence,
the way joint mode does, and gets one-way attention from an attention mask (reference queries see
only reference keys) and per-token modulation (reference tokens: timestep 0, guidance 1, zero pooled
vector). It uses the model's layers and ComfyUI's RoPE, and nothing of ``engine.oneway``."""

import ii_harness
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from instruct_identity.core import layout

pytestmark = pytest.mark.usefixtures("comfy")

H, W = 4, 6


def _model(family="flux", seed=0, std=0.15):
    """A tiny FLUX whose attention matters (std 0.02, the harness default, barely mixes tokens)."""
    m = ii_harness.tiny_flux(family, seed=seed)
    ii_harness.init_random_(m.model.diffusion_model, seed=seed, std=std)
    return m


def _pe(dm, n_txt, n_img, batch):
    ids = torch.zeros(batch, n_txt + n_img, len(dm.params.axes_dim))
    ids[:, n_txt:, 1] = torch.arange(n_img) // 4
    ids[:, n_txt:, 2] = torch.arange(n_img) % 4
    return dm.pe_embedder(ids)


@pytest.mark.parametrize("family", ["flux", "flux2"])
def test_blocks_without_a_reference_are_comfys_blocks_bit_for_bit(family):
    """The one definition of the block math reproduces ComfyUI's DoubleStreamBlock/SingleStreamBlock."""
    from instruct_identity.engine import oneway

    dm = _model(family).model.diffusion_model
    g = torch.Generator().manual_seed(1)
    d = dm.hidden_size
    img, txt, raw = torch.randn(2, 12, d, generator=g), torch.randn(2, 5, d, generator=g), torch.randn(2, d, generator=g)
    pe = _pe(dm, 5, 12, 2)
    if dm.params.global_modulation:
        vec_d = (dm.double_stream_modulation_img(raw), dm.double_stream_modulation_txt(raw))
        vec_s = dm.single_stream_modulation(raw)[0]
    else:
        vec_d = vec_s = raw
    ours = oneway.double_block(dm.double_blocks[0], img, txt, vec_d, pe)
    theirs = dm.double_blocks[0](img=img.clone(), txt=txt.clone(), vec=vec_d, pe=pe)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    x = torch.cat([txt, img], 1)
    assert torch.equal(oneway.single_block(dm.single_blocks[0], x, vec_s, pe),
                       dm.single_blocks[0](x.clone(), vec=vec_s, pe=pe))
    assert torch.equal(x, torch.cat([txt, img], 1))  # out of place: the inputs are untouched


# --------------------------------------------------------------------------------------------------
# the independent formulation


def _mods(dm, block, vec, kind):
    """Modulation outputs of ``block`` for the raw vector ``vec`` (per-block or FLUX.2's global)."""
    if kind == "double":
        if block.modulation:
            return block.img_mod(vec) + block.txt_mod(vec)
        return dm.double_stream_modulation_img(vec) + dm.double_stream_modulation_txt(vec)
    return block.modulation(vec)[0] if block.modulation else dm.single_stream_modulation(vec)[0]


def _per_token(m_tgt, m_ref, is_ref):
    """shift/scale/gate per token: the reference's where ``is_ref``, the target's elsewhere."""
    pick = lambda a, b: torch.where(is_ref[None, :, None], b.expand(a.shape[0], is_ref.shape[0], -1),
                                    a.expand(a.shape[0], is_ref.shape[0], -1))
    return type("Mod", (), {"shift": pick(m_tgt.shift, m_ref.shift), "scale": pick(m_tgt.scale, m_ref.scale),
                            "gate": pick(m_tgt.gate, m_ref.gate)})


def _heads(qkv, heads):
    return qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)


def _stream(norm, attn, x, mod, heads):
    q, k, v = _heads(attn.qkv(norm(x) * (1 + mod.scale) + mod.shift), heads)
    q, k = attn.norm(q, k, v)
    return q, k, v


def _sdpa(q, k, v, pe, allowed):
    from comfy.ldm.flux.math import apply_rope

    q, k = apply_rope(q, k, pe)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _embed(dm, t, guidance, y, batch):
    from comfy.ldm.flux.layers import timestep_embedding

    vec = dm.time_in(timestep_embedding(t, 256))
    if dm.params.guidance_embed:
        vec = vec + dm.guidance_in(timestep_embedding(guidance, 256))
    if dm.vector_in is not None:
        vec = vec + dm.vector_in(y if y is not None else torch.zeros(batch, dm.params.vec_in_dim))
    return vec


@torch.no_grad()
def masked_full_grid(dm, grid, t, context, y, guidance):
    """One-way attention the joint way: the whole grid in one sequence, an attention mask and
    per-token modulation. Returns the velocity on the target half."""
    b = grid.shape[0]
    img, img_ids = dm.process_img(grid)
    w_tokens = grid.shape[-1] // dm.patch_size
    is_ref_img = img_ids[0, :, 2] >= w_tokens // 2
    txt = dm.txt_in(context)
    n_txt = txt.shape[1]
    txt_ids = torch.zeros(b, n_txt, len(dm.params.axes_dim))
    if len(dm.params.axes_dim) == 4:
        txt_ids[:, :, 3] = torch.arange(n_txt, dtype=torch.float32)
    pe = dm.pe_embedder(torch.cat([txt_ids, img_ids], 1))
    is_ref = torch.cat([torch.zeros(n_txt, dtype=torch.bool), is_ref_img])
    allowed = ~(is_ref[:, None] & ~is_ref[None, :])           # reference queries: reference keys only
    vec_t = _embed(dm, t, guidance, y, b)
    vec_r = _embed(dm, torch.zeros(1), torch.ones(1), None, 1)
    x = dm.img_in(img)
    heads = dm.num_heads
    for blk in dm.double_blocks:
        ti1, ti2, tt1, tt2 = _mods(dm, blk, vec_t, "double")
        ri1, ri2, _, _ = _mods(dm, blk, vec_r, "double")
        m1, m2 = _per_token(ti1, ri1, is_ref_img), _per_token(ti2, ri2, is_ref_img)
        iq, ik, iv = _stream(blk.img_norm1, blk.img_attn, x, m1, heads)
        tq, tk, tv = _stream(blk.txt_norm1, blk.txt_attn, txt, tt1, heads)
        a = _sdpa(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2), pe, allowed)
        x = x + m1.gate * blk.img_attn.proj(a[:, n_txt:])
        x = x + m2.gate * blk.img_mlp(blk.img_norm2(x) * (1 + m2.scale) + m2.shift)
        txt = txt + tt1.gate * blk.txt_attn.proj(a[:, :n_txt])
        txt = txt + tt2.gate * blk.txt_mlp(blk.txt_norm2(txt) * (1 + tt2.scale) + tt2.shift)
    seq = torch.cat([txt, x], 1)
    for blk in dm.single_blocks:
        m = _per_token(_mods(dm, blk, vec_t, "single"), _mods(dm, blk, vec_r, "single"), is_ref)
        qkv, mlp = torch.split(blk.linear1(blk.pre_norm(seq) * (1 + m.scale) + m.shift),
                               [3 * blk.hidden_size, blk.mlp_hidden_dim_first], dim=-1)
        q, k, v = _heads(qkv, heads)
        q, k = blk.norm(q, k, v)
        seq = seq + m.gate * blk.linear2(torch.cat([_sdpa(q, k, v, pe, allowed), blk.mlp_act(mlp)], 2))
    out = dm.final_layer(seq[:, n_txt:], vec_t)
    out = rearrange(out, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=grid.shape[-2] // dm.patch_size, w=w_tokens,
                    ph=dm.patch_size, pw=dm.patch_size)
    return out[..., layout.Layout.of(grid).target]


def _inputs(family, batch=2, refs=1, seed=3):
    g = torch.Generator().manual_seed(seed)
    c = 128 if family == "flux2" else 16
    grid = layout.concat(torch.randn(batch, c, H, W, generator=g), torch.randn(refs, c, H, W, generator=g))
    t = torch.tensor([0.35, 0.8])[:batch]
    context = torch.randn(batch, 7, 32, generator=g)
    y = None if family == "flux2" else torch.randn(batch, 32, generator=g)
    return grid, t, context, y, torch.full((batch,), 3.5)


@pytest.mark.parametrize("family", ["flux", "flux2"])
@pytest.mark.parametrize("refs", [1, 2])
def test_one_way_forward_equals_the_masked_full_grid_formulation(family, refs):
    from comfy.patcher_extension import WrappersMP
    from instruct_identity.engine import oneway

    dm = _model(family).model.diffusion_model
    grid, t, context, y, guidance = _inputs(family, refs=refs)
    expected = masked_full_grid(dm, grid, t, context, y, guidance)

    holder = oneway.OneWayPatch(grid[:refs, :, :, W:], cache=None)   # the sampler's cached path
    to = {"wrappers": {WrappersMP.DIFFUSION_MODEL: {oneway.PATCH_KEY: [holder.diffusion_model]}}}
    with torch.no_grad():
        out = dm(grid, t, context, y=y, guidance=guidance, transformer_options=to)
    torch.testing.assert_close(out[..., :W], expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(out[..., W:], torch.zeros_like(out[..., W:]))   # velocity 0 keeps the clean reference
    assert holder.computed == 1

    # control: the same grid through the unpatched model (joint attention) is a different function
    with torch.no_grad():
        joint = dm(grid, t, context, y=y, guidance=guidance)
    assert (joint[..., :W] - expected).abs().max() > 1e-2


def test_keys_and_values_computed_once_serve_every_step_prompt_and_target():
    """Reused K/V are exact at later calls with another timestep, prompt, pooled vector, guidance and
    target half: the reference path depends on none of them (the masked formulation recomputes the
    reference tokens at every call)."""
    from comfy.patcher_extension import WrappersMP
    from instruct_identity.engine import oneway

    dm = _model().model.diffusion_model
    grid, t, context, y, guidance = _inputs("flux")
    holder = oneway.OneWayPatch(grid[:1, :, :, W:], cache=None)
    to = lambda: {"wrappers": {WrappersMP.DIFFUSION_MODEL: {oneway.PATCH_KEY: [holder.diffusion_model]}}}
    g = torch.Generator().manual_seed(9)
    for i in range(3):
        step = grid.clone()
        step[..., :W] = torch.randn(step[..., :W].shape, generator=g)
        args = (torch.rand(2, generator=g), torch.randn(context.shape, generator=g), torch.randn(y.shape, generator=g),
                torch.full((2,), 1.0 + i))
        with torch.no_grad():
            out = dm(step, args[0], args[1], y=args[2], guidance=args[3], transformer_options=to())
        torch.testing.assert_close(out[..., :W], masked_full_grid(dm, step, *args), rtol=1e-4, atol=1e-4)
    assert holder.computed == 1
    other = grid.clone()
    other[..., W:] += 0.5                                          # and the reference does condition the target
    assert (masked_full_grid(dm, other, t, context, y, guidance) - masked_full_grid(dm, grid, t, context, y, guidance)
            ).abs().max() > 1e-2


def test_attention_mask_from_another_pack_keeps_the_reference_visible():
    """A block patch that passes an attention mask over [text | target] keys: the one-way block widens
    it so every query still sees the reference (what the masked formulation does with that mask)."""
    from instruct_identity.engine import oneway

    dm = _model().model.diffusion_model
    blk = dm.double_blocks[0]
    g = torch.Generator().manual_seed(5)
    d, n_txt, n_img, n_ref = dm.hidden_size, 5, 12, 6
    img, txt, vec = torch.randn(1, n_img, d, generator=g), torch.randn(1, n_txt, d, generator=g), torch.randn(1, d, generator=g)
    pe = _pe(dm, n_txt, n_img, 1)
    ref = oneway.BlockKV(torch.randn(1, dm.num_heads, n_ref, d // dm.num_heads, generator=g),
                         torch.randn(1, dm.num_heads, n_ref, d // dm.num_heads, generator=g))
    keep = torch.ones(n_txt + n_img, n_txt + n_img, dtype=torch.bool)
    keep[:, n_txt:n_txt + 4] = False                               # nobody may look at the first 4 target tokens
    additive = torch.zeros(keep.shape).masked_fill(~keep, -10000.0)  # the kind of mask FLUX blocks get
    out = oneway.double_block(blk, img, txt, vec, pe, additive[None], ref)
    plain = oneway.double_block(blk, img, txt, vec, pe, None, ref)
    assert (out[0] - plain[0]).abs().max() > 1e-3                  # the mask did act
    # the same attention written out: keys [txt | img | ref], the ref columns allowed for every query
    from comfy.ldm.flux.math import apply_rope

    m1, m2 = blk.img_mod(vec)
    tq, tk, tv = _stream(blk.txt_norm1, blk.txt_attn, txt, blk.txt_mod(vec)[0], dm.num_heads)
    iq, ik, iv = _stream(blk.img_norm1, blk.img_attn, img, m1, dm.num_heads)
    q, k = apply_rope(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), pe)
    allowed = torch.cat([keep, torch.ones(n_txt + n_img, n_ref, dtype=torch.bool)], 1)
    a = F.scaled_dot_product_attention(q, torch.cat([k, ref.k], 2), torch.cat([tv, iv, ref.v], 2), attn_mask=allowed)
    a = a.transpose(1, 2).reshape(1, n_txt + n_img, d)
    expected = img + m1.gate * blk.img_attn.proj(a[:, n_txt:])
    expected = expected + m2.gate * blk.img_mlp(blk.img_norm2(expected) * (1 + m2.scale) + m2.shift)
    torch.testing.assert_close(out[0], expected, rtol=1e-4, atol=1e-4)
