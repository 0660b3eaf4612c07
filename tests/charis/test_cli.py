"""The ``charis`` CLI: one pair, a resumable batch with failures, the HTML/CSV report, and the
multi-process split/merge (also through a real ``accelerate launch``)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from charis_models import character
from ii_harness import free_port

from instruct_identity.charis import cli
from instruct_identity.charis.batch import (append_result, merge_parts, part_path, read_items, read_results, repair,
                                            split)
from instruct_identity.charis.results import PairResult

REPO = Path(__file__).resolve().parents[2]


def make_pairs(root: Path, n: int = 3, broken: bool = False) -> Path:
    (root / "reference").mkdir(parents=True, exist_ok=True)
    (root / "generated").mkdir(parents=True, exist_ok=True)
    character().save(root / "reference" / "hero.png")
    for i in range(n):
        character(dx=15 * i, background=(255, 255 - 40 * i, 255)).save(root / "generated" / f"hero__{i}.png")
        (root / "generated" / f"hero__{i}.txt").write_text(f"the hero, take {i}")
    if broken:
        (root / "generated" / "hero__broken.png").write_bytes(b"not a png at all")
    return root


def vlm_args(server):
    return ["--vlm-url", server.base_url, "--vlm-model", "fake-vl", "--vlm-key-env", "NO_KEY_NEEDED",
            "--vlm-retries", "0"]


def test_pair_command(tmp_path, fake_vlm, capsys):
    character().save(tmp_path / "r.png")
    character(dx=30).save(tmp_path / "g.png")
    rc = cli.main(["pair", str(tmp_path / "r.png"), str(tmp_path / "g.png"), "--prompt", "hero jumps",
                   "--json", str(tmp_path / "out.json"), *vlm_args(fake_vlm)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "CHARIS" in out and "identity" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["axes"]["identity"]["value"] == 0.75  # fake VLM: identity score 3
    assert data["axes"]["identity"]["details"]["verdicts"][0]["verdict"] == "match"
    assert data["axes"]["diversity"]["value"] == 0.5
    assert data["composite"]["axes_missing"] == ["prompt", "quality"]  # no CLIP given: said, not guessed


def test_folder_batch_is_resumable_lists_failures_and_writes_reports(tmp_path, fake_vlm, capsys):
    src = make_pairs(tmp_path / "data", broken=True)
    items = read_items(src)
    assert [i.id for i in items] == ["hero__0", "hero__1", "hero__2", "hero__broken"]
    assert items[1].prompt == "the hero, take 1"
    out, html, csv_path = tmp_path / "res.jsonl", tmp_path / "report.html", tmp_path / "res.csv"
    args = ["batch", str(src), "--out", str(out), "--html", str(html), "--csv", str(csv_path),
            "--cache", str(tmp_path / "cache"), *vlm_args(fake_vlm)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "1 item(s) failed" in printed and "hero__broken" in printed
    results = {r.id: r for r in read_results(out)}
    assert set(results) == {"hero__0", "hero__1", "hero__2", "hero__broken"}
    assert results["hero__broken"].error and "cannot read" in results["hero__broken"].error
    first_requests = len(fake_vlm.requests)

    # second run: the three scored items are skipped, only the failed one is tried again
    assert cli.main(args) == 0
    assert len(read_results(out)) == 4
    assert len(fake_vlm.requests) == first_requests  # the broken item fails before any VLM call

    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the model's text, escaped
    assert "src='http" not in page and 'src="http' not in page and "<link" not in page  # self-contained
    assert page.count("data:image/jpeg;base64,") == 7  # 3 pairs x 2 thumbnails + the broken item's reference
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert {r["id"] for r in rows} == set(results)
    assert {"identity", "prompt", "color", "quality", "diversity", "composite", "missing_axes"} <= set(rows[0])


def test_interrupted_results_file_is_repaired_and_resumed(tmp_path):
    out = tmp_path / "r.jsonl"
    ok = PairResult(id="a", prompt="", axes={}, composite=None)
    append_result(out, ok)
    with open(out, "a") as f:
        f.write('{"id": "b", "prompt": "", "ax')  # torn line from a killed run
    assert [r.id for r in read_results(out)] == ["a"]
    repair(out)
    assert out.read_text().endswith("\n") and len(out.read_text().splitlines()) == 1


def test_manifest_batch_and_report_command(tmp_path, capsys):
    make_pairs(tmp_path, n=2)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"id": f"x{i}", "reference": "reference/hero.png",
                                              "generated": f"generated/hero__{i}.png", "prompt": "p"}) for i in range(2)))
    out = tmp_path / "r.jsonl"
    assert cli.main(["batch", str(manifest), "--out", str(out), "--mode", "filter"]) == 0
    results = read_results(out)
    assert [r.id for r in results] == ["x0", "x1"]
    assert all(r.composite.mode == "filter" and r.composite.passed is False for r in results)  # no VLM: identity missing
    assert cli.main(["report", str(out), "--html", str(tmp_path / "r.html")]) == 0
    assert "reject" in (tmp_path / "r.html").read_text()
    (tmp_path / "bad.jsonl").write_text('{"reference": "x.png"}\n')
    assert cli.main(["batch", str(tmp_path / "bad.jsonl"), "--out", str(out)]) == 2
    assert "needs 'reference' and 'generated'" in capsys.readouterr().err


def test_config_typos_are_errors(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('mode = "benchmark"\n[vlm]\nbackend = "openai"\nbase_ur = "http://x"\n')
    character().save(tmp_path / "a.png")
    assert cli.main(["pair", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--config", str(cfg)]) == 2
    assert "unknown config key 'vlm.base_ur' (did you mean 'base_url'?)" in capsys.readouterr().err


def test_split_and_merge(tmp_path):
    items = list(range(10))
    shares = [split(items, r, 3) for r in range(3)]
    assert shares == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    out = tmp_path / "r.jsonl"
    append_result(out, PairResult(id="old", prompt="", axes={}, composite=None))
    for rank in range(2):
        append_result(part_path(out, rank), PairResult(id=f"p{rank}", prompt="", axes={}, composite=None))
    assert merge_parts(out) == 2
    assert sorted(r.id for r in read_results(out)) == ["old", "p0", "p1"]
    assert not list(tmp_path.glob("r.jsonl.part*"))


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path):
    """A real 2-process run on the CPU: items split by accelerate, parts merged by rank 0."""
    src = make_pairs(tmp_path / "data", n=4)
    out = tmp_path / "res.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # CPU processes are started with torchrun (accelerate's own CPU launcher needs MPI); the CLI uses
    # accelerate's PartialState either way
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "instruct_identity.charis.cli", "batch", str(src), "--out", str(out), "-v"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "to score on 2 process(es)" in proc.stderr
    results = read_results(out)
    assert sorted(r.id for r in results) == [f"hero__{i}" for i in range(4)]
    assert all(r.ok for r in results) and not list(tmp_path.glob("res.jsonl.part*"))


def test_pair_with_no_models_is_honestly_labelled(tmp_path, capsys):
    """Issue 13: no VLM, no CLIP -> only the colour axis; the CLI must not call that "CHARIS"."""
    character().save(tmp_path / "a.png")
    character(dx=30, background=(200, 220, 255)).save(tmp_path / "b.png")
    assert cli.main(["pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0]
    assert head.startswith("b: CHARIS absent: missing identity: no VLM configured")
    assert "quality: no CLIP-IQA model configured" in head and "--allow-partial" in head
    assert "color" in out and "CHARIS 0." not in out
    assert json.loads((tmp_path / "r.json").read_text())["composite"]["value"] is None
    assert cli.main(["pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--allow-partial"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("b: partial CHARIS: color ")


def test_batch_summary_keeps_partial_apart_and_shows_coverage(tmp_path, capsys):
    src = make_pairs(tmp_path / "data", n=2)
    assert cli.main(["batch", str(src), "--out", str(tmp_path / "r.jsonl"), "--allow-partial",
                     "--html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "mean CHARIS: n/a (no item has every axis of the composite)" in out
    assert "mean partial CHARIS: color " in out and "not comparable" in out
    assert "axis coverage: identity 0/2, prompt 0/2, color 2/2, quality 0/2, diversity 0/2" in out
    page = (tmp_path / "r.html").read_text()
    assert "partial CHARIS: color" in page and "axis coverage" in page


def test_scoring_leaves_the_thread_count_alone(tmp_path):
    """Issue 13: the colour axis used to set torch's global thread count (a race under --workers)."""
    import torch

    from instruct_identity.charis import CharisConfig, Evaluator, Item

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        items = [Item(f"i{k}", tmp_path / "a.png", tmp_path / f"g{k}.png") for k in range(4)]
        character().save(tmp_path / "a.png")
        for k in range(4):
            character(dx=5 * k).save(tmp_path / f"g{k}.png")
        seen = []
        ev = Evaluator(CharisConfig(axes=["color"]))
        real = ev.metric("color").segmenter._segment

        def watching(pic):
            seen.append(torch.get_num_threads())
            return real(pic)

        ev.metric("color").segmenter._segment = watching
        results = list(ev.score_batch(items, workers=3))
        assert all(r.axes["color"].value is not None for r in results)
        assert torch.get_num_threads() == 2 and set(seen) <= {2}
    finally:
        torch.set_num_threads(before)


def test_config_errors_name_the_input(tmp_path):
    from instruct_identity.charis.config import load_config
    from instruct_identity.core.errors import InputError

    with pytest.raises(InputError) as e:
        load_config(None, {"mode": "ranking"})
    assert e.value.input_name == "mode" and "benchmark, filter" in str(e.value)
    (tmp_path / "c.toml").write_text("mode = [")
    with pytest.raises(InputError, match="--config: .*is not valid TOML"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(InputError, match="clip.rescale"):
        load_config(None, {"clip": {"rescale": [0.4, 0.1]}})
    with pytest.raises(InputError, match="axes: unknown CHARIS axis 'colour'"):
        load_config(None, {"axes": ["colour"]})
