"""The VLM answer parser against malformed, noisy and adversarial replies."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instruct_identity.charis.vlm.parse import as_score, extract_json, parse_answer
from instruct_identity.charis.vlm.prompts import TASKS, render

SCORE_TASKS = [t for t, spec in TASKS.items() if spec.kind == "score"]


@pytest.mark.parametrize("reply,expected", [
    ('{"score": 3}', 3.0),
    ('```json\n{"score": 4, "reason": "ok"}\n```', 4.0),
    ("Sure! Here is my rating:\n{\"score\": 2, \"reason\": \"half\"}\nHope that helps.", 2.0),
    ("{'score': 1, 'reason': 'python literal'}", 1.0),
    ('{"score": "3", }', 3.0),  # string number, trailing comma
    ('{"score": "3/4"}', 3.0),
    ('{"score": 3.5}', 3.5),
    ("Score: 4", 4.0),  # DreamBench++ style, no JSON
    ("After careful thought... **Score: 2**", 2.0),
    ('{"rating": 1}', 1.0),
])
def test_score_replies_that_parse(reply, expected):
    value, problem = parse_answer("prompt", reply)
    assert problem is None and value["score"] == expected


@pytest.mark.parametrize("reply", [
    "", "   ", "I think it looks nice!", '{"score": 5}', '{"score": -1}', '{"score": "high"}', '{"score": true}',
    '{"score": NaN}', '{"score": Infinity}', '{"reason": "forgot the score"}', '[1, 2, 3]', '{"score": null}',
    '{"score": [3]}', "{{{{", "}}}}", '{"score": 3', "Score: 9", "\x00\x01\x02", "null", "3",
])
def test_score_replies_that_are_rejected(reply):
    value, problem = parse_answer("prompt", reply)
    assert value is None and problem


def test_attribute_lists():
    good = {"attributes": [{"attribute": "hair colour", "value": "red", "region": "hair"},
                           {"name": "eyes", "value": "green"}, {"attribute": "", "value": "x"}, "junk",
                           {"attribute": "shoes"}]}
    value, problem = parse_answer("identity_attributes", "Attributes:\n" + json.dumps(good))
    assert problem is None
    assert value["attributes"] == [{"attribute": "hair colour", "value": "red", "region": "hair"},
                                   {"attribute": "eyes", "value": "green", "region": ""}]
    assert parse_answer("identity_attributes", '{"attributes": []}')[0] is None
    assert parse_answer("identity_attributes", '{"attrs": [1]}')[0] is None
    bare_list, _ = parse_answer("identity_attributes", '[{"attribute": "fur", "value": "white"}]')
    assert bare_list["attributes"][0]["attribute"] == "fur"


def test_verdicts():
    reply = json.dumps({"verdicts": [{"attribute": "hair", "verdict": "Match"}, {"attribute": "eyes", "verdict": "not visible"},
                                     {"attribute": "x", "verdict": "maybe"}], "score": 3})
    value, problem = parse_answer("identity_judge", reply)
    assert problem is None and value["score"] == 3
    assert [v["verdict"] for v in value["verdicts"]] == ["match", "not_visible"]
    assert parse_answer("identity_judge", '{"verdicts": [], "score": 9}')[0] is None
    assert parse_answer("identity_judge", '{"score": 3}')[0] is None
    assert parse_answer("identity_judge", '{"verdicts": [{"verdict": "maybe"}], "score": 2}')[0] is None


def test_long_fields_are_trimmed_and_unknown_tasks_refused():
    value, _ = parse_answer("diversity", json.dumps({"score": 2, "reason": "x" * 5000, "changed": ["pose"] * 500}))
    assert len(value["reason"]) <= 400 and len(value["changed"]) <= 40
    assert parse_answer("nonsense", '{"score": 1}') == (None, "unknown task 'nonsense'")


def test_every_task_renders_with_its_fields():
    for task in TASKS:
        text = render(task, prompt='a "quoted" {brace} prompt', attributes=[{"attribute": "hair", "value": "red"}])
        assert "JSON" in text and "{" in text


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=600))
def test_parser_never_raises_on_any_text(text):
    for task in ("prompt", "identity_attributes", "identity_judge"):
        value, problem = parse_answer(task, text)
        assert (value is None) != (problem is None)
        if value is not None and "score" in value:
            assert 0.0 <= value["score"] <= 4.0


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=80).filter(lambda s: "{" not in s and "[" not in s),
       suffix=st.text(max_size=80), score=st.integers(0, 4), reason=st.text(max_size=60),
       fence=st.booleans(), task=st.sampled_from(SCORE_TASKS))
def test_valid_json_survives_surrounding_noise(prefix, suffix, score, reason, fence, task):
    body = json.dumps({"score": score, "reason": reason})
    reply = prefix + ("```json\n" + body + "\n```" if fence else body) + suffix
    value, problem = parse_answer(task, reply)
    assert problem is None and value["score"] == score


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
                    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch, max_size=4),
                    max_leaves=20))
def test_arbitrary_json_values_are_validated_not_trusted(obj):
    reply = json.dumps(obj)
    for task in ("prompt", "identity_attributes", "identity_judge"):
        value, problem = parse_answer(task, reply)
        if value is not None:
            if "score" in value:
                assert isinstance(value["score"], float) and 0 <= value["score"] <= 4
            for a in value.get("attributes", []):
                assert a["attribute"] and a["value"]


def test_as_score_edge_cases():
    assert as_score(0) == 0.0 and as_score(4) == 4.0 and as_score("2.5") == 2.5
    assert as_score(4.0001) is None and as_score(False) is None and as_score("4/4") == 4.0
    assert extract_json("a { b } c") is None
    assert extract_json('x {"a": [1, {"b": "}"}]} y') == {"a": [1, {"b": "}"}]}
