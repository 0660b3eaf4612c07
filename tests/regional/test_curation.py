"""Sheets -> training pairs: split, pairing, duplicates, resumability, the trainer's loader, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instruct_identity.core import regions as R
from instruct_identity.curation import (CurationConfig, DatasetWriter, SheetInfo, curate_folder, read_pairs,
                                        read_sheet_info, split_sheet, write_sidecar)

REPO = Path(__file__).resolve().parents[2]
ROWS, COLS, GUTTER, CELL = 2, 3, 8, 48


def _figure(seed: int, size: int = CELL) -> np.ndarray:
    """A cell: white background with a few random coloured blocks (distinct per seed)."""
    rng = np.random.default_rng(seed)
    cell = np.full((size, size, 3), 255, np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, size - 12, 2)
        h, w = rng.integers(6, 14, 2)
        cell[y:y + h, x:x + w] = rng.integers(0, 200, 3)
    return cell


def make_sheet(folder: Path, name: str, cells: list[np.ndarray], captions: list[str]) -> Path:
    w = COLS * CELL + (COLS - 1) * GUTTER
    h = ROWS * CELL + (ROWS - 1) * GUTTER
    layout = R.grid_layout(w, h, ROWS, COLS, GUTTER, [f"{name}, {c}" for c in captions], captions=captions)
    sheet = np.full((h, w, 3), 255, np.uint8)
    for arr, (x, y, bw, bh) in zip(cells, layout.boxes):
        sheet[y:y + bh, x:x + bw] = arr
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_00001_.png"
    Image.fromarray(sheet).save(path)
    write_sidecar(path, SheetInfo(layout, character=name, base_prompt=f"sheet of {name}", seed=1))
    return path


POSES = ["front", "side", "back", "sitting", "waving", "running"]


@pytest.fixture
def sheets(tmp_path):
    folder = tmp_path / "sheets"
    alice = [_figure(i) for i in range(6)]
    alice[4] = alice[1].copy()                                  # a near-duplicate cell
    alice[5] = np.full((CELL, CELL, 3), 255, np.uint8)          # a blank cell
    make_sheet(folder, "alice", alice, POSES)
    make_sheet(folder, "bob", [_figure(10 + i) for i in range(6)], POSES)
    return folder


def test_split_along_the_known_grid(sheets):
    path = sheets / "bob_00001_.png"
    info = read_sheet_info(path)
    assert info.character == "bob" and info.layout.grid == (ROWS, COLS, GUTTER)
    cells = split_sheet(np.asarray(Image.open(path).convert("RGB")), info)
    assert [c.shape for c in cells] == [(CELL, CELL, 3)] * 6
    for i, c in enumerate(cells):
        assert np.array_equal(c, _figure(10 + i))


def _config(**kw):
    return CurationConfig(**{"pairing": "all", **kw})


def test_curation_writes_a_dataset_the_trainer_loads(sheets, tmp_path):
    out = tmp_path / "dataset"
    report = curate_folder(sheets, out, _config())
    # alice: 4 usable cells (one duplicate, one blank dropped) -> 12 pairs; bob: 6 cells -> 30 pairs
    assert report.written == 12 + 30
    reasons = report.reasons()
    assert reasons.get("near-duplicate of cell 2") == 1 and reasons.get("blank cell") == 1
    assert any(d.sheet.startswith("alice") and d.item == "cell 5" for d in report.dropped)
    rows = read_pairs(out / "pairs.jsonl")
    assert len(rows) == 42
    for row in rows:
        assert {"reference", "target", "caption"} <= set(row)
        assert row["caption"] in POSES
        ref, tgt = Image.open(row["reference"]), Image.open(row["target"])
        assert ref.size == tgt.size == (CELL, CELL) and row["reference"] != row["target"]
    raw = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert all(not Path(r["target"]).is_absolute() for r in raw)                # relative to the manifest
    assert len(list((out / "images").glob("*.png"))) == 10                       # one file per distinct cell
    assert json.loads((out / "curation_report.json").read_text())["written"] == 42
    assert not list(out.glob(".*tmp*")) and not list((out / "images").glob(".*"))

    dataset = pytest.importorskip("instruct_identity.training.dataset")
    pairs, problems = dataset.read_manifest(out / "pairs.jsonl", "identity", dataset=0, repeats=1, allow_mismatch=False)
    checked = dataset.check(pairs, problems)
    assert len(checked.pairs) == 42 and not checked.problems


def test_resumed_run_adds_no_duplicates_and_never_overwrites(sheets, tmp_path):
    out = tmp_path / "dataset"
    first = curate_folder(sheets, out, _config(max_pairs_per_sheet=5))
    assert first.written == 10
    manifest = (out / "pairs.jsonl").read_text()
    images = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "images").glob("*.png")}
    again = curate_folder(sheets, out, _config(max_pairs_per_sheet=5))
    assert again.written == 0 and again.already_present == 10
    assert (out / "pairs.jsonl").read_text() == manifest
    more = curate_folder(sheets, out, _config())                               # resume with the cap lifted
    assert more.written == 42 - 10 and more.already_present == 10
    lines = (out / "pairs.jsonl").read_text().splitlines()
    assert lines[:10] == manifest.splitlines()                                  # old lines kept verbatim, first
    keys = [(r["reference"], r["target"], r["caption"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) == 42
    for name, (mtime, data) in images.items():
        p = out / "images" / name
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data


def test_pairings_filter_and_lock(sheets, tmp_path):
    from instruct_identity.curation import Verdict

    assert curate_folder(sheets, tmp_path / "first", _config(pairing="first")).written == 3 + 5
    assert curate_folder(sheets, tmp_path / "cyclic", _config(pairing="cyclic")).written == 4 + 6
    seen = []

    def only_sitting(ref, tgt, caption):
        seen.append((ref.shape, tgt.shape, caption))
        return Verdict(caption == "sitting", "not sitting")

    report = curate_folder(sheets, tmp_path / "filtered", _config(), pair_filter=only_sitting)
    assert report.written == 3 + 5 and report.reasons()["filter"] == len(seen) - 8
    assert all(s[0] == (CELL, CELL, 3) for s in seen)

    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".curation.lock").write_text(str(os.getppid()))      # a live process holds it
    with pytest.raises(Exception, match="another curation"):
        curate_folder(sheets, tmp_path / "locked", _config())


def test_existing_manifest_lines_are_validated(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "pairs.jsonl").write_text('{"reference": "a.png"}\n')
    with pytest.raises(Exception, match="line 1"):
        DatasetWriter(out)


def test_cli_curates_and_splits(sheets, tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    out = tmp_path / "cli_dataset"
    r = subprocess.run([sys.executable, "-m", "instruct_identity.curation", str(sheets), str(out), "--pairing", "first",
                        "--report", str(tmp_path / "r.json")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "8 new pairs written" in r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["written"] == 8
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 8

    # plain pictures without a layout file: the grid on the command line
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.open(sheets / "bob_00001_.png").save(plain / "bob.png")
    r = subprocess.run([sys.executable, "-m", "instruct_identity.curation", "curate", str(plain), str(tmp_path / "p"),
                        "--grid", "2x3", "--gutter", str(GUTTER)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "0 new pairs written" in r.stderr and "no caption for the target cell" in r.stderr   # no captions: nothing to train on
    caps = tmp_path / "caps.txt"
    caps.write_text("\n".join(POSES))
    r = subprocess.run([sys.executable, "-m", "instruct_identity.curation", "curate", str(plain), str(tmp_path / "p2"),
                        "--grid", "2x3", "--gutter", str(GUTTER), "--captions", str(caps)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "p2" / "pairs.jsonl").read_text().splitlines()) == 30

    r = subprocess.run([sys.executable, "-m", "instruct_identity.curation", "split", str(sheets / "alice_00001_.png"),
                        str(tmp_path / "cells")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "cells").glob("cell_*.png"))) == 6
    assert (tmp_path / "cells" / "cell_03.txt").read_text().strip() == "back"

    r = subprocess.run([sys.executable, "-m", "instruct_identity.curation", str(tmp_path / "nope"), str(tmp_path / "x")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "not a folder" in r.stderr


def test_charis_filter_mode(sheets, tmp_path):
    charis = pytest.importorskip("instruct_identity.charis")
    from instruct_identity.curation.filters import available_modes, charis_filter, make_filter

    assert "charis" in available_modes()
    # CHARIS with no local models: identity/quality/diversity cannot be computed, so filter mode rejects -- and says why
    report = curate_folder(sheets, tmp_path / "strict", _config(pairing="first"), pair_filter=make_filter("charis"))
    assert report.written == 0 and report.reasons()["filter"] == 3 + 5
    assert "identity missing" in report.dropped[-1].reason

    class Stub:                                          # an evaluator whose every axis passes
        def __init__(self):
            self.calls = []

        def score_pair(self, reference, generated, prompt, spec=None):
            self.calls.append((reference.rgb.shape, prompt, spec.mode))
            axes = {a: charis.AxisResult.ok(a, 0.9) for a in ("identity", "color", "quality", "diversity")}
            return charis.PairResult("x", prompt, axes, charis.composite(axes, spec))

    stub = Stub()
    report = curate_folder(sheets, tmp_path / "ok", _config(pairing="first"), pair_filter=charis_filter(stub))
    assert report.written == 8 and len(stub.calls) == 8
    assert stub.calls[0][0] == (3, CELL, CELL) and stub.calls[0][2] == "filter"


def test_charis_filter_uses_the_evaluators_own_filter_settings():
    """ii-curate --filter charis must apply the CHARIS config's composite (thresholds, prompt criterion)."""
    from types import SimpleNamespace

    from instruct_identity import charis
    from instruct_identity.curation.filters import charis_filter

    own = charis.CompositeSpec(mode="filter", thresholds={"identity": 0.9, "prompt": 0.7})  # not the defaults
    seen = []

    class Recorder:
        spec = own

        def score_pair(self, ref, gen, caption, spec=None):
            seen.append(spec)
            return SimpleNamespace(ok=False, error="stop here")

    run = charis_filter(Recorder())
    img = np.full((8, 8, 3), 200, np.uint8)
    assert run(img, img, "a caption").keep is False
    assert seen == [own]                                   # the evaluator's spec, not a fresh default
    bench = Recorder()
    bench.spec = charis.CompositeSpec(mode="benchmark")    # a benchmark-mode config falls back to filter mode
    charis_filter(bench)(img, img, "a caption")
    assert seen[-1].mode == "filter" and seen[-1] != own
