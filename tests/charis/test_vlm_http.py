"""The OpenAI-compatible backend against a fake server on loopback: success, timeout, 429 then
success, 500, invalid JSON, malformed answers; the API key never leaks into logs, results,
reports or the cache."""

from __future__ import annotations

import json
import logging
import time

import pytest
from charis_models import character

from instruct_identity.charis import CharisConfig, Evaluator
from instruct_identity.charis.config import VLMConfig
from instruct_identity.charis.images import from_pil
from instruct_identity.charis.vlm import AnswerCache, Judge, OpenAICompatibleBackend, VLMError
from instruct_identity.charis.vlm.backends import HttpSettings

SECRET = "sk-test-7f3a9c1e5b2d4f60a8e1c3b5d7f9a1c3"


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("CHARIS_TEST_KEY", SECRET)
    return "CHARIS_TEST_KEY"


def backend(server, env="CHARIS_TEST_KEY", **kw) -> OpenAICompatibleBackend:
    opts = dict(timeout=0.5, max_retries=2, backoff=0.01, max_backoff=0.05, concurrency=2)
    opts.update(kw)
    return OpenAICompatibleBackend(HttpSettings(base_url=server.base_url, model="fake-vl", api_key_env=env, **opts))


PICS = {"generated": from_pil(character()), "reference": from_pil(character(background=(90, 90, 90)))}


def test_success_sends_an_openai_request_with_the_key_in_the_header_only(fake_vlm, secret_env):
    b = backend(fake_vlm)
    ans = Judge(b).ask("prompt", PICS, prompt="a red-headed figure")
    assert ans.ok and ans.value["score"] == 4 and ans.calls == 1
    req = fake_vlm.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = req["body"]
    assert body["model"] == "fake-vl" and body["temperature"] == 0
    parts = body["messages"][-1]["content"]
    assert parts[0]["type"] == "text" and "a red-headed figure" in parts[0]["text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert SECRET not in json.dumps(body)


def test_429_then_success_is_retried(fake_vlm, secret_env):
    fake_vlm.script = ["429", "429", "ok"]
    b = backend(fake_vlm)
    assert b.complete("x", []) and b.requests == 3


def test_500_gives_up_after_the_retries(fake_vlm, secret_env):
    fake_vlm.script = ["500"] * 10
    b = backend(fake_vlm, max_retries=2)
    with pytest.raises(VLMError, match="HTTP 500"):
        b.complete("x", [])
    assert b.requests == 3


def test_timeout_is_retried_then_reported(fake_vlm, secret_env):
    fake_vlm.timeout_sleep = 1.0
    fake_vlm.script = ["timeout", "ok"]
    b = backend(fake_vlm, timeout=0.3)
    t = time.time()
    assert b.complete("x", [])  # first attempt timed out, second answered
    assert b.requests == 2 and time.time() - t < 5
    fake_vlm.script = ["timeout"] * 5
    with pytest.raises(VLMError, match="within 0.3s"):
        backend(fake_vlm, timeout=0.3, max_retries=1).complete("x", [])


def test_invalid_json_body_is_retried_then_reported(fake_vlm, secret_env):
    fake_vlm.script = ["badjson", "ok"]
    assert backend(fake_vlm).complete("x", [])
    fake_vlm.script = ["badjson"] * 5
    with pytest.raises(VLMError, match="not an OpenAI chat completion"):
        backend(fake_vlm, max_retries=1).complete("x", [])


def test_client_errors_are_not_retried_and_explain_the_key(fake_vlm, secret_env):
    fake_vlm.script = ["401"]
    b = backend(fake_vlm)
    with pytest.raises(VLMError) as e:
        b.complete("x", [])
    assert b.requests == 1 and "CHARIS_TEST_KEY" in str(e.value) and SECRET not in str(e.value)


def test_malformed_answers_are_asked_again_then_reported_missing(fake_vlm, secret_env, tmp_path):
    cache = AnswerCache(tmp_path / "cache")
    fake_vlm.script = ["malformed", "ok"]
    ans = Judge(backend(fake_vlm), cache, parse_retries=2).ask("prompt", PICS, prompt="p")
    assert ans.ok and ans.calls == 2 and ans.attempts
    assert "could not be used" in fake_vlm.requests[-1]["body"]["messages"][-1]["content"][0]["text"]
    fake_vlm.script = ["malformed"] * 3
    ans = Judge(backend(fake_vlm), cache, parse_retries=2).ask("diversity", PICS, prompt="p")
    assert not ans.ok and ans.calls == 3 and "no usable answer" in ans.error
    assert not list((tmp_path / "cache").rglob("*.json")) or all(
        json.loads(p.read_text())["task"] != "diversity" for p in (tmp_path / "cache").rglob("*.json"))


def test_cache_makes_the_second_ask_free(fake_vlm, secret_env, tmp_path):
    cache = AnswerCache(tmp_path / "cache")
    j = Judge(backend(fake_vlm), cache)
    a = j.ask("prompt", PICS, prompt="p")
    b = j.ask("prompt", PICS, prompt="p")
    c = j.ask("prompt", PICS, prompt="another prompt")
    assert a.ok and b.cached and not a.cached and not c.cached
    assert len(fake_vlm.requests) == 2 and j.calls == 2


def test_concurrency_limit_is_respected(fake_vlm, secret_env):
    from concurrent.futures import ThreadPoolExecutor

    fake_vlm.delay = 0.2
    b = backend(fake_vlm, concurrency=2, timeout=5)
    active, peak = [0], [0]
    real = b._post

    def counting(data):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            return real(data)
        finally:
            active[0] -= 1

    b._post = counting
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: b.complete("x", []), range(6)))
    assert peak[0] == 2


def test_the_key_never_leaks(fake_vlm, secret_env, tmp_path, caplog, capsys):
    """A server that echoes the Authorization header in its errors; a full CLI run with a report."""
    from instruct_identity.charis import cli

    for i in range(2):
        character(background=(255, 255, 255)).save(tmp_path / f"ref{i}.png")
        character(dx=20 * i, background=(200, 220, 255)).save(tmp_path / f"gen{i}.png")
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "reference": f"ref{i}.png", "generated": f"gen{i}.png",
                                            "prompt": "the figure waving"}) + "\n" for i in range(2)))
    fake_vlm.script = ["echo"] * 6 + ["401"]  # errors that carry the key back, then a refusal
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "results.jsonl"
    rc = cli.main(["batch", str(manifest), "--out", str(out), "--html", str(tmp_path / "r.html"),
                   "--csv", str(tmp_path / "r.csv"), "--vlm-url", fake_vlm.base_url, "--vlm-model", "fake-vl",
                   "--vlm-key-env", "CHARIS_TEST_KEY", "--vlm-retries", "1", "--cache", str(tmp_path / "cache"),
                   "-v"])
    assert rc == 0
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, caplog.text]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".png"]
    assert any("***" in t for t in texts)  # the echoed key was there, and was redacted
    for t in texts:
        assert SECRET not in t
    assert all(r["headers"].get("Authorization") == f"Bearer {SECRET}" for r in fake_vlm.requests)


def test_evaluator_reports_missing_vlm_axes_with_reasons(fake_vlm, secret_env):
    fake_vlm.script = ["500"] * 50
    cfg = CharisConfig(vlm=VLMConfig(backend="openai", base_url=fake_vlm.base_url, model="m",
                                     api_key_env="CHARIS_TEST_KEY", max_retries=0, backoff=0.01))
    r = Evaluator(cfg).score_pair(PICS["reference"], PICS["generated"], "p")
    assert r.axes["identity"].value is None and "HTTP 500" in r.axes["identity"].missing
    assert r.axes["diversity"].value is None
    assert r.axes["color"].value is not None
    assert r.composite.axes_missing == ["identity", "prompt", "quality"]  # no CLIP configured either
    # issue 13: the colour axis alone is not "CHARIS" (it used to be, renormalised); absent, with the reasons
    assert r.composite.axes_used == ["color"] and r.composite.value is None
    assert "identity: HTTP 500" in r.composite.reason and "quality: no CLIP-IQA model configured" in r.composite.reason


def test_rating_metrics_through_the_factory(fake_vlm, secret_env):
    from instruct_identity.charis.metrics import create_metric

    judge = Judge(backend(fake_vlm))
    div = create_metric("diversity", judge=judge)
    assert div(PICS["reference"], PICS["generated"], "p").value == 0.5
    cp = create_metric("dreambench_cp_debiased", judge=judge)
    assert cp.info().needs_vlm and cp(PICS["reference"], PICS["generated"], "p").value == 0.75
    ident = create_metric("identity", judge=judge)(PICS["reference"], PICS["generated"], "p")
    assert ident.value == 0.75 and ident.details["verdict_counts"] == {"match": 1, "partial": 1, "mismatch": 0,
                                                                        "not_visible": 1}
