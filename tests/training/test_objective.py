"""The paper's Eq. 2: hand computation, gradients, and what the model really gets as input."""

import math

import pytest
import torch
from instruct_identity.core import layout
from instruct_identity.training import objective

C, H, W = 4, 3, 5


def _fixed(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, C, H, W, generator=g)
    ref = torch.randn(batch, C, H, W, generator=g)
    noise = torch.randn(batch, C, H, 2 * W, generator=g)
    pred = torch.randn(batch, C, H, 2 * W, generator=g)
    sig = torch.tensor([0.25, 0.8])[:batch]
    return x0, ref, noise, pred, sig


def test_masked_loss_is_eq2_by_hand():
    x0, ref, noise, pred, sig = _fixed()
    inputs = objective.flow_inputs(x0, ref, noise, sig, "identity", "masked")
    loss = objective.flow_loss(pred, inputs)
    # by hand: mean over the target half only (columns 0..W-1) of (v - (n - x0))^2
    total, count = 0.0, 0
    for b in range(2):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    total += (pred[b, c, i, j].item() - (noise[b, c, i, j].item() - x0[b, c, i, j].item())) ** 2
                    count += 1
    assert count == 2 * C * H * W  # normalised by the masked area, not by the whole grid
    assert loss.item() == pytest.approx(total / count, rel=1e-6)


def test_full_loss_covers_both_halves():
    x0, ref, noise, pred, sig = _fixed()
    inputs = objective.flow_inputs(x0, ref, noise, sig, "identity", "full")
    expect = ((pred - (noise - torch.cat([x0, ref], dim=-1))) ** 2).mean()
    assert objective.flow_loss(pred, inputs).item() == pytest.approx(expect.item(), rel=1e-6)
    assert inputs.mask is None


def test_gradient_wrt_prediction_is_exactly_zero_on_reference_half():
    x0, ref, noise, pred, sig = _fixed()
    pred = pred.clone().requires_grad_(True)
    objective.flow_loss(pred, objective.flow_inputs(x0, ref, noise, sig, "identity", "masked")).backward()
    assert torch.all(pred.grad[..., W:] == 0)
    assert torch.all(pred.grad[..., :W] != 0)


def test_reference_half_is_never_noised():
    x0, ref, noise, _, sig = _fixed()
    inputs = objective.flow_inputs(x0, ref, noise, sig, "identity", "masked")
    assert torch.equal(inputs.model_input[..., W:], ref)
    s = sig.view(-1, 1, 1, 1)
    assert torch.allclose(inputs.model_input[..., :W], (1 - s) * x0 + s * noise[..., :W])
    assert torch.equal(inputs.mask, layout.target_mask(layout.Layout(H, W)))


def test_grid_mode_is_plain_flow_matching():
    x0, _, noise, pred, sig = _fixed()
    n = noise[..., :W]
    inputs = objective.flow_inputs(x0, None, n, sig, "grid", "full")
    s = sig.view(-1, 1, 1, 1)
    assert torch.allclose(inputs.model_input, (1 - s) * x0 + s * n)
    assert objective.flow_loss(pred[..., :W], inputs).item() == pytest.approx(((pred[..., :W] - (n - x0)) ** 2).mean().item())


def test_timestep_sampling_formulas():
    un = torch.tensor([-1.0, 0.0, 2.0])
    uu = torch.tensor([0.1, 0.5, 0.9])
    assert torch.equal(objective.sample_sigmas("uniform", un, uu), uu)
    sig = torch.sigmoid(1.5 * un)
    assert torch.allclose(objective.sample_sigmas("sigmoid", un, uu, sigmoid_scale=1.5), sig)
    s = 3.1582
    t = torch.sigmoid(un)
    assert torch.allclose(objective.sample_sigmas("shift", un, uu, shift=s), s * t / (1 + (s - 1) * t))
    # flux_shift: mu from the token count of the WHOLE H x 2W grid (256 tokens -> 0.5, 4096 -> 1.15)
    assert objective.flux_mu(256) == pytest.approx(0.5) and objective.flux_mu(4096) == pytest.approx(1.15)
    tokens = objective.grid_tokens(64, 64, 2, "identity")  # a 512 px pair: 32 x 64 patches
    assert tokens == layout.Layout(64, 64).token_count(2) == 2048
    mu = objective.flux_mu(2048)
    expect = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    assert torch.allclose(objective.sample_sigmas("flux_shift", un, uu, tokens=tokens), expect)
    assert objective.grid_tokens(64, 64, 2, "grid") == 1024


def test_model_input_reference_half_is_the_clean_latent(tiny_cfg, components):
    """Through the trainer's own step and ComfyUI's real FLUX forward: what the module is called with."""
    from instruct_identity.training import lora
    from instruct_identity.training.data import MicroBatch
    from instruct_identity.training.model import FluxForward
    from instruct_identity.training.trainer import step_loss

    cfg = tiny_cfg()
    comp = components()
    dm = comp.model.model.diffusion_model
    lora.inject(dm, "B", 4, 4.0)
    seen = []
    dm.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0].detach().clone(), args[1].clone())),
                                 with_kwargs=True)
    g = torch.Generator().manual_seed(3)
    tgt, ref = torch.randn(2, 16, 4, 4, generator=g), torch.randn(2, 16, 4, 4, generator=g)
    mb = MicroBatch(tgt, ref, torch.randn(2, 8, 32, generator=g), torch.randn(2, 32, generator=g), [0, 1], 0)
    loss = step_loss(cfg, comp.model, FluxForward(dm, gradient_checkpointing=True, guidance=1.0), dm, mb, 7, 2)
    loss.backward()
    x, sigmas = seen[0]
    clean = comp.model.model.process_latent_in(ref)
    assert x.shape == (2, 16, 4, 8)
    assert torch.equal(x[..., 4:], clean)
    assert not torch.allclose(x[..., :4], comp.model.model.process_latent_in(tgt))
    assert torch.all((sigmas >= 0) & (sigmas <= 1))
    assert all(p.grad is not None for _, p in lora.trainable_parameters(dm))


def test_full_noised_noises_both_halves_like_in_context_lora():
    x0, ref, noise, pred, sig = _fixed()
    inputs = objective.flow_inputs(x0, ref, noise, sig, "identity", "full_noised")
    grid = torch.cat([x0, ref], dim=-1)
    s = sig.view(-1, 1, 1, 1)
    assert torch.allclose(inputs.model_input, (1 - s) * grid + s * noise)  # the same s on both halves
    assert not torch.allclose(inputs.model_input[..., W:], ref)
    assert inputs.mask is None
    expect = ((pred - (noise - grid)) ** 2).mean()
    assert objective.flow_loss(pred, inputs).item() == pytest.approx(expect.item(), rel=1e-6)


def test_full_consistent_target_is_zero_velocity_on_the_clean_reference():
    x0, ref, noise, pred, sig = _fixed()
    inputs = objective.flow_inputs(x0, ref, noise, sig, "identity", "full_consistent")
    masked = objective.flow_inputs(x0, ref, noise, sig, "identity", "masked")
    assert torch.equal(inputs.model_input, masked.model_input)  # clean reference in, as at sampling
    assert torch.equal(inputs.velocity_target[..., :W], noise[..., :W] - x0)
    assert torch.equal(inputs.velocity_target[..., W:], torch.zeros_like(ref))
    assert inputs.mask is None
    # whole-grid mean: the target half's term (weight 1/2) plus the reference half's |pred|^2 (weight 1/2)
    expect = 0.5 * ((pred[..., :W] - (noise[..., :W] - x0)) ** 2).mean() + 0.5 * (pred[..., W:] ** 2).mean()
    assert objective.flow_loss(pred, inputs).item() == pytest.approx(expect.item(), rel=1e-6)


def test_full_consistent_reference_target_is_a_fixed_point_of_comfyuis_sampler(comfy):
    """The derivation, checked against ComfyUI's own code: a model that outputs the consistent target on the
    reference half (and anything on the target half) leaves a clean reference untouched through ComfyUI's
    flow-model denoised estimate and its euler / heun samplers; the full loss's optimum (-r) does not."""
    import comfy.k_diffusion.sampling as kds
    import comfy.model_sampling

    class Flow(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    ms = Flow()
    x0, ref, noise, _, _ = _fixed(batch=1)
    sig_dummy = torch.tensor([0.5])
    consistent = objective.flow_inputs(x0, ref, noise, sig_dummy, "identity", "full_consistent").velocity_target
    full = objective.flow_inputs(x0, ref, noise, sig_dummy, "identity", "full").velocity_target
    # the full loss's optimum on the reference half given its clean input: E[n - r] = -r
    full_optimum = torch.cat([full[..., :W], -ref], dim=-1)
    sigmas = torch.linspace(1.0, 0.0, 9)

    def run(velocity, sampler):
        def model(x, sigma, **kw):
            return ms.calculate_denoised(sigma, velocity, x)  # ComfyUI's CONST: x - sigma * v

        start = torch.cat([noise[..., :W], ref], dim=-1)
        return sampler(model, start, sigmas, disable=True)

    for sampler in (kds.sample_euler, kds.sample_heun):
        assert torch.allclose(run(consistent, sampler)[..., W:], ref, atol=1e-6)
        assert not torch.allclose(run(full_optimum, sampler)[..., W:], ref, atol=1e-2)


def test_unknown_or_grid_losses_are_refused():
    x0, ref, noise, _, sig = _fixed()
    with pytest.raises(ValueError, match="unknown loss"):
        objective.flow_inputs(x0, ref, noise, sig, "identity", "fulll")
    for loss in ("masked", "full_noised", "full_consistent"):
        with pytest.raises(ValueError, match="grid"):
            objective.flow_inputs(x0, None, noise[..., :W], sig, "grid", loss)


def test_config_offers_every_loss_and_grid_only_full(tmp_path):
    from instruct_identity.core.errors import InputError
    from instruct_identity.training.config import LOSSES, from_dict

    assert set(LOSSES) == set(objective.LOSSES)
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("")
    for loss in objective.LOSSES:
        assert from_dict({"loss": loss, "dataset_config": str(manifest)}).loss == loss
    for loss in ("masked", "full_noised", "full_consistent"):
        with pytest.raises(InputError):
            from_dict({"mode": "grid", "loss": loss, "dataset_config": str(manifest)})
