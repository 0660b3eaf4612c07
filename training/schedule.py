"""Learning-rate schedules (kohya's / transformers' names and formulas), as a pure function of the step."""

from __future__ import annotations

import math


def warmup_steps(value: float, total: int) -> int:
    """``lr_warmup_steps``: a step count, or (kohya) a fraction of the total when below 1."""
    return int(round(value * total)) if isinstance(value, float) and value < 1 else int(value)


def lr_factor(step: int, *, scheduler: str, total: int, warmup: int = 0, cycles: int = 1, power: float = 1.0,
              min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if scheduler in ("constant", "constant_with_warmup"):
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if scheduler == "linear":
        return max(0.0, 1.0 - progress)
    if scheduler == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if scheduler == "cosine_with_restarts":
        if progress >= 1.0:
            return min_ratio
        return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0)))
    if scheduler == "polynomial":
        return min_ratio + (1 - min_ratio) * (1.0 - progress) ** power
    raise ValueError(f"unknown lr_scheduler {scheduler!r}")


def lr_lambda(**kwargs):
    """A plain function for ``torch.optim.lr_scheduler.LambdaLR``. (LambdaLR saves the attributes of
    callable objects in its state; a function is not saved, so a resumed run uses its own config's
    schedule, e.g. a longer ``max_train_steps``.)"""

    def factor(step: int) -> float:
        return lr_factor(step, **kwargs)

    return factor
