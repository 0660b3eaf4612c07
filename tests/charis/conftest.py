"""Fixtures for the CHARIS tests: tiny random models (built once per session, never downloaded), a
fake OpenAI-compatible VLM on loopback, synthetic pictures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

import charis_models  # noqa: E402
from fake_vlm import FakeVLM  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """CHARIS's colour maths works on small tensors: on this shared 2-core machine a second intra-op
    thread mostly waits (a colour score takes ~10x longer). The library never changes the thread
    count itself (a global setting); the tests choose it here, as a CLI user does with --threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(open_clip local-dir folder, TorchScript file in OpenAI layout) of the same random RN CLIP."""
    return charis_models.build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_grounded_sam(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsam")
    return charis_models.build_tiny_grounding_dino(root / "gdino"), charis_models.build_tiny_sam(root / "sam")


@pytest.fixture
def fake_vlm():
    server = FakeVLM()
    yield server
    server.close()
