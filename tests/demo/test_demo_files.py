"""The demo's generated files are current, and the run command's client finds the picture it reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_workflows():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_template_and_api_graph_are_what_build_workflows_writes():
    bw = build_workflows()
    graph = bw.demo_graph()
    assert json.loads((REPO / "workflows" / bw.DEMO_TEMPLATE).read_text()) == graph.to_json(), \
        "run scripts/build_workflows.py"
    assert json.loads(bw.DEMO_API.read_text()) == graph.to_api(), "run scripts/build_workflows.py"
    api = graph.to_api()
    types = {v["class_type"] for v in api.values()}
    # after the demo loader, the real path: stock LoRA loader, Reference node, stock sampler, Decode Target
    assert {"InstructIdentityDemoModel", "LoraLoaderModelOnly", "InstructIdentityReference", "KSampler",
            "InstructIdentityDecodeTarget", "SaveImage"} <= types
    ref = next(v for v in api.values() if v["class_type"] == "InstructIdentityReference")
    lora = next(k for k, v in api.items() if v["class_type"] == "LoraLoaderModelOnly")
    assert ref["inputs"]["model"] == [lora, 0]
    assert (REPO / "demo" / "references" / next(
        v for v in api.values() if v["class_type"] == "InstructIdentityDemoReference")["inputs"]["reference"]).is_file()


def test_demo_template_goes_first_and_other_packs_are_untouched():
    from instruct_identity.miniature.demo import TEMPLATE, demo_template_first

    listing = {"other-pack": ["b", "a"], "instruct-identity": ["outpaint", TEMPLATE, "character_sheet", "lora"]}
    out = demo_template_first(listing)
    assert out["instruct-identity"] == [TEMPLATE, "character_sheet", "lora", "outpaint"]
    assert out["other-pack"] == ["b", "a"]
    assert listing["instruct-identity"][0] == "outpaint"  # the input is not changed


def test_run_client_reads_comfyuis_output_folder_and_saved_files(tmp_path):
    from instruct_identity.miniature import demo_run

    root = tmp_path / "ComfyUI"
    assert demo_run.output_dir(root, []) == (root / "output").resolve()
    assert demo_run.output_dir(root, ["--base-directory", str(tmp_path / "b")]) == (tmp_path / "b" / "output").resolve()
    assert demo_run.output_dir(root, [f"--output-directory={tmp_path / 'o'}", "--base-directory", "x"]) == \
        (tmp_path / "o").resolve()
    assert demo_run.client_url("0.0.0.0", 8188) == "http://127.0.0.1:8188"
    assert demo_run.client_url("::1", 9) == "http://[::1]:9"
    prompt = {"7": {"class_type": "SaveImage"}, "8": {"class_type": "PreviewImage"}}
    entry = {"outputs": {"7": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
                         "8": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}}}
    assert [i["filename"] for i in demo_run.saved_images(entry, prompt)] == ["a.png"]
    prompt, workflow = demo_run.load_prompt()
    assert prompt and workflow["nodes"]
