"""Shared fixtures: ComfyUI in-process, tiny models, and one real ComfyUI server per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ii_harness  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI importable in-process (CPU); returns its root folder."""
    return ii_harness.setup_comfy()


@pytest.fixture(scope="session")
def model_dir(comfy):
    """Random-weight model files under the standard names (flux1-dev, ae, clip_l, ...)."""
    return ii_harness.model_files()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, model_dir):
    """A real ComfyUI server (main.py --cpu) with this pack in custom_nodes and the random models."""
    server = ii_harness.start_server(tmp_path_factory.mktemp("comfy-base"), model_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def flux_vae(comfy):
    """ComfyUI's VAE object around the random 16-channel FLUX autoencoder file."""
    import comfy.sd
    import comfy.utils

    models = ii_harness.model_files(["ae.safetensors"])
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(models / "vae" / "ae.safetensors")))
