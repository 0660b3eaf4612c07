"""One-way reference attention through ComfyUI's samplers on tiny random FLUX models: the cached
forward equals the uncached one, the cache is keyed right (reference, weights, LoRA), other packs'
block patches and wrappers keep running, and joint mode is what it was."""

import ii_harness
import pytest
import torch
from instruct_identity.core import layout

pytestmark = pytest.mark.usefixtures("comfy")

H, W = 4, 6


def _model(family="flux", seed=0):
    m = ii_harness.tiny_flux(family, seed=seed)
    ii_harness.init_random_(m.model.diffusion_model, seed=seed, std=0.15)  # attention that mixes tokens
    return m


def _ref(refs=1, seed=7, channels=16):
    return torch.randn(refs, channels, H, W, generator=torch.Generator().manual_seed(seed))


def _conds(family="flux"):
    pooled = None if family == "flux2" else 32
    return ii_harness.flux_conditioning(pooled_dim=pooled, seed=1), ii_harness.flux_conditioning(pooled_dim=pooled, seed=2)


def _sample(inputs, pos, neg, sampler="euler", cfg=2.5, path="ksampler", steps=3, seed=3):
    """KSampler's comfy.sample.sample, or SamplerCustomAdvanced's CFGGuider, on identity inputs."""
    import comfy.sample
    import comfy.samplers

    noise = comfy.sample.prepare_noise(inputs.latent, seed)
    if path == "ksampler":
        return comfy.sample.sample(inputs.model, noise, steps, cfg, sampler, "simple", pos, neg, inputs.latent,
                                   noise_mask=inputs.noise_mask, disable_pbar=True, seed=seed)
    guider = comfy.samplers.CFGGuider(inputs.model)
    guider.set_conds(pos, neg)
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(inputs.model.get_model_object("model_sampling"), "beta", steps)
    return guider.sample(noise, inputs.latent, comfy.samplers.sampler_object(sampler), sigmas,
                         denoise_mask=inputs.noise_mask, disable_pbar=True, seed=seed)


def _one_way(model, ref, batch, **install):
    """Identity inputs in one-way mode; ``install`` replaces the default holder (cache, reuse)."""
    from instruct_identity.engine import oneway
    from instruct_identity.engine.sampling import identity_inputs

    inputs = identity_inputs(model, ref, batch, "one_way")
    holder = oneway.install(inputs.model, ref, **install) if install else oneway.one_way_patch_of(inputs.model)
    return inputs, holder


def _close(a, b):
    """Equal up to fp32 rounding: K/V computed for 1 vs 4 batch rows round differently, and a few
    sampler steps carry that on (about 1e-6 of the samples' scale here)."""
    scale = b.abs().max().item()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale)


class CountCalls:
    """Another pack's DIFFUSION_MODEL wrapper: counts model calls, remembers the input widths."""

    def __init__(self):
        self.widths = []

    def __call__(self, executor, x, *args, **kwargs):
        self.widths.append(x.shape[-1])
        return executor(x, *args, **kwargs)


@pytest.mark.parametrize("sampler,path", [("euler", "ksampler"), ("dpmpp_2m", "ksampler"),
                                          ("euler_ancestral", "custom_advanced")])
@pytest.mark.parametrize("refs,batch", [(1, 2), (2, 2)])
def test_cached_forward_equals_uncached_forward(sampler, path, refs, batch):
    """K/V computed once per run (cached) vs recomputed from the model input at every call, per batch
    item (uncached): the same samples, CFG 2.5 (cond and uncond in one call)."""
    from comfy.patcher_extension import WrappersMP

    model, ref = _model(), _ref(refs)
    pos, neg = _conds()
    cached, holder = _one_way(model, ref, batch, cache=None)
    calls = CountCalls()
    cached.model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "other_pack.count", calls)
    out_cached = _sample(cached, pos, neg, sampler, path=path)
    uncached, plain = _one_way(model, ref, batch, cache=None, reuse=False)
    out_uncached = _sample(uncached, pos, neg, sampler, path=path)

    assert len(calls.widths) >= 3 and set(calls.widths) == {W}   # the model ran on the target half only
    assert holder.computed == 1 and plain.computed == len(calls.widths)
    _close(out_cached, out_uncached)
    torch.testing.assert_close(out_cached[..., W:], layout.match_batch(ref, batch), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out_cached).all() and (out_cached[..., :W] - out_cached[..., W:]).abs().mean() > 0.1


def test_flux2_cached_equals_uncached():
    ref = _ref(channels=128)
    model, (pos, neg) = _model("flux2"), _conds("flux2")
    cached, holder = _one_way(model, ref, 2, cache=None)
    uncached, _ = _one_way(model, ref, 2, cache=None, reuse=False)
    _close(_sample(cached, pos, neg), _sample(uncached, pos, neg))
    assert holder.computed == 1


def test_one_way_samples_differ_from_joint_and_follow_the_reference():
    from instruct_identity.engine.sampling import sample_identity

    model, (pos, neg) = _model(), _conds()
    kw = dict(seed=4, steps=3, cfg=1.0)
    one_way = sample_identity(model, _ref(), pos, neg, reference_attention="one_way", **kw)
    joint = sample_identity(model, _ref(), pos, neg, reference_attention="joint", **kw)
    other_ref = sample_identity(model, _ref(seed=8), pos, neg, reference_attention="one_way", **kw)
    assert (one_way[..., :W] - joint[..., :W]).abs().max() > 1e-2
    assert (one_way[..., :W] - other_ref[..., :W]).abs().max() > 1e-2


def test_queued_runs_reuse_the_cache_and_miss_it_when_they_should():
    """A second run with the same reference (a new patched clone, as a re-executed node makes) takes
    the K/V from the cache; another reference, a LoRA patched in, or weights changed in place (an
    optimizer step) compute them again, and the samples then match a fresh uncached run."""
    from instruct_identity.engine import oneway

    model, (pos, neg) = _model(), _conds()
    cache = oneway.ReferenceCache(2**30)
    first, h1 = _one_way(model, _ref(), 1, cache=cache)
    out1 = _sample(first, pos, neg)
    second, h2 = _one_way(model, _ref(), 1, cache=cache)
    assert torch.equal(_sample(second, pos, neg), out1)
    assert (h1.computed, h2.computed, h2.reused, len(cache)) == (1, 0, 1, 1)

    _, h3 = _one_way(model, _ref(seed=8), 1, cache=cache)
    _sample(_, pos, neg)
    assert h3.computed == 1 and len(cache) == 2

    dm = model.model.diffusion_model
    lora = model.clone()
    lora.add_patches({"diffusion_model.double_blocks.0.img_attn.qkv.weight": (0.3 * torch.randn_like(
        dm.double_blocks[0].img_attn.qkv.weight),)}, 1.0)
    with_lora, h4 = _one_way(lora, _ref(), 1, cache=cache)
    out4 = _sample(with_lora, pos, neg)
    fresh, _ = _one_way(lora, _ref(), 1, cache=None, reuse=False)
    assert h4.computed == 1
    _close(out4, _sample(fresh, pos, neg))
    assert (out4 - out1).abs().max() > 1e-3

    with torch.no_grad():
        dm.single_blocks[0].linear1.weight.mul_(1.1)                 # in place, as an optimizer step
    again, h5 = _one_way(model, _ref(), 1, cache=cache)
    out5 = _sample(again, pos, neg)
    fresh, _ = _one_way(model, _ref(), 1, cache=None, reuse=False)
    assert h5.computed == 1
    _close(out5, _sample(fresh, pos, neg))


def test_the_cache_keeps_to_its_memory_cap():
    from instruct_identity.engine import oneway

    model, (pos, neg) = _model(), _conds()
    probe = oneway.ReferenceCache(2**30)
    _sample(_one_way(model, _ref(seed=1), 1, cache=probe)[0], pos, neg)
    one = probe.nbytes
    dm = model.model.diffusion_model
    tokens, d = (H // 2) * (W // 2), dm.hidden_size
    assert one == 2 * tokens * d * 4 * (len(dm.double_blocks) + len(dm.single_blocks))  # K and V, fp32, every block
    cache = oneway.ReferenceCache(int(2.5 * one))
    for seed in (1, 2, 3):
        _sample(_one_way(model, _ref(seed=seed), 1, cache=cache)[0], pos, neg)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    _, newest = _one_way(model, _ref(seed=3), 1, cache=cache)
    _sample(_, pos, neg)
    _, oldest = _one_way(model, _ref(seed=1), 1, cache=cache)
    _sample(_, pos, neg)
    assert (newest.reused, oldest.computed) == (1, 1)                # least recently used went first
    tiny = oneway.ReferenceCache(1)
    inputs, _ = _one_way(model, _ref(seed=1), 1, cache=tiny)
    _sample(inputs, pos, neg)
    assert len(tiny) == 1                                            # the newest entry stays even over the cap
    off = oneway.ReferenceCache(0)                                   # II_REFERENCE_CACHE_MB=0
    inputs, holder = _one_way(model, _ref(seed=1), 1, cache=off)
    _sample(inputs, pos, neg)
    assert len(off) == 0 and holder.computed == 1                    # still once per run


def pass_through_block(calls: list):
    """Another pack's block replacement that calls the original block (like most do) and counts
    (a function: ComfyUI deep-copies model options on clone, and functions survive that as they are)."""

    def block(args, extra):
        calls.append(args["img"].shape)
        return extra["original_block"](args)

    return block


@pytest.mark.parametrize("order", ["before", "after"])
def test_another_packs_block_patch_keeps_running_around_the_one_way_block(order):
    """Installed before our node or after it, the foreign patch runs at every model call and its
    ``original_block`` is the one-way block, so the samples are the one-way samples."""
    from instruct_identity.engine import oneway

    model, (pos, neg) = _model(), _conds()
    reference, _ = _one_way(model, _ref(), 1, cache=None)
    expected = _sample(reference, pos, neg)
    calls = []
    foreign = pass_through_block(calls)
    base = model.clone()
    if order == "before":
        base.set_model_patch_replace(foreign, "dit", "double_block", 0)
    inputs, _ = _one_way(base, _ref(), 1, cache=None)
    if order == "after":
        inputs.model.set_model_patch_replace(foreign, "dit", "double_block", 0)
    out = _sample(inputs, pos, neg)
    assert len(calls) >= 3 and all(shape[1] == (H // 2) * (W // 2) for shape in calls)   # target tokens only
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # the Reference node applied again in joint mode takes our patches off and gives theirs back
    from instruct_identity.engine.patch import patch_model

    joint = patch_model(inputs.model, _ref(), "joint")
    dit = joint.model_options["transformer_options"]["patches_replace"]["dit"]
    assert not any(isinstance(p, oneway.OneWayBlock) for p in dit.values())
    assert oneway.one_way_patch_of(joint) is None
    if order == "before":
        assert dit[("double_block", 0)] is foreign


def test_joint_mode_is_untouched():
    """Untagged models get exactly today's patch: our two wrappers, no block patches, no one-way."""
    from comfy.patcher_extension import WrappersMP
    from instruct_identity.engine import oneway
    from instruct_identity.engine.patch import PATCH_KEY, patch_model
    from instruct_identity.engine.sampling import identity_inputs

    model = _model()
    patched = patch_model(model, _ref())
    assert "patches_replace" not in patched.model_options["transformer_options"]
    assert {k: list(v) for k, v in patched.wrappers.items() if v} == {
        WrappersMP.APPLY_MODEL: [PATCH_KEY], WrappersMP.OUTER_SAMPLE: [PATCH_KEY]}
    pos, neg = _conds()
    a = _sample(identity_inputs(model, _ref(), 2), pos, neg)
    b = _sample(identity_inputs(model, _ref(), 2, "joint"), pos, neg)
    assert torch.equal(a, b)
    assert oneway.mode_of(model) == "joint"


def test_the_mode_comes_from_the_model_tag_unless_given(tmp_path):
    """The trainer and Instruct Identity Load LoRA tag the model; sample_identity and the Reference
    node follow the tag; an explicit mode wins; a LoRA file's metadata sets the tag."""
    from instruct_identity.engine import oneway
    from instruct_identity.engine.sampling import identity_inputs
    from safetensors.torch import save_file

    model = _model()
    tagged = model.clone()
    oneway.tag(tagged, "one_way")
    assert oneway.one_way_patch_of(identity_inputs(tagged, _ref()).model) is not None
    assert oneway.one_way_patch_of(identity_inputs(tagged, _ref(), reference_attention="joint").model) is None
    assert oneway.one_way_patch_of(identity_inputs(model, _ref()).model) is None

    dm = model.model.diffusion_model
    sd = {"lora_unet_img_in.lora_down.weight": torch.randn(2, dm.img_in.weight.shape[1]),
          "lora_unet_img_in.lora_up.weight": torch.randn(dm.img_in.weight.shape[0], 2), "lora_unet_img_in.alpha": torch.tensor(2.0)}
    for name, meta in (("one.safetensors", {"reference_attention": "one_way"}), ("old.safetensors", {"mode": "identity"})):
        save_file(sd, str(tmp_path / name), metadata=meta)
    loaded, mode = oneway.apply_lora_file(model, str(tmp_path / "one.safetensors"))
    assert mode == "one_way" and oneway.mode_of(loaded) == "one_way" and oneway.mode_of(model) == "joint"
    assert len(loaded.patches) == 1                                  # the LoRA itself went on through ComfyUI
    assert oneway.apply_lora_file(model, str(tmp_path / "old.safetensors"))[1] == "joint"
    assert oneway.apply_lora_file(model, str(tmp_path / "old.safetensors"), 1.0, "one_way")[1] == "one_way"


def test_bad_modes_and_models_are_input_errors():
    from instruct_identity.core.errors import InputError
    from instruct_identity.engine.patch import patch_model

    with pytest.raises(InputError, match="reference_attention.*one-way"):
        patch_model(_model(), _ref(), "one-way")
    with pytest.raises(InputError, match="reference_attention.*Chroma"):
        patch_model(ii_harness.tiny_flux("chroma"), torch.randn(1, 64, H, W), "one_way")
    with pytest.raises(InputError, match="reference_attention.*Fill"):
        patch_model(ii_harness.tiny_flux("flux_fill"), _ref(), "one_way")


def test_reference_node_route_lora_one_way(flux_vae):
    """The node's explicit option, and route auto following a tagged model."""
    from instruct_identity.engine import oneway
    from instruct_identity.nodes.reference import prepare_reference

    model = ii_harness.tiny_flux()
    image = torch.rand(1, 48, 64, 3)
    pos = ii_harness.flux_conditioning()
    p = prepare_reference(model, flux_vae, pos, image, route="lora_one_way")
    assert p.route == "lora" and p.attention == "one_way" and "one-way" in p.info
    assert oneway.one_way_patch_of(p.model) is not None
    tagged = model.clone()
    oneway.tag(tagged, "one_way")
    assert prepare_reference(tagged, flux_vae, pos, image).attention == "one_way"
    assert prepare_reference(tagged, flux_vae, pos, image, route="lora").attention == "joint"
    assert prepare_reference(model, flux_vae, pos, image).attention == "joint"


def test_weights_loaded_in_inference_mode():
    """ComfyUI loads model files under torch.inference_mode: such weights have no version counter,
    and the cache key must still work (the server run found this)."""
    from instruct_identity.engine import oneway

    with torch.inference_mode():
        model = _model()
    cache, (pos, neg) = oneway.ReferenceCache(2**30), _conds()
    out = [_sample(_one_way(model, _ref(), 1, cache=cache)[0], pos, neg) for _ in range(2)]
    assert torch.equal(out[0], out[1]) and cache.hits == 1
