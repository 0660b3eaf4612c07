"""Fixtures of the built-in demo's tests (helpers in demo_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_helpers import write_base


@pytest.fixture(scope="session")
def demo_models(comfy, tmp_path_factory):
    """A folder with a random base (``small_base.safetensors``) and a non-base file, registered as a demo
    base folder of this process."""
    import folder_paths
    from instruct_identity.miniature import demo

    root = tmp_path_factory.mktemp("demo-models")
    write_base(root / "small_base.safetensors")
    torch.save({"x": torch.zeros(1)}, root / "pickled.pt")  # never listed, never loaded
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(root / "not_a_base.safetensors"))
    demo.register_folders()
    folder_paths.add_model_folder_path(demo.BASE_FOLDER, str(root))
    return root


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory):
    """A real ComfyUI server (main.py --cpu) with this pack and no model files: the demo needs none."""
    import ii_harness

    srv = ii_harness.start_server(tmp_path_factory.mktemp("demo-server"))
    yield srv
    srv.stop()
