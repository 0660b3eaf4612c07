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
                    pretrain_more=(dict(steps=1000, batch=32, sheet_batch=16, sheet_ratio=0.5, lr=5e-4, warmup=50),
                                   # sheets whose captions mostly leave the colours to the other view (in-context copying)
                                   dict(steps=800, batch=32, sheet_batch=16, sheet_ratio=0.5, sheet_describe=0.2, lr=3e-4,
                                        warmup=30)),
                    lora=dict(steps=200, batch=16, rank=16, lr=5e-3, timestep_sampling="shift", shift=3.0,
                              scheduler="cosine", warmup=0.05),
                    train_pairs=2000, eval_items=32, heldout_pairs=24, sample_steps=24, seeds=3,
                    extra_runs=[
                        # the identity LoRA at a longer budget: the targets are read on it
                        {"name": "B-masked-2400", "preset": "B", "loss": "masked", "seeds": 3,
                         "extra": {"max_train_steps": 2400},
                         "label": "preset B, masked loss, 2400 steps (the identity LoRA at a longer budget)"},
                        # the paper's t ~ U(0, 1) at the ablation's budget, paired against B-masked
                        {"name": "B-masked-uniform", "preset": "B", "loss": "masked", "seeds": 3,
                         "extra": {"timestep_sampling": "uniform"},
                         "label": "preset B, masked loss, uniform timesteps (the paper's t ~ U(0, 1))"}]),
    "quick": Profile("quick", size=32, unet=dict(hidden=64, heads=2, double=1, single=1),
                     pretrain=dict(steps=6, batch=8, sheet_batch=4, sheet_ratio=0.5, lr=1e-3, warmup=2),
                     pretrain_more=(dict(steps=3, batch=8, sheet_batch=4, sheet_ratio=0.5, lr=5e-4, warmup=1),),
                     lora=dict(steps=3, batch=4, rank=4, lr=1e-3, timestep_sampling="shift", shift=3.0),
                     train_pairs=24, eval_items=4, heldout_pairs=4, sample_steps=3, seeds=1,
                     t2i_samples=4, grid_items=4),
}
