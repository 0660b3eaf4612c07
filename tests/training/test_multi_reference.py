"""Training with several references: manifests with ``references: [...]``, ``reference_views``,
batches of one K, the masked loss over the target panel only, the K range in the LoRA metadata."""

import json

import pytest
import torch
from ii_train_helpers import write_image
from safetensors import safe_open

from instruct_identity.core import layout
from instruct_identity.core.errors import InputError
from instruct_identity.training import objective
from instruct_identity.training.dataset import check, read_dataset, reference_views
from instruct_identity.training.trainer import train


def _multi_pairs(root, counts, size=(64, 64)):
    """A manifest whose line i has ``counts[i]`` references (1 -> the single ``reference`` field)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, k in enumerate(counts):
        write_image(root / f"tgt{i}.png", 1000 + i, size)
        refs = [write_image(root / f"ref{i}_{j}.png", 10 * i + j, size).name for j in range(k)]
        row = {"target": f"tgt{i}.png", "caption": f"character {i}"}
        row.update({"reference": refs[0]} if k == 1 else {"references": refs})
        lines.append(json.dumps(row))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def _defaults(**kw):
    d = {"resolution": 64, "enable_bucket": False, "min_bucket_reso": 64, "max_bucket_reso": 64, "bucket_reso_steps": 64,
         "bucket_no_upscale": False, "batch_size": 2, "caption_extension": ".txt", "num_repeats": 1,
         "allow_size_mismatch": False}
    d.update(kw)
    return d


def test_manifest_lines_with_several_references_are_read_and_checked(tmp_path):
    path = _multi_pairs(tmp_path, [1, 3])
    with path.open("a") as f:
        f.write(json.dumps({"target": "tgt0.png", "caption": "x", "reference": "ref0_0.png",
                            "references": ["ref0_0.png"]}) + "\n")
        f.write(json.dumps({"target": "tgt0.png", "caption": "x", "references": ["ref1_0.png", "gone.png"]}) + "\n")
    specs, pairs, problems = read_dataset(path, _defaults(), "identity")
    report = check(pairs, problems)
    assert [len(p.references) for p in report.pairs] == [1, 3]
    text = report.text()
    assert "both reference and references" in text and "missing reference 2 file" in text


def test_reference_views_are_bounded_and_refuse_nonsense():
    assert reference_views([1, 3], "v") == (1, 3) and reference_views(2, "v") == (2, 2) and reference_views(None, "v") is None
    with pytest.raises(InputError, match="lo <= hi"):
        reference_views([3, 1], "v")
    with pytest.raises(InputError, match="more than"):
        reference_views([1, 99], "v")


def test_flow_inputs_with_k_references_mask_only_the_target():
    t, refs = torch.randn(2, 4, 2, 3), [torch.randn(2, 4, 2, 3) for _ in range(3)]
    noise = torch.randn(2, 4, 2, 12)
    inp = objective.flow_inputs(t, refs, noise, torch.tensor([0.3, 0.7]), "identity", "masked")
    assert inp.model_input.shape == (2, 4, 2, 12)
    _, rs = layout.split_references(inp.model_input, 3)
    assert all(torch.equal(a, b) for a, b in zip(rs, refs))         # the references stay clean
    assert inp.mask[..., :3].eq(1).all() and inp.mask[..., 3:].eq(0).all()
    one = objective.flow_inputs(t, refs[0], noise[..., :6], torch.tensor([0.3, 0.7]), "identity", "masked")
    same = objective.flow_inputs(t, [refs[0]], noise[..., :6], torch.tensor([0.3, 0.7]), "identity", "masked")
    assert torch.equal(one.model_input, same.model_input) and torch.equal(one.velocity_target, same.velocity_target)
    cons = objective.flow_inputs(t, refs, noise, torch.tensor([0.3, 0.7]), "identity", "full_consistent")
    assert cons.velocity_target[..., 3:].eq(0).all()


@pytest.mark.parametrize("attention", ["joint", "one_way"])
def test_training_with_one_to_three_views_buckets_by_k_and_records_the_range(tiny_cfg, components, tmp_path, attention):
    pairs = _multi_pairs(tmp_path / "data", [3, 3, 2, 1])
    toml = tmp_path / "data" / "dataset.toml"
    toml.write_text('[general]\nresolution = 64\nbatch_size = 2\nreference_views = [1, 3]\n\n'
                    '[[datasets]]\n  [[datasets.subsets]]\n  manifest = "pairs.jsonl"\n')
    cfg = tiny_cfg(dataset_config=str(toml), max_train_steps=6, network_dim=4, save_state=False,
                   reference_attention=attention)
    seen = []
    from instruct_identity.training import trainer as T

    original = T.step_loss

    def spy(cfg_, patcher, forward, module, mb, micro_step, patch_size):
        seen.append(mb.references)
        if mb.references > 1:
            assert isinstance(mb.reference, list) and all(r.shape == mb.target.shape for r in mb.reference)
        return original(cfg_, patcher, forward, module, mb, micro_step, patch_size)

    T.step_loss = spy
    try:
        result = train(cfg, components())
    finally:
        T.step_loss = original
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert set(seen) - {1} and max(seen) <= 3    # several K were trained, each batch of one K
    with safe_open(str(result.lora_path), "pt") as f:
        meta = f.metadata()
    assert meta["references"] == "1-3" and meta["reference_attention"] == attention


def test_views_are_drawn_per_batch_from_the_seed_and_every_epoch_has_as_many_batches(tiny_cfg, components, tmp_path):
    from instruct_identity.training.data import Item, TrainData

    pairs = _multi_pairs(tmp_path / "d", [3, 3, 3, 3, 3])
    toml = tmp_path / "d" / "dataset.toml"
    toml.write_text('[general]\nresolution = 64\nbatch_size = 2\nreference_views = [1, 3]\n\n'
                    '[[datasets]]\n  [[datasets.subsets]]\n  manifest = "pairs.jsonl"\n')
    specs, ps, problems = read_dataset(toml, _defaults(), "identity")
    items = [Item(f"t{i}", "r0", "c", (64, 64), 0, 1, "s", ("r1", "r2"), p.views) for i, p in enumerate(ps)]
    a = TrainData(items, specs, None, None, seed=0, world=1)
    b = TrainData(items, specs, None, None, seed=0, world=1)
    ks = [a.batch_views(e) for e in range(8)]
    assert ks == [b.batch_views(e) for e in range(8)]
    # a micro-step means the same batch whatever K the batches drew: the epoch length never changes
    assert all(len(a.plan(e)) == a.batches_per_epoch == 3 for e in range(8))
    assert {k for row in ks for k in row} == {1, 2, 3}
    for e in range(4):
        for chunk, k in zip(a.plan(e), a.batch_views(e)):
            for i in chunk:
                v = a.views(e, i, k)
                assert len(v) == k and len(set(v)) == k and v == b.views(e, i, k) and max(v) < 3
    assert a.reference_range == (1, 3)
    with pytest.raises(ValueError):
        a.views(0, 0, 4)
