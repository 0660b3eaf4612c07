"""Identity uses its own verdicts (issue 13): the VLM's overall rating is combined with its per-attribute
verdicts in the documented way, and an answer that contradicts itself is flagged."""

from __future__ import annotations

import json

import pytest
from charis_models import character

from instruct_identity.charis.images import from_pil
from instruct_identity.charis.scoring import combine_identity, identity
from instruct_identity.charis.vlm import Judge, OpenAICompatibleBackend
from instruct_identity.charis.vlm.backends import HttpSettings


def v(*verdicts):
    return [{"attribute": f"a{i}", "verdict": x, "note": ""} for i, x in enumerate(verdicts)]


@pytest.mark.parametrize("score,verdicts,rating,flagged", [
    (4, v("match", "match", "match"), 4, False),                      # agrees
    (4, v("mismatch", "mismatch", "match", "match"), 3, True),        # lists mismatches but says 4
    (4, v("match", "partial"), 3, True),                              # 4 means every attribute matches
    (3, v("match", "partial", "not_visible"), 3, False),              # A = 3
    (3, v("match", "mismatch", "not_visible"), 3, False),             # A = 2, band [1, 3]
    (1, v("match", "match", "match", "match"), 3, True),              # all match but says 1: raised to A - 1
    (0, v("mismatch", "mismatch", "mismatch"), 0, False),             # A = 0
    (4, v("mismatch", "mismatch", "mismatch"), 1, True),              # A = 0, band [0, 1]
    (2, v("not_visible", "not_visible"), 2, False),                   # nothing judged: the rating as given
    (2, [], 2, False),
])
def test_combination(score, verdicts, rating, flagged):
    out = combine_identity(score, verdicts)
    assert out["rating"] == rating and out["contradiction"] is flagged
    assert out["band"][0] <= out["rating"] <= out["band"][1]


def test_a_contradictory_answer_scores_lower_and_is_flagged_in_the_details(fake_vlm):
    """The reply lists two mismatches of three attributes but rates 4: it used to score 1.0."""
    reply = json.dumps({"verdicts": [{"attribute": "hair colour", "verdict": "mismatch"},
                                     {"attribute": "jacket", "verdict": "mismatch"},
                                     {"attribute": "eye colour", "verdict": "match"}], "score": 4})
    fake_vlm.script = ["ok", f"reply:{reply}"]
    judge = Judge(OpenAICompatibleBackend(HttpSettings(base_url=fake_vlm.base_url, model="m", api_key_env=None)))
    res, attributes = identity(from_pil(character()), from_pil(character(dx=20)), "p", judge)
    assert len(attributes) == 3 and res.details["vlm_score"] == 4
    assert res.value == pytest.approx(2.3333333 / 4, abs=1e-6)  # A = 4/3: band [1/3, 7/3] -> 7/3
    assert res.details["contradiction"] is True
    assert "the VLM rated 4/4 but its verdicts imply 1.33/4" in res.details["consistency"]["note"]
