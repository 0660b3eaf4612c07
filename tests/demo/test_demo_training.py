"""The trainer's demo: generated sprite pairs, and the trainer on a miniature base file (its codec and
text encoder from the metadata, the dataset generated when missing), its LoRA loaded by ComfyUI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from demo_helpers import SIZE, write_base
from instruct_identity.core.errors import InputError
from PIL import Image


def palette_colours(rgb) -> set:
    from instruct_identity.miniature import sprites

    present = {tuple(int(v) for v in c) for c in rgb.reshape(-1, 3)}
    return {name for name, c in sprites.PALETTE.items() if tuple(c) in present}


def test_pairs_are_two_poses_of_one_training_character(tmp_path):
    from instruct_identity.miniature import demo_data, sprites

    manifest = demo_data.write_pairs(tmp_path / "d", 12, size=32, seed=4)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 12
    captions = {p.caption() for p in sprites.ALL_POSES}
    _, held_out = sprites.split_characters(10**6, demo_data.HELD_OUT, seed=demo_data.SPLIT_SEED)
    held_colours = {(c.head, c.torso) for c in held_out}
    for row in rows:
        ref = np.asarray(Image.open(manifest.parent / row["reference"]))
        tgt = np.asarray(Image.open(manifest.parent / row["target"]))
        assert ref.shape == tgt.shape == (32, 32, 3)
        assert not np.array_equal(ref, tgt)
        assert row["caption"] in captions  # the target's pose only: colours must come from the reference
        # same character: the same palette colours in both pictures
        assert palette_colours(ref) == palette_colours(tgt)
    chars = [c for c, _, _ in demo_data.make_pairs(200, seed=4)]
    assert not {(c.head, c.torso) for c in chars} & held_colours
    again = demo_data.write_pairs(tmp_path / "e", 12, size=32, seed=4)
    assert again.read_text() == manifest.read_text()
    assert (tmp_path / "e" / rows[3]["target"]).read_bytes() == (manifest.parent / rows[3]["target"]).read_bytes()


def test_bad_sizes_are_explained(tmp_path):
    from instruct_identity.miniature import demo_data

    with pytest.raises(InputError) as e:
        demo_data.write_pairs(tmp_path, 4, size=30)
    assert e.value.input_name == "size"
    with pytest.raises(InputError) as e:
        demo_data.write_pairs(tmp_path, 0)
    assert e.value.input_name == "pairs"
    assert demo_data.main([str(tmp_path / "cli"), "--pairs", "3", "--size", "16"]) == 0
    assert len((tmp_path / "cli" / "pairs.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_trainer_trains_on_a_miniature_base_with_a_generated_dataset(comfy, tmp_path, monkeypatch, caplog):
    import comfy.sd
    import comfy.utils
    from instruct_identity.miniature import demo, demo_data
    from instruct_identity.training.config import load_config
    from instruct_identity.training.trainer import train

    base = write_base(tmp_path / "models" / "base.safetensors", seed=2)
    monkeypatch.setattr(demo_data, "PAIRS", 6)
    cfg_file = tmp_path / "demo.toml"
    cfg_file.write_text("\n".join([
        'pretrained_model_name_or_path = "models/base.safetensors"',   # no ae, no clip_l: from the metadata
        'dataset_config = "data/pairs.jsonl"',                         # missing: generated
        f"resolution = {SIZE}", 'network_dim = 4', 'train_batch_size = 2', 'max_train_steps = 2',
        'learning_rate = 1e-3', 'mixed_precision = "no"', 'save_state = false', 'output_dir = "out"',
        'output_name = "demo_lora"']))
    cfg = load_config(cfg_file)
    result = train(cfg)
    assert len((tmp_path / "data" / "pairs.jsonl").read_text().splitlines()) == 6
    assert result.lora_path.is_file() and result.step == 2

    # the demo loader's model takes the trained LoRA through ComfyUI's own loader, every key mapped
    import folder_paths

    folder_paths.add_model_folder_path(demo.BASE_FOLDER, str(base.parent))
    loaded = demo.load_demo(base.name)
    lora = comfy.utils.load_torch_file(str(result.lora_path), safe_load=True)
    with caplog.at_level(logging.WARNING):
        patched, _ = comfy.sd.load_lora_for_models(loaded.model, None, lora, 1.0, 0.0)
    assert not [r for r in caplog.records if "not loaded" in r.getMessage().lower()], caplog.text
    assert any(k.startswith("diffusion_model.single_blocks.0.linear1") for k in patched.patches)


def test_generated_demo_pairs_respect_the_servers_write_folders(comfy, tmp_path):
    """Under the Train LoRA node, a missing demo dataset is generated only where the server may write."""
    from types import SimpleNamespace

    from instruct_identity.training.paths import PathPolicy
    from instruct_identity.training.steps import check_dataset

    base = write_base(tmp_path / "models" / "base.safetensors")
    outside = tmp_path / "input" / "pairs.jsonl"                      # readable, not writable
    cfg = SimpleNamespace(dataset_config=str(outside), pretrained_model_name_or_path=str(base))
    policy = PathPolicy(read=(tmp_path / "input",), write=(tmp_path / "output",))
    with pytest.raises(InputError) as e:
        check_dataset(cfg, None, policy)
    assert e.value.input_name == "dataset_config"
    assert not outside.exists() and not (tmp_path / "input" / "images").exists()   # nothing was written
