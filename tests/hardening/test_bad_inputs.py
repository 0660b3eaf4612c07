"""The bad-input suite: hostile and careless inputs, table-driven, against

* the nodes, through a real ComfyUI server (``main.py --cpu``; one server for the session),
* the command-line tools ``ii-train``, ``ii-curate`` and ``charis`` (charis: its current errors),
* the trainer (config values and a run's set-up, in-process on a tiny model).

Every case asserts that the error names the input at fault and says what to do, that the server
still answers afterwards, and that no file outside the case's own output folder changed (the
server's whole base folder and an "outside" folder that hostile paths aim at are compared before
and after). A few inputs are bad only in part (one unreadable sheet among good ones): those cases
succeed and the report must name the bad file and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from hard_helpers import alive, changes, grid_sheet, outcome, rgb_png, run_cli, snapshot, upload

pytestmark = pytest.mark.slow


@dataclass
class Case:
    id: str
    build: Callable            # build(ctx) -> API graph (server), argv (CLIs) or a callable (trainer)
    name: str                  # the input the message must name
    fix: str                   # a piece of the fix the message must give
    ok: bool = False           # partly bad input: succeeds, and the report names the problem
    setup: Callable | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# graph pieces


def preview(node_id: str, output: int = 1) -> dict:
    return {"class_type": "PreviewAny", "inputs": {"source": [node_id, output]}}


def layout_json(text) -> dict:
    text = text if isinstance(text, str) else json.dumps(text)
    return {"1": {"class_type": "InstructIdentityLayoutFromJSON", "inputs": {"layout_json": text}}, "2": preview("1")}


def region(x=0, y=0, w=32, h=32, prompt="a", **kw) -> dict:
    return {"x": x, "y": y, "w": w, "h": h, "prompt": prompt, **kw}


def grid(width=256, height=128, rows=1, cols=2, gutter=0, prompts="a\nb") -> dict:
    return {"class_type": "InstructIdentityGridLayout", "inputs": {
        "width": width, "height": height, "rows": rows, "cols": cols, "gutter": gutter, "prompts": prompts,
        "captions": "", "background_prompt": ""}}


def empty_image(width=64, height=64, batch=1, color=0) -> dict:
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}}


def color_mask(image: dict, prompts="a", background_color="#000000") -> dict:
    return {"1": image, "2": {"class_type": "InstructIdentityLayoutFromColorMask", "inputs": {
        "color_mask": ["1", 0], "prompts": prompts, "background_color": background_color, "tolerance": 32,
        "background_prompt": ""}}, "3": preview("2")}


def masks(value=0.0, prompts="a") -> dict:
    return {"1": {"class_type": "SolidMask", "inputs": {"value": value, "width": 64, "height": 64}},
            "2": {"class_type": "InstructIdentityLayoutFromMasks", "inputs": {
                "masks": ["1", 0], "prompts": prompts, "threshold": 0.5, "background_prompt": ""}}, "3": preview("2")}


def sheet_batch(**kw) -> dict:
    inputs = {"characters": "mira: a girl with silver hair", "poses": "standing\nsitting", "format": "auto", "seed": 0,
              "base_template": "character sheet of {description}", "cell_template": "{description}, {pose}",
              "folder": "hard_sheets"}
    inputs.update(kw)
    return {"1": {"class_type": "InstructIdentityCharacterSheetBatch", "inputs": inputs}, "2": preview("1", 2)}


MODEL = {
    "m1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
    "m2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
    "m3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a character", "clip": ["m2", 0]}},
    "m4": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["m3", 0], "guidance": 3.5}},
    "m5": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
}


def regional(layout: dict, **kw) -> dict:
    inputs = {"model": ["m1", 0], "clip": ["m2", 0], "conditioning": ["m4", 0], "layout": ["L", 0],
              "image_attention": "global", "base_ratio": 0.2, "start": 0.0, "end": 0.3, "double_blocks": "all",
              "single_blocks": "all"}
    inputs.update(kw)
    return {**{k: MODEL[k] for k in ("m1", "m2", "m3", "m4")}, "L": layout,
            "R": {"class_type": "InstructIdentityRegionalPrompting", "inputs": inputs},
            "P": {"class_type": "PreviewAny", "inputs": {"source": ["R", 1]}}}


def reference(image: dict, **kw) -> dict:
    inputs = {"model": ["m1", 0], "vae": ["m5", 0], "positive": ["m4", 0], "reference": ["I", 0], "width": 0,
              "height": 0, "fit": "pad", "pad_color": "#ffffff", "batch_size": 1, "route": "auto", "guidance": -1.0}
    inputs.update(kw)
    return {**MODEL, "I": image, "R": {"class_type": "InstructIdentityReference", "inputs": inputs},
            "P": {"class_type": "PreviewAny", "inputs": {"source": ["R", 4]}}}


def train_node(config: str) -> dict:
    return {"1": {"class_type": "InstructIdentityTrainLoRA", "inputs": {"config": config, "resume": True,
                                                                        "max_train_steps": 1}}}


def sheets_to_dataset(sheets_folder: str, dataset_folder: str, filter="off") -> dict:
    return {"1": {"class_type": "InstructIdentitySheetsToDataset", "inputs": {
        "sheets_folder": sheets_folder, "dataset_folder": dataset_folder, "pairing": "all", "max_pairs_per_sheet": 0,
        "near_duplicate": 0.0, "blank_std": 0.0, "filter": filter}}, "2": preview("1", 0)}


def uploaded_toml(text: str, name: str):
    """setup: write a trainer TOML and upload it the way the browser uploads a picture."""

    def setup(ctx):
        path = ctx.tmp / name
        path.write_text(text.format(outside=ctx.outside, output=ctx.server.base / "output"))
        upload(ctx.server, path)

    return setup


def _regions(n, width=512, height=256, w=5, h=2):
    return {"width": width, "height": height,
            "regions": [region((i * w) % width, (i * h) % height, w, h, f"r{i}") for i in range(n)]}


def _sheet_folder_with_a_zero_byte_png(ctx):
    folder = ctx.server.base / "output" / "hard_sheets_mixed"
    grid_sheet(folder, "good", seed=1)
    (folder / "empty.png").write_bytes(b"")


def _outside_manifest(ctx):
    rgb_png(ctx.outside / "secret.png")
    rgb_png(ctx.server.base / "input" / "hard_ref.png")
    (ctx.server.base / "input" / "hard_pairs.jsonl").write_text(json.dumps(
        {"reference": "hard_ref.png", "target": str(ctx.outside / "secret.png"), "caption": "x"}) + "\n")
    (ctx.outside / "pairs.jsonl").write_text('{"reference": "a.png", "target": "b.png", "caption": "x"}\n')


TOML_OK = 'output_dir = "{output}/hard_train"\nnetwork_dim = 4\nresolution = 64\n'

SERVER_CASES = [
    # region layouts: limits before allocating, and malformed JSON
    Case("layout_json_10000_regions", lambda c: layout_json(_regions(10_000)), "layout_json", "Use fewer regions"),
    Case("layout_json_1000_regions", lambda c: layout_json(_regions(1_000)), "layout_json", "II_MAX_REGIONS"),
    Case("layout_json_canvas_width_1e6", lambda c: layout_json({"width": 1e6, "height": 256, "regions": [region()]}),
         "layout_json", "Use at most 8192 px"),
    Case("layout_json_mask_budget", lambda c: layout_json(_regions(200, 4096, 4096, 16, 16)), "layout_json",
         "at most 16 regions"),
    Case("layout_json_not_json", lambda c: layout_json('{"width": 64, "regions": [}'), "layout_json", 'Write {"width"'),
    Case("layout_json_nested_too_deeply", lambda c: layout_json("[" * 100_000), "layout_json", 'Write {"width"'),
    Case("layout_json_not_an_object", lambda c: layout_json("42"), "layout_json", 'Write {"width"'),
    Case("layout_json_regions_not_a_list", lambda c: layout_json({"regions": "all of them"}), "layout_json",
         '"regions": [{'),
    Case("layout_json_zero_size_region", lambda c: layout_json({"width": 64, "height": 64, "regions": [region(w=0)]}),
         "layout_json", "positive w and h"),
    Case("layout_json_x_not_a_number", lambda c: layout_json({"width": 64, "height": 64, "regions": [region(x="left")]}),
         "layout_json", 'Write {"x":0'),
    Case("layout_json_x_infinity", lambda c: layout_json('{"width": 64, "height": 64, "regions": '
                                                         '[{"x": Infinity, "y": 0, "w": 8, "h": 8}]}'),
         "layout_json", 'Write {"x":0'),
    Case("layout_json_rle_wrong_size", lambda c: layout_json({"width": 8, "height": 8, "regions": [region(
        w=4, h=4, mask_rle=[1, 2])]}), "layout_json", "Save the layout again"),
    Case("layout_json_rle_not_numbers", lambda c: layout_json({"width": 8, "height": 8, "regions": [region(
        w=4, h=4, mask_rle=["a", -3])]}), "layout_json", "Save the layout again"),
    Case("layout_json_bad_cell", lambda c: layout_json({"width": 64, "height": 64, "regions": [region(cell="first")]}),
         "layout_json", '"cell": [row, column]'),
    Case("layout_json_bad_grid", lambda c: layout_json({"width": 64, "height": 64, "regions": [region()],
                                                        "grid": {"rows": "two"}}), "layout_json", '"grid": {"rows"'),
    Case("grid_more_prompts_than_cells", lambda c: {"1": grid(prompts="\n".join("abcdefg")), "2": preview("1")},
         "prompts", "Add rows or columns"),
    Case("grid_gutter_leaves_no_room", lambda c: {"1": grid(64, 64, 1, 16, 16, ""), "2": preview("1")}, "gutter",
         "Use a larger canvas"),
    Case("grid_16x16_on_8192_canvas", lambda c: {"1": grid(8192, 8192, 16, 16, 0, ""), "2": preview("1")}, "rows/cols",
         "at most 4 regions"),
    Case("color_mask_only_background", lambda c: color_mask(empty_image()), "color_mask", "Paint regions"),
    Case("color_mask_bad_background_colour", lambda c: color_mask(empty_image(color=0xFF0000), background_color="bluish"),
         "background_color", "#rrggbb"),
    Case("color_mask_more_prompts_than_colours", lambda c: color_mask(empty_image(color=0xFF0000), prompts="a\nb"),
         "prompts", "Remove the extra lines"),
    Case("color_mask_unknown_colour_line", lambda c: color_mask(empty_image(color=0xFF0000), prompts="#00ff00: a dog"),
         "prompts", "Colours found: #ff0000"),
    Case("masks_empty_mask", lambda c: masks(0.0), "masks", "Paint the region"),
    Case("masks_prompt_count", lambda c: masks(1.0, "a\nb"), "prompts", "one prompt line per mask"),
    # character sheet batches
    Case("sheet_batch_unclosed_csv_quote", lambda c: sheet_batch(characters='name,description\nmira,"a girl\nbo,robot'),
         "characters", "Close every opening quote"),
    Case("sheet_batch_unknown_placeholder", lambda c: sheet_batch(cell_template="{descripton}, {pose}"), "cell_template",
         "Did you mean {description}?"),
    Case("sheet_batch_unknown_base_placeholder", lambda c: sheet_batch(base_template="sheet of {pose}"),
         "base_template", "Use {name}, {description}"),
    Case("sheet_batch_bad_json", lambda c: sheet_batch(characters='[{"name": "mira", '), "characters",
         'Write [{"name"'),
    Case("sheet_batch_json_nested_too_deeply", lambda c: sheet_batch(characters="[" * 100_000), "characters",
         'Write [{"name"'),
    Case("sheet_batch_poses_json_nested_too_deeply", lambda c: sheet_batch(poses="[" * 100_000), "poses",
         "one pose per line"),
    Case("sheet_batch_no_characters", lambda c: sheet_batch(characters="   \n  "), "characters", "'name: description'"),
    Case("sheet_batch_1001_characters", lambda c: sheet_batch(characters="\n".join(f"c{i}: a girl" for i in range(1001))),
         "characters", "Split the list"),
    Case("sheet_batch_no_poses", lambda c: sheet_batch(poses=""), "poses", "one pose per line"),
    Case("sheet_batch_257_poses", lambda c: sheet_batch(poses="\n".join(f"pose {i}" for i in range(257))), "poses",
         "Use fewer poses"),
    Case("save_sheet_outside_output", lambda c: {"1": empty_image(128, 64), "2": grid(128, 64),
                                                 "3": {"class_type": "InstructIdentitySaveSheet", "inputs": {
                                                     "images": ["1", 0], "layout": ["2", 0],
                                                     "filename_prefix": "../../outside/sheet"}}},
         "filename_prefix", "inside ComfyUI's output folder"),
    Case("save_sheet_empty_prefix", lambda c: {"1": empty_image(128, 64), "2": grid(128, 64),
                                               "3": {"class_type": "InstructIdentitySaveSheet", "inputs": {
                                                   "images": ["1", 0], "layout": ["2", 0], "filename_prefix": " "}}},
         "filename_prefix", "Give folder/name"),
    Case("split_image_odd_width", lambda c: {"1": empty_image(65, 32), "2": {
        "class_type": "InstructIdentitySplitImage", "inputs": {"image": ["1", 0]}}, "3": {
        "class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}, "image", "Decode the LATENT"),
    # curation
    Case("sheets_to_dataset_outside_output", lambda c: sheets_to_dataset("../..", "hard_ds"), "sheets_folder",
         "inside ComfyUI's output folder"),
    Case("sheets_to_dataset_writes_outside", lambda c: sheets_to_dataset("hard_sheets", "../../outside/ds"),
         "dataset_folder", "inside ComfyUI's output folder"),
    Case("sheets_to_dataset_charis_without_evaluator", lambda c: sheets_to_dataset("hard_sheets_mixed", "hard_ds2", "charis"),
         "charis", "Connect a CHARIS Loader", setup=_sheet_folder_with_a_zero_byte_png),
    Case("sheets_to_dataset_zero_byte_png", lambda c: sheets_to_dataset("hard_sheets_mixed", "hard_ds3"), "empty.png",
         "Replace or delete the file", ok=True, setup=_sheet_folder_with_a_zero_byte_png,
         extra={"writes": ["output/hard_ds3"]}),
    # regional prompting and the reference node (need the model files)
    Case("regional_canvas_over_token_limit", lambda c: regional(grid(4096, 2048)), "layout", "Use a smaller canvas"),
    Case("regional_layout_without_regions", lambda c: regional({"class_type": "InstructIdentityLayoutFromJSON", "inputs": {
        "layout_json": '{"width": 64, "height": 64, "regions": []}'}}), "layout", "at least one region"),
    Case("regional_bad_block_spec", lambda c: regional(grid(), double_blocks="the first few"), "double_blocks",
         "Write all, none"),
    Case("regional_window_backwards", lambda c: regional(grid(), start=0.5, end=0.2), "end", "Make end larger"),
    Case("reference_bad_pad_colour", lambda c: reference(empty_image(), pad_color="bluish"), "pad_color", "#rrggbb"),
    Case("reference_batch_mismatch", lambda c: reference(empty_image(batch=2), batch_size=3), "batch_size",
         "Set batch_size to 1 or 2"),
    # the Train LoRA node: ComfyUI's folders only, .safetensors only, sane values
    Case("train_config_path_traversal", lambda c: train_node("../../../../../etc/passwd"), "config",
         "input, output or user folder"),
    Case("train_config_absolute_outside", lambda c: train_node(str(c.outside / "evil.toml")), "config",
         "II_TRAIN_ALLOWED_DIRS"),
    Case("train_uploaded_toml_writes_outside", lambda c: train_node("hard_evil1.toml"), "output_dir",
         "II_TRAIN_ALLOWED_DIRS", setup=uploaded_toml('output_dir = "{outside}/loras"\ndataset_config = "p.jsonl"\n',
                                                      "hard_evil1.toml")),
    Case("train_uploaded_toml_logs_outside", lambda c: train_node("hard_evil2.toml"), "logging_dir",
         "II_TRAIN_ALLOWED_DIRS", setup=uploaded_toml(TOML_OK + 'logging_dir = "{outside}/logs"\ndataset_config = "p.jsonl"\n',
                                                      "hard_evil2.toml")),
    Case("train_uploaded_toml_reads_outside", lambda c: train_node("hard_evil3.toml"), "dataset_config",
         "II_TRAIN_ALLOWED_DIRS", setup=uploaded_toml(TOML_OK + 'dataset_config = "{outside}/pairs.jsonl"\n',
                                                      "hard_evil3.toml")),
    Case("train_uploaded_toml_pickle_model", lambda c: train_node("hard_evil4.toml"), "pretrained_model_name_or_path",
         "Convert the model to .safetensors", setup=uploaded_toml(
             TOML_OK + 'dataset_config = "p.jsonl"\npretrained_model_name_or_path = "flux1-dev.ckpt"\n', "hard_evil4.toml")),
    Case("train_uploaded_toml_infinite_lr", lambda c: train_node("hard_evil5.toml"), "learning_rate", "e.g. 1e-4",
         setup=uploaded_toml(TOML_OK + 'dataset_config = "p.jsonl"\nlearning_rate = inf\n', "hard_evil5.toml")),
    Case("train_uploaded_toml_name_traversal", lambda c: train_node("hard_evil6.toml"), "output_name", "Use letters",
         setup=uploaded_toml(TOML_OK + 'dataset_config = "p.jsonl"\noutput_name = "../../../outside/x"\n',
                             "hard_evil6.toml")),
    Case("train_uploaded_file_not_toml", lambda c: train_node("hard_evil7.toml"), "config", "key = value",
         setup=uploaded_toml('this is [not toml\n', "hard_evil7.toml")),
    Case("train_uploaded_manifest_names_outside_picture", lambda c: train_node("hard_evil8.toml"), "dataset_config",
         "II_TRAIN_ALLOWED_DIRS", setup=lambda c: (_outside_manifest(c), uploaded_toml(
             TOML_OK + 'dataset_config = "hard_pairs.jsonl"\n', "hard_evil8.toml")(c)),
         extra={"writes": ["output/hard_train"]}),
]


@dataclass
class Ctx:
    server: object
    tmp: Path
    outside: Path


@pytest.fixture(scope="module")
def ctx(comfy_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hard")
    outside = comfy_server.base.parent / "outside"   # where "../../outside/..." from the output folder lands
    outside.mkdir(exist_ok=True)
    (outside / "evil.toml").write_text('output_dir = "."\ndataset_config = "p.jsonl"\n')
    return Ctx(comfy_server, tmp, outside)


def _message_check(text: str, case: Case) -> None:
    assert case.name in text, f"the message does not name {case.name!r}:\n{text}"
    assert case.fix in text, f"the message does not say {case.fix!r}:\n{text}"
    assert "Traceback" not in text


@pytest.mark.parametrize("case", SERVER_CASES, ids=lambda c: c.id)
def test_node_inputs_through_the_server(case: Case, ctx):
    server = ctx.server
    if case.setup:
        case.setup(ctx)
    may_change = ["server.log", "temp", *case.extra.get("writes", [])]   # temp: ComfyUI's own scratch folder
    before, before_out = snapshot(server.base, may_change), snapshot(ctx.outside)
    kind, text = outcome(server, case.build(ctx))
    assert kind == ("success" if case.ok else "error"), f"{kind}: {text[:3000]}"
    _message_check(text, case)
    assert alive(server), "the server stopped answering"
    assert changes(before, snapshot(server.base, may_change)) == []
    assert changes(before_out, snapshot(ctx.outside)) == []


def test_the_server_survived_every_case(ctx):
    """After the whole table the same server still runs a graph."""
    kind, text = outcome(ctx.server, {"1": grid(), "2": preview("1")})
    assert kind == "success", text
    assert ctx.server.proc.poll() is None
    assert "MemoryError" not in ctx.server.log_text() and "Killed" not in ctx.server.log_text()


# --------------------------------------------------------------------------------------------------
# command-line tools


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cfg(tmp: Path, text: str = 'dataset_config = "pairs.jsonl"\n') -> Path:
    return _write(tmp / "train.toml", text)


def _plain_pictures(tmp: Path) -> Path:
    for i in range(2):
        rgb_png(_dir(tmp / "plain") / f"p{i}.png", i, (128, 64))
    return tmp / "plain"


def _dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _sheets(tmp: Path, zero_byte=False, bad_sidecar=False) -> Path:
    folder = tmp / "sheets"
    grid_sheet(folder, "good", seed=2)
    if zero_byte:
        (folder / "empty.png").write_bytes(b"")
    if bad_sidecar:
        rgb_png(folder / "broken.png", 3, (128, 64))
        (folder / "broken.sheet.json").write_text("{not json")
    return folder


def _locked_dataset(tmp: Path) -> Path:
    ds = _dir(tmp / "ds")
    (ds / ".curation.lock").write_text(str(os.getpid()))   # this (live) test process holds it
    return ds


def _bad_manifest(tmp: Path) -> Path:
    ds = _dir(tmp / "ds")
    (ds / "pairs.jsonl").write_text('{"reference": "a.png"}\n')
    return ds


II_TRAIN = "instruct_identity.training.cli"


def _with_set(value: str):
    """argv of ii-train with a minimal config and one ``--set`` override."""
    return lambda t: [II_TRAIN, "--config", _cfg(t), "--set", value]

II_CURATE = "instruct_identity.curation"
CHARIS = "instruct_identity.charis.cli"

CLI_CASES = [
    # ii-train: the config is checked before anything is loaded
    Case("ii_train_missing_config", lambda t: [II_TRAIN, "--config", t / "nope.toml"], "--config", "Give the path"),
    Case("ii_train_not_toml", lambda t: [II_TRAIN, "--config", _cfg(t, "learning_rate = = 1\n")], "--config",
         "key = value"),
    Case("ii_train_unknown_key", lambda t: [II_TRAIN, "--config", _cfg(t, 'network_dimm = 8\n')], "network_dimm",
         'Did you mean "network_dim"?'),
    Case("ii_train_unsupported_kohya_key", lambda t: [II_TRAIN, "--config", _cfg(t, 'blocks_to_swap = 8\n')],
         "blocks_to_swap", "Remove it from the config"),
    *[Case(f"ii_train_set_{case_id}", _with_set(value), name, fix) for case_id, value, name, fix in [
        ("lr_1e4", "learning_rate=1e4", "learning_rate", "e.g. 1e-4"),
        ("lr_nan", "learning_rate=nan", "learning_rate", "not a finite number"),
        ("negative_alpha", "network_alpha=-4", "network_alpha", "Use a positive number"),
        ("resolution_100000", "resolution=100000", "resolution", "II_MAX_TRAIN_SIDE"),
        ("batch_1000", "train_batch_size=1000", "train_batch_size", "gradient_accumulation_steps"),
        ("output_name_path", 'output_name="../x"', "output_name", "Use letters"),
        ("without_value", "learning_rate", "--set", "--set max_train_steps=100"),
        ("mode_typo", 'mode="gird"', "mode", 'Did you mean "grid"?'),
        ("string_for_a_number", 'max_train_steps="10"', "max_train_steps", "without quotes"),
    ]],
    Case("ii_train_missing_dataset", lambda t: [II_TRAIN, "--config", _cfg(t, f'dataset_config = "{t / "nope.jsonl"}"\n'
                                                                               f'output_dir = "{t / "out"}"\n')],
         "dataset_config", "Point it at", extra={"writes": ["out"]}),
    # ii-curate
    Case("ii_curate_missing_sheets", lambda t: [II_CURATE, t / "nope", t / "ds"], "sheets", "Point it at the folder"),
    Case("ii_curate_plain_pictures_without_grid", lambda t: [II_CURATE, _plain_pictures(t), t / "ds"], "sheets",
         "give --grid ROWSxCOLS"),
    Case("ii_curate_grid_typo", lambda t: [II_CURATE, _plain_pictures(t), t / "ds", "--grid", "2x"], "--grid", "e.g. 2x3"),
    Case("ii_curate_grid_10000_cells", lambda t: [II_CURATE, _plain_pictures(t), t / "ds", "--grid", "100x100"], "--grid",
         "Use fewer regions"),
    Case("ii_curate_negative_max_pairs", lambda t: [II_CURATE, _sheets(t), t / "ds", "--max-pairs", "-1"], "--max-pairs",
         "use 0 or more"),
    Case("ii_curate_nan_threshold", lambda t: [II_CURATE, _sheets(t), t / "ds", "--near-duplicate", "nan"],
         "--near-duplicate", "between 0 and 1"),
    Case("ii_curate_missing_captions", lambda t: [II_CURATE, _plain_pictures(t), t / "ds", "--grid", "1x2", "--captions",
                                                  t / "nope.txt"], "--captions", "Give a text file"),
    Case("ii_curate_dataset_locked", lambda t: [II_CURATE, _sheets(t), _locked_dataset(t)], "dataset", "Wait for it",
         extra={"writes": ["ds"]}),
    Case("ii_curate_malformed_manifest", lambda t: [II_CURATE, _sheets(t), _bad_manifest(t)], "dataset",
         "Fix or remove that line", extra={"writes": ["ds"]}),
    Case("ii_curate_zero_byte_png", lambda t: [II_CURATE, _sheets(t, zero_byte=True), t / "ds"], "empty.png",
         "Replace or delete the file", ok=True, extra={"writes": ["ds"]}),
    Case("ii_curate_broken_sidecar", lambda t: [II_CURATE, _sheets(t, bad_sidecar=True), t / "ds"], "broken.sheet.json",
         "Delete it or save the sheet again", ok=True, extra={"writes": ["ds"]}),
    # charis: its errors as they are today (its fixes belong to the CHARIS work)
    Case("charis_batch_missing_manifest", lambda t: [CHARIS, "batch", t / "nope.jsonl", "--out", t / "r.jsonl"], "input",
         "Give a .jsonl manifest"),
    Case("charis_unknown_axis", lambda t: [CHARIS, "batch", _dir(t / "empty"), "--out", t / "r.jsonl", "--axes", "bogus"],
         "axes", "Fix the name"),
    Case("charis_report_without_results", lambda t: [CHARIS, "report", t / "nope.jsonl", "--html", t / "r.html"],
         "results", "Run `charis batch` first"),
    Case("charis_pair_missing_picture", lambda t: [CHARIS, "pair", t / "a.png", t / "b.png", "--prompt", "x"],
         "reference", "Check the path", extra={"rc": 1}),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_command_line_inputs(case: Case, tmp_path):
    work = _dir(tmp_path / "work")
    argv = case.build(work)
    before = snapshot(tmp_path, ["work/" + w for w in case.extra.get("writes", [])])
    proc = run_cli(*argv, cwd=work)
    text = proc.stdout + proc.stderr
    if case.ok:
        assert proc.returncode == 0, text[-3000:]
    else:
        assert proc.returncode == case.extra.get("rc", 2), f"exit {proc.returncode}:\n{text[-3000:]}"
    _message_check(text, case)
    assert changes(before, snapshot(tmp_path, ["work/" + w for w in case.extra.get("writes", [])])) == []


# --------------------------------------------------------------------------------------------------
# the trainer (in-process, tiny model): values and a run's set-up


def _bad_optimizer(cfg, tmp):
    return cfg(optimizer_args={"betas": [2.0, 0.999]})


def _dataset_toml_batch(cfg, tmp):
    from ii_train_helpers import make_pairs

    make_pairs(tmp / "d")
    toml = _write(tmp / "d" / "dataset.toml", '[[datasets]]\nbatch_size = 1000\n[[datasets.subsets]]\nmanifest = "pairs.jsonl"\n')
    return cfg(dataset_config=str(toml))


def _huge_previews(cfg, tmp):
    prompts = _write(tmp / "prompts.txt", "a character --ref ref0.png --w 100000 --h 64\n")
    return cfg(sample_prompts=str(prompts), sample_at_first=True)


def _finished_run(cfg, tmp, components):
    from instruct_identity.training.trainer import train

    train(cfg(max_train_steps=1), components())
    return cfg(max_train_steps=2)


TRAINER_CASES = [
    Case("trainer_optimizer_args_out_of_range", _bad_optimizer, "optimizer_args", "Use AdamW's keywords"),
    Case("trainer_dataset_toml_batch_1000", _dataset_toml_batch, "datasets[0].batch_size", "gradient_accumulation_steps"),
    Case("trainer_preview_100000_px", _huge_previews, "sample_prompts", "--w and --h"),
    Case("trainer_fresh_start_over_finished_run", _finished_run, "output_dir", "--resume", extra={"components": True}),
    Case("trainer_config_dropout_1", lambda cfg, tmp: cfg(network_dropout=1.0), "network_dropout", "0 <= p < 1"),
    Case("trainer_config_rank_0", lambda cfg, tmp: cfg(network_dim=0), "network_dim", "Use 1 .. 4096"),
    Case("trainer_config_bucket_step_10", lambda cfg, tmp: cfg(bucket_reso_steps=10), "bucket_reso_steps",
         "multiples of 16"),
    Case("trainer_config_min_lr_ratio_2", lambda cfg, tmp: cfg(lr_scheduler_min_lr_ratio=2.0), "lr_scheduler_min_lr_ratio",
         "Use 0 .. 1"),
    Case("trainer_config_fp8_without_16bit", lambda cfg, tmp: cfg(fp8_base=True, mixed_precision="no"), "fp8_base",
         'mixed_precision = "bf16"'),
]


@pytest.mark.parametrize("case", TRAINER_CASES, ids=lambda c: c.id)
def test_trainer_inputs(case: Case, tiny_cfg, components, tmp_path):
    from instruct_identity.core.errors import InputError
    from instruct_identity.training.trainer import train

    before = None
    intended = [] if case.extra.get("components") else ["out"]   # over a finished run even out/ must stay as it was
    with pytest.raises(InputError) as e:
        if case.extra.get("components"):
            cfg = case.build(tiny_cfg, tmp_path, components)
        else:
            cfg = case.build(tiny_cfg, tmp_path)
        before = snapshot(tmp_path, intended)
        train(cfg, components())
    _message_check(str(e.value), case)
    if before is not None:
        assert changes(before, snapshot(tmp_path, intended)) == []
