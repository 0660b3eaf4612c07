"""LoRA presets on ComfyUI's FLUX modules: exactly the intended modules, img_in always, A != B in
the fused single-block layers."""

import ii_harness
import pytest
import torch
from instruct_identity.training import lora

pytestmark = pytest.mark.usefixtures("comfy")

DOUBLE_ATTN = ["double_blocks.0.img_attn.qkv", "double_blocks.0.img_attn.proj",
               "double_blocks.0.txt_attn.qkv", "double_blocks.0.txt_attn.proj"]
DOUBLE_MLP = ["double_blocks.0.img_mlp.0", "double_blocks.0.img_mlp.2", "double_blocks.0.txt_mlp.0", "double_blocks.0.txt_mlp.2"]
SINGLE = ["single_blocks.0.linear1", "single_blocks.0.linear2"]
MOD = ["double_blocks.0.img_mod.lin", "double_blocks.0.txt_mod.lin", "single_blocks.0.modulation.lin"]
EXPECTED = {
    "A": ["img_in"] + DOUBLE_ATTN + SINGLE,
    "B": ["img_in"] + DOUBLE_ATTN + DOUBLE_MLP + SINGLE,
    "C": ["img_in"] + DOUBLE_ATTN + DOUBLE_MLP + SINGLE + MOD,
}


@pytest.mark.parametrize("preset", ["A", "B", "C"])
def test_preset_adapts_exactly_the_intended_modules(preset):
    dm = ii_harness.tiny_flux().model.diffusion_model
    targets = lora.inject(dm, preset, rank=4, alpha=4.0)
    names = sorted(lora.lora_layers(dm))
    assert names == sorted(EXPECTED[preset])
    assert len(targets) == len(EXPECTED[preset])
    assert "img_in" in names
    trainable = {n for n, _ in lora.trainable_parameters(dm)}
    assert trainable == {f"{m}.lora_{ab}.default.weight" for m in EXPECTED[preset] for ab in "AB"}
    assert all(p.dtype == torch.float32 for _, p in lora.trainable_parameters(dm))


def test_preset_counts_at_real_flux_dev_size():
    """19 double + 38 single blocks (built on the meta device: no memory, no weights)."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from instruct_identity.engine.synthetic import FLUX_DEV

    cfg = {k: v for k, v in FLUX_DEV.items() if k != "image_model"}
    dm = Flux(operations=comfy.ops.disable_weight_init, device="meta", dtype=torch.bfloat16, **cfg)
    counts = {p: len(lora.plan(dm, p)) for p in "ABC"}
    assert counts == {"A": 1 + 19 * 4 + 38 * 2, "B": 1 + 19 * 8 + 38 * 2, "C": 1 + 19 * 10 + 38 * 3}


def _train_a_little(dm, steps=3):
    params = [p for _, p in lora.trainable_parameters(dm)]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    x, ctx, y = torch.randn(1, 16, 4, 8, generator=g), torch.randn(1, 8, 32, generator=g), torch.randn(1, 32, generator=g)
    from instruct_identity.training.model import FluxForward

    fwd = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)
    for _ in range(steps):
        fwd(dm, x, torch.tensor([0.5]), ctx, y).square().mean().backward()
        opt.step()
        opt.zero_grad()


def test_preset_a_touches_only_attention_in_fused_single_block_layers():
    hidden = 128
    dm_a = ii_harness.tiny_flux().model.diffusion_model
    targets_a = lora.inject(dm_a, "A", rank=4, alpha=4.0)
    dm_b = ii_harness.tiny_flux().model.diffusion_model
    targets_b = lora.inject(dm_b, "B", rank=4, alpha=4.0)
    _train_a_little(dm_a)
    _train_a_little(dm_b)
    da, db = lora.delta_weights(dm_a, targets_a), lora.delta_weights(dm_b, targets_b)
    # linear1: q, k, v rows adapted, MLP-in rows untouched (exactly) in A; everything in B
    assert da["single_blocks.0.linear1"][:3 * hidden].abs().max() > 0
    assert torch.all(da["single_blocks.0.linear1"][3 * hidden:] == 0)
    assert db["single_blocks.0.linear1"][3 * hidden:].abs().max() > 0
    # linear2: attention-output columns adapted, MLP-out columns untouched (exactly) in A
    assert da["single_blocks.0.linear2"][:, :hidden].abs().max() > 0
    assert torch.all(da["single_blocks.0.linear2"][:, hidden:] == 0)
    assert db["single_blocks.0.linear2"][:, hidden:].abs().max() > 0
    sd = lora.kohya_state_dict(dm_a, targets_a, 4, 4.0)
    assert torch.all(sd["lora_unet_single_blocks_0_linear1.lora_up.weight"][3 * hidden:] == 0)
    assert torch.all(sd["lora_unet_single_blocks_0_linear2.lora_down.weight"][:, hidden:] == 0)
    assert lora.effective_parameter_count(dm_a, targets_a) < sum(p.numel() for _, p in lora.trainable_parameters(dm_a))


def test_alpha_defaults_to_rank_so_rank_512_is_not_scaled_down(tmp_path):
    from instruct_identity.training.config import from_dict

    cfg = from_dict({"dataset_config": "x.jsonl", "network_dim": 512})
    assert cfg.network_alpha == 512
    dm = ii_harness.tiny_flux().model.diffusion_model
    lora.inject(dm, "A", rank=cfg.network_dim, alpha=cfg.network_alpha)
    assert {layer.scaling["default"] for layer in lora.lora_layers(dm).values()} == {1.0}


def test_injection_is_deterministic_and_starts_at_zero_delta():
    dm1 = ii_harness.tiny_flux().model.diffusion_model
    dm2 = ii_harness.tiny_flux().model.diffusion_model
    t1 = lora.inject(dm1, "B", rank=4, alpha=4.0, seed=5)
    lora.inject(dm2, "B", rank=4, alpha=4.0, seed=5)
    s1, s2 = lora.adapter_state(dm1), lora.adapter_state(dm2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert all(torch.all(d == 0) for d in lora.delta_weights(dm1, t1).values())
    assert all(not p.requires_grad for n, p in dm1.named_parameters() if ".lora_" not in n)
