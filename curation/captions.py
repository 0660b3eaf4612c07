"""Captions for curated targets, written by a VLM (the paper captions its curated data with a VLM).

A captioner is any callable ``f(target, cell_prompt) -> Caption`` on an ``[H, W, 3]`` uint8 picture.
:class:`VLMCaptioner` asks the configured CHARIS VLM judge (any OpenAI-compatible server or a local
transformers model -- the same backends, key handling and on-disk answer cache as CHARIS) to describe
what the picture actually shows, starting from the cell's prompt. Without a VLM there is no captioner
and the cell prompt stays the caption; when the VLM fails for one picture, that picture keeps its cell
prompt and the reason is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError

log = logging.getLogger(__name__)

CAPTION_MODES = ("cell", "vlm")  # the cell prompt as is, or a VLM caption


@dataclass
class Caption:
    text: str
    source: str  # "vlm:<backend id>", "cell prompt" or "cell prompt (VLM failed: <why>)"


Captioner = Callable[[np.ndarray, str], Caption]


class VLMCaptioner:
    """Captions from a CHARIS :class:`~instruct_identity.charis.vlm.Judge` (answers cached by picture
    and prompt, so re-running a curation asks nothing twice)."""

    def __init__(self, judge):
        self.judge = judge

    def __call__(self, target: np.ndarray, cell_prompt: str) -> Caption:
        from PIL import Image

        from ..charis.images import from_pil

        answer = self.judge.ask("caption", {"generated": from_pil(Image.fromarray(target), "target")},
                                prompt=cell_prompt or "(no prompt)")
        if not answer.ok:
            log.warning("VLM caption failed (%s); keeping the cell prompt", answer.error)
            return Caption(cell_prompt, f"cell prompt (VLM failed: {answer.error})")
        return Caption(answer.value["caption"], f"vlm:{self.judge.id}")


def make_captioner(mode: str, evaluator=None, config_path: str | None = None) -> Captioner | None:
    """The captioner for ``mode`` ("cell": none; "vlm": the VLM of ``evaluator`` -- e.g. the CHARIS Loader
    node's -- or of the CHARIS config at ``config_path``). No VLM configured: none, with a notice, and
    every target keeps its cell prompt."""
    if mode not in CAPTION_MODES:
        raise InputError("caption", f"'{mode}' is not a caption mode.", f"Choose one of {', '.join(CAPTION_MODES)}.")
    if mode == "cell":
        return None
    if evaluator is None:
        from ..charis import Evaluator, load_config

        evaluator = Evaluator(load_config(config_path))
    judge = evaluator.judge
    if judge is None:
        log.warning("caption = vlm, but no VLM is configured (CHARIS config [vlm] / the CHARIS Loader's vlm): "
                    "the cell prompts stay the captions")
        return None
    return VLMCaptioner(judge)
