"""Fixtures for the CHARIS tests: tiny random models (built once per session, never downloaded), a
fake OpenAI-compatible VLM on loopback, synthetic pictures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

import charis_models  # noqa: E402
from fake_vlm import FakeVLM  # noqa: E402


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
