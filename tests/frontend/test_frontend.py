"""The pack's frontend (js/) in the real ComfyUI frontend, in headless Chromium: the region editor,
the CHARIS display and the diptych preview. Each test runs one scenario from scenarios/ (the
browser side) and checks what it saw against the server (/history, saved files, outputs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fake_judge
import ii_harness
import pytest
import torch
from fake_judge import FakeJudge
from ii_frontend import fmt, unexpected
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LAYOUT_NODE = "InstructIdentityLayoutFromJSON"


@pytest.fixture(scope="module")
def workflow_inputs(frontend):
    """The pictures the example workflows load (character.png, front.png, ...), as a user would have them."""
    import json

    names = {"character.png"} | {n["widgets_values"][0] for p in WORKFLOWS for n in json.loads(p.read_text())["nodes"]
                                 if n["type"] == "LoadImage"}
    for name in names:
        path = frontend.server.base / "input" / name
        if not path.exists():  # other tests may have put their own there already; any picture will do
            Image.new("RGB", (64, 96), (200, 120, 60)).save(path)


def test_every_workflow_opens_without_missing_nodes_or_errors(frontend, workflow_inputs):
    assert WORKFLOWS, "no workflows/*.json"
    seen = frontend.run("workflows", workflows=[str(p) for p in WORKFLOWS], viewport={"width": 1920, "height": 1200})
    boot = unexpected(seen["boot"], frontend.url, boot=True)
    assert not boot, f"errors while the frontend started with the pack:\n{fmt(boot)}"
    # the pack's three extensions registered (run.mjs waits for them) and its scripts all loaded
    assert not [e for e in seen["boot"] if "/extensions/instruct-identity/" in e.get("url", "") and e["kind"] == "http"]
    for wf in seen["workflows"]:
        name = Path(wf["file"]).name
        assert wf["nodes"] > 0, name
        assert wf["missing"] == [], f"{name}: nodes the frontend does not know: {wf['missing']}"
        assert wf["dialogs"] == [], f"{name}: a dialog opened on load: {wf['dialogs']}"
        errors = unexpected(wf["journal"], frontend.url)
        assert not errors, f"{name}: console errors while loading:\n{fmt(errors)}"
        assert Path(wf["screenshot"]).exists()


# ---------------------------------------------------------------------------------------------------
# Region editor

REGIONS = [
    {"x": 64, "y": 64, "w": 384, "h": 384, "prompt": "a red fox <b>sitting</b> & <i>grinning</i>"},
    {"x": 576, "y": 32, "w": 384, "h": 448, "prompt": "a blue owl, night"},
]
THIRD = {"x": 464, "y": 48, "w": 96, "h": 96, "move": [0, 160], "grow": 96}


def _boxes(doc):
    return [(r["x"], r["y"], r["w"], r["h"]) for r in doc["regions"]]


def test_region_editor_draw_save_reload_queue(frontend):
    seen = frontend.run("region_editor", layoutNode=LAYOUT_NODE, saveName="ii-region-editor-test",
                        steps={"width": 1024, "height": 512, "preset": "1x3", "regions": REGIONS, "third": THIRD})
    s = seen["steps"]
    # grid preset: three cells on the 16 px grid, the old prompts kept in order
    preset = s["preset"]["doc"]
    assert preset["grid"] == {"rows": 1, "cols": 3, "gutter": 16}
    assert _boxes(preset) == [(16, 0, 320, 512), (352, 0, 320, 512), (688, 0, 320, 512)]
    assert [r["prompt"] for r in preset["regions"]][:2] == [r["prompt"] for r in s["initial"]["doc"]["regions"]][:2]
    assert s["cleared"]["doc"]["regions"] == [] and "grid" not in s["cleared"]["doc"]

    # two regions drawn with the mouse (snapped to 16 px) and their prompts typed
    drawn = s["drawn"]["doc"]
    assert (drawn["width"], drawn["height"]) == (1024, 512)
    assert drawn["regions"] == REGIONS
    assert s["drawn"]["rows"] == [r["prompt"] for r in REGIONS]

    # a third region: drawn, moved by 160 px, its bottom edge dragged 96 px, deleted with Delete
    assert _boxes(s["third"]["doc"])[2] == (464, 48, 96, 96)
    assert _boxes(s["moved"]["doc"])[2] == (464, 208, 96, 96)
    assert _boxes(s["resized"]["doc"])[2] == (464, 208, 96, 192)
    assert s["deleted"]["doc"]["regions"] == REGIONS
    assert seen["nodesAfterDelete"] == 2, "Delete on the editor canvas must not delete the node"
    assert s["jsonEdited"]["rows"] == [REGIONS[0]["prompt"], "changed in the JSON view"], "JSON view edits reach the editor"
    assert s["jsonRestored"]["value"] == s["deleted"]["value"] and seen["jsonHiddenAgain"]
    assert seen["wheel"]["after"] > seen["wheel"]["before"], "the wheel over the editor zooms the graph"
    assert s["afterWheel"]["value"] == s["deleted"]["value"]

    # the widget value is what was saved, what came back after a reload and from the saved file
    value = s["drawn"]["value"]
    assert s["deleted"]["value"] == value
    saved_node = next(n for n in seen["savedFile"]["nodes"] if n["type"] == LAYOUT_NODE)
    assert saved_node["widgets_values"] == [value], "the layout is saved as the layout_json widget value, exactly"
    for step in ("reloaded", "opened"):
        assert s[step]["type"] == LAYOUT_NODE
        assert s[step]["value"] == value, f"{step}: the layout changed"
        assert s[step]["rows"] == [r["prompt"] for r in REGIONS], f"{step}: the prompt fields changed"
    saved_path = frontend.server.base / "user" / "default" / "workflows" / "ii-region-editor-test.json"
    assert saved_path.exists()

    # the queued prompt carries the same text to the backend, and the backend parsed it
    queued = seen["queued"]
    assert queued["status"] == 200, queued
    assert queued["body"]["prompt"]["1"]["inputs"]["layout_json"] == value
    entry = seen["history"]
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["prompt"][2]["1"]["inputs"]["layout_json"] == value
    img = entry["outputs"]["2"]["images"][0]
    preview = Image.open(frontend.server.base / img["type"] / img.get("subfolder", "") / img["filename"]).convert("RGB")
    assert preview.size == (1024, 512)
    for r in REGIONS:  # each region is painted where it was drawn; the rest is background (black)
        assert preview.getpixel((r["x"] + r["w"] // 2, r["y"] + r["h"] // 2)) != (0, 0, 0)
        assert preview.getpixel((r["x"] + 2, r["y"] + 2)) != (0, 0, 0)
        assert preview.getpixel((r["x"] - 2, r["y"] + 2)) == (0, 0, 0)
    assert preview.getpixel((512, 256)) == (0, 0, 0)

    errors = unexpected(seen["journal"], frontend.url, boot=True)
    assert not errors, f"console errors:\n{fmt(errors)}"


# ---------------------------------------------------------------------------------------------------
# Diptych preview


def _expected_place(ref_w, ref_h, width, height, fit):
    """(target w, h, placement x, y, w, h) the way nodes/reference.py computes them."""
    from instruct_identity.core import images, layout

    w = layout.snap(width or ref_w, 16, "width")
    h = layout.snap(height or ref_h, 16, "height")
    if fit == "pad":  # where the picture lands: the bounding box of a white picture padded with black
        fitted = images.fit(torch.ones(1, ref_h, ref_w, 3), h, w, "pad", (0.0, 0.0, 0.0))[0, ..., 0] > 0.5
        ys, xs = torch.nonzero(fitted, as_tuple=True)
        return w, h, (int(xs.min()), int(ys.min()), int(xs.max()) - int(xs.min()) + 1, int(ys.max()) - int(ys.min()) + 1)
    if fit == "crop":  # the same scale and centring as images.fit
        scale = max(h / ref_h, w / ref_w)
        nh, nw = max(1, round(ref_h * scale)), max(1, round(ref_w * scale))
        return w, h, (-((nw - w) // 2), -((nh - h) // 2), nw, nh)
    return w, h, (0, 0, w, h)


DIPTYCH_CASES = [
    {"label": "pad-square", "width": 1024, "height": 1024, "fit": "pad", "pad_color": "#ffffff"},
    {"label": "crop", "width": 1000, "height": 600, "fit": "crop", "pad_color": "#ffffff"},
    {"label": "reference-size", "width": 0, "height": 0, "fit": "pad", "pad_color": "#ff8000"},
    {"label": "pad-wide", "width": 768, "height": 384, "fit": "pad", "pad_color": "0,0,255"},
    {"label": "stretch", "width": 512, "height": 512, "fit": "stretch", "pad_color": "#ffffff"},
]


REFERENCE = "ii_frontend_character.png"


@pytest.fixture(scope="module")
def reference_image(frontend):
    """A 200 x 300 reference in the server's input folder: a green square in the middle of a gradient."""
    path = frontend.server.base / "input" / REFERENCE
    y, x = torch.meshgrid(torch.arange(300), torch.arange(200), indexing="ij")
    rgb = torch.stack([x * 255 // 199, torch.zeros_like(x), y * 255 // 299], -1)
    rgb[100:200, 50:150, 1] = 255
    Image.fromarray(rgb.byte().numpy(), "RGB").save(path)
    return 200, 300


def test_diptych_preview_before_running(frontend, reference_image, workflow_inputs):
    ref_w, ref_h = reference_image
    seen = frontend.run("diptych", workflow=str(REPO / "workflows" / "instruct_identity_lora.json"), image=REFERENCE,
                        cases=DIPTYCH_CASES)
    for item in seen["cases"]:
        c, got = item["case"], item["seen"]
        w, h, place = _expected_place(ref_w, ref_h, c["width"], c["height"], c["fit"])
        assert got["iiReference"] == f"{ref_w}x{ref_h}", c
        assert (int(got["iiTargetWidth"]), int(got["iiTargetHeight"])) == (w, h), c
        assert tuple(int(v) for v in got["iiPlace"].split(",")) == place, c
        assert f"grid {2 * w}×{h} px" in got["caption"], got["caption"]
        assert got["samples"]["target"] == [128, 128, 128]          # the target half is the grey placeholder
        assert got["samples"]["image"][1] > 200                        # the green square of the reference
        if "pad" in got["samples"]:                                    # padding shows pad_color
            pad = {"#ffffff": [255, 255, 255], "#ff8000": [255, 128, 0], "0,0,255": [0, 0, 255]}[c["pad_color"]]
            assert got["samples"]["pad"] == pad, c
        if c["width"] == 0:
            assert "width 200 → 208 px" in got["caption"] and "height 300 → 304 px" in got["caption"]
    errors = unexpected(seen["journal"], frontend.url)
    assert not errors, f"console errors:\n{fmt(errors)}"


# ---------------------------------------------------------------------------------------------------
# CHARIS on the nodes


@pytest.fixture(scope="module")
def charis_setup(frontend, reference_image):
    """A random tiny CLIP in models/charis/clip (the CHARIS tests' builder), a generated picture
    beside the reference, and a fake OpenAI-compatible VLM judge on loopback."""
    sys.path.insert(0, str(REPO / "tests" / "charis"))
    import charis_models

    clip_root = frontend.server.base / "models" / "charis" / "clip"
    if not (clip_root / "tiny-rn-clip").exists():
        charis_models.build_tiny_clip(clip_root)
    ref = Image.open(frontend.server.base / "input" / REFERENCE).convert("RGB")
    r, g, b = ref.split()
    recoloured = Image.merge("RGB", (b, r, g))          # the same picture in other colours, moved and smaller
    generated = Image.new("RGB", ref.size, (255, 255, 255))
    generated.paste(recoloured.resize((ref.width * 3 // 4, ref.height * 3 // 4)), (30, 60))
    generated.save(frontend.server.base / "input" / GENERATED)
    judge = FakeJudge()
    yield judge
    judge.close()


GENERATED = "ii_frontend_generated.png"
PROMPT = "the character waving, beach"


def charis_graph(judge_url: str) -> list[dict]:
    return [
        {"id": 1, "type": "LoadImage", "pos": [0, 0], "size": [260, 320], "widgets": {"image": REFERENCE}},
        {"id": 2, "type": "LoadImage", "pos": [0, 380], "size": [260, 320], "widgets": {"image": GENERATED}},
        {"id": 3, "type": "InstructIdentityCharisLoader", "pos": [300, 0], "size": [340, 300], "widgets": {
            "clip": "tiny-rn-clip", "quality_model": "same as clip", "vlm": "openai-compatible",
            "vlm_base_url": judge_url, "vlm_model": "fake-judge", "api_key_env": "", "cache_answers": False, "device": "cpu"}},
        {"id": 4, "type": "InstructIdentityCharisScore", "pos": [680, 0], "size": [380, 420],
         "widgets": {"prompt": PROMPT, "mode": "benchmark"},
         "inputs": {"evaluator": [3, 0], "reference": [1, "IMAGE"], "generated": [2, "IMAGE"]}},
        {"id": 5, "type": "ImageBatch", "pos": [300, 380], "size": [240, 80],
         "inputs": {"image1": [2, "IMAGE"], "image2": [1, "IMAGE"]}},
        {"id": 6, "type": "InstructIdentityCharisFilter", "pos": [1100, 0], "size": [380, 640],
         "widgets": {"prompt": PROMPT, "min_color": 0.9, "min_quality": 0.0},
         "inputs": {"evaluator": [3, 0], "reference": [1, "IMAGE"], "generated": [5, "IMAGE"]}},
        {"id": 7, "type": "PreviewAny", "pos": [300, 520], "size": [340, 180], "inputs": {"source": [4, "report"]}},
    ]


def _bars(item: dict) -> dict:
    return {b["axis"]: b["value"] for b in item["bars"]}


def test_charis_scores_on_the_nodes_after_a_real_run(frontend, charis_setup):
    seen = frontend.run("charis", graph=charis_graph(charis_setup.base_url), score=4, filter=6, reportNode=7,
                        view={"x": -20, "y": -40, "sx": 70, "sy": 90, "scale": 0.85}, viewport={"width": 1700, "height": 950})
    entry = seen["history"]
    assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
    assert {"identity_attributes", "identity_judge", "prompt", "diversity"} <= set(charis_setup.tasks)
    assert seen["before"]["score"]["items"] == [], "no bars before a run"

    # Score node: one bar per axis and the composite, with the values of /history
    ui = entry["outputs"]["4"]
    compact = ui["charis"]
    assert len(compact) == 1
    shown = seen["after"]["score"]
    assert len(shown["items"]) == 1
    bars = _bars(shown["items"][0])
    expected = {k: v for k, v in compact[0].items() if k not in ("id", "charis", "axes_used", "passed")}
    assert set(expected) >= {"identity", "prompt", "color", "quality", "diversity"}
    assert set(bars) == set(expected) | {"composite"}
    for axis, value in expected.items():
        assert value is not None, f"{axis} should have been computed with the tiny models and the fake judge"
        assert bars[axis] == pytest.approx(value, abs=1e-12), axis
    assert bars["composite"] == pytest.approx(compact[0]["charis"], abs=1e-12)
    assert bars["identity"] == pytest.approx(0.75)           # the fake judge's 3/4
    for b in shown["items"][0]["bars"]:                       # bar length = value, printed to 3 places
        assert b["shown"] == f"{b['value']:.3f}"
        assert float(b["width"].rstrip("%")) == pytest.approx(100 * min(1.0, max(0.0, b["value"])), abs=0.051)

    # Filter node: how many passed, and why the others failed
    fui = entry["outputs"]["6"]["charis"]
    passed = sum(1 for r in fui if r["passed"])
    f = seen["after"]["filter"]
    assert f["summary"] == {"text": f"{passed} of {len(fui)} passed", "passed": passed, "total": len(fui)}
    assert 0 < passed < len(fui), "the graph is built so that one image passes and one is rejected"
    assert len(f["reasons"]) == len(fui) - passed
    assert all("color" in r.lower() for r in f["reasons"]), f["reasons"]   # min_color 0.9 rejects the recoloured one

    # per-attribute verdicts (expandable): the VLM's text, HTML included, shown as text
    assert seen["opened"] >= 1
    expanded = seen["expanded"]
    report = json.loads(entry["outputs"]["7"]["text"][0])
    notes = [v["note"] for v in report["results"][0]["axes"]["identity"]["details"]["verdicts"]]
    assert any(fake_judge.XSS in n for n in notes), "the fake judge's HTML reached the report unchanged"
    assert expanded["items"][0]["verdicts"] == notes
    assert all("<img" not in h for h in expanded["items"][0]["verdictHTML"]) and any("&lt;img" in h for h in expanded["items"][0]["verdictHTML"])
    assert fake_judge.XSS in expanded["text"] and "badge" in expanded["text"]
    assert expanded["images"] == 0, "an <img>/<script> element was created from model text"
    assert expanded["xss"] is None, "the onerror handler ran"
    assert seen["delivered"] == "ui", "the Score node's own ui output must carry the per-attribute verdicts"

    # both palettes; every style rule is scoped to the pack's own elements
    assert seen["textColor"]["dark"] != seen["textColor"]["light"]
    assert seen["styles"], "the pack's <style> element is missing"
    for rule in seen["styles"]:
        assert all(sel.strip().startswith(".ii-") for sel in rule.split(",")), f"unscoped CSS rule: {rule}"
    errors = unexpected(seen["journal"], frontend.url)
    assert not errors, f"console errors:\n{fmt(errors)}"


def test_diptych_preview_shows_every_reference_panel(frontend, reference_image, workflow_inputs):
    seen = frontend.run("diptych_multi", workflow=str(REPO / "workflows" / "instruct_identity_multi_view.json"),
                        image=REFERENCE)
    got = seen["seen"]
    w, h = int(got["iiTargetWidth"]), int(got["iiTargetHeight"])
    assert got["iiReferences"] == "3" and f"grid {4 * w}×{h} px" in got["caption"] and "3 references" in got["caption"]
    cw, ch = got["canvas"]
    assert abs(cw / ch - 4 * w / h) < 0.05 * (4 * w / h)          # four panels side by side
    target, *refs = got["centres"]
    assert target == [128, 128, 128]
    # each reference panel shows its picture (the Load Image's own preview), not the pad colour or the grey
    assert all(c not in ([255, 255, 255], [128, 128, 128]) for c in refs), refs
    errors = unexpected(seen["journal"], frontend.url)
    assert not errors, f"console errors:\n{fmt(errors)}"
