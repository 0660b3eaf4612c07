"""The demo loader in-process: a miniature base rebuilt from its metadata, ComfyUI's stock nodes on its
VAE / CLIP stand-ins, ComfyUI's LoRA code on its model, the Reference node + sampler + Decode Target."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from demo_helpers import SIZE, SMALL, TEXT, write_base, write_lora
from instruct_identity.core.errors import InputError


@pytest.fixture(scope="module")
def loaded(demo_models):
    from instruct_identity.miniature import demo

    return demo.load_demo("small_base.safetensors")


def sprite(size=SIZE, index=5, pose=0):
    from instruct_identity.miniature import sprites

    rgb = sprites.render(sprites.all_characters()[index], sprites.ALL_POSES[pose], size)[0]
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def test_only_miniature_safetensors_files_are_offered_as_bases(demo_models):
    from instruct_identity.miniature import demo

    names = demo.base_names()
    assert "small_base.safetensors" in names
    assert "not_a_base.safetensors" not in names and "pickled.pt" not in names
    with pytest.raises(InputError) as e:
        demo.load_demo("not_a_base.safetensors")
    assert e.value.input_name == "base" and "not a miniature base" in str(e.value)
    with pytest.raises(InputError) as e:
        demo.load_demo("missing.safetensors")
    assert e.value.input_name == "base" and "demo/models" in str(e.value)


def test_model_codec_and_text_encoder_come_from_the_file_metadata(loaded):
    unet = loaded.model.model.model_config.unet_config
    assert (unet["hidden_size"], unet["num_heads"], unet["depth"], unet["depth_single_blocks"]) == (
        SMALL["hidden"], SMALL["heads"], SMALL["double"], SMALL["single"])
    assert unet["context_in_dim"] == SMALL["text_dim"]
    assert loaded.image_size == SIZE
    assert loaded.clip.encoder.spec == TEXT
    assert "hidden 96" in loaded.info and "tests/demo random base" in loaded.info


def test_stock_clip_text_encode_gives_the_word_encoders_conditioning(loaded):
    import nodes as comfy_nodes

    text = "the character lying, small, on the left"
    (cond,) = comfy_nodes.CLIPTextEncode().encode(loaded.clip, text)
    emb, extra = cond[0]
    want, pooled = loaded.clip.encoder.encode(text)
    assert emb.shape == (1, TEXT["tokens"], TEXT["dim"])
    assert torch.equal(emb[0], want) and torch.equal(extra["pooled_output"][0], pooled)
    other = comfy_nodes.CLIPTextEncode().encode(loaded.clip, "the character standing, large, on the right")[0]
    assert not torch.equal(other[0][0], emb)
    # the trainer's TextEncoder wrapper works on it too
    from instruct_identity.training.model import TextEncoder

    c, p = TextEncoder(loaded.clip, "x").encode(text)
    assert torch.equal(c, want) and torch.equal(p, pooled)


def test_stock_vae_nodes_round_trip_the_pixels(loaded):
    import nodes as comfy_nodes

    img = sprite()
    (latent,) = comfy_nodes.VAEEncode().encode(loaded.vae, img)
    assert latent["samples"].shape == (1, 16, SIZE // 2, SIZE // 2)
    (back,) = comfy_nodes.VAEDecode().decode(loaded.vae, latent)
    assert back.shape == img.shape and (back - img).abs().max() < 1e-5
    assert loaded.vae.spacial_compression_encode() == 2
    # an odd-sized picture is cropped to the codec's cell, as ComfyUI's VAE does
    assert loaded.vae.encode(torch.rand(1, SIZE + 1, SIZE + 3, 3)).shape == (1, 16, SIZE // 2, SIZE // 2 + 1)
    with pytest.raises(InputError) as e:
        loaded.vae.decode(torch.zeros(1, 4, 8, 8))
    assert e.value.input_name == "samples"


@pytest.fixture(scope="module")
def lora_name(loaded, tmp_path_factory):
    import folder_paths

    root = tmp_path_factory.mktemp("demo-loras")
    write_lora(root / "demo_test_lora.safetensors", loaded.model)
    folder_paths.add_model_folder_path("loras", str(root))
    return "demo_test_lora.safetensors"


def test_stock_lora_loaders_patch_the_model_and_leave_the_text_encoder(loaded, lora_name, caplog):
    import nodes as comfy_nodes

    with caplog.at_level(logging.WARNING):
        (patched,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(loaded.model, lora_name, 1.0)
        model2, clip2 = comfy_nodes.LoraLoader().load_lora(loaded.model, loaded.clip, lora_name, 1.0, 1.0)
    assert not [r for r in caplog.records if "not loaded" in r.getMessage().lower()], caplog.text
    assert {"diffusion_model.img_in.weight", "diffusion_model.double_blocks.0.img_attn.qkv.weight"} <= set(patched.patches)
    assert set(model2.patches) == set(patched.patches)
    assert clip2 is loaded.clip  # the word encoder has no weights to patch


def run_graph(loaded, model, image, text, steps=3, seed=1):
    """What the demo template does, through the pack's node code and ComfyUI's sampler."""
    from instruct_identity.nodes.reference import (
        InstructIdentityDecodeTarget,
        InstructIdentityReference,
    )

    import nodes as comfy_nodes

    (cond,) = comfy_nodes.CLIPTextEncode().encode(loaded.clip, text)
    ref = InstructIdentityReference.execute(model, loaded.vae, cond, image, 0, 0, "pad", "#ffffff", 1, "auto", 1.0)
    m, pos, neg, latent, _ = ref.result
    (grid,) = comfy_nodes.common_ksampler(m, seed, steps, 1.0, "euler", "simple", pos, neg, latent)
    target, comparison, _ = InstructIdentityDecodeTarget.execute(grid, loaded.vae).result
    return grid, target, comparison


def test_reference_node_sampler_and_decode_target_on_the_demo_model(loaded, lora_name):
    import nodes as comfy_nodes

    img = sprite()
    grid, target, comparison = run_graph(loaded, loaded.model, img, "the character arms up, large, on the right")
    assert target.shape == img.shape and comparison.shape[1] == SIZE and comparison.shape[2] > 2 * SIZE
    assert torch.isfinite(target).all()
    # the right half of the sampled grid is the clean reference (the reference patch at work)
    ref_half = grid["samples"][..., SIZE // 2:]
    assert torch.allclose(loaded.vae.decode(ref_half), img, atol=1e-5)
    # the LoRA changes what is drawn
    (patched,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(loaded.model, lora_name, 1.0)
    _, target_lora, _ = run_graph(loaded, patched, img, "the character arms up, large, on the right")
    assert (target_lora - target).abs().max() > 1e-3


def test_bundled_references_are_pictures_and_unknown_names_are_explained():
    from instruct_identity.miniature import demo

    names = demo.reference_names()
    for name in names:
        image = demo.load_reference(name)
        assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    with pytest.raises(InputError) as e:
        demo.reference_path("no_such_sprite.png")
    assert e.value.input_name == "reference" and "Load Image" in str(e.value)


def test_demo_folders_are_registered_for_comfyuis_lora_list(comfy):
    import folder_paths
    from instruct_identity.miniature import demo

    demo.register_folders()
    demo.register_folders()  # idempotent
    loras = folder_paths.get_folder_paths("loras")
    assert loras.count(str(demo.MODELS_DIR)) == 1 and str(demo.TRAINED_DIR) in loras
    assert str(demo.MODELS_DIR) in folder_paths.get_folder_paths(demo.BASE_FOLDER)


def test_a_replaced_base_file_is_reloaded_not_served_from_comfyuis_cache(demo_models, tmp_path):
    import os

    from instruct_identity.miniature import demo
    from instruct_identity.nodes.demo import InstructIdentityDemoModel

    path = demo_models / "replaced.safetensors"
    write_base(path, seed=5)
    before = InstructIdentityDemoModel.fingerprint_inputs("replaced.safetensors")
    write_base(path, seed=6)
    os.utime(path, ns=(1, 1))  # even with an old time stamp the size/time pair differs
    assert before and InstructIdentityDemoModel.fingerprint_inputs("replaced.safetensors") != before
    assert demo.file_fingerprint(demo.base_path, "nope.safetensors") == ""


def test_a_base_this_version_cannot_rebuild_is_explained(demo_models):
    from instruct_identity.miniature import base_file, components, demo, files

    path = demo_models / "future_base.safetensors"
    cfg = components.unet_config(**SMALL)
    spec = files.BaseSpec(cfg, image_size=SIZE, text_encoder={"kind": "words-from-the-future", "dim": 24})
    files.save_base(path, components.build_model(cfg).model.diffusion_model.state_dict(), spec)
    assert "future_base.safetensors" in demo.base_names()  # listed: it says it is a miniature base
    with pytest.raises(InputError) as e:
        demo.load_demo("future_base.safetensors")
    assert e.value.input_name == "base" and "words-from-the-future" in str(e.value)
    with pytest.raises(InputError) as e:
        base_file.encoders_of(path)
    assert e.value.input_name == "pretrained_model_name_or_path" and "Re-export" in str(e.value)
    assert base_file.spec_of(demo_models / "not_a_base.safetensors") is None
