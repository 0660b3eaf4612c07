"""CHARIS nodes: in-process (fast) and in the real ComfyUI server (scores in /history)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from charis_models import character
from ii_harness import error_messages


def as_image(*pictures) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(p, dtype=np.float32) / 255.0) for p in pictures])


@pytest.fixture(scope="module")
def charis_nodes(comfy):
    from instruct_identity.nodes import charis as nodes_charis

    return nodes_charis


@pytest.fixture
def evaluator(charis_nodes, tiny_clip, fake_vlm, monkeypatch, tmp_path):
    import folder_paths

    clip_root = tmp_path / "models" / "charis" / "clip"
    shutil.copytree(tiny_clip[0], clip_root / "tiny-rn-clip")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "charis_clip", ([str(clip_root)], set()))
    assert "tiny-rn-clip" in charis_nodes.clip_entries()
    return charis_nodes.build_evaluator("tiny-rn-clip", "same as clip", "none", "none", "openai-compatible",
                                        fake_vlm.base_url, "fake-vl", "NO_SUCH_KEY_VAR", False, "cpu")


def test_score_node_in_process(charis_nodes, evaluator):
    ref = as_image(character())
    gen = as_image(character(dx=20), character(dx=-20, background=(200, 200, 200)))
    out = charis_nodes.CharisScore.execute(evaluator, ref, gen, "the hero waving", "benchmark")
    composite, identity, prompt, color, quality, diversity, report = out.args
    assert identity == pytest.approx(0.75) and diversity == pytest.approx(0.5)
    assert 0 < color <= 1 and 0 < quality < 1 and 0 < prompt <= 1 and 0 < composite <= 1
    data = json.loads(report)
    assert data["mode"] == "benchmark" and len(data["results"]) == 2
    assert data["results"][0]["axes"]["identity"]["details"]["verdicts"]
    assert "CHARIS" in out.ui["text"][0] and len(out.ui["charis"]) == 2


def test_filter_node_in_process(charis_nodes, evaluator):
    from comfy_execution.graph_utils import ExecutionBlocker

    ref = as_image(character())
    same = character(dx=10)
    other = character(background=(0, 0, 0)).rotate(90)  # colours ok, but let thresholds decide
    gen = as_image(same, other)
    kw = {"weight_identity": 0.35, "weight_color": 0.25, "weight_quality": 0.2, "weight_diversity": 0.2,
          "min_identity": 0.7, "min_color": 0.9, "min_quality": 0.0, "min_diversity": 0.0}
    out = charis_nodes.CharisFilter.execute(evaluator, ref, gen, "p", 0.0, **kw)
    passed, rejected, report, count = out.args
    verdicts = [r["composite"]["passed"] for r in json.loads(report)["results"]]
    assert count == sum(verdicts)
    if count:
        assert passed.shape[0] == count
    else:
        assert isinstance(passed, ExecutionBlocker)
    kw["min_diversity"] = 0.9  # fake VLM says 2/4 = 0.5: nothing passes
    out = charis_nodes.CharisFilter.execute(evaluator, ref, gen, "p", 0.0, **kw)
    assert isinstance(out.args[0], ExecutionBlocker) and out.args[1].shape[0] == 2 and out.args[3] == 0


def test_loader_refuses_a_pasted_key_without_echoing_it(charis_nodes):
    from instruct_identity.core.errors import InputError

    with pytest.raises(InputError) as e:
        charis_nodes.build_evaluator("none", "none", "none", "none", "openai-compatible", "http://127.0.0.1:1/v1",
                                     "m", "sk-abc123-secret-value", False, "cpu")
    assert "sk-abc123" not in str(e.value) and e.value.input_name == "api_key_env"
    with pytest.raises(InputError):
        charis_nodes.build_evaluator("none", "none", "gd", "none", "none", "", "", "X", False, "cpu")


@pytest.mark.slow
def test_nodes_in_the_real_server(comfy_server, tiny_clip, fake_vlm):
    base = comfy_server.base
    shutil.copytree(tiny_clip[0], base / "models" / "charis" / "clip" / "tiny-rn-clip", dirs_exist_ok=True)
    character().save(base / "input" / "charis_ref.png")
    character(dx=25, background=(230, 230, 255)).save(base / "input" / "charis_gen.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "charis_ref.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "charis_gen.png"}},
        "3": {"class_type": "InstructIdentityCharisLoader", "inputs": {
            "clip": "tiny-rn-clip", "quality_model": "same as clip", "grounding_dino": "none", "sam": "none",
            "vlm": "openai-compatible", "vlm_base_url": fake_vlm.base_url, "vlm_model": "fake-vl",
            "api_key_env": "CHARIS_UNSET_KEY", "cache_answers": False, "device": "cpu"}},
        "4": {"class_type": "InstructIdentityCharisScore", "inputs": {
            "evaluator": ["3", 0], "reference": ["1", 0], "generated": ["2", 0], "prompt": "the hero waving",
            "mode": "benchmark"}},
        "5": {"class_type": "InstructIdentityCharisFilter", "inputs": {
            "evaluator": ["3", 0], "reference": ["1", 0], "generated": ["2", 0], "prompt": "the hero waving",
            "weight_identity": 0.35, "weight_color": 0.25, "weight_quality": 0.2, "weight_diversity": 0.2,
            "min_identity": 0.5, "min_color": 0.5, "min_quality": 0.0, "min_diversity": 0.25, "min_charis": 0.0}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    entry = comfy_server.run(prompt, timeout=300)
    assert not error_messages(entry), error_messages(entry)
    score_ui = entry["outputs"]["4"]
    row = score_ui["charis"][0]
    assert row["identity"] == pytest.approx(0.75) and row["diversity"] == pytest.approx(0.5)
    assert 0 < row["color"] <= 1 and 0 < row["quality"] < 1 and 0 < row["charis"] <= 1
    assert row["axes_used"] == ["identity", "prompt", "color", "quality"]
    assert "CHARIS" in score_ui["text"][0] and "Identity: 0.750" in score_ui["text"][0]
    full = json.loads(score_ui["charis_report"][0])  # what the node widget expands: per-attribute verdicts
    assert full["results"][0]["axes"]["identity"]["details"]["verdicts"][0]["verdict"] == "match"
    filter_ui = entry["outputs"]["5"]
    assert filter_ui["charis"][0]["passed"] is True and "PASS" in filter_ui["text"][0]
    assert len(entry["outputs"]["6"]["images"]) == 1  # the passing image reached the preview
    assert len(fake_vlm.requests) >= 4


def test_score_node_without_models_reports_no_composite_unless_partial_is_asked(charis_nodes):
    """Issue 13: with only the colour axis available the node's CHARIS is -1 with the reason, and a
    partial composite (on request) is labelled as such."""
    ev = charis_nodes.build_evaluator("none", "none", "none", "none", "none", "", "", "", False, "cpu")
    ref, gen = as_image(character()), as_image(character(dx=20))
    out = charis_nodes.CharisScore.execute(ev, ref, gen, "p", "benchmark")
    assert out.args[0] == -1.0 and out.args[3] > 0.9  # composite missing; colour there
    text = out.ui["text"][0]
    assert "CHARIS missing (over color; missing identity, prompt, quality)" in text and "why: missing identity" in text
    out = charis_nodes.CharisScore.execute(ev, ref, gen, "p", "benchmark", allow_partial=True)
    assert out.args[0] == pytest.approx(out.args[3])  # over colour alone, and it says so
    assert "partial CHARIS: color" in out.ui["text"][0]
    report = json.loads(out.args[-1])
    assert report["results"][0]["composite"]["label"] == "partial CHARIS: color"


def test_filter_node_prompt_criterion(charis_nodes, evaluator):
    ref = as_image(character())
    gen = as_image(character(dx=10))
    kw = {"weight_identity": 0.35, "weight_color": 0.25, "weight_quality": 0.2, "weight_diversity": 0.2,
          "min_identity": 0.0, "min_color": 0.0, "min_quality": 0.0, "min_diversity": 0.0}
    out = charis_nodes.CharisFilter.execute(evaluator, ref, gen, "the hero waving", 0.0, **kw)
    result = json.loads(out.args[2])["results"][0]
    assert out.args[3] == 1 and "prompt" not in result["composite"]["failed"]  # off by default
    out = charis_nodes.CharisFilter.execute(evaluator, ref, gen, "the hero waving", 0.0, min_prompt=0.999, **kw)
    result = json.loads(out.args[2])["results"][0]
    prompt = result["axes"]["prompt"]["value"]
    assert prompt is not None and prompt < 0.999
    assert out.args[3] == 0 and "prompt" in result["composite"]["failed"]
