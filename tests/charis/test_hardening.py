"""Hostile and careless input (issue 14, the CHARIS findings): each test reproduces one finding."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time

import numpy as np
import pytest
from charis_models import character
from PIL import Image

from instruct_identity.charis import CharisConfig, Evaluator, cli, scoring
from instruct_identity.charis.batch import read_results, run_batch, to_csv
from instruct_identity.charis.config import VLMConfig
from instruct_identity.charis.images import Picture, from_pil, load
from instruct_identity.charis.results import AxisResult, PairResult
from instruct_identity.charis.segment import ClusterSegmenter
from instruct_identity.charis.vlm import AnswerCache, Judge, OpenAICompatibleBackend
from instruct_identity.charis.vlm.backends import HttpSettings
from instruct_identity.charis.vlm.parse import parse_answer
from instruct_identity.core.errors import InputError

SECRET = "sk-live-5c9e1f3a7b2d4e6f8a0c1e3b5d7f9a2c"


def pair_files(root, n=2, prompt="the hero"):
    root.mkdir(parents=True, exist_ok=True)
    character().save(root / "ref.png")
    rows = []
    for i in range(n):
        character(dx=10 * i).save(root / f"gen{i}.png")
        rows.append({"id": f"g{i}", "reference": "ref.png", "generated": f"gen{i}.png", "prompt": prompt})
    return rows


def write_manifest(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


COLOR_ONLY = CharisConfig(axes=["color"])


# -- 3: U+2028 / U+0085 in a prompt or an id ---------------------------------------------------------

def test_line_separators_in_prompts_and_ids_survive_the_results_file(tmp_path):
    rows = pair_files(tmp_path)
    rows[0]["id"] = "first\u2028item"
    rows[1]["prompt"] = "jumps\u0085high\u2029now"
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "r.jsonl"
    first = run_batch(COLOR_ONLY, manifest, out)
    assert first.scored_now == 2
    assert {r.id for r in read_results(out)} == {"first\u2028item", "g1"}  # both read back
    assert [r.prompt for r in read_results(out) if r.id == "g1"] == ["jumps\u0085high\u2029now"]
    again = run_batch(COLOR_ONLY, manifest, out)
    assert again.scored_now == 0 and again.skipped == 2  # nothing vanished, nothing rescored
    assert len(out.read_text(encoding="utf-8").split("\n")) == 3  # two lines + the final newline
    assert "\u2028" not in out.read_text(encoding="utf-8")


# -- 4: the API key never reaches a file ----------------------------------------------------------

def test_a_key_passed_as_the_variable_name_is_refused_without_echoing_it(tmp_path, caplog, capsys):
    rows = pair_files(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    caplog.set_level(logging.DEBUG)
    for key in (SECRET, "abcd1234EFGH5678ijkl9012mnop"):  # with dashes, and one that is a valid identifier
        rc = cli.main(["batch", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--html", str(tmp_path / "r.html"),
                       "--vlm-url", "http://127.0.0.1:9/v1", "--vlm-model", "m", "--vlm-key-env", key])
        assert rc == 2
        err = capsys.readouterr().err
        assert "--vlm-key-env" in err and "NAME" in err and key not in err and key not in caplog.text
    for p in tmp_path.rglob("*"):
        if p.is_file() and p.suffix != ".png":
            assert SECRET not in p.read_text(errors="replace")


def test_an_answer_echoing_the_key_is_scrubbed_everywhere(tmp_path, fake_vlm, monkeypatch, caplog, capsys):
    monkeypatch.setenv("CHARIS_HARDENING_KEY", SECRET)
    rows = pair_files(tmp_path / "data")
    manifest = write_manifest(tmp_path / "data" / "m.jsonl", rows)
    fake_vlm.script = ["echo_ok"] * 10
    caplog.set_level(logging.DEBUG)
    rc = cli.main(["batch", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--html", str(tmp_path / "r.html"),
                   "--csv", str(tmp_path / "r.csv"), "--cache", str(tmp_path / "cache"), "--axes", "diversity",
                   "--vlm-url", fake_vlm.base_url, "--vlm-model", "fake-vl", "--vlm-key-env", "CHARIS_HARDENING_KEY"])
    assert rc == 0
    results = read_results(tmp_path / "r.jsonl")
    assert results[0].axes["diversity"].value == 0.5
    assert "***" in results[0].axes["diversity"].details["reason"]  # the echo was there, redacted
    cached = list((tmp_path / "cache").rglob("*.json"))
    assert cached
    texts = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".png"]
    texts += [caplog.text, capsys.readouterr().out]
    assert all(SECRET not in t for t in texts)
    assert fake_vlm.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"  # sent where it belongs


# -- 5: 16-bit PNGs -----------------------------------------------------------------------------------

def test_16_bit_png_is_read_at_its_real_values(tmp_path):
    grey = (np.full((32, 32), 0.5) * 65535).astype(np.uint16)
    grey[8:24, 8:24] = 10000
    Image.fromarray(grey).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    pic = load(tmp_path / "deep.png")
    assert pic.rgb[:, 0, 0].tolist() == pytest.approx([0.5] * 3, abs=1e-3)  # was 1.0 (white) before
    assert pic.rgb[0, 16, 16].item() == pytest.approx(10000 / 65535, abs=1e-3)


# -- 6: VLM answers out of range -------------------------------------------------------------------

@pytest.mark.parametrize("reply", ["Score: 4.5", "Score: 3/10", "score = 7 out of 10", "Score: 5/5"])
def test_out_of_range_or_other_scale_scores_are_malformed(reply):
    value, problem = parse_answer("diversity", reply)
    assert value is None and problem  # was 4.5 -> 1.125, and 3/10 -> 0.75


def test_out_of_range_answers_are_retried_then_missing_and_never_cached(fake_vlm, tmp_path):
    cache = AnswerCache(tmp_path / "cache")
    backend = OpenAICompatibleBackend(HttpSettings(base_url=fake_vlm.base_url, model="m", api_key_env=None,
                                                   max_retries=0))
    pics = {"reference": from_pil(character()), "generated": from_pil(character(dx=20))}
    fake_vlm.script = ["reply:Score: 4.5", "reply:Score: 3/10", "reply:Score: 4.5"]
    ans = Judge(backend, cache, parse_retries=2).ask("diversity", pics, prompt="p")
    assert not ans.ok and ans.calls == 3 and "outside 0-4" in ans.error
    assert not list((tmp_path / "cache").rglob("*.json"))
    r = scoring.vlm_rating("diversity", "diversity", pics, Judge(backend, cache, parse_retries=0), prompt="p")
    assert r.value == 0.5  # the next run asks again and gets a usable answer


def test_an_invalid_answer_already_in_the_cache_is_asked_again(fake_vlm, tmp_path):
    backend = OpenAICompatibleBackend(HttpSettings(base_url=fake_vlm.base_url, model="m", api_key_env=None))
    pics = {"reference": from_pil(character()), "generated": from_pil(character(dx=20))}
    cache = AnswerCache(tmp_path / "cache")
    judge = Judge(backend, cache)
    assert judge.ask("diversity", pics, prompt="p").value["score"] == 2
    entry = next((tmp_path / "cache").rglob("*.json"))
    record = json.loads(entry.read_text())
    record["answer"]["score"] = 4.5  # what an older version stored for "Score: 4.5"
    entry.write_text(json.dumps(record))
    again = Judge(backend, AnswerCache(tmp_path / "cache")).ask("diversity", pics, prompt="p")
    assert again.ok and not again.cached and again.value["score"] == 2
    assert json.loads(entry.read_text())["answer"]["score"] == 2  # overwritten with the valid answer
    assert AxisResult.ok("x", 1.125).value is None  # and no axis value outside [0, 1] exists at all


# -- 10: --out is the manifest ----------------------------------------------------------------------

def test_results_are_never_written_into_the_manifest(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.jsonl", pair_files(tmp_path))
    before = manifest.read_bytes()
    assert cli.main(["batch", str(manifest), "--out", str(manifest), "--axes", "color"]) == 2
    assert "--out" in capsys.readouterr().err and manifest.read_bytes() == before
    assert cli.main(["batch", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r.jsonl"),
                     "--csv", str(tmp_path / "r.jsonl"), "--axes", "color"]) == 2
    assert "same file" in capsys.readouterr().err


# -- 11: the smaller ones ---------------------------------------------------------------------------

def test_truncated_image_error_names_the_file(tmp_path):
    character().save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    r = Evaluator(COLOR_ONLY).score_pair(tmp_path / "full.png", tmp_path / "cut.png")
    assert not r.ok and str(tmp_path / "cut.png") in r.error and "generated" in r.error


def test_a_one_pixel_picture_gets_no_colour_score(tmp_path):
    tiny = Picture(__import__("torch").rand(3, 1, 1))
    res = scoring.color(from_pil(character()), tiny, ClusterSegmenter())
    assert res.value is None and "1x1 px" in res.missing  # it used to get a score
    Image.new("RGB", (1, 1), "red").save(tmp_path / "dot.png")
    r = Evaluator(COLOR_ONLY).score_pair(from_pil(character()), tmp_path / "dot.png")
    assert not r.ok and "dot.png" in r.error and "1x1" in r.error


def test_non_string_prompts_are_an_error(tmp_path, capsys):
    rows = pair_files(tmp_path)
    rows[0]["prompt"] = ["a", "list"]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    assert cli.main(["batch", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--axes", "color"]) == 2
    err = capsys.readouterr().err
    assert "prompt" in err and "list, not text" in err
    with pytest.raises(InputError, match="^prompt: must be text"):
        Evaluator(COLOR_ONLY).score_pair(from_pil(character()), from_pil(character()), 42)


def test_csv_cells_cannot_be_formulas():
    r = PairResult(id="=cmd|' /C calc'!A0", prompt="+SUM(A1:A9)", axes={}, composite=None,
                   reference="@ref.png", generated="-gen.png", error="=1+1")
    row = next(csv.DictReader(io.StringIO(to_csv([r]))))
    for key in ("id", "prompt", "reference", "generated", "error"):
        assert row[key].startswith("'"), (key, row[key])
    assert row["prompt"] == "'+SUM(A1:A9)"


def test_an_unset_key_variable_is_said_out_loud(fake_vlm, monkeypatch, caplog):
    monkeypatch.delenv("CHARIS_SURELY_UNSET", raising=False)
    caplog.set_level(logging.WARNING)
    OpenAICompatibleBackend(HttpSettings(base_url=fake_vlm.base_url, model="m", api_key_env="CHARIS_SURELY_UNSET"))
    assert "CHARIS_SURELY_UNSET is not set" in caplog.text and "without an API key" in caplog.text
    with pytest.raises(InputError, match="needs a key"):  # a hosted API that always needs one: an error
        OpenAICompatibleBackend(HttpSettings(base_url="https://api.openai.com/v1", model="gpt-4o",
                                             api_key_env="CHARIS_SURELY_UNSET"))


def test_only_the_requested_axes_send_requests(fake_vlm, tmp_path):
    cfg = CharisConfig(axes=["identity", "diversity", "color"],
                       vlm=VLMConfig(backend="openai", base_url=fake_vlm.base_url, model="m", api_key_env=None))
    r = Evaluator(cfg).score_pair(from_pil(character()), from_pil(character(dx=20)), "the hero jumps")
    assert set(r.axes) == {"identity", "diversity", "color"}
    asked = [req["body"]["messages"][-1]["content"][0]["text"] for req in fake_vlm.requests]
    assert len(asked) == 3 and not any("Rate how completely" in t for t in asked)  # no prompt-axis request


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("charis (comfyui-instruct-identity) 0.")


def test_half_written_temporaries_are_cleaned_on_the_next_run(tmp_path):
    manifest = write_manifest(tmp_path / "m.jsonl", pair_files(tmp_path))
    stale = [tmp_path / ".report.html.x1y2z3.tmp", tmp_path / "cache" / "ab" / ".abc.json.q9w8.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / ".other.jsonl.k1.tmp"  # another process may be writing it right now: left alone
    fresh.write_text("busy")
    cfg = CharisConfig(axes=["color"], cache_dir=str(tmp_path / "cache"))
    run_batch(cfg, manifest, tmp_path / "r.jsonl", evaluator=None)
    AnswerCache(tmp_path / "cache")
    assert not any(p.exists() for p in stale) and fresh.exists()
