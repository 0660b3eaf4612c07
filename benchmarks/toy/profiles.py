"""The two profiles of the toy replication: ``full`` (the documented run) and ``quick`` (CI smoke test)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    name: str
    size: int
    unet: dict
    pretrain: dict
    lora: dict
    train_pairs: int
    eval_items: int           # per evaluation split
    heldout_pairs: int
    sample_steps: int
    seeds: int                # training seeds per configuration
    t2i_samples: int = 64
    t2i_cfg: float = 4.0
    grid_items: int = 12
    splits: tuple = ("distinct", "near")
    extra_runs: list = field(default_factory=list)
    pretrain_more: tuple = ()   # further pre-training stages, each continuing from the previous one


PROFILES = {
    "full": Profile("full", size=32, unet=dict(hidden=192, heads=3, double=2, single=2),
                    pretrain=dict(steps=2000, batch=32, sheet_batch=16, sheet_ratio=0.0, lr=1e-3, warmup=60),
                    pretrain_more=(dict(steps=1000, batch=32, sheet_batch=16, sheet_ratio=0.5, lr=5e-4, warmup=50),),
                    lora=dict(steps=200, batch=16, rank=16, lr=2e-3),
                    train_pairs=2000, eval_items=32, heldout_pairs=24, sample_steps=24, seeds=3,
                    extra_runs=[  # exploratory: is the LoRA's step budget what limits colour transfer?
                        {"name": "B-masked-800", "preset": "B", "loss": "masked", "seeds": 1,
                         "extra": {"max_train_steps": 800},
                         "label": "preset B, masked loss, 800 steps (exploratory, one seed)"},
                        {"name": "B-masked-2400", "preset": "B", "loss": "masked", "seeds": 3,
                         "extra": {"max_train_steps": 2400},
                         "label": "preset B, masked loss, 2400 steps (exploratory: the LoRA's step budget)"},
                        {"name": "B-one_way-800", "preset": "B", "loss": "masked", "seeds": 1,
                         "extra": {"reference_attention": "one_way", "max_train_steps": 800},
                         "label": "preset B, masked loss, one-way reference attention, 800 steps (exploratory, one seed)"}]),
    "quick": Profile("quick", size=32, unet=dict(hidden=64, heads=2, double=1, single=1),
                     pretrain=dict(steps=6, batch=8, sheet_batch=4, sheet_ratio=0.5, lr=1e-3, warmup=2),
                     pretrain_more=(dict(steps=3, batch=8, sheet_batch=4, sheet_ratio=0.5, lr=5e-4, warmup=1),),
                     lora=dict(steps=3, batch=4, rank=4, lr=1e-3),
                     train_pairs=24, eval_items=4, heldout_pairs=4, sample_steps=3, seeds=1,
                     t2i_samples=4, grid_items=4),
}
