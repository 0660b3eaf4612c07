"""Character sheets through the real ComfyUI server: one queue run of a batch-queued graph
(2 characters x 2 poses) writes one regional-prompted sheet per character, named after it; the
curation node then turns the saved sheets into a dataset."""

import json

import pytest

import ii_harness
from instruct_identity.curation.sheets import item_seed

pytestmark = pytest.mark.slow

CHARACTERS = "alice: a girl with red hair and a green coat\nbob: a small blue robot"
POSES = "standing, front view\nsitting"


def sheet_prompt(folder="ii_sheets", seed=7):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        # the random FLUX file has a 768-wide text input and 768 pooled: CLIP-L alone ("stable_diffusion") fits it
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "InstructIdentityCharacterSheetBatch", "inputs": {
            "characters": CHARACTERS, "poses": POSES, "format": "auto", "seed": seed,
            "base_template": "character sheet of {description}", "cell_template": "{description}, {pose}", "folder": folder}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": ["4", 1], "clip": ["2", 0]}},
        "6": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": 3.5}},
        "7": {"class_type": "InstructIdentityGridLayout", "inputs": {
            "width": 128, "height": 64, "rows": 1, "cols": 2, "gutter": 0, "prompts": ["4", 2], "captions": ["4", 3],
            "background_prompt": ""}},
        "8": {"class_type": "InstructIdentityRegionalPrompting", "inputs": {
            "model": ["1", 0], "clip": ["2", 0], "conditioning": ["6", 0], "layout": ["7", 0], "image_attention": "global",
            "base_ratio": 0.2, "start": 0.0, "end": 0.5, "double_blocks": "all", "single_blocks": "all"}},
        "9": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 64, "batch_size": 1}},
        "10": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": ["8", 0], "seed": ["4", 4], "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["8", 1], "negative": ["10", 0], "latent_image": ["9", 0], "denoise": 1.0}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {"class_type": "InstructIdentitySaveSheet", "inputs": {
            "images": ["12", 0], "layout": ["7", 0], "filename_prefix": ["4", 5], "character": ["4", 0],
            "base_prompt": ["4", 1], "seed": ["4", 4]}},
    }


def test_batch_queued_sheets_and_curation(comfy_server):
    entry = comfy_server.run(sheet_prompt())
    assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
    images = entry["outputs"]["13"]["images"]
    assert [i["filename"] for i in images] == ["alice_00001_.png", "bob_00001_.png"]
    out = comfy_server.base / "output" / "ii_sheets"
    for name in ("alice", "bob"):
        png = out / f"{name}_00001_.png"
        assert png.is_file()
        side = json.loads((out / f"{name}_00001_.sheet.json").read_text())
        assert side["character"] == name and side["seed"] == item_seed(7, name)
        assert [r["caption"] for r in side["layout"]["regions"]] == ["standing, front view", "sitting"]
        assert side["layout"]["grid"] == {"rows": 1, "cols": 2, "gutter": 0}
    assert "2 character sheets queued: alice, bob" in comfy_server.log_text()

    cur = {"1": {"class_type": "InstructIdentitySheetsToDataset", "inputs": {
        "sheets_folder": "ii_sheets", "dataset_folder": "ii_datasets/sheets", "pairing": "all", "max_pairs_per_sheet": 0,
        "near_duplicate": 0.0, "blank_std": 0.0, "filter": "off"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    entry = comfy_server.run(cur)
    assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
    manifest = comfy_server.base / "output" / "ii_datasets" / "sheets" / "pairs.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 4 and {r["caption"] for r in rows} == {"standing, front view", "sitting"}
    assert {r["character"] for r in rows} == {"alice", "bob"}

    bad = json.loads(json.dumps(cur))
    bad["1"]["inputs"]["dataset_folder"] = "../../outside"
    entry = comfy_server.run(bad)
    assert "points outside" in " ".join(ii_harness.error_messages(entry))
