"""One-way sampling through the real ComfyUI server: a one-way LoRA loaded with Instruct Identity Load
LoRA switches the Reference node (route auto) to one-way attention, a second queued run with the same
reference takes the reference's keys/values from the cache, and route lora_one_way works with the
stock LoRA loader."""

import re

import ii_harness
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow

LORA = "ii_one_way_test.safetensors"
DONE = re.compile(r"one-way: reference keys/values computed (\d+) time\(s\), taken from the cache (\d+) time\(s\)")


@pytest.fixture(scope="module")
def server(comfy_server, tmp_path_factory):
    pixels = (torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(4)) * 255).byte().numpy()
    Image.fromarray(pixels, "RGB").save(comfy_server.base / "input" / "oneway_character.png")
    plain = ii_harness.build_flux_lora_file(tmp_path_factory.mktemp("lora") / "plain.safetensors", seed=3)
    dest = comfy_server.base / "models" / "loras" / LORA
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(plain)), str(dest), metadata={"reference_attention": "one_way", "mode": "identity"})
    return comfy_server


def graph(text: str, loader: str, route: str) -> dict:
    lora_inputs = {"model": ["1", 0], "lora_name": LORA, "strength_model": 1.0}
    if loader == "InstructIdentityLoadLora":
        lora_inputs["reference_attention"] = "auto"
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "oneway_character.png"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": text}},
        "7": {"class_type": loader, "inputs": lora_inputs},
        "6": {"class_type": "InstructIdentityReference", "inputs": {
            "model": ["7", 0], "vae": ["3", 0], "positive": ["5", 0], "reference": ["4", 0], "width": 64, "height": 48,
            "fit": "pad", "pad_color": "#ffffff", "batch_size": 2, "route": route, "guidance": -1.0}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["6", 0], "positive": ["6", 1], "negative": ["6", 2], "latent_image": ["6", 3], "seed": 1,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "9": {"class_type": "InstructIdentityDecodeTarget", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "ii_oneway"}},
    }


def _counts(server, before: int):
    found = [(int(a), int(b)) for a, b in DONE.findall(server.log_text())]
    return found[before:]


def test_one_way_through_the_server(server):
    before = len(DONE.findall(server.log_text()))
    first = server.run(graph("the character reading, library", "InstructIdentityLoadLora", "auto"))
    assert first["status"]["status_str"] == "success", ii_harness.error_messages(first)
    images = first["outputs"]["10"]["images"]
    assert len(images) == 2 and Image.open(server.base / "output" / images[0]["filename"]).size == (64, 48)
    # another prompt re-runs the Reference node (a new patched model), the same reference and LoRA
    second = server.run(graph("the character running, beach", "InstructIdentityLoadLora", "auto"))
    assert second["status"]["status_str"] == "success", ii_harness.error_messages(second)
    # the stock LoRA loader carries no mode: the node's explicit route picks one-way
    third = server.run(graph("the character running, beach", "LoraLoaderModelOnly", "lora_one_way"))
    assert third["status"]["status_str"] == "success", ii_harness.error_messages(third)
    assert _counts(server, before) == [(1, 0), (0, 1), (1, 0)], server.log_text()[-3000:]
    assert "lora key not loaded" not in server.log_text()
