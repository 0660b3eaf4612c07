"""The miniature package: the codec, the text encoder and the base file format the demo loads."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def mini(comfy):
    from instruct_identity import miniature

    return miniature


def _image(mini, i=5, pose=4):
    from instruct_identity.benchmarks.toy.data import to_image

    img, _ = mini.sprites.render(mini.sprites.all_characters()[i], mini.sprites.ALL_POSES[pose], 32)
    return to_image(img)


def test_pixel_codec_is_lossless_and_the_model_sees_pixels_in_minus_one_one(mini):
    import comfy.latent_formats

    codec = mini.PixelCodec()
    x = _image(mini)
    z = codec.encode(x)
    assert z.shape == (1, 16, 16, 16) and codec.downscale == 2
    assert torch.allclose(codec.decode(z), x, atol=1e-6)
    model_space = comfy.latent_formats.Flux().process_in(z)  # what the trainer, the sampler and the patch apply
    assert model_space.min() >= -1 - 1e-5 and model_space.max() <= 1 + 1e-5
    assert torch.allclose(model_space[:, 12:], torch.zeros(1, 4, 16, 16), atol=1e-5)


def test_word_encoder_binds_words_to_parts(mini):
    te = mini.WordEncoder()
    assert te.kind == "words-phrase"
    a, pa = te.encode("a red head, a blue torso")
    b, pb = te.encode("a blue head, a red torso")
    assert a.shape == (te.tokens, te.dim)
    assert not torch.allclose(a, b)            # same bag of words, different binding
    assert torch.allclose(pa, pb)              # pooled = bag of words
    assert torch.equal(te.encode("the character lying")[0], mini.WordEncoder().encode("the character lying")[0])
    assert not torch.equal(te.encode("x")[0], mini.WordEncoder(seed=1).encode("x")[0])
    # every token of "a red head" carries both words; position vectors tell equal phrases apart
    c, _ = te.encode("a red head, a red head")
    head_only, _ = te.encode("a head")
    assert not torch.equal(c[0], c[3]) and torch.allclose(c[0] - te.positions[0], c[3] - te.positions[3])
    red = te._vec("p", "red", te.dim)
    assert torch.cosine_similarity(c[2] - te.positions[2], red, dim=0) > 0.2  # "head" token carries "red"
    assert torch.cosine_similarity(head_only[1] - te.positions[1], red, dim=0).abs() < 0.4
    assert torch.equal(c[6:], torch.zeros_like(c[6:])) and c[5].abs().sum() > 0 and torch.equal(te.encode("")[0], torch.zeros(te.tokens, te.dim))


def test_word_encoder_noun_kind_still_reads_earlier_bases(mini):
    te = mini.WordEncoder(tokens=36, kind="words-noun")
    c, _ = te.encode("a red head, a red torso")
    assert torch.equal(c[1, :32], c[4, :32]) and not torch.equal(c[1, 32:], c[4, 32:])
    assert torch.equal(c[1, 32:], c[2, 32:])  # "red" and "head" share the phrase's context
    from instruct_identity.miniature.files import make_text_encoder

    assert make_text_encoder(te.spec).identity == te.identity == "toy-words-noun:64:36:0"
    with pytest.raises(ValueError, match="known kinds"):
        make_text_encoder({"kind": "t5", "dim": 64, "tokens": 8, "seed": 0})


def test_base_file_round_trip_rebuilds_the_same_model(mini, tmp_path):
    cfg = mini.unet_config(hidden=64, heads=2, double=1, single=1)
    model = mini.build_model(cfg, seed=3)
    dm = model.model.diffusion_model
    with torch.no_grad():  # non-zero weights everywhere (a fresh build zeroes the output layer)
        for p in dm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    spec = mini.BaseSpec(cfg, 32)
    path = mini.save_base(tmp_path / "b.safetensors", dm.state_dict(), spec,
                          {"command": "test", "metrics": {"part_color_acc": 0.5}})
    meta = mini.read_metadata(path)
    assert meta["format"] == mini.FORMAT and json.loads(meta["unet_config"]) == cfg
    assert json.loads(meta["text_encoder"]) == {"kind": "words-phrase", "dim": 64, "tokens": 40, "seed": 0}
    assert json.loads(meta["codec"])["downscale"] == 2 and meta["image_size"] == "32"
    from safetensors.torch import load_file

    assert all(v.dtype == torch.float16 for v in load_file(str(path)).values())
    base = mini.load_base(path)
    assert base.provenance == {"command": "test", "metrics": {"part_color_acc": 0.5}}
    assert base.spec == spec and base.text_encoder.tokens == 40 and base.codec.downscale == 2
    x = torch.randn(1, 16, 8, 8)
    cond, pooled = base.text_encoder.encode("the character lying, small, on the left")
    args = (x, torch.tensor([0.5]), cond[None], pooled[None])
    from instruct_identity.training.model import FluxForward

    got = FluxForward(base.model.model.diffusion_model, gradient_checkpointing=False, guidance=1.0)(
        base.model.model.diffusion_model, *args)
    dm.load_state_dict({k: v.half().float() for k, v in dm.state_dict().items()})
    want = FluxForward(dm, gradient_checkpointing=False, guidance=1.0)(dm, *args)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="not a miniature base"):
        mini.BaseSpec.from_metadata({"format": "something else"})


def test_identity_sampling_on_a_miniature_base_keeps_the_reference(mini):
    from instruct_identity.core import layout
    from instruct_identity.engine.sampling import conditioning, sample_identity

    model = mini.build_model(mini.unet_config(hidden=64, heads=2, double=1, single=1), seed=0)
    codec, te = mini.PixelCodec(), mini.WordEncoder()
    ref = codec.encode(_image(mini))
    grid = sample_identity(model, ref, conditioning(*te.encode("the character lying, small, on the left")),
                           conditioning(*te.encode("")), seed=0, steps=3)
    target, reference = layout.split(grid)
    assert torch.allclose(reference, ref, atol=1e-4) and target.shape == ref.shape
    assert codec.decode(target).shape == (1, 32, 32, 3)


def test_diptych_inpaint_route_noises_the_reference_the_patch_route_keeps_it_clean(mini):
    """The zero-shot baseline without the patch: ComfyUI's masked sampling hands the model a re-noised
    reference half; the result still carries the reference in that half."""
    from instruct_identity.core import layout
    from instruct_identity.engine.sampling import conditioning, sample_diptych_inpaint, sample_identity

    base = mini.build_model(mini.unet_config(hidden=64, heads=2, double=1, single=1), seed=0)
    with torch.no_grad():  # non-zero weights everywhere (a fresh build zeroes the output layer)
        for p in base.model.diffusion_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    codec, te = mini.PixelCodec(), mini.WordEncoder()
    ref = codec.encode(_image(mini))
    ref_in = base.model.process_latent_in(ref)
    pos, neg = conditioning(*te.encode("two views. first view: the character lying, small, on the left")), \
        conditioning(*te.encode(""))

    def recorded(route):
        seen = []

        def wrapper(apply_model, args):
            seen.append(args["input"].detach().clone())
            return apply_model(args["input"], args["timestep"], **args["c"])

        model = base.clone()
        model.set_model_unet_function_wrapper(wrapper)
        grid = route(model, ref, pos, neg, seed=0, steps=3)
        return seen, grid

    seen, grid = recorded(sample_diptych_inpaint)
    assert len(seen) == 3
    first_right = layout.split(seen[0])[1]
    assert (first_right - ref_in).std() > 0.5  # noised to the first step's level, not the clean reference
    assert torch.allclose(layout.split(grid)[1], ref, atol=1e-4)
    seen_patch, grid_patch = recorded(sample_identity)
    assert torch.allclose(layout.split(grid_patch)[1], ref, atol=1e-4)
    assert not torch.allclose(grid_patch, grid)  # a different route, a different picture
