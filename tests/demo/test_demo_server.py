"""The built-in demo through the real ComfyUI server: the template is listed first, validates and runs
within its CPU budget; with the LoRA its pictures carry the reference's colours better than without
(CHARIS colour axis), so a broken loader, LoRA path or reference patch fails here; and the README's run
command saves the demo picture by itself.

Nothing here depends on the exact model shipped in demo/: the graph is the template's, the references
are whatever demo/references holds, and the comparison is LoRA vs no LoRA on the same base.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import ii_harness
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "workflows" / "instruct_identity_demo_cpu.json"
API = REPO / "miniature" / "demo_prompt.json"
REFERENCES = sorted((REPO / "demo" / "references").glob("*.png"))
CPU_BUDGET_S = 30.0       # issue 15: the template runs on a 2-core CPU in <= 30 s
PICTURE_BUDGET_S = 120.0  # issue 15: the run command's picture within 2 minutes of the server start
SAMPLES = 2               # pictures per reference and graph in the LoRA-vs-base comparison
MARGIN = 0.03             # the LoRA's mean CHARIS colour must beat the base's by this much


@pytest.fixture(scope="module")
def server(demo_server):
    return demo_server


def demo_prompt() -> dict:
    return json.loads(API.read_text())


def node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def without_lora(prompt: dict) -> dict:
    """The same graph with the LoRA node taken out (the Reference node gets the base model)."""
    p = copy.deepcopy(prompt)
    lora = node_of(p, "LoraLoaderModelOnly")
    ref = node_of(p, "InstructIdentityReference")
    p[ref]["inputs"]["model"] = p[lora]["inputs"]["model"]
    del p[lora]
    return p


def seconds(entry: dict) -> float:
    """Execution time of a finished prompt, from the server's own timestamps."""
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def saved(server, entry: dict, prompt: dict) -> list[Path]:
    node = node_of(prompt, "SaveImage")
    return [server.base / "output" / i.get("subfolder", "") / i["filename"] for i in entry["outputs"][node]["images"]]


def test_demo_template_is_first_in_the_template_browser_and_matches_the_run_commands_graph(server):
    listed = server.get("/api/workflow_templates")
    ours = next(v for v in listed.values() if TEMPLATE.stem in v)
    assert ours[0] == TEMPLATE.stem
    assert sorted(ours[1:]) == ours[1:] and len(ours) == len(list((REPO / "workflows").glob("*.json")))
    problems, prompt = ii_harness.check_workflow(json.loads(TEMPLATE.read_text()), server.get("/object_info"))
    assert not problems, "\n".join(problems)
    assert prompt == demo_prompt(), "miniature/demo_prompt.json is stale: run scripts/build_workflows.py"


def test_demo_template_runs_on_the_cpu_within_its_budget(server):
    prompt = demo_prompt()
    entry = server.run(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
    took = seconds(entry)
    assert took <= CPU_BUDGET_S, f"the demo graph took {took:.1f} s on the CPU (budget {CPU_BUDGET_S:.0f} s)"
    (picture,) = saved(server, entry, prompt)
    zoom = prompt[node_of(prompt, "ImageScaleBy")]["inputs"]["scale_by"]
    ref_name = prompt[node_of(prompt, "InstructIdentityDemoReference")]["inputs"]["reference"]
    with Image.open(REPO / "demo" / "references" / ref_name) as ref, Image.open(picture) as out:
        assert out.size == (round(ref.size[0] * zoom), round(ref.size[1] * zoom))
        assert len(set(out.convert("RGB").getdata())) > 2  # a picture, not a blank
    assert "not loaded" not in server.log_text().lower()  # every key of the LoRA reached the model


def colour_score(reference: Path, generated: Path, work: Path) -> float:
    """CHARIS's colour axis (its public score_pair entry), the reference enlarged to the picture's size."""
    from instruct_identity import charis

    with Image.open(generated) as gen, Image.open(reference) as ref:
        big = work / f"ref_{reference.stem}_{gen.size[0]}.png"
        ref.convert("RGB").resize(gen.size, Image.NEAREST).save(big)
    result = charis.score_pair(big, generated, "", config=charis.CharisConfig(axes=["color"]))
    value = result.axes["color"].value
    return 0.0 if value is None else float(value)


def with_all_references(prompt: dict, repeat: int = 1) -> dict:
    """The graph with every bundled reference (``repeat`` times) in one batch (stock ImageBatch nodes): the
    Reference node then makes one picture per image, each with its own noise, in a single sampler run."""
    p = copy.deepcopy(prompt)
    refs = REFERENCES * repeat
    first = node_of(p, "InstructIdentityDemoReference")
    p[first]["inputs"]["reference"] = refs[0].name
    src = [first, 0]
    for i, ref in enumerate(refs[1:], start=1):
        load, batch = f"ref{i}", f"batch{i}"
        p[load] = {"class_type": "InstructIdentityDemoReference", "inputs": {"reference": ref.name}}
        p[batch] = {"class_type": "ImageBatch", "inputs": {"image1": src, "image2": [load, 0]}}
        src = [batch, 0]
    p[node_of(p, "InstructIdentityReference")]["inputs"].update(reference=src, batch_size=1)
    return p


def test_lora_makes_the_reference_characters_colours_more_than_the_base_alone(server, tmp_path):
    assert REFERENCES, "demo/references/*.png is missing"
    scores: dict[str, list[float]] = {}
    for kind in ("lora", "base"):
        p = with_all_references(demo_prompt() if kind == "lora" else without_lora(demo_prompt()), SAMPLES)
        p[node_of(p, "SaveImage")]["inputs"]["filename_prefix"] = f"demo_test_{kind}"
        entry = server.run(p, timeout=600)
        assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
        pictures = saved(server, entry, p)
        assert len(pictures) == SAMPLES * len(REFERENCES)
        scores[kind] = [colour_score(ref, pic, tmp_path)
                        for ref, pic in zip(REFERENCES * SAMPLES, pictures, strict=True)]
    lora, base = (sum(v) / len(v) for v in (scores["lora"], scores["base"]))
    detail = (f"CHARIS colour, mean over {len(REFERENCES)} references x {SAMPLES} samples: LoRA {lora:.3f}, "
              f"base alone {base:.3f} ({scores})")
    assert lora > base + MARGIN, detail


def test_run_command_saves_the_demo_picture(tmp_path):
    base = tmp_path / "comfy"
    for d in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / d).mkdir(parents=True)
    (base / "custom_nodes" / "instruct-identity").symlink_to(REPO, target_is_directory=True)
    port = ii_harness.free_port()
    env = {**os.environ, "II_PORT": str(port), "II_DEVICE": "cpu", "II_SETUP": "0", "II_DEMO": "1",
           "COMFYUI_PATH": str(ii_harness.comfy_root()), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(REPO / "scripts" / "bootstrap.sh"), "run", "--base-directory", str(base)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.time()  # the command starts the server at once (II_SETUP=0), so this is the server's start
    try:
        deadline = started + 300
        saved_path = None
        while time.time() < deadline and saved_path is None:
            time.sleep(0.5)
            text = log_path.read_text(errors="replace")
            m = re.search(r"demo picture saved: (\S+\.png)", text)
            if m:
                saved_path = Path(m.group(1))
            assert proc.poll() is None, f"the run command exited ({proc.returncode}):\n{text[-4000:]}"
        text = log_path.read_text(errors="replace")
        assert saved_path is not None, f"no demo picture reported:\n{text[-4000:]}"
        assert saved_path.is_file() and saved_path.parent == base / "output"
        took = time.time() - started
        assert took <= PICTURE_BUDGET_S, f"the picture came {took:.0f} s after the start:\n{text[-2000:]}"
        assert f"http://127.0.0.1:{port}" in text and "on the CPU" in text
        with Image.open(saved_path) as im:  # the picture carries its graph (the frontend opens it)
            assert json.loads(im.info["workflow"])["nodes"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
