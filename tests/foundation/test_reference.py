"""prepare_reference (the Reference node's logic) with a real (random-weight) FLUX VAE: both routes,
sizes, batches and every bad input with its message."""

import pytest
import torch

import ii_harness
from instruct_identity.core import layout
from instruct_identity.core.errors import InputError

pytestmark = pytest.mark.usefixtures("comfy")


def _image(b=1, h=40, w=24, c=3, seed=0):
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def flux():
    return ii_harness.tiny_flux("flux")


@pytest.fixture(scope="module")
def fill():
    return ii_harness.tiny_flux("flux_fill")


def _prep(model, vae, image, **kw):
    from instruct_identity.nodes.reference import prepare_reference

    return prepare_reference(model, vae, ii_harness.flux_conditioning(guidance=None), image, **kw)


def test_lora_route_latent_mask_and_patch(flux, flux_vae):
    from instruct_identity.engine.patch import reference_patch_of

    img = _image(h=32, w=48)
    p = _prep(flux, flux_vae, img, width=0, height=0, batch_size=2)
    assert p.route == "lora" and (p.width, p.height) == (48, 32)
    samples = p.latent["samples"]
    assert samples.shape == (2, 16, 4, 12)
    z_ref = flux_vae.encode(img)
    target, ref = layout.split(samples)
    torch.testing.assert_close(ref, z_ref.expand(2, -1, -1, -1))
    assert target.abs().sum() == 0
    assert torch.equal(p.latent["noise_mask"], layout.target_mask(layout.Layout(4, 6)))
    holder = reference_patch_of(p.model)
    assert holder is not None and torch.equal(holder.reference, z_ref)
    assert reference_patch_of(flux) is None
    # the negative defaults to a zeroed prompt and the route's guidance is applied when absent
    assert p.negative[0][0].abs().sum() == 0
    assert p.positive[0][1]["guidance"] == 3.5
    assert any("guidance: the prompt carried none, set to 3.5" in n for n in p.notes)


def test_guidance_in_the_prompt_is_kept_and_an_explicit_value_wins(flux, flux_vae):
    from instruct_identity.nodes.reference import prepare_reference

    cond = ii_harness.flux_conditioning(guidance=2.0)
    assert prepare_reference(flux, flux_vae, cond, _image()).positive[0][1]["guidance"] == 2.0
    p = prepare_reference(flux, flux_vae, cond, _image(), guidance=4.5)
    assert p.positive[0][1]["guidance"] == 4.5 and p.negative[0][1]["guidance"] == 4.5


def test_sizes_are_rounded_and_the_node_says_so(flux, flux_vae):
    p = _prep(flux, flux_vae, _image(h=40, w=24), width=50, height=0, fit="crop")
    assert (p.width, p.height) == (48, 48)  # 50 -> 48; height 40 -> 48 (nearest multiple of 16)
    assert any("width: 50 px rounded to 48 px" in n for n in p.notes)
    assert any("height: 40 px rounded to 48 px" in n for n in p.notes)
    assert p.latent["samples"].shape[-2:] == (6, 12)
    assert "48x48" in p.info


def test_fill_route_conditioning_carries_the_diptych_and_mask(fill, flux_vae):
    import comfy.model_management

    img = _image(h=32, w=32, seed=3)
    p = _prep(fill, flux_vae, img)
    assert p.route == "fill"
    assert p.positive[0][1]["guidance"] == 30.0
    extra = p.positive[0][1]
    concat_img, mask = extra["concat_latent_image"], extra["concat_mask"]
    assert concat_img.shape == (1, 16, 4, 8) and mask.shape == (1, 1, 32, 64)
    assert mask[..., :32].eq(1).all() and mask[..., 32:].eq(0).all()
    # the known half of the diptych is the reference; the unknown half is neutral grey (as stock inpainting)
    expected = flux_vae.encode(torch.cat([torch.full_like(img, 0.5), img], dim=2))
    torch.testing.assert_close(concat_img, expected)
    assert torch.equal(p.negative[0][1]["concat_mask"], mask)
    assert p.model is fill  # Fill is zero-shot: no model patch

    # what the Fill model really receives: the model's own concat_cond -> image + 64 mask channels
    noise = torch.randn(1, 16, 4, 8)
    c = fill.model.concat_cond(noise=noise, device=comfy.model_management.get_torch_device(), **extra)
    assert c.shape == (1, 16 + 64, 4, 8)
    assert c[:, 16:, :, :4].eq(1).all() and c[:, 16:, :, 4:].eq(0).all()
    torch.testing.assert_close(c[:, :16], fill.model.process_latent_in(expected))


def test_fill_route_samples_and_keeps_the_reference(fill, flux_vae):
    import comfy.sample

    img = _image(h=32, w=32, seed=4)
    p = _prep(fill, flux_vae, img, batch_size=2)
    noise = torch.randn(p.latent["samples"].shape, generator=torch.Generator().manual_seed(0))
    out = comfy.sample.sample(p.model, noise, 3, 1.0, "euler", "simple", p.positive, p.negative, p.latent["samples"],
                              noise_mask=p.latent["noise_mask"], disable_pbar=True, seed=0)
    _, ref = layout.split(out)
    torch.testing.assert_close(ref, layout.split(p.latent["samples"])[1], rtol=1e-4, atol=1e-4)


def test_rgba_is_composited_and_grayscale_expanded(flux, flux_vae):
    rgba = _image(c=4, h=32, w=32)
    rgba[..., 3] = 0  # fully transparent -> pure pad colour
    p = _prep(flux, flux_vae, rgba, pad_color="#ff0000")
    assert any("RGBA image composited over the pad colour #ff0000" in n for n in p.notes)
    torch.testing.assert_close(p.preview[..., 32:, :], torch.tensor([1.0, 0, 0]).expand(1, 32, 32, 3))
    gray = _image(c=1, h=32, w=32)
    p = _prep(flux, flux_vae, gray)
    assert any("grayscale image expanded to RGB" in n for n in p.notes)
    assert torch.equal(p.preview[..., 32:, 0], p.preview[..., 32:, 2])


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_fit_modes_produce_the_target_size(flux, flux_vae, mode):
    p = _prep(flux, flux_vae, _image(h=64, w=32), width=32, height=32, fit=mode)
    assert p.preview.shape == (1, 32, 64, 3)
    right = p.preview[0, :, 32:]
    if mode == "pad":  # portrait into a square: white bars left and right
        assert right[:, :4].eq(1).all() and right[:, -4:].eq(1).all()
    else:
        assert not right[:, :2].eq(1).all()


def test_several_references_one_output_each(flux, flux_vae):
    p = _prep(flux, flux_vae, _image(b=3, h=32, w=32), batch_size=1)
    assert p.latent["samples"].shape[0] == 3


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=3), r"^batch_size: 3 samples cannot be paired with 2 reference images"),
    (dict(width=100000), r"^width: .*larger than"),
    (dict(pad_color="blue-ish"), r"^pad_color: 'blue-ish' is not a colour"),
    (dict(route="fill"), r"^route: the fill route needs a FLUX.1 Fill"),
    (dict(fit="zoom"), r"^fit: 'zoom' is not a fit mode"),
])
def test_bad_inputs_name_the_input_and_the_fix(flux, flux_vae, kw, match):
    with pytest.raises(InputError, match=match):
        _prep(flux, flux_vae, _image(b=2, h=32, w=32), **kw)


def test_empty_reference_image(flux, flux_vae):
    with pytest.raises(InputError, match=r"^reference: the image is empty"):
        _prep(flux, flux_vae, torch.zeros(1, 0, 0, 3))


def test_missing_vae(flux):
    with pytest.raises(InputError, match=r"^vae: no VAE is connected. Connect"):
        _prep(flux, None, _image())


def test_sd15_unet_is_refused(flux_vae):
    with pytest.raises(InputError, match=r"^model: this is a SD15 model, not a FLUX-family"):
        _prep(ii_harness.tiny_sd15(), flux_vae, _image())


def test_vae_of_another_family_is_refused(flux_vae):
    with pytest.raises(InputError, match=r"^vae: this VAE makes 16-channel latents but the model works on 128"):
        _prep(ii_harness.tiny_flux("flux2"), flux_vae, _image(h=32, w=32))


def test_split_and_comparison_nodes():
    from instruct_identity.nodes.reference import comparison, split_image

    img = torch.rand(2, 16, 64, 3)
    t, r = split_image(img)
    assert torch.equal(t, img[:, :, :32]) and torch.equal(r, img[:, :, 32:])
    cmp = comparison(img)
    assert cmp.shape == (2, 16, 32 + 8 + 32, 3)
    assert torch.equal(cmp[:, :, :32], r) and torch.equal(cmp[:, :, 40:], t)
    with pytest.raises(InputError, match="^image: width 5 px is odd"):
        split_image(torch.rand(1, 4, 5, 3))


def test_flux2_through_the_same_node_and_sampler():
    """A second family end to end in-process: FLUX.2 layout (128 latent channels at 1/16, patch 1)."""
    import comfy.sample
    from instruct_identity.nodes.reference import InstructIdentityDecodeTarget, prepare_reference

    model, vae = ii_harness.tiny_flux("flux2"), ii_harness.flux2_vae()
    cond = ii_harness.flux_conditioning(pooled_dim=None, guidance=None)
    p = prepare_reference(model, vae, cond, _image(h=32, w=48), width=64, height=30)
    assert p.route == "lora" and (p.width, p.height) == (64, 32)
    assert p.latent["samples"].shape == (1, 128, 2, 8)
    noise = torch.randn(p.latent["samples"].shape, generator=torch.Generator().manual_seed(0))
    out = comfy.sample.sample(p.model, noise, 2, 1.0, "euler", "simple", p.positive, p.negative, p.latent["samples"],
                              noise_mask=p.latent["noise_mask"], disable_pbar=True, seed=0)
    torch.testing.assert_close(layout.split(out)[1], layout.split(p.latent["samples"])[1], rtol=1e-4, atol=1e-4)
    target, cmp, tlat = InstructIdentityDecodeTarget.execute({"samples": out}, vae).args
    assert target.shape == (1, 32, 64, 3) and cmp.shape == (1, 32, 64 + 8 + 64, 3)
    assert tlat["samples"].shape == (1, 128, 2, 4)
