"""Fixtures of the trainer tests: small synthetic datasets, configs and tiny components."""

from __future__ import annotations

import sys
from pathlib import Path

import ii_harness
import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from ii_train_helpers import make_pairs, tiny_config


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model's matmuls are too small for two threads, and on a shared CPU the second thread
    mostly waits: one thread is ~3x faster here. Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture
def tiny_cfg(tmp_path, pairs, comfy):
    """``tiny_cfg(**overrides)`` -> a finalised TrainConfig for a few fast CPU steps."""
    return lambda **kw: tiny_config(pairs, tmp_path / "out", **kw)


@pytest.fixture
def components(comfy):
    """``components(seed=0, **tiny_flux kwargs)`` -> tiny FLUX + synthetic VAE/text encoder."""
    from instruct_identity.training.model import Components
    from instruct_identity.engine.synthetic import SyntheticTextEncoder, SyntheticVae

    def make(seed: int = 0, **kw):
        return Components(ii_harness.tiny_flux(seed=seed, **kw), SyntheticVae(), SyntheticTextEncoder(), None, "tiny")

    return make
