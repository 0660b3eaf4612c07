"""The toy replication (benchmarks/toy): its parts are exact, and the quick profile runs end to end.

The research result (does masked beat full, which preset wins) is NOT asserted here: that is what the
full run measures and docs/toy-replication.md reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy(comfy):
    from instruct_identity.benchmarks.toy import data, evaluate
    from instruct_identity.miniature import sprites

    return data, evaluate, sprites


def test_splits_are_what_they_claim_and_held_out_characters_are_unseen(toy):
    data, _, sprites = toy
    train, test = sprites.split_characters(100_000, 200, seed=0)
    assert not {(c.head, c.torso) for c in train} & {(c.head, c.torso) for c in test}
    for p in data.make_pairs(test, 40, 32, seed=3, split="distinct"):
        hat = p.char.hat != "none"
        assert data.iou(data.pose_silhouette(p.ref_pose, 32, hat), data.pose_silhouette(p.tgt_pose, 32, hat)) < 0.35
        assert "head" not in p.caption and p.char.head not in p.caption  # the caption names the pose only
    near = data.make_pairs(test, 40, 32, seed=3, split="near")
    for p in near:
        hat = p.char.hat != "none"
        v = data.iou(data.pose_silhouette(p.ref_pose, 32, hat), data.pose_silhouette(p.tgt_pose, 32, hat))
        assert data.NEAR_IOU[0] <= v <= data.NEAR_IOU[1]
        assert sum(getattr(p.ref_pose, k) != getattr(p.tgt_pose, k) for k in ("place", "size", "pose")) == 1
    assert len({(p.ref_pose, p.tgt_pose) for p in near}) > 5
    # training pairs: any two distinct poses, so near targets (where copying is almost right) occur
    train_pairs = data.make_pairs(train, 300, 32, seed=0)
    assert all(p.ref_pose != p.tgt_pose for p in train_pairs)
    assert any(sum(getattr(p.ref_pose, k) != getattr(p.tgt_pose, k) for k in ("place", "size", "pose")) == 1
               for p in train_pairs)


def test_pretraining_sheets_show_one_character_twice_and_say_so(toy, comfy):
    data, _, sprites = toy
    from instruct_identity.miniature import PixelCodec, WordEncoder

    train, _ = sprites.split_characters(100_000, 200, seed=0)
    stream = data.PretrainStream(train, 32, PixelCodec(), WordEncoder(), seed=1)
    latent, cond, pooled = stream.sheet_batch(4)
    te = WordEncoder()
    assert latent.shape == (4, 16, 16, 32) and cond.shape == (4, te.tokens, te.dim) and pooled.shape == (4, te.dim)
    pixels = PixelCodec().decode(latent).numpy()
    for img in pixels:
        left, right = img[:, :32], img[:, 32:]
        colours = [{tuple(np.round(c, 2)) for c in half.reshape(-1, 3)} for half in (left, right)]
        assert colours[0] & colours[1] - {(1.0, 1.0, 1.0)}  # the same character's colours in both views
    c = sprites.all_characters()[3]
    cap = sprites.sheet_caption(c, [sprites.ALL_POSES[0], None])
    assert cap.startswith("two views.") and c.describe() in cap and "first view" in cap
    assert "second view" not in cap
    longest = sprites.Character("red", "blue", "green", "striped", "yellow")  # and "arms up": 34 words
    caption = sprites.sheet_caption(longest, [sprites.ALL_POSES[1], sprites.ALL_POSES[4]])
    assert len(caption.replace(",", " ").replace(".", " ").split()) <= te.tokens  # no word is cut off


def test_metrics_on_oracles(toy):
    data, evaluate, sprites = toy
    _, test = sprites.split_characters(100_000, 200, seed=0)
    for split in ("distinct", "near"):
        items = evaluate.make_items(data.make_pairs(test, 8, 32, seed=1, split=split), 32)
        gt = evaluate.score(np.stack([it.target / 255.0 for it in items]), items)["mean"]
        assert gt["sil_iou"] == 1.0 and gt["part_color_acc"] == 1.0 and gt["copy_paste"] == 0.0
        copy = evaluate.score(np.stack([it.reference / 255.0 for it in items]), items)["mean"]
        assert copy["copy_paste"] == 1.0 and copy["sil_iou"] <= data.NEAR_IOU[1]
    blank = evaluate.score(np.ones((8, 32, 32, 3)), items)["mean"]
    assert blank["sil_iou"] == 0.0 and blank["part_color_acc"] == 0.0 and blank["copy_paste"] == 0.0
    swapped = np.stack([it.target[..., ::-1] / 255.0 for it in items])  # right place, wrong colours
    s = evaluate.score(swapped, items)["mean"]
    assert s["sil_iou"] > 0.9 and s["part_color_acc"] < 0.5


def test_job_key_covers_the_full_configuration():
    from instruct_identity.benchmarks.toy import jobs

    base = {"kind": "lora", "name": "B-masked", "work": "/w", "lora": {"steps": 3}, "base_key": "k", "seed": 0,
            "spec": {"name": "B-masked", "preset": "B", "loss": "masked", "seed": 0, "extra": {}}}
    other = json.loads(json.dumps(base))
    assert jobs.job_key(base) == jobs.job_key(other)
    for path, value in ((("spec", "extra"), {"reference_attention": "one_way"}), (("spec", "seed"), 1),
                        (("spec", "loss"), "full"), (("lora", "steps"), 4), (("base_key",), "k2")):
        changed = json.loads(json.dumps(base))
        d = changed
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        assert jobs.job_key(changed) != jobs.job_key(base), path
    assert jobs.job_dir(base) != jobs.job_dir({**base, "spec": {**base["spec"], "seed": 1}})


def test_paired_differences_pair_by_seed():
    from instruct_identity.benchmarks.toy import run

    per_item = {}
    runs = []
    for name, offset in (("B-masked", 0.5), ("B-full", 0.0)):
        for seed in (0, 1, 2):
            per_item[(name, seed, "distinct")] = {m: list(np.full(4, offset + 0.1 * seed)) for m in run.METRICS}
            runs.append({"name": name, "seed": seed})
    out = run.paired(per_item, runs, ["distinct"])["B-masked - B-full"]["distinct"]["part_color_acc"]
    assert out["diff"] == pytest.approx(0.5) and out["se"] == pytest.approx(0.0, abs=1e-12)
    assert out["per_seed"] == pytest.approx([0.5, 0.5, 0.5])


@pytest.mark.slow
def test_quick_profile_end_to_end_cache_runs_selection_and_report(tmp_path, comfy):
    """The quick profile: JSON shape, pictures, generated report, then a rerun that trains nothing,
    a ``--runs`` rerun of one configuration, an added run with extra trainer options, ``--report-only``."""
    from safetensors import safe_open

    from instruct_identity.benchmarks.toy import profiles, report, run

    work = tmp_path / "toy"
    demo = tmp_path / "demo"
    args = ["--quick", "--work", str(work), "--workers", "1", "--demo", str(demo)]
    assert run.main(args) == 0
    results = json.loads((work / "results.json").read_text())
    assert {"base", "zero_shot", "runs"} <= set(results)
    assert 0 <= results["base"]["part_color_acc"] <= 1 and 0 <= results["base"]["sil_iou"] <= 1
    probes = results["base"]["caption_probe"]  # one per pre-training stage, each on its own weights
    assert len(probes) == 1 + len(profiles.PROFILES["quick"].pretrain_more) and len({p["key"] for p in probes}) == len(probes)
    for p in probes:
        assert set(p["full"]) == set(p["pose"]) == {f"{s:g}" for s in (0.95, 0.8, 0.6)}
        assert all(0 <= v <= 1 for v in [*p["full"].values(), *p["pose"].values()])
    assert "Does the base read the colour words?" in (work / "report.md").read_text()
    assert set(results["zero_shot"]) == {"zero-shot", "zero-shot-plain", "zero-shot-inpaint"}
    names = {c["name"] for c in run.CONFIGS}
    assert {(r["name"], r["split"]) for r in results["runs"]} == {(n, s) for n in names for s in ("distinct", "near")}
    for r in results["runs"]:
        assert {"name", "loss", "preset", "seed", "split", "metrics"} <= set(r)
        for key in ("part_color_acc", "charis_color", "sil_iou", "copy_paste"):
            assert 0.0 <= r["metrics"][key] <= 1.0, (r["name"], key)
        assert math.isfinite(r["heldout_loss"]) and Path(r["lora"]).is_file() and r["steps"] == 3
        with safe_open(r["lora"], "pt") as f:
            meta = f.metadata()
        assert (meta["preset"], meta["loss"], meta["mode"]) == (r["preset"], r["loss"], "identity")
    assert results["oracles"]["distinct"]["ground truth"]["sil_iou"] == 1.0
    images = work / "published-images"
    for name in list(names) + ["zero-shot", "base_text_to_image", "base_sheets"]:
        assert (images / f"{name}.png").is_file(), name
    text = (work / "report.md").read_text()
    b = results["summary"]["B-masked"]["distinct"]["part_color_acc"]["mean"]
    assert f"| B-masked | B | masked | 1 | {b:.3f}" in text  # numbers come from the JSON
    # the demo export: the base, the LoRA, references; provenance; loadable
    from instruct_identity.miniature import load_base

    loaded = load_base(demo / "models" / "ii_demo_base.safetensors")
    assert loaded.provenance["command"].endswith("--quick") and "metrics_text_to_image" in loaded.provenance
    with safe_open(str(demo / "models" / "ii_demo_identity_lora.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["ii_provenance"])["run"] == "B-masked"
    assert len(list((demo / "references").glob("*.png"))) == run.DEMO_REFERENCES
    # a rerun trains nothing; --runs reruns only what it names (here: from the cache as well)
    assert run.main(args) == 0
    again = json.loads((work / "results.json").read_text())
    assert again["cached_jobs"] == again["jobs"]
    assert again["runs"] == results["runs"]
    # a new configuration with extra trainer options: only it runs
    extra = {"name": "B-masked-r2", "preset": "B", "loss": "masked", "label": "rank 2", "extra": {"network_dim": 2},
             "seeds": 2}  # its own seed count (the profile's is 1)
    prof = profiles.PROFILES["quick"]
    try:
        profiles.PROFILES["quick"] = type(prof)(**{**prof.__dict__, "extra_runs": [extra]})
        assert run.main(args + ["--runs", "B-masked-r2"]) == 0
    finally:
        profiles.PROFILES["quick"] = prof
    added = json.loads((work / "results.json").read_text())
    assert added["jobs"] - added["cached_jobs"] == 2
    assert sorted(r["seed"] for r in added["runs"] if r["name"] == "B-masked-r2" and r["split"] == "distinct") == [0, 1]
    assert any(r["name"] == "B-masked-r2" and r["extra"] == {"network_dim": 2} for r in added["runs"])
    with pytest.raises(SystemExit):
        run.main(args + ["--runs", "no-such-run"])
    # the report is a function of the JSON alone
    (work / "report.md").unlink()
    assert run.main(["--quick", "--work", str(work), "--report-only"]) == 0
    assert (work / "report.md").read_text() == report.render(added, "published-images")


def test_sheet_captions_leave_the_colours_to_the_other_view_at_the_stage_share(toy):
    data, _, sprites = toy
    import random

    c = sprites.all_characters()[5]
    poses = [sprites.ALL_POSES[2], sprites.ALL_POSES[9]]
    for describe, expect in ((0.0, 0), (1.0, 200)):
        rng = random.Random(0)
        caps = [data.pretrain_sheet_caption(c, poses, rng, describe) for _ in range(200)]
        assert sum(c.describe() in cap for cap in caps) == expect
    rng = random.Random(0)
    share = np.mean([c.describe() in data.pretrain_sheet_caption(c, poses, rng, 0.2) for _ in range(2000)])
    assert 0.15 < share < 0.25


def test_the_profile_reproduces_the_published_base_keys(comfy):
    """Options added to the pre-training config must not move the keys of bases already cached (and
    published): the full profile's stages hash to the keys the published JSON records."""
    from instruct_identity.benchmarks.toy import pretrain
    from instruct_identity.benchmarks.toy.profiles import PROFILES
    from instruct_identity.miniature import components, sprites

    published = json.loads((REPO / "docs" / "toy-replication.json").read_text())["base"]["pretrain"]
    stages = published.get("stages") or [published]
    p = PROFILES["full"]
    unet = components.unet_config(**p.unet)
    te = components.WordEncoder()  # what the run builds
    train, _ = sprites.split_characters(100_000, 200, seed=0)
    init = None
    for stage, settings in zip(stages, (p.pretrain, *p.pretrain_more), strict=True):
        cfg = pretrain.PretrainConfig(seed=0, size=p.size, **settings)
        key = pretrain.cache_key(unet, cfg, te.identity, train, init)
        assert key == stage["key"], settings
        init = key
    bumped = pretrain.PretrainConfig(seed=0, size=p.size, **{**p.pretrain, "sheet_describe": 0.3})
    assert pretrain.cache_key(unet, bumped, te.identity, train) != stages[0]["key"]


def test_jobs_run_longest_first_and_return_in_job_order(monkeypatch, tmp_path):
    from instruct_identity.benchmarks.toy import jobs

    ran = []
    monkeypatch.setattr(jobs, "run_job", lambda job, worker=False: ran.append(job["name"]) or {"name": job["name"]})
    common = {"work": str(tmp_path), "lora": {"steps": 200}, "base_key": "k", "seed": 0}
    todo = [{**common, "kind": "zero_shot", "name": "z", "spec": None},
            {**common, "kind": "lora", "name": "short", "spec": {"seed": 0, "extra": {}}},
            {**common, "kind": "lora", "name": "long", "spec": {"seed": 0, "extra": {"max_train_steps": 2400}}}]
    assert [jobs.training_steps(j) for j in todo] == [0, 200, 2400]
    out = jobs.run_all(todo, workers=1)
    assert ran == ["long", "short", "z"]
    assert [r["name"] for r in out] == ["z", "short", "long"]


def test_lora_settings_reach_the_trainer_and_a_run_can_override_them(tmp_path):
    from instruct_identity.benchmarks.toy import lora_runs
    from instruct_identity.training.config import from_dict

    s = lora_runs.LoraSettings(steps=5, batch=2, rank=4, lr=5e-3, timestep_sampling="shift", shift=2.5,
                               scheduler="cosine", warmup=0.2)
    manifest = tmp_path / "pairs.jsonl"
    for extra, expect in (({}, ("shift", 2.5)), ({"timestep_sampling": "uniform"}, ("uniform", 2.5))):
        spec = lora_runs.RunSpec("r", "B", "masked", 0, extra)
        cfg = from_dict(lora_runs.trainer_options(spec, s, manifest, tmp_path / "o", tmp_path / "c", 32))
        assert (cfg.timestep_sampling, cfg.discrete_flow_shift) == expect
        assert (cfg.learning_rate, cfg.max_train_steps, cfg.network_dim) == (5e-3, 5, 4)
        assert (cfg.lr_scheduler, cfg.lr_warmup_steps) == ("cosine", 0.2)


# --------------------------------------------------------------------------------------------------
# several references (benchmarks.toy.multi, issue 21)


def test_scene_metrics_on_oracles(toy):
    """The ground-truth scene scores every part right and leaks nothing; the scene with the two
    characters' colours swapped leaks every part."""
    from instruct_identity.benchmarks.toy import multi

    p = multi.PROFILES["quick"]
    items = multi.scene_items(p, 0)
    for it in items:
        assert multi.distinct_parts(it.a.pair.char, it.b.pair.char)
        assert not (toy[2].silhouette(it.a.target_masks) & toy[2].silhouette(it.b.target_masks)).any()
    truth = np.stack([it.a.target.astype(np.float32) / 255 for it in items])
    ok = multi.score_scenes(truth, items)
    assert ok["part_color_acc"]["mean"] == 1.0 and ok["leakage"]["mean"] == 0.0 and ok["sil_iou"]["mean"] == 1.0
    swapped = []
    for it in items:
        a, b = it.a.pair, it.b.pair
        swapped.append(multi.render_scene(b.char, a.char, a.tgt_pose, b.tgt_pose, p.size)[0].astype(np.float32) / 255)
    bad = multi.score_scenes(np.stack(swapped), items)
    # parts whose masks the two figures share the shape of are read in the other's colour
    assert bad["leakage"]["mean"] > 0.5 and bad["part_color_acc"]["mean"] < 0.5


def test_views_items_show_one_character_from_other_poses(toy):
    from instruct_identity.benchmarks.toy import multi

    items = multi.views_items(multi.PROFILES["quick"], "distinct", 0)
    for it in items:
        assert len(it.views) == 3 and np.array_equal(it.views[0], it.item.reference)
        assert len({v.tobytes() for v in it.views}) == 3 and not any(np.array_equal(v, it.item.target) for v in it.views)


@pytest.mark.slow
def test_multi_quick_profile_end_to_end(tmp_path, comfy):
    """Every LoRA of the several-reference measurement trains through the pack's trainer, is
    evaluated, and the JSON, the pictures and the report section come out; a rerun trains nothing."""
    from instruct_identity.benchmarks.toy import multi

    work = tmp_path / "multi"
    args = ["--quick", "--work", str(work), "--workers", "1"]
    assert multi.main(args) == 0
    res = json.loads((work / "results.json").read_text())["multi"]
    loras = {r["lora"] for r in res["runs"]}
    assert loras == set(multi.LORAS) | {multi.SHIPPED}
    s = res["summary"]
    assert set(s["two_characters"]) == {"unbound", "bound"} and len(s["strength"]) == len(multi.PROFILES["quick"].strengths)
    for r in res["runs"]:
        if r["lora"] != multi.SHIPPED:
            assert r["train"]["steps"] == multi.PROFILES["quick"].steps
    assert all((work / "images" / name).is_file() for name in res["images"].values())
    text = (work / "report.md").read_text()
    assert "## Several references" in text and "leakage" in text and "strength" in text
    assert multi.main(args) == 0
    again = json.loads((work / "results.json").read_text())["multi"]
    assert all(r.get("cached") for r in again["runs"])


def test_speckle_counts_stray_colours_inside_parts_not_patterns_or_edges(toy):
    data, evaluate, sprites = toy
    char = sprites.Character("red", "blue", "green", "striped", "yellow")
    img, masks = sprites.render(char, sprites.Pose("center", "large", "standing"), 32)
    clean = img.astype(np.float32) / 255.0
    assert evaluate.speckle(clean, masks) == 0.0          # stripes are the torso's own shade, not speckle
    inner = evaluate._inner(masks["torso"])
    ys, xs = np.nonzero(inner)
    dirty = clean.copy()
    dirty[ys[:5], xs[:5]] = np.array(sprites.PALETTE["pink"]) / 255.0
    total = sum(int(evaluate._inner(m).sum()) for m in masks.values() if m.any())
    assert evaluate.speckle(dirty, masks) == pytest.approx(5 / total)
    shifted = np.ones_like(clean)                          # the whole figure drawn one pixel to the right
    shifted[:, 1:] = clean[:, :-1]
    assert evaluate.speckle(shifted, masks) < 0.5 * evaluate.speckle(np.roll(clean, 4, axis=1), masks)
    assert math.isnan(evaluate.speckle(clean, {"head": np.zeros((32, 32), bool)}))
