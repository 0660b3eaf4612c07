"""Several references on one grid ``[target | ref_1 | ... | ref_K]``, a strength per reference and
region binding: the layout, the attention bias, and the sampler patch on small random FLUX models in
joint and one-way attention."""

import math

import pytest
import torch

import ii_harness
from instruct_identity.core import layout, limits, reference_bias as rb
from instruct_identity.core.errors import InputError

H, W = 4, 6   # latent rows, columns per panel (patch 2: 2 x 3 tokens per panel)


# --------------------------------------------------------------------------------------------------
# layout


def test_concat_of_k_references_and_split_inverts():
    tgt = torch.randn(2, 4, H, W)
    refs = [torch.randn(1, 4, H, W), torch.randn(2, 4, H, W), torch.randn(1, 4, H, W)]
    grid = layout.concat(tgt, refs)
    assert grid.shape == (2, 4, H, 4 * W)
    t, rs = layout.split_references(grid, 3)
    assert torch.equal(t, tgt)
    assert torch.equal(rs[0], refs[0].expand(2, -1, -1, -1)) and torch.equal(rs[1], refs[1])
    t2, strip = layout.split(grid, references=3)
    assert torch.equal(strip, torch.cat(rs, dim=-1))
    lay = layout.Layout.of(grid, references=3)
    assert (lay.width, lay.references, lay.grid_width) == (W, 3, 4 * W)
    assert lay.reference_slot(2) == slice(3 * W, 4 * W)
    mu = layout.target_mask(lay)
    assert mu[..., :W].eq(1).all() and mu[..., W:].eq(0).all()


def test_one_reference_is_the_diptych_of_before():
    tgt, ref = torch.randn(1, 4, H, W), torch.randn(1, 4, H, W)
    assert torch.equal(layout.concat(tgt, ref), layout.concat(tgt, [ref]))
    assert layout.Layout.of(torch.zeros(1, 4, H, 2 * W)) == layout.Layout(H, W)
    assert layout.Layout(H, W).token_count(2) == 2 * 6


def test_with_reference_fills_every_reference_panel_and_infers_k():
    grid = torch.randn(2, 4, H, 3 * W)
    strip = torch.randn(1, 4, H, 2 * W)
    out = layout.with_reference(grid, strip)
    assert torch.equal(out[..., :W], grid[..., :W]) and torch.equal(out[..., W:], strip.expand(2, -1, -1, -1))
    with pytest.raises(InputError, match="latent"):
        layout.with_reference(torch.randn(1, 4, H, 3 * W + 2), strip)


def test_reference_count_and_grid_tokens_are_bounded():
    with pytest.raises(InputError, match="references.*more than"):
        layout.check_references(limits.MAX_REFERENCES + 1)
    with pytest.raises(InputError, match="at least one"):
        layout.check_references(0)
    with pytest.raises(InputError, match="references"):
        layout.concat(torch.zeros(1, 4, 2, 2), [torch.zeros(1, 4, 2, 2)] * (limits.MAX_REFERENCES + 1))
    big = layout.Layout(128, 128, 3)   # 1024 px target + 3 references: 4 x 4096 tokens
    assert layout.check_grid_tokens(big, 2) == 16384
    with pytest.raises(InputError, match="image tokens"):
        layout.check_grid_tokens(layout.Layout(128, 128, 8), 2)
    with pytest.raises(InputError, match="multiple of 3"):
        layout.Layout.of(torch.zeros(1, 4, 2, 7), references=2)


# --------------------------------------------------------------------------------------------------
# the attention bias


def _owners(text, rows, cols, k):
    """-2 text, -1 target, j reference j, for every token of [text | grid]."""
    panel = torch.arange((1 + k) * cols).repeat(rows) // cols
    return torch.cat([torch.full((text,), -2), panel - 1])


def test_neutral_controls_build_no_bias():
    assert rb.bias([rb.ReferenceControl(), rb.ReferenceControl(1.0)], text=3, rows=2, cols=3) is None


def test_strength_adds_log_s_on_the_references_keys_for_every_other_query():
    text, rows, cols = 3, 2, 3
    b = rb.bias([rb.ReferenceControl(1.0), rb.ReferenceControl(2.0)], text=text, rows=rows, cols=cols)[0]
    own = _owners(text, rows, cols, 2)
    q_other, k_ref2 = own != 1, own == 1
    assert torch.allclose(b[q_other][:, k_ref2], torch.full_like(b[q_other][:, k_ref2], math.log(2.0)))
    assert b[:, ~k_ref2].eq(0).all() and b[own == 1][:, k_ref2].eq(0).all()   # ref 2 reads itself unbiased
    zero = rb.bias([rb.ReferenceControl(0.0)], text=text, rows=rows, cols=cols)[0]
    own1 = _owners(text, rows, cols, 1)
    assert zero[own1 != 0][:, own1 == 0].eq(rb.BLOCKED).all()
    with pytest.raises(InputError, match="strength of reference 1"):
        rb.bias([rb.ReferenceControl(-1.0)], text=text, rows=rows, cols=cols)


def test_region_binding_blocks_every_direct_path_between_two_characters():
    text, rows, cols = 2, 2, 4
    left = torch.zeros(8, 16)
    left[:, :8] = 1
    b = rb.bias([rb.ReferenceControl(region=left), rb.ReferenceControl(region=1 - left)],
                text=text, rows=rows, cols=cols)[0]
    own = _owners(text, rows, cols, 2)
    col = torch.cat([torch.full((text,), -1), torch.arange(3 * cols).repeat(rows)])
    tgt_left, tgt_right = (own == -1) & (col < 2), (own == -1) & (col >= 2)
    blocked = b == rb.BLOCKED
    assert blocked[tgt_left][:, own == 1].all() and blocked[tgt_right][:, own == 0].all()   # the other reference
    assert not blocked[tgt_left][:, own == 0].any() and not blocked[tgt_right][:, own == 1].any()
    assert blocked[own == 0][:, own == 1].all() and blocked[own == 1][:, own == 0].all()    # references apart
    assert blocked[tgt_left][:, tgt_right].all() and blocked[tgt_right][:, tgt_left].all()  # the two regions apart
    assert blocked[own == -2][:, own >= 0].all()         # the shared text cannot carry a reference over
    assert not blocked[:, own == -2].any()              # everyone reads the text
    assert blocked[own == 0][:, tgt_right].all() and not blocked[own == 0][:, tgt_left].any()


def test_an_empty_region_and_the_bias_size_are_refused():
    with pytest.raises(InputError, match="covers no"):
        rb.bias([rb.ReferenceControl(region=torch.zeros(8, 8))], text=1, rows=2, cols=2)
    side = int(math.sqrt(limits.MAX_REFERENCE_BIAS_TOKENS / 2)) + 2
    with pytest.raises(InputError, match="attention bias over"):
        rb.bias([rb.ReferenceControl(0.5)], text=0, rows=side, cols=side)


# --------------------------------------------------------------------------------------------------
# the sampler patch on small random FLUX models

pytestmark_comfy = pytest.mark.usefixtures("comfy")


def _model(seed=0, single=1, double=1):
    import comfy.model_patcher
    import comfy.supported_models as sm

    from instruct_identity.engine import synthetic

    ii_harness.setup_comfy()
    cfg = synthetic.tiny_flux_config("flux", double=double, single=single)
    mc = sm.Flux(cfg)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    synthetic.init_random_(model.diffusion_model, seed=seed, std=0.2)
    model.diffusion_model.float().eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def _refs(k, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 16, H, W, generator=g) for _ in range(k)]


def _sample(model, refs, controls=None, mode="joint", seed=3, steps=2, noise=None):
    from instruct_identity.engine.sampling import sample_identity

    pos = ii_harness.flux_conditioning(pooled_dim=32, seed=1)
    neg = ii_harness.flux_conditioning(pooled_dim=32, seed=2)
    grid = sample_identity(model, refs if len(refs) > 1 else refs[0], pos, neg, seed=seed, steps=steps,
                           reference_attention=mode, controls=controls, noise=noise)
    return layout.split_references(grid, len(refs))


@pytest.mark.usefixtures("comfy")
@pytest.mark.parametrize("mode", ["joint", "one_way"])
def test_k_references_sample_and_stay_clean(mode):
    refs = _refs(3)
    target, out_refs = _sample(_model(), refs, mode=mode)
    assert target.shape == (1, 16, H, W) and torch.isfinite(target).all()
    for a, b in zip(out_refs, refs):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.usefixtures("comfy")
@pytest.mark.parametrize("mode", ["joint", "one_way"])
def test_strength_one_is_exactly_the_unbiased_path(mode):
    model, refs = _model(), _refs(2)
    plain, _ = _sample(model, refs, None, mode)
    ones, _ = _sample(model, refs, [rb.ReferenceControl(1.0), rb.ReferenceControl(1.0)], mode)
    assert torch.equal(plain, ones)
    other, _ = _sample(model, refs, [rb.ReferenceControl(1.0), rb.ReferenceControl(1.5)], mode)
    assert not torch.allclose(plain, other, atol=1e-4)   # and a strength other than 1 does act


@pytest.mark.usefixtures("comfy")
@pytest.mark.parametrize("mode", ["joint", "one_way"])
def test_strength_zero_ignores_a_reference_as_if_it_were_not_there(mode):
    model, refs = _model(), _refs(2)
    tn = torch.randn(1, 16, H, W, generator=torch.Generator().manual_seed(5))   # the same target noise
    n1, n2 = torch.cat([tn, torch.zeros(1, 16, H, W)], -1), torch.cat([tn, torch.zeros(1, 16, H, 2 * W)], -1)
    alone, _ = _sample(model, refs[:1], None, mode, noise=n1)
    ignored, _ = _sample(model, refs, [rb.ReferenceControl(1.0), rb.ReferenceControl(0.0)], mode, noise=n2)
    assert torch.allclose(alone, ignored, atol=1e-4, rtol=1e-4)
    seen, _ = _sample(model, refs, None, mode, noise=n2)
    assert not torch.allclose(alone, seen, atol=1e-2)


@pytest.mark.usefixtures("comfy")
@pytest.mark.parametrize("mode", ["joint", "one_way"])
def test_a_bound_region_does_not_see_the_other_characters_reference(mode):
    """One attention layer: the left half of the target (bound to reference 1) is a function of the
    text, itself and reference 1 only; changing reference 2 and the right half's noise leaves it as it is."""
    model, L = _model(double=1, single=0), 2
    left = torch.zeros(H * 8, W * 8)   # pixels; the first token column (latent columns 0-1) is "left"
    left[:, :16] = 1
    controls = [rb.ReferenceControl(region=left), rb.ReferenceControl(region=1 - left)]
    g = torch.Generator().manual_seed(11)
    noise = torch.randn(1, 16, H, 3 * W, generator=g)
    refs = _refs(2)
    a, _ = _sample(model, refs, controls, mode, steps=1, noise=noise)
    noise2 = noise.clone()
    noise2[..., L: W] = torch.randn(1, 16, H, W - L, generator=g)
    refs2 = [refs[0], torch.randn(1, 16, H, W, generator=g)]
    b, _ = _sample(model, refs2, controls, mode, steps=1, noise=noise2)
    assert torch.allclose(a[..., : L], b[..., : L], atol=1e-5)
    assert not torch.allclose(a[..., L:], b[..., L:], atol=1e-3)
    c, _ = _sample(model, refs2, None, mode, steps=1, noise=noise2)    # unbound: reference 2 reaches the left
    d, _ = _sample(model, refs, None, mode, steps=1, noise=noise)
    assert not torch.allclose(c[..., : L], d[..., : L], atol=1e-4)


@pytest.mark.usefixtures("comfy")
def test_bad_controls_are_input_errors():
    from instruct_identity.engine.patch import patch_model

    model, refs = _model(), _refs(2)
    with pytest.raises(InputError, match="2 references"):
        patch_model(model, refs, "joint", [rb.ReferenceControl()])
    with pytest.raises(InputError, match="strength of reference 2"):
        patch_model(model, refs, "joint", [rb.ReferenceControl(), rb.ReferenceControl(float("nan"))])
    with pytest.raises(InputError, match="reference 2"):
        patch_model(model, [refs[0], torch.zeros(1, 16, H, W + 2)], "joint")
