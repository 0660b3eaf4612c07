"""Training one-way LoRAs: the trainer's forward is the sampler's forward, its gradients reach every
adapted layer (the reference path included), ``train(cfg, components)`` runs it end to end and the
LoRA file records the mode."""

import sys
from pathlib import Path

import ii_harness
import pytest
import torch
from instruct_identity.core import layout

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from ii_train_helpers import make_pairs, write_image

pytestmark = pytest.mark.usefixtures("comfy")

H, W = 4, 6


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matmuls only wait on a second thread of a shared CPU
    yield
    torch.set_num_threads(n)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = layout.concat(torch.randn(2, 16, H, W, generator=g), torch.randn(2, 16, H, W, generator=g))
    return grid, torch.tensor([0.3, 0.75]), torch.randn(2, 8, 32, generator=g), torch.randn(2, 32, generator=g)


def _lora_model(seed=0):
    from instruct_identity.training import lora

    m = ii_harness.tiny_flux(seed=seed)
    dm = m.model.diffusion_model
    ii_harness.init_random_(dm, seed=seed, std=0.15)
    targets = lora.inject(dm, "B", 4, 4.0, seed=seed)
    with torch.no_grad():  # B starts at zero (peft): give the adapters a value so every path carries gradient
        for name, p in dm.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return m, dm, targets


def test_training_forward_is_the_samplers_forward():
    """FluxForward(one_way) on a [noisy target | clean reference] grid = the sampler's one-way
    wrapper with the K/V computed once for the same reference; the reference half predicts 0."""
    from comfy.patcher_extension import WrappersMP
    from instruct_identity.engine import oneway
    from instruct_identity.training.model import FluxForward

    _, dm, _ = _lora_model()
    grid, s, ctx, pooled = _batch()
    train_out = FluxForward(dm, gradient_checkpointing=False, guidance=1.0, reference_attention="one_way")(
        dm, grid, s, ctx, pooled)
    holder = oneway.OneWayPatch(grid[..., W:], cache=None)
    to = {"wrappers": {WrappersMP.DIFFUSION_MODEL: {oneway.PATCH_KEY: [holder.diffusion_model]}}}
    with torch.no_grad():
        sample_out = dm(grid, s, ctx, y=pooled, guidance=torch.ones(2), transformer_options=to)
    torch.testing.assert_close(train_out, sample_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(train_out[..., W:], torch.zeros_like(train_out[..., W:]))
    joint = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)(dm, grid, s, ctx, pooled)
    assert (joint[..., :W] - train_out[..., :W]).abs().max() > 1e-2


def test_gradients_reach_every_adapter_and_checkpointing_changes_nothing():
    from instruct_identity.training import lora, objective
    from instruct_identity.training.model import FluxForward

    _, dm, targets = _lora_model()
    grid, s, ctx, pooled = _batch()
    target, ref = grid[..., :W], grid[..., W:]
    noise = torch.randn(grid.shape, generator=torch.Generator().manual_seed(5))
    inputs = objective.flow_inputs(target, ref, noise, s, "identity", "masked")
    grads = {}
    for ck in (False, True):
        dm.zero_grad(set_to_none=True)
        forward = FluxForward(dm, gradient_checkpointing=ck, guidance=1.0, reference_attention="one_way")
        pred = forward(dm, inputs.model_input, s, ctx, pooled)
        loss = objective.flow_loss(pred, inputs)
        loss.backward()
        grads[ck] = (loss.item(), {n: p.grad.clone() for n, p in lora.trainable_parameters(dm)})
    assert grads[False][0] == grads[True][0]
    for name, g in grads[False][1].items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name         # every adapted layer learns
        torch.testing.assert_close(grads[True][1][name], g, rtol=1e-5, atol=1e-7)
    assert len(grads[False][1]) == 2 * len(targets)

    # the reference path is trained too: the gradient through the reference's K/V alone is not zero
    from instruct_identity.engine import oneway

    layer = lora.lora_layers(dm)["single_blocks.0.linear1"].lora_B["default"].weight
    dm.zero_grad(set_to_none=True)
    kv = oneway.reference_kv(dm, ref)
    sum(t.k.pow(2).sum() + t.v.pow(2).sum() for t in kv.double + kv.single).backward()
    assert layer.grad is not None and layer.grad.abs().sum() > 0


def _config(tmp_path, pairs, **kw):
    from instruct_identity.training.config import from_dict

    values = dict(dataset_config=str(pairs), resolution=64, output_dir=str(tmp_path / "out"), max_train_steps=8,
                  mixed_precision="no", network_dim=4, learning_rate=1e-2, seed=0, save_state=False,
                  reference_attention="one_way")
    return from_dict({**values, **kw})


def _components():
    from instruct_identity.engine.synthetic import SyntheticTextEncoder, SyntheticVae
    from instruct_identity.training.model import Components

    return Components(ii_harness.tiny_flux(), SyntheticVae(), SyntheticTextEncoder(), None, "tiny")


def test_train_one_way_end_to_end(tmp_path):
    """``train(cfg, components)`` with reference_attention = one_way (what the toy runner passes):
    the loss falls, previews sample one way, the file records the mode, the model is tagged."""
    from instruct_identity.engine import oneway
    from instruct_identity.engine.sampling import identity_inputs
    from instruct_identity.training.trainer import train
    from safetensors import safe_open

    pairs = make_pairs(tmp_path / "pairs", n=2, seed=3)
    prompts = tmp_path / "pairs" / "prompts.txt"
    prompts.write_text("a character waving --ref ref0.png --w 64 --h 64 --s 2 --d 5 --g 3.5\n")
    cfg = _config(tmp_path, pairs, max_train_steps=20, network_dim=8, sample_every_n_steps=20,
                  sample_prompts=str(prompts))
    components = _components()
    result = train(cfg, components)
    assert result.fixed_loss_after < 0.95 * result.fixed_loss_before, (result.fixed_loss_before, result.fixed_loss_after)
    assert len(result.samples) == 1 and result.samples[0].stat().st_size > 0
    with safe_open(str(result.lora_path), "pt") as f:
        meta = f.metadata()
    assert meta["reference_attention"] == "one_way" and '"reference_attention": "one_way"' in meta["config"]
    assert oneway.mode_from_metadata(meta) == "one_way"
    assert oneway.mode_of(components.model) == "one_way"
    ref = torch.randn(1, 16, 8, 8)
    assert oneway.one_way_patch_of(identity_inputs(components.model, ref).model) is not None

    joint_cfg = _config(tmp_path / "joint", pairs, max_train_steps=1, reference_attention="joint")
    joint = train(joint_cfg, _components())
    with safe_open(str(joint.lora_path), "pt") as f:
        assert f.metadata()["reference_attention"] == "joint"


def test_config_checks_the_option(tmp_path):
    from instruct_identity.core.errors import InputError

    pairs = make_pairs(tmp_path / "p", n=1)
    write_image(tmp_path / "unused.png", 1)
    assert _config(tmp_path, pairs, reference_attention="joint").reference_attention == "joint"
    from instruct_identity.training.config import TrainConfig

    assert TrainConfig().reference_attention == "joint"                     # the paper's mode stays the default
    with pytest.raises(InputError, match='reference_attention.*Did you mean "one_way"'):
        _config(tmp_path, pairs, reference_attention="one-way")
    with pytest.raises(InputError, match="reference_attention.*masked"):
        _config(tmp_path, pairs, loss="full")
    with pytest.raises(InputError, match="reference_attention.*grid"):
        _config(tmp_path, pairs, mode="grid")


def test_resume_refuses_a_state_of_the_other_mode(tmp_path):
    from instruct_identity.training import checkpoints

    pairs = make_pairs(tmp_path / "p", n=1)
    one_way = checkpoints.shape_signature(_config(tmp_path, pairs))
    joint = checkpoints.shape_signature(_config(tmp_path, pairs, reference_attention="joint"))
    assert one_way != joint and "reference_attention" not in joint    # joint states saved before still match
