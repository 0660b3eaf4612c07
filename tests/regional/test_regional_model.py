"""Regional prompting on small random FLUX-family models built in-process (real ComfyUI sampling,
conditioning, wrappers and block patches)."""

import pytest
import torch

import ii_harness
from instruct_identity.core import regions as R

pytestmark = pytest.mark.usefixtures("comfy")

H_PX, W_PX = 64, 128            # canvas: 1 x 2 grid of 64 px cells -> latent 8 x 16 -> tokens 4 x 8
LAYOUT = R.grid_layout(W_PX, H_PX, 1, 2, 0, ["region a", "region b"])
A, B = slice(0, 8), slice(8, 16)  # latent columns of the two cells


def _model(family="flux", std=0.15):
    m = ii_harness.tiny_flux(family)
    ii_harness.init_random_(m.model.diffusion_model, seed=0, std=std)   # large enough for effects to show
    return m


def _embeds(shift=0.0):
    g = torch.Generator().manual_seed(5)
    ra, rb = torch.randn(1, 3, 32, generator=g), torch.randn(1, 5, 32, generator=g)
    return ra + shift, rb


def _base(family="flux"):
    pooled = 32 if family in ("flux", "flux_schnell") else None
    return ii_harness.flux_conditioning(pooled_dim=pooled, tokens=4, seed=1)


def _regional(model, family="flux", shift=0.0, mode="blocked", patch=True, **opts):
    from instruct_identity.engine import regional as P

    options = P.RegionalOptions(**{"base_ratio": 0.0, "end": 1.0, **opts})
    cond, texts = P.regional_conditioning(_base(family), list(_embeds(shift)), LAYOUT, mode, pad_text_to=P.text_padding(model))
    if patch:
        model = P.patch_model(model, LAYOUT, texts, mode, options)
    return model, cond


def _plain(shift=0.0, family="flux"):
    """The same prompts simply concatenated: no mask anywhere."""
    base = _base(family)
    ra, rb = _embeds(shift)
    return [[torch.cat([base[0][0], ra, rb], 1), dict(base[0][1])]]


def _sample(model, cond, channels=16, steps=2, latent=(8, 16)):
    import comfy.sample

    lat = torch.zeros(1, channels, *latent)
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(0))
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, lat, disable_pbar=True, seed=0)


@pytest.mark.parametrize("family,channels", [("flux", 16), ("flux2", 128)])
def test_blocked_regions_do_not_see_each_other(family, channels):
    base = _model(family)
    outs = {}
    for shift in (0.0, 1.0):
        m, c = _regional(base, family, shift, "blocked")
        outs[shift] = _sample(m, c, channels)
    d = (outs[0.0] - outs[1.0]).abs()
    assert d[..., A].max() > 1e-3, "region A's prompt must matter to region A"
    assert torch.equal(outs[0.0][..., B], outs[1.0][..., B]), "region B changed when only region A's prompt changed"
    # masks off: the same prompts, concatenated without a mask, do reach region B
    plain = [_sample(base, _plain(s, family), channels) for s in (0.0, 1.0)]
    assert (plain[0] - plain[1])[..., B].abs().max() > 1e-3


def test_conditioning_route_alone_masks_every_block():
    base = _model()
    outs = [_sample(*_regional(base, shift=s, patch=False)) for s in (0.0, 1.0)]
    assert torch.equal(outs[0][..., B], outs[1][..., B])
    assert (outs[0] - outs[1])[..., A].abs().max() > 1e-3


def test_global_mode_lets_regions_share():
    base = _model()
    outs = [_sample(*_regional(base, shift=s, mode="global")) for s in (0.0, 1.0)]
    assert (outs[0] - outs[1])[..., B].abs().max() > 1e-3


class BlockRecorder:
    """A foreign replace patch on a block: records the block's image output (our patch chains to it)."""

    def __init__(self):
        self.img = []
        self.masks = []

    def __deepcopy__(self, memo):   # ModelPatcher.clone deep-copies model_options
        return self

    def __call__(self, args, extra):
        self.masks.append(args.get("attn_mask"))
        out = extra["original_block"](args)
        self.img.append(out["img"].detach().clone())
        return out


def _record(model, cond, kind="double", index=0):
    rec = BlockRecorder()
    m = model.clone()
    m.set_model_patch_replace(rec, "dit", f"{kind}_block", index)
    return rec, m, cond


@pytest.mark.parametrize("mode", ["blocked", "global"])
def test_masked_block_keeps_region_b_image_tokens(mode):
    """In a masked block, region B's image tokens do not change when region A's prompt does (any
    image<->image mode); without masks they do."""
    from instruct_identity.engine import regional as P

    base = _model()
    n_txt = 4 + 3 + 5
    b_tokens = R.token_grid(H_PX, W_PX)
    labels = LAYOUT.labels(*b_tokens).flatten()
    got = []
    for shift in (0.0, 1.0):
        rec, m, c = _record(base, _plain(shift))                  # recorder first: the regional patch chains to it
        cond, texts = P.regional_conditioning(_base(), list(_embeds(shift)), LAYOUT, mode)
        m = P.patch_model(m, LAYOUT, texts, mode, P.RegionalOptions(base_ratio=0.0, end=1.0))
        _sample(m, cond, steps=1)
        assert rec.masks[0] is not None and rec.masks[0].shape[-1] == n_txt + labels.numel()
        got.append(rec.img[0])
    assert torch.equal(got[0][:, labels == 1], got[1][:, labels == 1])
    assert (got[0][:, labels == 0] - got[1][:, labels == 0]).abs().max() > 1e-4
    off = []
    for shift in (0.0, 1.0):
        rec, m, c = _record(base, _plain(shift))
        _sample(m, c, steps=1)
        assert rec.masks[0] is None
        off.append(rec.img[0])
    assert (off[0][:, labels == 1] - off[1][:, labels == 1]).abs().max() > 1e-4


def _hand_mask(n_base, n_a, n_b, labels, mode):
    """The expected mask written out by hand (independent of core.regions)."""
    n_txt = n_base + n_a + n_b
    groups = [0] * n_base + [1] * n_a + [2] * n_b
    img_groups = [int(label) + 1 if int(label) >= 0 else 99 for label in labels]    # background: no text of its own
    L = n_txt + len(img_groups)
    m = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(L):
            ti, tj = i < n_txt, j < n_txt
            gi = groups[i] if ti else img_groups[i - n_txt]
            gj = groups[j] if tj else img_groups[j - n_txt]
            if ti and tj:
                m[i, j] = gi == gj
            elif ti and not tj:                       # text -> image
                m[i, j] = gi == gj or (gi == 0 and mode == "global")
            elif not ti and tj:                       # image -> text
                m[i, j] = gj == 0 or gi == gj
            else:
                m[i, j] = mode == "global" or gi == gj
    return m


@pytest.mark.parametrize("mode", ["blocked", "global"])
def test_patched_block_equals_hand_masked_block(mode):
    """The patched double block computes exactly the block with the hand-written mask."""
    from instruct_identity.engine import regional as P

    base = _model()
    rec, m, _ = _record(base, None)
    cond, texts = P.regional_conditioning(_base(), list(_embeds()), LAYOUT, mode)
    m = P.patch_model(m, LAYOUT, texts, mode, P.RegionalOptions(base_ratio=0.0, end=1.0))
    _sample(m, cond, steps=1)
    labels = LAYOUT.labels(*R.token_grid(H_PX, W_PX)).flatten()
    hand = _hand_mask(4, 3, 5, labels, mode)
    used = rec.masks[0]
    assert torch.equal(used == 0, hand)

    # recompute the block by hand with that mask from the recorded inputs
    captured = {}

    def grab(args, extra):
        captured["args"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in args.items()}
        return extra["original_block"](args)

    m2 = base.clone()
    m2.set_model_patch_replace(grab, "dit", "double_block", 0)
    m2 = P.patch_model(m2, LAYOUT, texts, mode, P.RegionalOptions(base_ratio=0.0, end=1.0))
    _sample(m2, cond, steps=1)
    a = captured["args"]
    block = base.model.diffusion_model.double_blocks[0]
    bias = torch.zeros(hand.shape).masked_fill(~hand, float("-inf"))
    img, _ = block(img=a["img"].clone(), txt=a["txt"].clone(), vec=a["vec"], pe=a["pe"], attn_mask=bias, transformer_options={})
    assert torch.allclose(img, rec.img[0], atol=1e-5)


def test_override_equals_hand_computed_blended_attention():
    """Attention inside a masked block: masked softmax for all rows, and for image rows
    ``(1 - r) * masked + r * softmax over [base text | image]``."""
    from comfy.ldm.modules.attention import attention_pytorch
    from instruct_identity.engine import regional as P

    text = R.TextLayout(2, (3, 1))
    labels = torch.tensor([0, 0, 1, -1])
    holder = P.RegionalHolder(R.grid_layout(32, 16, 1, 2, 0, ["a", "b"]), [text], "blocked",
                              P.RegionalOptions(base_ratio=0.3, end=1.0), frozenset({0}), frozenset({0}))
    state = P.CallState(holder, text, 1, 4)
    state._cache[("bool", 10, "cpu")] = R.joint_attention_mask(labels, text, "blocked")   # a labelling of our own
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 10, 8, generator=g) for _ in range(3))
    flag = {}
    override = P._make_override(state, 10, None, flag)
    out = override(attention_pytorch, q, k, v, 2, mask=state.additive(10, torch.float32, "cpu"), skip_reshape=True,
                   _inside_attn_wrapper=True, transformer_options={})
    assert flag["fired"]

    hand = _hand_mask(2, 3, 1, [0, 0, 1, -1], "blocked")
    scale = 8 ** -0.5
    logits = (q @ k.transpose(-1, -2)) * scale
    masked = logits.masked_fill(~hand, float("-inf")).softmax(-1) @ v              # [1, 2, 10, 8]
    keys = [0, 1, 6, 7, 8, 9]                                                         # base text + image
    base = (logits[:, :, 6:, keys]).softmax(-1) @ v[:, :, keys]
    expect = masked.clone()
    expect[:, :, 6:] = 0.7 * masked[:, :, 6:] + 0.3 * base
    expect = expect.transpose(1, 2).reshape(1, 10, 16)
    assert torch.allclose(out, expect, atol=1e-5)


def test_window_outside_is_exactly_the_base_prompt():
    base = _model()
    m, c = _regional(base, start=0.5, end=1.0)           # one step at fraction 0: outside the window
    only_base = _sample(base, _base(), steps=1)
    assert torch.equal(_sample(m, c, steps=1), only_base)
    m, c = _regional(base, start=0.0, end=0.5)
    assert not torch.equal(_sample(m, c, steps=1), only_base)


def test_base_ratio_blends_and_fallback_runs():
    from instruct_identity.engine import regional as P

    base = _model()
    m0, c = _regional(base)
    m3, _ = _regional(base, base_ratio=0.3)
    out0, out3 = _sample(m0, c), _sample(m3, c)
    assert not torch.equal(out0, out3) and torch.isfinite(out3).all()
    holder = m3.model_options["transformer_options"][P.PATCH_KEY]
    assert holder.override_works is True                 # ComfyUI 0.3.75 honours the attention override
    m4, _ = _regional(base, base_ratio=0.3)
    m4.model_options["transformer_options"][P.PATCH_KEY].override_works = False   # as if it did not
    out4 = _sample(m4, c)
    assert torch.isfinite(out4).all() and not torch.equal(out4, out0)


def test_block_selection_and_foreign_patches_are_kept():
    from instruct_identity.engine import regional as P

    assert P.parse_blocks("all", 19, "d") == frozenset(range(19))
    assert P.parse_blocks("none", 19, "d") == frozenset()
    assert P.parse_blocks("0-3, 7", 19, "d") == frozenset({0, 1, 2, 3, 7})
    assert P.parse_blocks("every 5", 19, "d") == frozenset({0, 5, 10, 15})
    assert P.parse_blocks("every 4 from 2, 40", 19, "d") == frozenset({2, 6, 10, 14, 18})
    with pytest.raises(Exception):
        P.parse_blocks("most", 19, "d")
    assert P.step_fraction(torch.tensor([1.0]), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])) == 0.0
    assert P.step_fraction(torch.tensor([0.5]), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])) == 0.5
    assert P.step_fraction(torch.tensor([0.6]), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])) == 0.25

    base = _model()
    rec, m, _ = _record(base, None, "single", 0)
    cond, texts = P.regional_conditioning(_base(), list(_embeds()), LAYOUT, "blocked")
    m = P.patch_model(m, LAYOUT, texts, "blocked", P.RegionalOptions(base_ratio=0.0, end=1.0, single_blocks="none"))
    _sample(m, cond, steps=1)
    assert rec.masks == [None]                            # unselected block: called, unmasked
    m = P.patch_model(m, LAYOUT, texts, "blocked", P.RegionalOptions(base_ratio=0.0, end=1.0))   # patch again: replaces ours
    _sample(m, cond, steps=1)
    assert len(rec.masks) == 2 and rec.masks[1] is not None
    assert len(m.get_wrappers("diffusion_model", P.PATCH_KEY)) == 1


def test_node_function_encodes_regions_with_clip():
    from instruct_identity.engine import regional as P
    from instruct_identity.nodes.regional import apply_regional

    class FakeClip:
        def __init__(self):
            self.calls = []

        def tokenize(self, text):
            self.calls.append(text)
            return text

        def encode_from_tokens_scheduled(self, tokens):
            g = torch.Generator().manual_seed(len(tokens))
            return [[torch.randn(1, 2 + len(tokens) % 3, 32, generator=g), {}]]

    clip = FakeClip()
    layout = R.grid_layout(W_PX, H_PX, 1, 2, 0, ["same", "same"], background_prompt="")
    model, cond = apply_regional(_model(), clip, _base(), layout, "global", P.RegionalOptions())
    assert clip.calls == ["same"]                          # identical prompts encoded once
    n = cond[0][0].shape[1]
    assert cond[0][1]["attention_mask"].shape == (1, n + 32, n + 32)
    assert cond[0][1]["attention_mask_img_shape"] == (4, 8)
    assert torch.isfinite(_sample(model, cond)).all()


def test_sampling_far_larger_than_the_layout_is_refused_by_name(monkeypatch):
    """The patch's masks grow with the sampled latent, not the layout: over the token limit it says so."""
    from instruct_identity.core import limits
    from instruct_identity.core.errors import InputError

    m, c = _regional(_model())
    tokens = 4 + 3 + 5 + 4 * 8                       # base + region texts + the layout-sized image grid
    monkeypatch.setattr(limits, "MAX_REGIONAL_TOKENS", tokens)
    _sample(m, c)                                    # at the layout's size: fine
    with pytest.raises(InputError, match="II_MAX_REGIONAL_TOKENS") as e:
        _sample(m, c, latent=(16, 32))               # 4x the image tokens
    assert e.value.input_name == "latent"


def _sample_noise(model, cond, noise, steps=2):
    import comfy.sample

    lat = torch.zeros_like(noise)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, lat, disable_pbar=True, seed=0)


def _swapped_sheets(positions):
    """Sheet [a | b] and the sheet with the cells' prompts and noise swapped, blocked attention."""
    from instruct_identity.engine import regional as P

    base = _model()
    ra, rb = _embeds()
    noise = torch.randn(1, 16, 8, 16, generator=torch.Generator().manual_seed(3))
    swapped_noise = torch.cat([noise[..., B], noise[..., A]], dim=-1)
    outs = []
    for embeds, n in (([ra, rb], noise), ([rb, ra], swapped_noise)):
        cond, texts = P.regional_conditioning(_base(), embeds, LAYOUT, "blocked")
        m = P.patch_model(base, LAYOUT, texts, "blocked", P.RegionalOptions(base_ratio=0.0, end=1.0, positions=positions))
        outs.append(_sample_noise(m, cond, n))
    return outs


def test_cell_positions_draw_a_right_cell_like_a_left_cell():
    """positions='cell' with blocked attention: each cell is a picture of its own, so swapping the two
    cells' prompts and noise swaps the drawn cells exactly; with the sheet's positions it does not."""
    out, swapped = _swapped_sheets("cell")
    scale = out.abs().max()
    assert (swapped[..., A] - out[..., B]).abs().max() < 1e-5 * scale
    assert (swapped[..., B] - out[..., A]).abs().max() < 1e-5 * scale
    out, swapped = _swapped_sheets("sheet")
    assert (swapped[..., A] - out[..., B]).abs().max() > 1e-2 * scale


def test_cell_positions_patch_is_replaced_not_stacked_and_foreign_ones_stay():
    from instruct_identity.engine import regional as P

    def foreign(inputs):
        return inputs

    m = _model()
    m.set_model_patch(foreign, "post_input")
    _, texts = P.regional_conditioning(_base(), list(_embeds()), LAYOUT, "blocked")
    for _ in range(2):
        m = P.patch_model(m, LAYOUT, texts, "blocked", P.RegionalOptions(positions="cell"))
    got = m.model_options["transformer_options"]["patches"]["post_input"]
    assert got[0] is foreign and len(got) == 2
    m = P.patch_model(m, LAYOUT, texts, "blocked", P.RegionalOptions(positions="sheet"))
    assert m.model_options["transformer_options"]["patches"]["post_input"] == [foreign]
    with pytest.raises(Exception, match="positions"):
        P.RegionalOptions(positions="grid").validate()
