"""The toy runner's ``main`` configures logging for a command line (root and the trainer's loggers at
ERROR); in-process tests restore the levels afterwards so later tests still see warnings."""

import logging

import pytest

QUIETED = ("", "accelerate", "instruct_identity.training", "bitsandbytes", "toy")


@pytest.fixture(autouse=True)
def restore_logging_levels():
    levels = {name: logging.getLogger(name).level for name in QUIETED}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
