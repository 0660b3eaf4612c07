"""The base-capacity probe (benchmarks/toy/capacity.py): its inputs are checked, a tiny probe runs end to
end and caches, its entry survives beside the rest of the JSON, and the report section reads it."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def capacity(comfy):
    from instruct_identity.benchmarks.toy import capacity

    return capacity


@pytest.mark.parametrize("text, why", [("192,3,2,2", "no name"), ("a=192,3,2", "four integers"),
                                       ("a=190,3,2,2", "divisible"), ("a=64,2,0,0", "at least one block"),
                                       ("a=64,2,9,1", "0..8 blocks")])
def test_bad_configurations_are_named_with_what_to_write(capacity, text, why):
    with pytest.raises(ValueError, match="--configs") as e:
        capacity.parse_config(text)
    assert text in str(e.value) and why in str(e.value)


def test_the_key_moves_with_the_model_and_the_steps(capacity):
    _, unet, _, key = capacity.setup({"hidden": 64, "heads": 2, "double": 1, "single": 1}, 3)
    assert unet["hidden_size"] == 64 and unet["depth"] == 1
    assert capacity.setup({"hidden": 64, "heads": 2, "double": 1, "single": 1}, 3)[3] == key
    assert capacity.setup({"hidden": 64, "heads": 2, "double": 1, "single": 1}, 4)[3] != key
    assert capacity.setup({"hidden": 64, "heads": 2, "double": 2, "single": 1}, 3)[3] != key


def test_a_tiny_probe_runs_caches_and_keeps_the_other_entries(capacity, tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"runs": [], "multi": {"kept": True}}))
    args = ["--steps", "2", "--configs", "tiny=32,2,1,0", "two=32,2,1,1", "--threads", "1",
            "--work", str(tmp_path / "work"), "--json", str(out)]
    assert capacity.main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["multi"] == {"kept": True} and doc["runs"] == []
    rows = doc["capacity"]["configs"]
    assert [r["name"] for r in rows] == ["tiny", "two"] and not any(r["cached"] for r in rows)
    assert rows[0]["params"] < rows[1]["params"] and rows[0]["steps"] == 2
    for r in rows:
        for c in ("cfg4", "cfg2", "cfg1"):
            assert 0.0 <= r[c]["speckle"] <= 1.0 and 0.0 <= r[c]["part_color_acc"] <= 1.0
    assert len(list((tmp_path / "work").glob("capacity-*.json"))) == 2
    assert capacity.main(args) == 0  # the second time from the cache, same numbers
    again = json.loads(out.read_text())["capacity"]["configs"]
    assert all(r["cached"] for r in again) and [r["cfg4"] for r in again] == [r["cfg4"] for r in rows]
    text = "\n".join(capacity.section(json.loads(out.read_text())["capacity"]))
    assert f"| tiny | 32 / 2 / 1 / 0 | {rows[0]['params'] / 1e6:.2f} M |" in text
    assert f"{rows[1]['cfg1']['speckle']:.3f} ± {rows[1]['cfg1']['speckle_se']:.3f} |" in text


def test_bad_steps_exit_with_the_option_named(capacity, tmp_path, capsys):
    with pytest.raises(SystemExit):
        capacity.main(["--steps", "0", "--json", str(tmp_path / "r.json")])
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
