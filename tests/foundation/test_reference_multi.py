"""The Reference node with several references (Add Reference chains), strengths and regions: the
latent, the preview, the controls that reach the patch, Decode Target / Split, and bad inputs."""

import pytest
import torch

import ii_harness
from instruct_identity.core import layout, limits
from instruct_identity.core.errors import InputError

pytestmark = pytest.mark.usefixtures("comfy")


def _image(h=32, w=48, seed=0, b=1):
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def flux():
    return ii_harness.tiny_flux("flux")


def _prep(model, vae, image, **kw):
    from instruct_identity.nodes.reference import prepare_reference

    return prepare_reference(model, vae, ii_harness.flux_conditioning(guidance=None), image, **kw)


def test_one_reference_without_the_new_inputs_is_as_before(flux, flux_vae):
    from instruct_identity.engine.patch import reference_patch_of

    img = _image()
    old = _prep(flux, flux_vae, img)
    new = _prep(flux, flux_vae, img, strength=1.0, more_references=None, region=None)
    assert torch.equal(old.latent["samples"], new.latent["samples"]) and layout.LATENT_KEY not in new.latent
    assert old.preview.shape == new.preview.shape == (1, 32, 96, 3)
    assert reference_patch_of(new.model).controls[0].neutral and len(reference_patch_of(new.model).controls) == 1


def test_three_references_through_two_add_reference_nodes(flux, flux_vae):
    from instruct_identity.engine.patch import reference_patch_of
    from instruct_identity.nodes.reference import (InstructIdentityAddReference, InstructIdentityDecodeTarget,
                                                   InstructIdentitySplitImage, InstructIdentitySplitLatent)

    region = torch.zeros(1, 32, 48)
    region[..., :24] = 1
    chain = InstructIdentityAddReference.execute(_image(seed=1), 0.5).result[0]
    chain = InstructIdentityAddReference.execute(_image(h=64, w=40, seed=2), 1.5, region, chain).result[0]
    p = _prep(flux, flux_vae, _image(), more_references=chain, strength=2.0)
    assert p.latent["samples"].shape == (1, 16, 4, 24) and p.latent[layout.LATENT_KEY] == 3
    assert p.preview.shape == (1, 32, 4 * 48, 3)
    _, refs = layout.split_references(p.latent["samples"], 3)
    torch.testing.assert_close(refs[1], flux_vae.encode(_image(seed=1)))
    controls = reference_patch_of(p.model).controls
    assert [c.strength for c in controls] == [2.0, 0.5, 1.5]
    assert controls[2].region is region and controls[0].region is None
    assert "3 reference(s)" in p.info and "bound to a region" in p.info
    sampled = {**p.latent, "samples": torch.randn_like(p.latent["samples"])}   # what a sampler returns (a copy)
    target, comp, target_latent = InstructIdentityDecodeTarget.execute(sampled, flux_vae).result
    assert target.shape == (1, 32, 48, 3) and target_latent["samples"].shape == (1, 16, 4, 6)
    assert comp.shape[2] > 4 * 48
    t, strip = InstructIdentitySplitLatent.execute(sampled).result
    assert t["samples"].shape[-1] == 6 and strip["samples"].shape[-1] == 18
    decoded = flux_vae.decode(sampled["samples"])
    ti, ri, _ = InstructIdentitySplitImage.execute(decoded, 3).result
    assert ti.shape[2] == 48 and ri.shape[2] == 3 * 48


def test_bad_inputs_name_what_to_change(flux, flux_vae):
    from instruct_identity.nodes.reference import add_reference

    chain = None
    with pytest.raises(InputError, match="references"):
        for i in range(limits.MAX_REFERENCES + 1):
            chain = add_reference(chain, _image(seed=i))
    fill = ii_harness.tiny_flux("flux_fill")
    with pytest.raises(InputError, match="more_references.*fill route"):
        _prep(fill, flux_vae, _image(), more_references=add_reference(None, _image()))
    with pytest.raises(InputError, match="strength"):
        _prep(flux, flux_vae, _image(), strength=-1)
    with pytest.raises(InputError, match="more_references.*batch of 3"):
        _prep(flux, flux_vae, _image(), more_references=add_reference(None, _image(b=3)))
    with pytest.raises(InputError, match="image tokens"):
        _prep(flux, flux_vae, _image(h=16, w=16), width=4096, height=4096, more_references=add_reference(None, _image()))
