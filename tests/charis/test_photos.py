"""The colour axis on real photographs (issue 13): scikit-image's bundled photos (read from its
installed wheel; nothing downloaded) with controlled edits and different-subject pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instruct_identity.charis import photoset, scoring
from instruct_identity.charis.segment import ClusterSegmenter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluated():
    import torch

    torch.set_num_threads(1)
    seg = ClusterSegmenter(memo=256)
    pairs = photoset.pairs()
    return (photoset.evaluate(lambda a, b: scoring.color(a, b, seg).value, pairs),
            photoset.evaluate(photoset.histogram_similarity, pairs))


def test_the_photos_are_the_ones_the_wheel_ships():
    folder = photoset.data_dir()
    for file, _ in [*photoset.PHOTOS.values(), *photoset.SECOND_VIEWS.values()]:
        assert (folder / file).is_file(), f"{file} is not bundled with scikit-image"


def test_same_subject_outranks_different_subject(evaluated):
    color, hist = evaluated
    assert color["pairs"]["missing"] == 0
    assert color["auc"] >= 0.97, color["auc"]
    assert color["auc"] > hist["auc"] + 0.03  # clearly better than a whole-image colour histogram
    for row in color["rows"]:  # every invariance is well above the different-subject mean
        if row["kind"] == "same" and row["generated"].endswith((": half size", ": mirrored")):
            assert row["score"] > 0.95, row


def test_recolouring_the_subject_costs_more_than_a_new_background(evaluated):
    color, _ = evaluated
    checked = 0
    for name, v in color["recolour_vs_background"].items():
        if v["applies"]:
            assert v["subject recoloured"] < v["background changed (worse of two)"], (name, v)
            checked += 1
        else:
            assert name in photoset.SMALL_SUBJECTS
    assert checked == len(photoset.PHOTOS) - len(photoset.SMALL_SUBJECTS) >= 5


def test_the_documented_numbers_are_the_measured_ones(evaluated):
    color, hist = evaluated
    doc = json.loads((REPO / "docs" / "charis-photos.json").read_text())
    assert doc["color"]["auc"] == pytest.approx(color["auc"], abs=0.005), "rerun benchmarks/bench_charis.py photos"
    assert doc["histogram_baseline"]["auc"] == pytest.approx(hist["auc"], abs=0.005)
    assert f"**{doc['color']['auc']:.3f}**" in (REPO / "docs" / "charis.md").read_text()
