"""The sampler patch on small random FLUX-family models built in-process: at every model call of
every sampler the reference half of the diffusion model's input is the clean reference latent."""

import pytest
import torch

import ii_harness
from instruct_identity.core import layout

pytestmark = pytest.mark.usefixtures("comfy")

H, W = 4, 6  # latent rows, columns per half


def _setup(family="flux", batch=2, refs=1, seed=0):
    from instruct_identity.engine.patch import model_info, patch_model

    base = ii_harness.tiny_flux(family, seed=seed)
    info = model_info(base)
    g = torch.Generator().manual_seed(seed + 7)
    z_ref = torch.randn(refs, info.latent_channels, H, W, generator=g)
    model = patch_model(base, z_ref)
    lay = layout.Layout(H, W)
    latent = layout.concat(torch.zeros(batch, info.latent_channels, H, W), z_ref)
    pooled = 32 if family in ("flux", "flux_fill", "flux_schnell") else None
    pos = ii_harness.flux_conditioning(pooled_dim=pooled, seed=1)
    neg = ii_harness.flux_conditioning(pooled_dim=pooled, seed=2)
    return base, model, z_ref, lay, latent, pos, neg


class Recorder:
    """A foreign DIFFUSION_MODEL wrapper (another pack's) that records what the model gets."""

    def __init__(self):
        self.inputs = []

    def __call__(self, executor, x, *args, **kwargs):
        self.inputs.append(x.detach().clone())
        return executor(x, *args, **kwargs)


class ForeignApplyModel:
    """Another pack's APPLY_MODEL wrapper under its own key: must keep running beside ours."""

    def __init__(self):
        self.calls = 0

    def __call__(self, executor, *args, **kwargs):
        self.calls += 1
        return executor(*args, **kwargs)


def _install_foreign(model):
    from comfy.patcher_extension import WrappersMP

    rec, foreign = Recorder(), ForeignApplyModel()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "other_pack.recorder", rec)
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "other_pack.apply", foreign)
    return rec, foreign


def _run(model, latent, pos, neg, path, sampler, cfg, noise_mask=None, steps=4, seed=3):
    import comfy.sample
    import comfy.samplers

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    if path == "ksampler":
        return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", pos, neg, latent,
                                   noise_mask=noise_mask, disable_pbar=True, seed=seed)
    if path == "ksampler_advanced":  # KSamplerAdvanced: a step window, noise added, leftover noise kept
        return comfy.sample.sample(model, noise, steps, cfg, sampler, "beta", pos, neg, latent, start_step=0,
                                   last_step=steps, force_full_denoise=True, noise_mask=noise_mask,
                                   disable_pbar=True, seed=seed)
    if path == "custom_advanced":  # SamplerCustomAdvanced: CFGGuider + sampler object + sigmas
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(pos, neg)
        guider.set_cfg(cfg)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
        return guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas, denoise_mask=noise_mask,
                             disable_pbar=True, seed=seed)
    raise ValueError(path)


@pytest.mark.parametrize("path,sampler", [("ksampler", "euler"), ("ksampler", "dpmpp_2m"),
                                          ("ksampler_advanced", "euler_ancestral"), ("custom_advanced", "dpmpp_2m")])
@pytest.mark.parametrize("with_noise_mask", [True, False])
def test_reference_half_is_clean_at_every_model_call(path, sampler, with_noise_mask):
    base, model, z_ref, lay, latent, pos, neg = _setup(batch=2)
    rec, foreign = _install_foreign(model)
    mask = layout.target_mask(lay) if with_noise_mask else None
    out = _run(model, latent, pos, neg, path, sampler, cfg=2.5, noise_mask=mask)

    clean = base.model.process_latent_in(z_ref)
    assert len(rec.inputs) >= 4
    assert foreign.calls == len(rec.inputs)  # the other pack's wrapper ran at every call too
    for x in rec.inputs:
        assert x.shape[0] == 4  # CFG > 1: cond and uncond copies of batch 2 in one call
        torch.testing.assert_close(x[..., lay.reference], clean.expand(4, -1, -1, -1), rtol=0, atol=1e-6)
        assert x[..., lay.target].std() > 0.05  # the target half is being denoised, not constant

    # the result: reference half is the reference, target half is generated (not a copy of it)
    torch.testing.assert_close(out[..., lay.reference], z_ref.expand(2, -1, -1, -1), rtol=1e-4, atol=1e-4)
    assert (out[..., lay.target] - z_ref).abs().mean() > 0.1
    assert torch.isfinite(out).all()


def test_without_the_patch_the_model_sees_a_renoised_reference():
    """Control: ComfyUI's plain noise_mask re-noises the kept half — what the patch exists to prevent."""
    base, _, z_ref, lay, latent, pos, neg = _setup(batch=1)
    rec, _ = _install_foreign(base)
    _run(base, latent, pos, neg, "ksampler", "euler", cfg=1.0, noise_mask=layout.target_mask(lay))
    clean = base.model.process_latent_in(z_ref)
    first = rec.inputs[0][..., lay.reference]
    assert (first - clean).abs().mean() > 0.3


def test_one_reference_per_sample():
    base, model, z_ref, lay, latent, pos, neg = _setup(batch=2, refs=2)
    rec, _ = _install_foreign(model)
    out = _run(model, latent, pos, neg, "ksampler", "euler", cfg=2.0, noise_mask=layout.target_mask(lay))
    clean = base.model.process_latent_in(z_ref)
    for x in rec.inputs:
        torch.testing.assert_close(x[..., lay.reference], torch.cat([clean, clean]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., lay.reference], z_ref, rtol=1e-4, atol=1e-4)


def test_the_reference_conditions_the_target():
    """Different references give different targets from the same noise: the model attends to it."""
    outs = []
    for seed in (0, 1, 0):
        base, model, z_ref, lay, latent, pos, neg = _setup(batch=1, seed=0)
        from instruct_identity.engine.patch import patch_model

        z = torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(100 + seed))
        model = patch_model(base, z)
        outs.append(_run(model, layout.concat(torch.zeros_like(z), z), pos, neg, "ksampler", "euler", cfg=1.0,
                         noise_mask=layout.target_mask(lay))[..., lay.target])
    assert torch.equal(outs[0], outs[2])  # deterministic, so any difference comes from the reference
    assert (outs[0] - outs[1]).abs().max() > 1e-3


@pytest.mark.parametrize("family,channels,patch", [("flux2", 128, 1), ("chroma", 16, 2), ("flux_schnell", 16, 2)])
def test_other_families(family, channels, patch):
    base, model, z_ref, lay, latent, pos, neg = _setup(family=family, batch=2)
    from instruct_identity.engine.patch import model_info

    info = model_info(base)
    assert (info.family, info.latent_channels, info.patch_size, info.is_fill) == (family.split("_")[0], channels, patch, False)
    rec, _ = _install_foreign(model)
    out = _run(model, latent, pos, neg, "ksampler", "euler", cfg=2.0, noise_mask=layout.target_mask(lay), steps=3)
    clean = base.model.process_latent_in(z_ref)
    for x in rec.inputs:
        torch.testing.assert_close(x[..., lay.reference], clean.expand(4, -1, -1, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., lay.reference], z_ref.expand(2, -1, -1, -1), rtol=1e-4, atol=1e-4)


def test_reapplying_replaces_our_wrapper_and_keeps_foreign_ones():
    from comfy.patcher_extension import WrappersMP
    from instruct_identity.engine.patch import PATCH_KEY, patch_model, reference_patch_of

    base, model, z_ref, *_ = _setup()
    _install_foreign(model)
    again = patch_model(model, z_ref * 2)
    assert len(again.get_wrappers(WrappersMP.APPLY_MODEL, PATCH_KEY)) == 1
    assert torch.equal(reference_patch_of(again).reference, z_ref * 2)
    assert len(again.get_wrappers(WrappersMP.APPLY_MODEL, "other_pack.apply")) == 1
    assert reference_patch_of(base) is None  # the input model is never mutated


def test_wrong_latent_size_is_a_clear_error():
    from instruct_identity.core.errors import InputError

    base, model, z_ref, lay, latent, pos, neg = _setup(batch=1)
    wrong = torch.zeros(1, 16, H, 2 * W + 2)
    with pytest.raises(InputError, match="latent: .*Instruct Identity Reference"):
        _run(model, wrong, pos, neg, "ksampler", "euler", cfg=1.0, steps=1)
