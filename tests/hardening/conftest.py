"""Fixtures of the hardening tests: hostile inputs against the nodes (through a real server), the
command-line tools and the trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "training"))  # ii_train_helpers


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread of this shared CPU (restored after each test)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg(tmp_path, comfy):
    """``tiny_cfg(**overrides)`` -> a finalised TrainConfig on 4 fresh pairs for a few fast CPU steps."""
    from ii_train_helpers import make_pairs, tiny_config

    pairs = make_pairs(tmp_path / "pairs")
    return lambda **kw: tiny_config(pairs, tmp_path / "out", **kw)


@pytest.fixture
def components(comfy):
    """``components()`` -> tiny FLUX + synthetic VAE and text encoder (no model files)."""
    import ii_harness
    from instruct_identity.engine.synthetic import SyntheticTextEncoder, SyntheticVae
    from instruct_identity.training.model import Components

    return lambda seed=0: Components(ii_harness.tiny_flux(seed=seed), SyntheticVae(), SyntheticTextEncoder(), None, "tiny")
