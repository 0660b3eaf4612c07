"""Curation captions by the configured VLM (issue 13): optional, cached, same backends as CHARIS; the
cell prompt stays when no VLM is configured or the VLM fails."""

from __future__ import annotations

import numpy as np
import pytest
from charis_models import character

from instruct_identity.charis import CharisConfig, Evaluator
from instruct_identity.charis.config import VLMConfig
from instruct_identity.curation import curate
from instruct_identity.curation.captions import VLMCaptioner, make_captioner
from instruct_identity.curation.dataset import read_pairs
from instruct_identity.curation.pipeline import CurationConfig, SheetSource
from instruct_identity.curation.sheets import uniform_info

PROMPTS = ["the hero standing", "the hero jumping"]


def sheet() -> SheetSource:
    a = np.asarray(character(size=128))
    b = np.asarray(character(size=128, dx=20, background=(220, 230, 255)))
    img = np.concatenate([a, b], axis=1)
    return SheetSource(img, uniform_info(1, 2, 0, img.shape[1], img.shape[0], PROMPTS), "hero-sheet")


def vlm_evaluator(server, cache=None) -> Evaluator:
    return Evaluator(CharisConfig(cache_dir=str(cache) if cache else None, vlm=VLMConfig(
        backend="openai", base_url=server.base_url, model="fake-vl", api_key_env=None, max_retries=0)))


def test_targets_get_vlm_captions_cached_and_the_cell_prompt_is_kept_beside(tmp_path, fake_vlm):
    fake_vlm.scores["caption"] = "the hero mid-jump, arms up, pale blue background"
    captioner = make_captioner("vlm", evaluator=vlm_evaluator(fake_vlm, tmp_path / "cache"))
    assert isinstance(captioner, VLMCaptioner)
    report = curate([sheet()], tmp_path / "ds", CurationConfig(pairing="first"), captioner=captioner)
    rows = read_pairs(tmp_path / "ds" / "pairs.jsonl")
    assert report.written == 1 and len(rows) == 1
    assert rows[0]["caption"] == "the hero mid-jump, arms up, pale blue background"
    assert rows[0]["cell_prompt"] == "the hero jumping" and rows[0]["caption_source"].startswith("vlm:openai:")
    asked = [r["body"]["messages"][-1]["content"][0]["text"] for r in fake_vlm.requests]
    assert len(asked) == 1 and "the hero jumping" in asked[0]
    again = make_captioner("vlm", evaluator=vlm_evaluator(fake_vlm, tmp_path / "cache"))
    report = curate([sheet()], tmp_path / "ds", CurationConfig(pairing="first"), captioner=again)
    assert len(fake_vlm.requests) == 1 and report.already_present == 1  # cached: resumable, no second call


def test_without_a_vlm_the_cell_prompt_is_the_caption(tmp_path, caplog):
    assert make_captioner("cell") is None
    assert make_captioner("vlm", evaluator=Evaluator(CharisConfig())) is None
    assert "no VLM is configured" in caplog.text
    curate([sheet()], tmp_path / "ds", CurationConfig(pairing="first"), captioner=None)
    rows = read_pairs(tmp_path / "ds" / "pairs.jsonl")
    assert rows[0]["caption"] == "the hero jumping" and "caption_source" not in rows[0]


def test_a_failing_vlm_keeps_the_cell_prompt_and_says_why(tmp_path, fake_vlm):
    fake_vlm.script = ["500"] * 5
    captioner = make_captioner("vlm", evaluator=vlm_evaluator(fake_vlm))
    curate([sheet()], tmp_path / "ds", CurationConfig(pairing="first"), captioner=captioner)
    row = read_pairs(tmp_path / "ds" / "pairs.jsonl")[0]
    assert row["caption"] == "the hero jumping" and "VLM failed" in row["caption_source"]


def test_caption_mode_is_checked():
    from instruct_identity.core.errors import InputError

    with pytest.raises(InputError, match="^caption:"):
        make_captioner("gpt")
