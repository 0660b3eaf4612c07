"""Issue 14's findings, one regression test each (the CHARIS findings 3, 4, 6, 10 are tested in
tests/charis). Each test reproduces what went wrong and checks the fix: limits before allocating,
a trainer that stops on a non-finite loss, 16-bit pictures, a node confined to ComfyUI's folders that
never unpickles, runs that never destroy earlier results, curation that skips unreadable sheets, and
the smaller ones (named files, CSV quotes, placeholders, stale temporaries, --version, 144 MP)."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hard_helpers import (changes, gray16_png, grid_sheet, huge_png, rgb_png, run_cli, snapshot, truncated_png)
from instruct_identity.core import regions as R
from instruct_identity.core.errors import InputError


def _old_time(path: Path, seconds: float = 7200) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


# --------------------------------------------------------------------------------------------------
# 1. one request killed the server: limits are checked before anything is allocated


def _regions_json(n: int, width=512, height=256) -> str:
    regions = [{"x": (i * 5) % width, "y": (i * 2) % height, "w": 5, "h": 2, "prompt": f"r{i}"} for i in range(n)]
    return json.dumps({"width": width, "height": height, "regions": regions})


def test_ten_thousand_regions_are_refused_before_a_single_mask_is_built(monkeypatch):
    built = []
    real = R.Region.pixel_mask
    monkeypatch.setattr(R.Region, "pixel_mask", lambda self, w, h: built.append(1) or real(self, w, h))
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        R.RegionLayout.from_json(_regions_json(10_000))
    assert time.perf_counter() - t0 < 5.0 and built == []
    assert e.value.input_name == "layout_json" and "10000 regions" in str(e.value) and "256" in str(e.value)
    assert "Use fewer regions" in e.value.fix


@pytest.mark.parametrize("width,height", [(1_000_000, 256), (256, 10 ** 12), (-5, 64)])
def test_absurd_canvas_is_a_named_error_not_an_allocator_error(width, height):
    with pytest.raises(InputError) as e:
        R.RegionLayout.from_json(json.dumps({"width": width, "height": height,
                                             "regions": [{"x": 0, "y": 0, "w": 5, "h": 2, "prompt": "a"}]}))
    assert e.value.input_name == "layout_json" and "canvas" in str(e.value)
    with pytest.raises(InputError) as e:
        R.grid_layout(width, height, 1, 2)
    assert e.value.input_name in ("width", "height", "rows/cols")


def test_regions_times_canvas_is_capped_with_the_largest_count_that_fits():
    with pytest.raises(InputError) as e:
        R.grid_layout(4096, 4096, 16, 16)   # 256 regions, each a 16 MP mask: 4 G values
    assert e.value.input_name == "rows/cols" and "at most 16 regions" in e.value.fix
    assert len(R.grid_layout(4096, 4096, 4, 4)) == 16       # exactly at the limit: accepted


def test_colour_mask_with_thousands_of_colours_is_refused():
    g = torch.Generator().manual_seed(0)
    noisy = torch.randint(0, 256, (1, 64, 64, 3), generator=g).float() / 255
    noisy = noisy.repeat_interleave(3, 1).repeat_interleave(3, 2)  # 3x3 flat blocks: ~4000 "regions"
    with pytest.raises(InputError) as e:
        R.layout_from_color_mask(noisy, "a", min_area=0.0)
    assert e.value.input_name == "color_mask" and "distinct flat colours" in str(e.value)


def _reference_masks(layout):
    """The implementation before issue 14 (one [R, H, W] stack and int cumsums): the new one-region-at-
    a-time code must give the same answers."""
    raw = torch.stack([r.pixel_mask(layout.width, layout.height) for r in layout.regions])
    taken = torch.cumsum(raw.int(), dim=0) - raw.int()
    return raw & (taken == 0), int((raw.sum(0) > 1).sum())


def _reference_labels(layout, rows, cols, masks):
    from instruct_identity.core.regions.layout import _boxes_overlap

    if all(r.mask is None for r in layout.regions) and not _boxes_overlap(layout.boxes):
        return _reference_box_labels(layout.boxes, layout.width, layout.height, rows, cols)
    bg = ~masks.any(0, keepdim=True)
    onehot = torch.cat([bg, masks], 0).float()
    if (rows, cols) != (layout.height, layout.width):
        onehot = F.interpolate(onehot.unsqueeze(0), size=(rows, cols), mode="area").squeeze(0)
    return onehot.argmax(0) - 1


def _reference_box_labels(boxes, width, height, rows, cols):
    from instruct_identity.core.regions.layout import _coverage

    cover = torch.stack([_coverage(y, h, height, rows)[:, None] * _coverage(x, w, width, cols)[None, :]
                         for (x, y, w, h) in boxes])
    full = torch.cat([(1 - cover.sum(0, keepdim=True)).clamp(min=0), cover], 0)
    return full.argmax(0) - 1


@pytest.mark.parametrize("seed", range(12))
def test_memory_lean_masks_and_labels_give_the_old_answers(seed):
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(16, 97)), int(rng.integers(16, 97))
    regions = []
    for i in range(int(rng.integers(1, 7))):
        x, y = int(rng.integers(-8, w)), int(rng.integers(-8, h))
        box = (x, y, int(rng.integers(1, w)), int(rng.integers(1, h)))
        mask = None
        if seed % 3 == 0 and i % 2:
            mask = torch.from_numpy(rng.random((h, w)) > 0.6)
        regions.append(R.Region(prompt=f"p{i}", box=box, mask=mask))
    layout = R.RegionLayout(w, h, tuple(regions))
    masks, overlap = _reference_masks(layout)
    assert torch.equal(layout.masks(), masks)
    assert layout.overlap_pixels() == overlap
    for rows, cols in ((h, w), (max(1, h // 16), max(1, w // 16)), (3, 5), (h // 2 + 1, w // 3 + 1)):
        assert torch.equal(layout.labels(rows, cols), _reference_labels(layout, rows, cols, masks)), (rows, cols)
    grid = R.grid_layout(w * 4, h * 4, 2, 3, int(rng.integers(0, 5)))
    for rows, cols in ((h // 4 + 1, w // 4 + 1), (2, 3), (7, 11)):
        assert torch.equal(grid.labels(rows, cols), _reference_box_labels(grid.boxes, grid.width, grid.height, rows, cols))


# --------------------------------------------------------------------------------------------------
# 2. training that diverged exited as a success


@pytest.mark.parametrize("key,value", [
    ("learning_rate", 1e4), ("learning_rate", float("inf")), ("learning_rate", float("nan")), ("learning_rate", 0.0),
    ("network_alpha", -4.0), ("network_alpha", 0.0), ("network_alpha", float("nan")), ("max_grad_norm", -1.0),
    ("max_grad_norm", float("inf")), ("guidance_scale", float("nan")), ("discrete_flow_shift", 0.0),
    ("sigmoid_scale", -1.0), ("lr_scheduler_min_lr_ratio", 2.0), ("lr_warmup_steps", -3), ("seed", -1),
    ("resolution", 100_000), ("train_batch_size", 1000), ("output_name", "../../elsewhere"), ("output_name", ".hidden"),
])
def test_config_refuses_values_that_cannot_train(key, value):
    from instruct_identity.training.config import from_dict

    with pytest.raises(InputError) as e:
        from_dict({"dataset_config": "pairs.jsonl", key: value})
    assert e.value.input_name == key and e.value.fix, str(e.value)


def _all_finite(folder: Path) -> list[str]:
    from safetensors.torch import load_file

    bad = []
    for f in folder.rglob("*.safetensors"):
        for k, v in load_file(str(f)).items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                bad.append(f"{f.name}:{k}")
    return bad


def test_a_diverging_run_stops_keeps_the_last_good_state_and_saves_nothing_non_finite(tiny_cfg, components, tmp_path):
    from instruct_identity.training import checkpoints
    from instruct_identity.training.trainer import train

    cfg = tiny_cfg(max_train_steps=8, save_every_n_steps=1, max_grad_norm=0.0)
    cfg.learning_rate = 1e4  # the config refuses it now; a library caller can still set it after validation
    with pytest.raises(checkpoints.Diverged) as e:
        train(cfg, components())
    out = tmp_path / "out"
    assert e.value.input_name == "learning_rate" and "the loss became nan at step 3" in str(e.value)
    assert "Lower learning_rate" in e.value.fix and "step00000002-state" in str(e.value)
    assert not (out / f"{cfg.output_name}.safetensors").exists()      # no "done", no final LoRA
    assert [s for s, _ in checkpoints.complete_states(out, cfg.output_name)] == [2]
    assert _all_finite(out) == []
    rows = (cfg.resolved_logging_dir / f"{cfg.output_name}-loss.csv").read_text().splitlines()
    assert rows[-1].split(",")[:2] == ["3", "nan"]


def test_lora_with_non_finite_values_is_never_written(tmp_path):
    from instruct_identity.training import checkpoints

    with pytest.raises(checkpoints.Diverged):
        checkpoints.save_lora(tmp_path / "x.safetensors", {"a.lora_A.weight": torch.tensor([1.0, float("inf")])},
                              [], None, 5, "h", None)
    assert list(tmp_path.iterdir()) == []


def test_ii_train_exits_non_zero_on_divergence(tmp_path, monkeypatch, comfy, caplog):
    from instruct_identity.training import checkpoints, cli, trainer

    def diverge(cfg, resume=None, **kw):
        raise checkpoints.Diverged("learning_rate", "the loss became nan at step 3.", "Lower learning_rate.")

    monkeypatch.setattr(trainer, "train", diverge)
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset_config = "pairs.jsonl"\n')
    assert cli.main(["--config", str(cfg)]) == 3
    assert "the loss became nan at step 3" in caplog.text


def test_ii_train_refuses_the_reported_learning_rate(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset_config = "pairs.jsonl"\n')
    for value in ("1e4", "inf", "nan"):
        proc = run_cli("instruct_identity.training.cli", "--config", cfg, "--set", f"learning_rate={value}")
        assert proc.returncode == 2 and "learning_rate:" in proc.stderr and "e.g. 1e-4" in proc.stderr, proc.stderr
    proc = run_cli("instruct_identity.training.cli", "--config", cfg, "--set", "network_alpha=-4")
    assert proc.returncode == 2 and "network_alpha: -4" in proc.stderr and "out of range" in proc.stderr


# --------------------------------------------------------------------------------------------------
# 5. 16-bit PNGs were read as white


def test_16bit_png_through_the_trainers_dataset_loader_keeps_its_values(tmp_path):
    from instruct_identity.curation.pipeline import load_picture
    from instruct_identity.training.dataset import check, load_image, read_manifest

    gray16_png(tmp_path / "t.png", 32768)
    gray16_png(tmp_path / "r.png", 16384)
    img = load_image(tmp_path / "t.png", (64, 64))
    assert img.shape == (1, 64, 64, 3) and abs(float(img.mean()) - 0.5) < 0.01   # not 1.0 (white)
    assert abs(float(load_image(tmp_path / "r.png", (32, 32)).mean()) - 0.25) < 0.01
    (tmp_path / "p.jsonl").write_text('{"reference": "r.png", "target": "t.png", "caption": "grey"}\n')
    pairs, problems = read_manifest(tmp_path / "p.jsonl", "identity", dataset=0, repeats=1, allow_mismatch=False)
    assert len(check(pairs, problems).pairs) == 1
    assert abs(float(load_picture(tmp_path / "t.png").mean()) - 128) < 1.5   # curation reads it the same way


# --------------------------------------------------------------------------------------------------
# 7. the Train LoRA node wrote wherever its config said, and resume unpickled


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch, comfy):
    """ComfyUI's input/output/user folders in tmp (what the node is confined to)."""
    import folder_paths

    dirs = {k: tmp_path / "comfy" / k for k in ("input", "output", "user")}
    for d in dirs.values():
        d.mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "input_directory", str(dirs["input"]))
    monkeypatch.setattr(folder_paths, "output_directory", str(dirs["output"]))
    monkeypatch.setattr(folder_paths, "user_directory", str(dirs["user"]))
    monkeypatch.delenv("II_TRAIN_ALLOWED_DIRS", raising=False)
    return dirs


@pytest.mark.parametrize("line,key", [
    ('output_dir = "{outside}/loras"', "output_dir"),
    ('output_dir = "../output/ok"\nlogging_dir = "{outside}/logs"', "logging_dir"),
    ('output_dir = "../output/ok"\ncache_dir = "../../outside/cache"', "cache_dir"),
    ('output_dir = "../output/ok"\ndataset_config = "{outside}/pairs.jsonl"', "dataset_config"),
    ('output_dir = "../output/ok"\nsample_prompts = "/etc/hostname"', "sample_prompts"),
    ('output_dir = "../output/ok"\npretrained_model_name_or_path = "flux1-dev.ckpt"', "pretrained_model_name_or_path"),
    ('output_dir = "../output/ok"\nae = "{outside}/ae.safetensors"', "ae"),
    ('output_dir = "../output/ok"\noutput_name = "../../../outside/x"', "output_name"),
])
def test_train_node_reads_and_writes_only_inside_comfyuis_folders(comfy_dirs, tmp_path, line, key):
    from instruct_identity.nodes.training import run_training

    outside = tmp_path / "outside"
    outside.mkdir()
    toml = comfy_dirs["input"] / "evil.toml"   # where ComfyUI's upload API puts files
    body = line.format(outside=outside)
    if "dataset_config" not in body:
        body += '\ndataset_config = "pairs.jsonl"'
    toml.write_text(body + "\n")
    before = snapshot(tmp_path)
    with pytest.raises(InputError) as e:
        run_training("evil.toml", True, 1)
    assert e.value.input_name == key, str(e.value)
    expected_fix = {"output_name": "Use letters", "pretrained_model_name_or_path": ".safetensors"}.get(key, "II_TRAIN_ALLOWED_DIRS")
    assert expected_fix in e.value.fix, str(e.value)
    assert changes(before, snapshot(tmp_path)) == []


@pytest.mark.parametrize("config", ["../../../etc/passwd", "/etc/passwd", "nowhere.toml"])
def test_train_node_config_path_stays_inside_comfyuis_folders(comfy_dirs, config):
    from instruct_identity.nodes.training import run_training

    with pytest.raises(InputError) as e:
        run_training(config, True, 1)
    assert e.value.input_name == "config" and e.value.fix


def test_train_node_refuses_dataset_pictures_outside_before_opening_them(comfy_dirs, tmp_path, components, monkeypatch):
    from instruct_identity.nodes import training as node
    from instruct_identity.training import trainer

    outside = tmp_path / "outside"
    outside.mkdir()
    rgb_png(outside / "secret.png")
    rgb_png(comfy_dirs["input"] / "ref.png")
    (comfy_dirs["input"] / "pairs.jsonl").write_text(json.dumps(
        {"reference": "ref.png", "target": str(outside / "secret.png"), "caption": "x"}) + "\n")
    (comfy_dirs["input"] / "c.toml").write_text(
        f'dataset_config = "pairs.jsonl"\noutput_dir = "{comfy_dirs["output"] / "run"}"\nresolution = 64\n'
        'mixed_precision = "no"\nnetwork_dim = 4\n')
    opened = []
    import instruct_identity.core.imagefile as imagefile

    real = imagefile.open_image
    monkeypatch.setattr(imagefile, "open_image", lambda p, **kw: opened.append(str(p)) or real(p, **kw))
    real_train = trainer.train
    monkeypatch.setattr(trainer, "train", lambda cfg, **kw: real_train(cfg, components(), **kw))
    with pytest.raises(InputError) as e:
        node.run_training("c.toml", True, 1)
    assert e.value.input_name.startswith("dataset_config") and "secret.png" in str(e.value)
    assert not any("secret" in p for p in opened)


def test_state_is_safetensors_and_json_and_resume_never_unpickles(tiny_cfg, components, tmp_path, monkeypatch):
    from instruct_identity.training import checkpoints
    from instruct_identity.training.trainer import Interrupted, train

    cfg = tiny_cfg(max_train_steps=4, save_every_n_steps=2, network_dropout=0.1)

    def stop(info):
        if info.step == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        train(cfg, components(), on_step=stop)
    state = checkpoints.latest_state(tmp_path / "out", cfg.output_name)
    assert {p.suffix for p in state.iterdir()} == {".json", ".safetensors"}

    def no_unpickling(*a, **k):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    result = train(cfg, components(), resume=True)
    assert result.step == 4


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_a_state_in_the_old_pickled_format_is_refused_unread(tiny_cfg, components, tmp_path):
    from instruct_identity.training import checkpoints
    from instruct_identity.training.trainer import train

    cfg = tiny_cfg(max_train_steps=2, save_every_n_steps=1)
    train(cfg, components())
    old = checkpoints.latest_state(tmp_path / "out", cfg.output_name)
    marker = tmp_path / "pwned"
    for f in list(old.iterdir()):
        if f.name not in (checkpoints.TRAINER_FILE, checkpoints.ADAPTER_FILE):
            f.unlink()
    (old / "optimizer.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
    (old / "random_states_0.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    saved = json.loads((old / checkpoints.TRAINER_FILE).read_text())
    saved.pop("state_format")
    (old / checkpoints.TRAINER_FILE).write_text(json.dumps(saved))
    with pytest.raises(InputError) as e:
        train(tiny_cfg(max_train_steps=3, save_every_n_steps=1), components(), resume=str(old))
    assert e.value.input_name == "--resume" and "pickle" in str(e.value) and "another output_dir" in e.value.fix
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# 8. a fresh start in a finished run's folder destroyed its results


def test_fresh_start_over_a_finished_run_is_refused_and_changes_nothing(tiny_cfg, components, tmp_path):
    from instruct_identity.training.trainer import train

    cfg = tiny_cfg(max_train_steps=3, save_every_n_steps=1)
    train(cfg, components())
    out = tmp_path / "out"
    before = snapshot(out)
    assert any(k.endswith("-state") for k in before)
    with pytest.raises(InputError) as e:
        train(tiny_cfg(max_train_steps=2), components())
    assert e.value.input_name == "output_dir" and "--resume" in e.value.fix and "another output_dir" in e.value.fix
    assert f"{cfg.output_name}.safetensors" in str(e.value)
    assert changes(before, snapshot(out)) == []
    # another name in the same folder is another run: allowed, and the first run's files stay
    shared = ["dataset_report.json", "dataset_report.txt", "cache"]   # the last run's dataset check; the shared cache
    first = snapshot(out, skip=shared)
    train(tiny_cfg(max_train_steps=1, output_name="second", save_state=False), components())
    assert changes(first, snapshot(out, skip=shared + ["second.safetensors", "logs/second-loss.csv",
                                                       "logs/second-loss.png"])) == []


def test_resume_without_a_saved_state_does_not_start_over_a_finished_run(tiny_cfg, components, tmp_path):
    from instruct_identity.training.trainer import train

    train(tiny_cfg(max_train_steps=2, save_state=False), components())
    before = snapshot(tmp_path / "out")
    with pytest.raises(InputError) as e:
        train(tiny_cfg(max_train_steps=3, save_state=False), components(), resume=True)
    assert e.value.input_name == "output_dir" and "no resumable state" in str(e.value)
    assert changes(before, snapshot(tmp_path / "out")) == []


# --------------------------------------------------------------------------------------------------
# 9. one zero-byte PNG stopped ii-curate


def test_ii_curate_reports_and_skips_unreadable_sheets_and_curates_the_rest(tmp_path):
    sheets = tmp_path / "sheets"
    for i in range(2):
        grid_sheet(sheets, f"good{i}", seed=i)
    shutil.copy(sheets / "good0.sheet.json", sheets / "empty.sheet.json")
    (sheets / "empty.png").write_bytes(b"")                       # with a layout: fails when decoded
    (sheets / "nolayout.png").write_bytes(b"")                    # without: fails when its chunk is read
    truncated_png(sheets / "cut.png")
    shutil.copy(sheets / "good0.sheet.json", sheets / "cut.sheet.json")
    proc = run_cli("instruct_identity.curation", sheets, tmp_path / "ds", "--blank-std", "0", "--near-duplicate", "0")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("empty.png", "nolayout.png", "cut.png"):
        assert name in proc.stderr
    assert "empty (0-byte) file" in proc.stderr and "truncated" in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "ds" / "pairs.jsonl").read_text().splitlines()]
    assert sorted({r["sheet"] for r in rows}) == ["good0.png", "good1.png"] and len(rows) == 4
    report = json.loads((tmp_path / "ds" / "curation_report.json").read_text())
    assert sorted(d["sheet"] for d in report["skipped_sheets"]) == ["cut.png", "empty.png", "nolayout.png"]


# --------------------------------------------------------------------------------------------------
# 11. the smaller ones


def test_truncated_pictures_are_named_everywhere(tmp_path):
    from instruct_identity.core.imagefile import load_rgb
    from instruct_identity.curation.sheets import read_sheet_info
    from instruct_identity.training.dataset import check, read_manifest

    bad = truncated_png(tmp_path / "half_written.png")
    with pytest.raises(InputError) as e:
        load_rgb(bad)
    assert "half_written.png" in str(e.value) and "truncated" in str(e.value)
    with pytest.raises(InputError) as e:
        read_sheet_info(bad)          # no sidecar: the PNG chunk is looked for
    assert "half_written.png" in str(e.value)
    rgb_png(tmp_path / "ok.png")
    (tmp_path / "p.jsonl").write_text('{"reference": "ok.png", "target": "half_written.png", "caption": "x"}\n')
    report = check(*read_manifest(tmp_path / "p.jsonl", "identity", dataset=0, repeats=1, allow_mismatch=False))
    assert "half_written.png" in report.text() and "truncated" in report.text()


def test_malformed_csv_says_the_quote_is_not_closed():
    from instruct_identity.curation.sheets import parse_characters

    with pytest.raises(InputError) as e:
        parse_characters('name,description\nalice,"a girl with red hair\nbob,a robot\n')
    assert e.value.input_name == "characters" and "quoted field is never closed" in str(e.value)
    assert "line 2" in str(e.value) and "no description" not in str(e.value) and "quote" in e.value.fix


@pytest.mark.parametrize("template,key,suggestion", [
    ("{descripton}, {pose}", "cell_template", "{description}"), ("{description}, {pos}", "cell_template", "{pose}"),
    ("sheet of {character}", "base_template", None), ("{pose} of {name}", "base_template", None)])
def test_unknown_placeholders_are_reported(template, key, suggestion):
    from instruct_identity.curation.sheets import plan_sheets

    with pytest.raises(InputError) as e:
        plan_sheets("mira: a girl", "standing", **{key: template})
    assert e.value.input_name == key and "unknown placeholder" in str(e.value) and "{description}" in e.value.fix
    if suggestion:
        assert f"Did you mean {suggestion}" in e.value.fix


def test_trainer_removes_half_written_files_of_a_killed_run(tiny_cfg, components, tmp_path):
    from instruct_identity.training.trainer import train

    cfg = tiny_cfg(max_train_steps=1, save_state=False)
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    stale = [out / f".{cfg.output_name}.safetensors.k1ll3d.tmp", out / "logs" / ".x-loss.csv.ab.tmp"]
    for p in stale:
        p.write_bytes(b"half")
        _old_time(p)
    (out / f".{cfg.output_name}-step00000004-state.tmp").mkdir()
    fresh = out / ".someone-else.safetensors.now.tmp"   # a live writer's file (seconds old) is left alone
    fresh.write_bytes(b"busy")
    train(cfg, components())
    assert not any(p.exists() for p in stale) and not (out / f".{cfg.output_name}-step00000004-state.tmp").exists()
    assert fresh.exists()


def test_curation_and_sheet_saving_remove_half_written_files(tmp_path, comfy):
    import folder_paths  # noqa: F401  (ComfyUI importable)
    from instruct_identity.curation import DatasetWriter
    from instruct_identity.nodes.sheets import save_sheets

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    stale = [ds / ".pairs.jsonl.dead.tmp", ds / "images" / ".abc.png.dead.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    with DatasetWriter(ds):
        pass
    assert not any(p.exists() for p in stale)

    out = tmp_path / "output"
    (out / "sheets").mkdir(parents=True)
    old = out / "sheets" / ".mira_00001_.png.dead.tmp"
    old.write_bytes(b"half")
    _old_time(old)
    save_sheets(torch.rand(1, 32, 64, 3), R.grid_layout(64, 32, 1, 2), "sheets/mira", output_dir=str(out))
    assert not old.exists() and (out / "sheets" / "mira_00001_.png").is_file()


def test_command_line_tools_say_their_version():
    version = metadata.version("comfyui-instruct-identity")
    for module, prog in (("instruct_identity.training.cli", "ii-train"), ("instruct_identity.curation", "ii-curate")):
        proc = run_cli(module, "--version")
        assert proc.returncode == 0 and proc.stdout.strip() == f"{prog} {version}", (proc.stdout, proc.stderr)


def test_144_megapixel_png_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile
    from instruct_identity.core.imagefile import load_rgb
    from instruct_identity.curation.sheets import read_sheet_info
    from instruct_identity.training.dataset import check, read_manifest

    big = huge_png(tmp_path / "big.png")
    assert big.stat().st_size < 200_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("a 144 MP picture was decoded"))
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        load_rgb(big)
    assert "12000x12000" in str(e.value) and "144 MP" in str(e.value) and "limit" in str(e.value)
    assert "Downscale" in e.value.fix
    with pytest.raises(InputError) as e:          # curation: refused from the header too (reported, skipped)
        read_sheet_info(big)
    assert "big.png" in str(e.value) and "limit" in str(e.value)
    rgb_png(tmp_path / "ok.png")
    (tmp_path / "p.jsonl").write_text('{"reference": "ok.png", "target": "big.png", "caption": "x"}\n')
    monkeypatch.undo()
    report = check(*read_manifest(tmp_path / "p.jsonl", "identity", dataset=0, repeats=1, allow_mismatch=False))
    assert report.pairs == [] and "big.png" in report.text() and "limit" in report.text()
    assert time.perf_counter() - t0 < 10
