"""End to end through the real ComfyUI server (main.py --cpu) with the pack in custom_nodes and
random-weight model files under the standard names; and every workflow in workflows/ validated
against that server."""

import json
import re
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import ii_harness

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(comfy_server):
    gen = torch.Generator().manual_seed(0)
    pixels = (torch.rand(40, 56, 4, generator=gen) * 255).byte().numpy()
    pixels[..., 3] = 255
    pixels[:4, :4, 3] = 0  # some transparency: RGBA must be composited, not crash
    Image.fromarray(pixels, "RGBA").save(comfy_server.base / "input" / "character.png")
    for path in (REPO / "workflows").glob("*.json"):   # every picture a template loads (front.png, back.png, ...)
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "LoadImage" and not (comfy_server.base / "input" / node["widgets_values"][0]).exists():
                Image.fromarray(pixels, "RGBA").save(comfy_server.base / "input" / node["widgets_values"][0])
    return comfy_server


def identity_prompt(unet: str, lora: bool, width=64, height=48, prefix="ii_e2e"):
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "character.png"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "the character jumping, beach"}},
        "6": {"class_type": "InstructIdentityReference", "inputs": {
            "model": ["7", 0] if lora else ["1", 0], "vae": ["3", 0], "positive": ["5", 0], "reference": ["4", 0],
            "width": width, "height": height, "fit": "pad", "pad_color": "#ffffff", "batch_size": 1,
            "route": "auto", "guidance": -1.0}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["6", 0], "positive": ["6", 1], "negative": ["6", 2], "latent_image": ["6", 3], "seed": 1,
            "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "9": {"class_type": "InstructIdentityDecodeTarget", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["9", 1], "filename_prefix": prefix + "_cmp"}},
    }
    if lora:
        p["7"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["1", 0], "lora_name": "instruct_identity_flux1_dev.safetensors", "strength_model": 1.0}}
    return p


def _saved(server, entry, node):
    imgs = entry["outputs"][node]["images"]
    return [Image.open(server.base / "output" / i.get("subfolder", "") / i["filename"]) for i in imgs]


def test_pack_loads_with_its_nodes(server):
    info = server.get("/object_info")
    for node in ("InstructIdentityReference", "InstructIdentityDecodeTarget", "InstructIdentitySplitLatent",
                 "InstructIdentitySplitImage"):
        assert node in info, node
        assert info[node]["category"].startswith("Instruct Identity")
    assert not re.search(r"Cannot import .*instruct-identity", server.log_text())
    assert "could not load nodes" not in server.log_text()


@pytest.mark.parametrize("unet,lora,route", [("flux1-dev.safetensors", True, "lora"),
                                             ("flux1-fill-dev.safetensors", False, "fill")])
def test_generation_through_the_real_server(server, unet, lora, route):
    before = server.log_text().count("clean reference fed to the model at")
    entry = server.run(identity_prompt(unet, lora, prefix=f"ii_{route}"))
    assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
    target = _saved(server, entry, "10")[0]
    assert target.size == (64, 48)  # requested target size, not the H x 2W grid
    cmp = _saved(server, entry, "11")[0]
    assert cmp.size == (64 + 8 + 64, 48)
    log = server.log_text()
    calls = [int(m) for m in re.findall(r"clean reference fed to the model at (\d+) model calls", log)]
    if route == "lora":  # the patch ran at every step of this run
        assert len(calls) == before + 1 and calls[-1] >= 2
    else:  # Fill sees the reference through its inpaint channels; no patch
        assert len(calls) == before


def test_bad_input_reaches_the_user_as_a_clear_message(server):
    prompt = identity_prompt("flux1-dev.safetensors", lora=False)
    prompt["6"]["inputs"]["batch_size"] = 3
    prompt["4b"] = {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["4", 0]}}
    prompt["6"]["inputs"]["reference"] = ["4b", 0]
    entry = server.run(prompt)
    msgs = ii_harness.error_messages(entry)
    assert entry["status"]["status_str"] == "error"
    assert any("batch_size: 3 samples cannot be paired with 2 reference images" in m for m in msgs), msgs


def test_missing_model_file_says_where_to_put_it(server):
    prompt = identity_prompt("flux1-schnell.safetensors", lora=False)
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400  # ComfyUI refuses the graph ...
    time.sleep(0.5)
    log = server.log_text()
    # ... and the pack's on-prompt check names the file and the folder
    assert re.search(r"model file 'flux1-schnell.safetensors' \(UNETLoader node 1, input unet_name\) is missing: "
                     r"put it in .*models[/\\]diffusion_models", log), log[-2000:]


def _wait_idle(server, timeout=300, cancel=False):
    """Wait until nothing runs or waits; with ``cancel``, keep interrupting and clearing meanwhile
    (an interrupt only stops the running prompt at its next node boundary)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        q = server.get("/queue")
        if not q["queue_running"] and not q["queue_pending"]:
            return
        if cancel:
            server.post("/queue", {"clear": True})
            server.post("/interrupt", {})
        time.sleep(0.5)
    raise TimeoutError("queue did not drain")


WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_is_valid_and_accepted(server, path):
    # Validation-only stand-ins so every standard file name exists (the graph is cancelled before it runs
    # any loader): T5-XXL cannot be built small enough to detect as T5-XXL.
    placeholder = server.base / "models" / "text_encoders" / "t5xxl_fp16.safetensors"
    if not placeholder.exists():
        placeholder.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    info = server.get("/object_info")
    workflow = json.loads(path.read_text())
    problems, prompt = ii_harness.check_workflow(workflow, info)
    assert not problems, "\n".join(problems)
    _wait_idle(server)
    status, body = server.post("/prompt", {"prompt": prompt})
    _wait_idle(server, cancel=True)
    assert status == 200 and not body.get("node_errors"), json.dumps(body, indent=1)[:3000]


def test_workflows_show_in_the_template_browser(server):
    listed = server.get("/api/workflow_templates")
    names = next(v for k, v in listed.items() if "instruct" in k.lower())
    assert {p.stem for p in WORKFLOWS} <= set(names)
