"""The miniature curation pipeline (issue 20): its pieces on known inputs, and the quick profile end to
end through a real ComfyUI server (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def C(comfy):
    from instruct_identity.benchmarks.toy import curation

    return curation


def test_shrink_undoes_the_templates_nearest_zoom_exactly(C):
    from instruct_identity.miniature import sprites

    img = sprites.render(sprites.all_characters()[7], sprites.ALL_POSES[4])[0]
    big = np.repeat(np.repeat(img, C.ZOOM, 0), C.ZOOM, 1)
    assert np.array_equal((C.shrink(big) * 255).round().astype(np.uint8), img)


def test_cell_truth_tells_the_character_from_a_drifted_one_whatever_pose_was_drawn(C):
    from instruct_identity.miniature import sprites

    char = sprites.Character("red", "blue", "green", "dotted", "none")
    drift = sprites.Character("red", "pink", "green", "dotted", "none")
    asked, drawn = sprites.Pose("left", "small", "lying"), sprites.Pose("right", "large", "arms up")
    up = lambda c, p: np.repeat(np.repeat(sprites.render(c, p)[0], C.ZOOM, 0), C.ZOOM, 1)  # noqa: E731
    same = C.cell_truth(up(char, drawn), char, asked)
    assert same["consistent"] and not same["on_prompt"] and same["drawn_pose"] == drawn.caption()
    assert same["speckle"] == 0.0
    bad = C.cell_truth(up(drift, asked), char, asked)
    assert not bad["consistent"] and bad["wrong_parts"] == ["torso"] and bad["on_prompt"]


def test_stage_two_graph_puts_the_grid_lora_between_the_loader_and_every_model_user(C):
    from instruct_identity.miniature import sprites

    members = list(zip((4, 7, 9), sprites.all_characters()[:3]))
    poses = (sprites.ALL_POSES[0], sprites.ALL_POSES[5])
    p = C.PROFILES["quick"]
    plain = C.sheets_prompt(members, poses, 1, p, 5, "f/stage1")
    graph = C.sheets_prompt(members, poses, 1, p, 5, "f/stage2", lora="grid.safetensors")
    batch = next(v for v in graph.values() if v["class_type"] == "InstructIdentityCharacterSheetBatch")["inputs"]
    assert batch["characters"].splitlines() == [f"{C.char_name(i, 1)}: {c.describe()}" for i, c in members]
    assert batch["poses"].splitlines() == [q.caption() for q in poses] and batch["folder"] == "f/stage2"
    loader = next(k for k, v in graph.items() if v["class_type"] == "InstructIdentityDemoModel")
    users = [k for k, v in plain.items() if [loader, 0] in v["inputs"].values()]
    assert users and all(["lora", 0] in graph[k]["inputs"].values() for k in users)
    assert graph["lora"]["inputs"]["model"] == [loader, 0] and "lora" not in plain
    assert C.parse_name(C.char_name(12, 3) + "_00001_.png") == (12, 3)


def test_pose_pairs_are_drawn_per_character_and_queued_once_per_sheet_and_pair(C):
    chars = C.training_characters(30)
    pairs = C.pose_pairs(len(chars), 3, seed=0)
    assert len(pairs) == 30 and all(len(pps) == 3 and all(a != b for a, b in pps) for pps in pairs)
    assert len({pp for pps in pairs for pp in pps}) > 20          # not the same few pairs for everyone
    assert pairs == C.pose_pairs(len(chars), 3, seed=0) and pairs != C.pose_pairs(len(chars), 3, seed=1)
    assert C.pose_pairs(31, 3, seed=0)[:30] == pairs               # a character's poses do not depend on the count
    groups = C.sheet_groups(chars, pairs)
    queued = sorted((ci, j, poses) for j, poses, members in groups for ci, _ in members)
    assert queued == sorted((ci, j, pp) for ci, pps in enumerate(pairs) for j, pp in enumerate(pps))
    assert len({(j, poses) for j, poses, _ in groups}) == len(groups)  # each (sheet, pose pair) is one prompt
    assert all(chars[ci] is c for _, _, members in groups for ci, c in members)


def test_whole_caption_graph_samples_one_sheet_caption_without_the_regional_node(C):
    from dataclasses import replace

    from instruct_identity.miniature import sprites

    chars = sprites.all_characters()[40:42]
    poses = (sprites.ALL_POSES[2], sprites.ALL_POSES[9])
    p = replace(C.PROFILES["quick"], whole_caption=True)
    graph = C.sheets_prompt(list(enumerate(chars)), poses, 0, p, 5, "f/stage2", lora="grid.safetensors")
    kinds = {v["class_type"] for v in graph.values()}
    assert "InstructIdentityRegionalPrompting" not in kinds and "InstructIdentityGridLayout" in kinds
    batch_id, batch = next((k, v["inputs"]) for k, v in graph.items() if v["class_type"] == "InstructIdentityCharacterSheetBatch")
    # filled with a description, the base template is the caption the miniature base was trained on
    assert batch["base_template"].format(description=chars[1].describe()) == sprites.sheet_caption(chars[1], list(poses))
    sampler = next(v["inputs"] for v in graph.values() if v["class_type"] == "KSampler")
    assert sampler["model"] == ["lora", 0]
    encoder = graph[sampler["positive"][0]]
    assert encoder["class_type"] == "CLIPTextEncode" and encoder["inputs"]["text"] == [batch_id, 1]
    linked = {tuple(v) for node in graph.values() for v in node["inputs"].values() if isinstance(v, list)}
    assert all(src in graph for src, _ in linked), "a link points at a node that was taken out"


def test_detector_counts_kept_and_dropped_pairs_against_the_ground_truth(C, tmp_path):
    ok, bad = {"consistent": True}, {"consistent": False}
    truth = {"a.png": {"cells": [ok, ok]}, "b.png": {"cells": [ok, bad]}, "c.png": {"cells": [ok, ok]}}
    kept = [("a.png", [1, 2]), ("b.png", [1, 2])]                     # one good, one drifted pair kept
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"sheet": s, "cells": c}) + "\n" for s, c in kept))
    report = {"sheets": 3, "cells": 6, "pairs_considered": 6, "written": 2,
              "dropped": [{"sheet": "a.png", "item": "pair 2->1", "reason": "filter: x"},
                          {"sheet": "b.png", "item": "pair 2->1", "reason": "filter: x"},
                          {"sheet": "c.png", "item": "pair 1->2", "reason": "filter: x"},
                          {"sheet": "c.png", "item": "pair 2->1", "reason": "filter: x"},
                          {"sheet": "c.png", "item": "cell 3", "reason": "blank cell"}]}
    d = C.detector(truth, tmp_path, report)
    assert d["candidates"] == 6 and d["kept"] == 2 and d["good_candidates"] == 4
    assert d["precision"] == 0.5 and d["recall"] == 0.25
    assert C.kept_sheets(truth, tmp_path) == []                        # no sheet kept whole (2 pairs each)
    assert C.kept_cells(tmp_path) == {("a.png", 1), ("a.png", 2), ("b.png", 1), ("b.png", 2)}
    assert C.detector(truth, tmp_path / "nothing-kept", {**report, "dropped": []})["kept"] == 0


def test_matched_ground_truth_redraws_each_kept_pair_as_asked_with_its_cells_order(C, tmp_path):
    from instruct_identity.curation.sheets import SheetInfo, write_sidecar
    from instruct_identity.miniature import sprites

    chars = C.training_characters(4)
    a, b, c = sprites.ALL_POSES[:3]

    def sheet(name, poses):
        regions = [{"x": 32 * i, "y": 0, "w": 32, "h": 32, "prompt": q.caption(), "caption": q.caption(), "cell": [0, i]}
                   for i, q in enumerate(poses)]
        info = SheetInfo.from_dict({"layout": {"version": 1, "width": 32 * len(poses), "height": 32,
                                               "regions": regions}})
        write_sidecar(tmp_path / "sheets" / name, info)

    (tmp_path / "sheets").mkdir()
    sheet("c0003s1_00001_.png", [a, b])
    sheet("c0001s0_00001_.png", [c, a])
    rows = [("c0003s1_00001_.png", [2, 1]), ("c0001s0_00001_.png", [1, 2]), ("c0003s1_00001_.png", [1, 2])]
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "pairs.jsonl").write_text("".join(json.dumps({"sheet": s, "cells": x}) + "\n" for s, x in rows))
    got = C.matched_ground_truth(tmp_path / "ds", tmp_path / "sheets", chars)
    assert [(g.char, g.ref_pose, g.tgt_pose) for g in got] == [(chars[3], b, a), (chars[1], c, a), (chars[3], a, b)]
    assert C.matched_ground_truth(tmp_path / "empty", tmp_path / "sheets", chars) == []


@pytest.mark.slow
def test_quick_profile_runs_every_stage_and_writes_the_report(C, comfy_server, tmp_path):
    import ii_harness

    template = json.loads((REPO / "workflows" / C.SHEETS_TEMPLATE.name).read_text())
    problems, prompt = ii_harness.check_workflow(template, comfy_server.get("/object_info"))
    assert not problems, "\n".join(problems)
    assert prompt == json.loads(C.SHEETS_PROMPT.read_text()), "miniature/sheets_prompt.json is stale: run scripts/build_workflows.py"

    out = tmp_path / "curation.json"
    assert C.main(["--profile", "quick", "--work", str(tmp_path / "work"), "--out", str(out),
                   "--images", str(tmp_path / "images"), "--workers", "1"]) == 0
    results = json.loads(out.read_text())
    s1 = results["stages"]["stage1"]
    n_sheets = results["characters"] * results["sheets_per_character"]
    assert s1["sheets"]["sheets"] == n_sheets == s1["consistency"]["sheets"]
    assert len(list((tmp_path / "work" / "stage1" / "sheets").glob("*.sheet.json"))) == n_sheets
    assert set(s1["curation"]) == {"unfiltered", "colour-only", "judge-0", "judge-0.4", "judge-0-no-colour",
                                   "judge-0.4-no-colour"}
    unf = s1["curation"]["unfiltered"]
    assert unf["kept"] == unf["candidates"] == 2 * n_sheets and unf["recall"] in (1.0, None)
    for name, c in s1["curation"].items():
        assert c["kept"] <= c["candidates"] and c["sheets"] == n_sheets, name
        if c["filter"] == "charis" and c["judge_error"] is not None:
            assert c["judge"]["requests"] > 0 and c["judge"]["by_task"].get("identity_judge", 0) > 0
    assert "ground-truth-pairs" in results["identity"]["summary"]
    if "stage1-filtered" in results["identity_data"]:  # the matched control: the curated pairs, redrawn
        n = results["identity_data"]["stage1-filtered"]
        assert results["identity_data"]["ground-truth-matched"] == results["identity_data"]["ground-truth-sized"] == n
    trained = {r["name"] for r in results["identity"]["runs"]}
    assert trained | set(results["identity_skipped"]) >= {"stage1-unfiltered", "ground-truth-pairs", "stage1-filtered"}
    long_steps = C.PROFILES["quick"].long_steps
    assert f"ground-truth-pairs-{long_steps}" in trained
    assert {r["steps"] for r in results["identity"]["runs"] if r["name"].endswith(f"-{long_steps}")} == {long_steps}
    if f"stage1-filtered-{long_steps}" in trained:  # paired against the reference at its own budget
        row = results["identity"]["summary"][f"stage1-filtered-{long_steps}"]["distinct"]
        assert row["reference"] == f"ground-truth-pairs-{long_steps}"
        assert Path(results["pictures"]["beside"]).is_file()   # the curated LoRA's grid above the reference's
    assert {"base_speckle", "pipeline_wall"} <= set(results["targets"])
    wall = results["pipeline_wall"]
    assert wall["total_s"] > 0 and wall["stage1_sheets"] > 0 and wall["identity_loras"] > 0
    s2 = results["stages"]["stage2"]
    assert "skipped" in s2 or s2["sheets"]["sheets"] == n_sheets
    if "skipped" not in s2:
        assert s2["grid_lora"]["preset"] == "A" and s2["grid_lora"]["steps"] == C.PROFILES["quick"].grid_steps
        seen, unseen = s2["consistency_seen"]["sheets"], s2["consistency_unseen"]["sheets"]
        assert seen + unseen == n_sheets and seen > 0
    assert len(results["regional_sweep"]) == len(C.SWEEP)
    rep = results["stages"]["stage1_repaired"]
    assert rep["repair"]["cells"] == 2 * n_sheets and rep["repaired_cells"]["cells"] == rep["repair"]["repaired"]
    assert len(list((tmp_path / "work" / "stage1-repaired" / "sheets").glob("*.sheet.json"))) == n_sheets
    assert {"unfiltered", results["downstream_filter"]} == set(rep["curation"])
    assert results["speckle_probe"]["samplers"] and len(results["speckle_probe"]["one_step_x0"]) == len(C.SPECKLE_SIGMAS)
    md = out.with_suffix(".md").read_text()
    assert "## The filter as a detector of good pairs" in md and "simulated" in md
    assert "## Out-paint repair" in md and "## Where the speckle comes from" in md and "## Targets (issue 20)" in md
    assert (tmp_path / "images" / "curation-stage1-sheets.png").is_file()


def test_later_stages_take_the_better_error_free_judge_filter(C):
    cur = {"unfiltered": {"judge_error": None, "precision": 0.05, "recall": 1.0},
           "judge-0": {"judge_error": 0.0, "colour": True, "precision": 1.0, "recall": 0.1},
           "judge-0-no-colour": {"judge_error": 0.0, "colour": False, "precision": 0.8, "recall": 0.7},
           "judge-0.4-no-colour": {"judge_error": 0.4, "colour": False, "precision": 0.9, "recall": 0.9}}
    assert C.downstream_filter(cur) == "judge-0-no-colour"          # never a noisier judge, never unfiltered
    cur["judge-0-no-colour"]["recall"] = None
    assert C.downstream_filter(cur) == "judge-0"


def test_repair_graph_samples_only_the_padding_with_the_cells_own_prompt(C):
    p = C.PROFILES["full"]
    g = C.repair_prompt("repair/x.png", "a red head. the character lying, small, on the left", 11, p, "repair/x")
    node = lambda t: next(k for k, v in g.items() if v["class_type"] == t)  # noqa: E731
    sampler = g[node("KSampler")]["inputs"]
    assert g[node("LoadImage")]["inputs"]["image"] == "repair/x.png"
    assert g[sampler["positive"][0]]["inputs"]["text"].startswith("a red head")
    assert sampler["seed"] == 11 and sampler["steps"] == p.sheet_steps and sampler["denoise"] == 1.0
    masked = g[sampler["latent_image"][0]]
    assert masked["class_type"] == "SetLatentNoiseMask" and masked["inputs"]["mask"] == [node("ImagePadForOutpaint"), 1]
    pad = g[node("ImagePadForOutpaint")]["inputs"]
    assert [pad[s] for s in ("left", "top", "right", "bottom")] == [[node("InstructIdentityOutpaintBorders"), i] for i in range(4)]
    assert C.border_settings() == {k: v for k, v in g[node("InstructIdentityOutpaintBorders")]["inputs"].items()
                                   if not isinstance(v, list)}


def test_reframe_keeps_the_whole_out_painted_figure_in_a_cell_sized_window(C):
    pic = np.full((32, 40, 3), 255, np.uint8)
    pic[10:20, 2:22] = (220, 40, 40)          # a figure completed into the left padding
    win = C.reframe(pic, 32)
    assert win.shape == (32, 32, 3) and (win != 255).any(-1).sum() == 10 * 20
    pic[:] = 255
    pic[0:4, 30:40] = (40, 70, 220)           # touching the top-right corner: clamped, never out of the picture
    win = C.reframe(pic, 32)
    assert win.shape == (32, 32, 3) and (win != 255).any(-1).sum() == 4 * 10
    cell = np.full((32, 32, 3), 255, np.uint8)
    assert np.array_equal(C.reframe(cell, 32), cell)


def test_repair_effect_compares_only_the_repaired_cells_and_counts_edge_poses(C):
    from instruct_identity.miniature import sprites

    lying = "the character lying, large, on the left"         # the renderer's own figure touches the left border
    standing = "the character standing, small, in the center"
    cell = lambda ok, pose: {"consistent": ok, "on_prompt": True, "speckle": 0.1, "pose": pose}  # noqa: E731
    sheet = lambda *cells: {"character": 0, "cells": list(cells)}  # noqa: E731
    before = {"a.png": sheet(cell(False, lying), cell(False, standing)), "b.png": sheet(cell(True, standing), cell(False, lying))}
    after = {"a.png": sheet(cell(True, lying), cell(False, standing)), "b.png": sheet(cell(True, standing), cell(True, lying))}
    repair = {"per_sheet": {"a.png": [{"sides": ["left"]}, {"sides": ["left"]}], "b.png": [{"sides": []}, {"sides": ["right"]}]}}
    chars = [sprites.Character("red", "blue", "green", "plain", "none")]
    eff = C.repair_effect(before, after, repair, chars)
    assert eff["cells"] == 3 and eff["before"]["cells_consistent"] == 0.0 and eff["after"]["cells_consistent"] == 2 / 3
    assert eff["touching_by_design"] == 1        # a.png's lying cell; b.png's touches left by design, flagged right


@pytest.mark.slow
def test_miniature_curation_template_runs_sheets_repair_and_filter_preview_in_comfyui(C, comfy_server):
    import ii_harness

    from instruct_identity.benchmarks.toy import judge as J

    from PIL import Image

    from instruct_identity.miniature import sprites

    # a cell whose figure the left border cuts off: the renderer's sprite shifted 6 px out of the picture
    char = sprites.Character("red", "blue", "green", "plain", "none")
    img = sprites.render(char, sprites.Pose("left", "large", "standing"))[0]
    cut = np.full_like(img, 255)
    cut[:, :-6] = img[:, 6:]
    Image.fromarray(cut).save(comfy_server.base / "input" / "cell.png")
    info = comfy_server.get("/object_info")
    for name, api in (("outpaint_repair_miniature.json", "repair_prompt.json"),
                      ("character_sheet_curation_miniature.json", "curation_prompt.json")):
        problems, prompt = ii_harness.check_workflow(json.loads((REPO / "workflows" / name).read_text()), info)
        assert not problems, "\n".join(problems)
        assert prompt == json.loads((REPO / "miniature" / api).read_text()), f"miniature/{api} is stale: run scripts/build_workflows.py"
    repair = C.repair_prompt("cell.png", char.describe() + ". the character standing, large, on the left", 3,
                             C.PROFILES["quick"], "repair-test/cell")
    entry = comfy_server.run(repair, timeout=300)
    assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
    saved = next(o["images"][0] for o in entry["outputs"].values() if o.get("images"))
    out = np.asarray(Image.open(comfy_server.base / "output" / saved["subfolder"] / saved["filename"]).convert("RGB"))
    assert out.shape == (32, 40, 3)                      # padded on the left only, by a quarter of 32
    # masked sampling leaves the cell's own pixels alone (up to 8-bit rounding) and draws in the padding
    assert np.abs(out[:, 8:].astype(int) - cut).max() <= 1
    assert (out[:, :8] != 255).any(-1).mean() > 0.05
    prompt = json.loads((REPO / "miniature" / "curation_prompt.json").read_text())
    node = lambda t: next(k for k, v in prompt.items() if v["class_type"] == t)  # noqa: E731
    for v in prompt.values():
        if v["class_type"] == "KSampler":
            v["inputs"]["steps"] = 4
    with J.PaletteJudge(0.0) as judge:
        prompt[node("InstructIdentityCharisLoader")]["inputs"]["vlm_base_url"] = judge.base_url
        entry = comfy_server.run(prompt, timeout=600)
        assert entry["status"]["status_str"] == "success", ii_harness.error_messages(entry)
        assert judge.by_task.get("identity_judge", 0) == 2       # one (left cell -> repaired right cell) per character
    reports = [json.loads(t) for t in entry["outputs"][node("PreviewAny")]["text"]]
    assert len(reports) == 2                                   # the batch's two characters, one preview each
    for rep in reports:
        (item,) = rep["results"]
        assert all(item["axes"][a]["value"] is not None for a in ("identity", "color", "diversity")), item["axes"]
        comp = item["composite"]
        assert comp["complete"] and comp["axes_used"] == ["identity", "color", "diversity"]   # no CLIP needed
        assert comp["passed"] == (not comp["failed"])


def test_targets_judge_the_best_curated_lora_at_each_budget_against_its_own_reference(C):
    p = C.PROFILES["full"]
    L = p.long_steps
    acc = {"ground-truth-pairs": [0.50, 0.60], "stage1-filtered": [0.40, 0.50], "stage1-unfiltered": [0.42, 0.40],
           f"ground-truth-pairs-{L}": [0.90, 0.90], f"stage1-filtered-{L}": [0.88, 0.86]}
    runs = [{"name": n, "seed": s, "split": "distinct", "steps": C.budget_of(n, p),
             "metrics": {"part_color_acc": v[s], "sil_iou": 1.0, "speckle": 0.1 if "filtered" in n else 0.04},
             "train_wall_s": 100.0, "eval_wall_s": 10.0} for n, v in acc.items() for s in (0, 1)]
    done = [{"name": r["name"], "seed": r["seed"], "splits": {"distinct": r["metrics"]}, "wall_s": 100.0,
             "eval_wall_s": 10.0} for r in runs]
    summary = C.identity_summary(done, lambda name: C.reference_of(name, p))
    assert summary["summary"][f"stage1-filtered-{L}"]["distinct"]["reference"] == f"ground-truth-pairs-{L}"
    assert summary["summary"]["stage1-filtered"]["distinct"]["reference"] == "ground-truth-pairs"
    results = {"identity": summary, "base_text_to_image": {"speckle": 0.2},
               "stages": {"stage1": {"sheets": {"wall_s": 50.0}, "curation": {"a": {"curate_wall_s": 5.0}}}}}
    results["pipeline_wall"] = C.pipeline_wall(results, p, workers=2)
    assert results["pipeline_wall"]["identity_loras"] == 6 * 110.0 / 2    # the long runs are counted apart
    assert results["pipeline_wall"]["long_budget_loras_s"] == 4 * 110.0 / 2
    assert results["pipeline_wall"]["total_s"] == 50.0 + 5.0 + 330.0
    t = C.targets(results, p)
    short, long_ = t[f"curated_within_ground_truth_{p.identity_steps}"], t[f"curated_within_ground_truth_{L}"]
    assert short["run"] == "stage1-filtered" and abs(short["value"]["distinct"] - 0.10) < 1e-9 and not short["met"]
    assert long_["run"] == f"stage1-filtered-{L}" and abs(long_["value"]["distinct"] - 0.03) < 1e-9 and long_["met"]
    # stage1-filtered vs unfiltered: -0.02 and +0.10, mean +0.04 > 0
    assert t["filtered_above_unfiltered"]["met"]
    assert t["lora_speckle"]["run"] == f"stage1-filtered-{L}" and not t["lora_speckle"]["met"]
    assert not t["base_speckle"]["met"] and t["pipeline_wall"]["met"]


def test_gap_reading_splits_the_gap_into_count_coverage_and_quality_paired_by_seed():
    from instruct_identity.benchmarks.toy import curation_report as R

    acc = {"ground-truth-pairs": [0.5, 0.6], "ground-truth-sized": [0.4, 0.4], "ground-truth-matched": [0.3, 0.2],
           "stage1-filtered": [0.2, 0.2]}
    runs = [{"name": n, "seed": s, "split": "distinct", "metrics": {"part_color_acc": v[s]}}
            for n, v in acc.items() for s in (0, 1)]
    results = {"identity": {"runs": runs, "summary": {n: {"distinct": {}} for n in acc}},
               "identity_data": {"ground-truth-pairs": 2000, "ground-truth-matched": 82}}
    row = next(line for line in R.gap_reading(results) if line.startswith("| distinct"))
    gap, count, coverage, quality = [c.strip() for c in row.strip("|").split("|")][1:]
    assert gap == "0.350 ± 0.050" and count == "0.150 ± 0.050" and coverage == "0.150 ± 0.050"
    assert quality == "0.050 ± 0.050"
    del results["identity"]["summary"]["ground-truth-sized"]
    assert R.gap_reading(results) == []


def test_sheet_page_frames_the_filters_decision_and_marks_the_ground_truth(C, tmp_path):
    from PIL import Image

    (tmp_path / "sheets").mkdir()
    Image.new("RGB", (256, 128), (255, 255, 255)).save(tmp_path / "sheets" / "c0000s0_00001_.png")
    truth = {"c0000s0_00001_.png": {"cells": [{"consistent": False}, {"consistent": True}]}}
    pics = C.pictures(tmp_path, truth, {}, tmp_path / "sheets", tmp_path, [], kept1={("c0000s0_00001_.png", 1)})
    page = np.asarray(Image.open(pics["stage1_sheets"]).convert("RGB")).astype(int)
    assert tuple(page[64, 1]) == (0, 170, 0) and tuple(page[64, 129]) == (220, 0, 0)  # kept | dropped frames
    assert tuple(page[11, 11]) == (255, 255, 255) and tuple(page[11, 139]) == (0, 0, 0)  # drifted | consistent
    assert pics["stage2_sheets"] is None
