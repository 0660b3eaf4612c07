"""The toy replication (benchmarks/toy): its parts are exact, and the quick profile runs end to end.

The research result (does masked beat the baseline, which preset wins) is NOT asserted here: that is
what the full run measures and docs/toy-replication.md reports.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy(comfy):
    from instruct_identity.benchmarks.toy import components, data, evaluate, sprites

    return components, data, evaluate, sprites


def test_pixel_codec_is_lossless_and_the_model_sees_pixels_in_minus_one_one(toy):
    components, data, _, sprites = toy
    codec = components.PixelCodec()
    img, _ = sprites.render(sprites.all_characters()[5], sprites.ALL_POSES[4], 32)
    x = data.to_image(img)
    z = codec.encode(x)
    assert z.shape == (1, 16, 16, 16)
    assert torch.allclose(codec.decode(z), x, atol=1e-6)
    model_space = components.latent_format().process_in(z)  # what the trainer, the sampler and the patch apply
    assert model_space.min() >= -1 - 1e-5 and model_space.max() <= 1 + 1e-5
    assert torch.allclose(model_space[:, 12:], torch.zeros(1, 4, 16, 16), atol=1e-5)


def test_word_encoder_binds_words_to_positions(toy):
    components = toy[0]
    te = components.WordEncoder()
    a, pa = te.encode("a red head, a blue torso")
    b, pb = te.encode("a blue head, a red torso")
    assert not torch.allclose(a, b)            # same bag of words, different binding
    assert torch.allclose(pa, pb)              # pooled = bag of words
    assert torch.equal(te.encode("the character lying")[0], components.WordEncoder().encode("the character lying")[0])


def test_pairs_differ_and_held_out_characters_are_unseen(toy):
    _, data, _, sprites = toy
    train, test = sprites.split_characters(100_000, 200, seed=0)
    assert not {(c.head, c.torso) for c in train} & {(c.head, c.torso) for c in test}
    for p in data.make_pairs(test, 40, 32, seed=3):
        assert p.ref_pose != p.tgt_pose
        hat = p.char.hat != "none"
        assert data.iou(data.pose_silhouette(p.ref_pose, 32, hat), data.pose_silhouette(p.tgt_pose, 32, hat)) < data.MAX_PAIR_IOU
        assert "head" not in p.caption and p.char.head not in p.caption  # the caption names the pose only


def test_metrics_on_oracles(toy):
    _, data, evaluate, sprites = toy
    _, test = sprites.split_characters(100_000, 200, seed=0)
    items = evaluate.make_items(data.make_pairs(test, 8, 32, seed=1), 32)
    gt = evaluate.score(np.stack([it.target / 255.0 for it in items]), items)["mean"]
    assert gt["sil_iou"] == 1.0 and gt["part_color_acc"] == 1.0 and gt["copy_paste"] == 0.0 and gt["part_color_err"] < 1e-6
    copy = evaluate.score(np.stack([it.reference / 255.0 for it in items]), items)["mean"]
    assert copy["copy_paste"] == 1.0 and copy["sil_iou"] < 0.35
    blank = evaluate.score(np.ones((8, 32, 32, 3)), items)["mean"]
    assert blank["sil_iou"] == 0.0 and blank["part_color_acc"] == 0.0 and blank["copy_paste"] == 0.0
    # a recoloured target: right place, wrong colours
    other = [evaluate.EvalItem(it.pair, it.reference, it.target, it.target_masks, it.ref_masks) for it in items]
    swapped = np.stack([it.target[..., ::-1] / 255.0 for it in other])
    s = evaluate.score(swapped, other)["mean"]
    assert s["sil_iou"] > 0.9 and s["part_color_acc"] < 0.5


@pytest.mark.slow
def test_quick_profile_runs_end_to_end_and_reproduces(tmp_path):
    work = tmp_path / "toy"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.toy.run", "--quick", "--work", str(work)], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads((work / "results.json").read_text())
    runs = results["runs"]
    assert list(runs) == ["baseline", "B-masked", "B-full", "A-masked", "C-masked"]
    for name, run in runs.items():
        m = run["metrics"]
        for key in ("charis_color", "part_color_acc", "sil_iou", "copy_paste"):
            assert 0.0 <= m[key] <= 1.0, (name, key, m[key])
        assert 0.0 <= m["part_color_err"] <= math.sqrt(3)
        assert math.isfinite(run["heldout_loss"])
        assert (work / "images" / f"{name}.png").is_file()
        if name != "baseline":
            assert run["steps"] == 3 and Path(run["lora"]).is_file()
            assert all(math.isfinite(v) for v in run["loss_curve"])
            from safetensors import safe_open

            with safe_open(run["lora"], "pt") as f:
                meta = f.metadata()
            assert (meta["preset"], meta["loss"], meta["mode"]) == (run["preset"], run["loss"], "identity")
    assert results["charis_available"], results["charis_error"]
    assert results["oracles"]["ground truth"]["sil_iou"] == 1.0
    assert results["oracles"]["copy of the reference"]["copy_paste"] == 1.0
    report = (work / "report.md").read_text()
    assert "| run | preset | loss | seed | steps |" in report and "B-full" in report
    repro = results["repro"]
    assert repro["ok"] and repro["compared"] > 50, repro
    assert "reproducibility: max |diff|" in proc.stdout
