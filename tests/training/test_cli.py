"""``ii-train`` end to end on model files loaded by ComfyUI's own loaders (random weights: a FLUX.1
file with one double and one single block, the FLUX VAE, CLIP-L)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ii_train_helpers import make_pairs
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[2]


def ii_train(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COMFYUI_PATH": str(REPO / ".comfyui" / "ComfyUI"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "instruct_identity.training.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900, check=False)


def test_unknown_key_fails_with_a_suggestion(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset_config = "pairs.jsonl"\nnetwork_dimm = 8\n')
    proc = ii_train("--config", cfg)
    assert proc.returncode == 2
    assert 'network_dimm: is not a trainer option. Did you mean "network_dim"?' in proc.stderr


@pytest.mark.slow
def test_cli_trains_on_comfyui_model_files_caches_and_resumes(tmp_path, model_dir):
    make_pairs(tmp_path / "data", n=2, size=(32, 32))
    model = model_dir / "diffusion_models" / "flux1-dev.safetensors"
    cfg = tmp_path / "train.toml"
    cfg.write_text(f"""
[model]
pretrained_model_name_or_path = "{model}"
ae = "{model_dir / 'vae' / 'ae.safetensors'}"
clip_l = "{model_dir / 'text_encoders' / 'clip_l.safetensors'}"
[data]
dataset_config = "data/pairs.jsonl"
resolution = 32
cache_latents_to_disk = true
cache_text_encoder_outputs_to_disk = true
cache_dir = "cache"
[run]
network_dim = 4
mixed_precision = "no"
gradient_checkpointing = true
max_train_steps = 1
output_dir = "out"
output_name = "cli"
""")
    first = ii_train("--config", cfg)
    assert first.returncode == 0, first.stderr[-4000:]
    lora = tmp_path / "out" / "cli.safetensors"
    with safe_open(str(lora), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["base_model_hash"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert meta["base_model_file"] == "flux1-dev.safetensors" and meta["steps"] == "1" and meta["preset"] == "B"
    assert {k.rsplit(".", 2)[0] for k in keys} == {
        "lora_unet_img_in", *(f"lora_unet_double_blocks_0_{s}_{m}" for s in ("img", "txt")
                              for m in ("attn_qkv", "attn_proj", "mlp_0", "mlp_2")),
        "lora_unet_single_blocks_0_linear1", "lora_unet_single_blocks_0_linear2"}
    assert "4 latents and 2 captions to encode" in first.stderr
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 6

    second = ii_train("--config", cfg, "--resume", "--set", "max_train_steps=2")
    assert second.returncode == 0, second.stderr[-4000:]
    assert "0 latents and 0 captions to encode" in second.stderr  # the disk cache is reused
    assert "resumed from" in second.stderr and "at step 1" in second.stderr
    with safe_open(str(lora), "pt") as f:
        assert f.metadata()["steps"] == "2"
