"""The CHARIS composite (Algorithm 2): a weighted geometric mean over a mode's axes.

``CHARIS = (prod_a S_a ** w_a) ** (1 / sum_a w_a)``. One poor axis pulls the whole score down and a
zero axis makes it zero. An axis that could not be computed is never replaced by a guess: the
composite is taken over the axes that exist and says which ones it used (``complete`` is False), or
is ``None`` when ``require_all`` is set or nothing is left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .results import AxisResult, Composite

BENCHMARK_AXES = ("identity", "prompt", "color", "quality")
FILTER_AXES = ("identity", "color", "quality", "diversity")
MODES = ("benchmark", "filter")

# Paper: equal weights for benchmarking.
BENCHMARK_WEIGHTS = {a: 0.25 for a in BENCHMARK_AXES}
# Our defaults for data filtering (the paper "adjusts them to prioritise fidelity" without numbers):
# identity and colour fidelity weigh most.
FILTER_WEIGHTS = {"identity": 0.35, "color": 0.25, "quality": 0.2, "diversity": 0.2}
# Our default per-axis thresholds for filter mode (an item passes when every axis clears its threshold).
FILTER_THRESHOLDS = {"identity": 0.75, "color": 0.6, "quality": 0.5, "diversity": 0.5}


@dataclass
class CompositeSpec:
    """Which axes, with which weights, and (filter mode) the thresholds an item must clear."""

    mode: str = "benchmark"
    weights: dict[str, float] | None = None  # None: the mode's defaults
    thresholds: dict[str, float] | None = None  # None: the mode's defaults ({} = no thresholds)
    min_composite: float | None = None  # filter mode: also require composite >= this
    require_all: bool = False  # True: no composite at all when an axis is missing

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode '{self.mode}' is not a CHARIS mode; choose one of {', '.join(MODES)}")
        if self.weights is None:
            self.weights = dict(BENCHMARK_WEIGHTS if self.mode == "benchmark" else FILTER_WEIGHTS)
        if self.thresholds is None:
            self.thresholds = dict(FILTER_THRESHOLDS) if self.mode == "filter" else {}
        for axis, t in self.thresholds.items():
            if not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
                raise ValueError(f"threshold of '{axis}' must be in [0, 1], got {t!r}")
        for axis, w in self.weights.items():
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise ValueError(f"weight of '{axis}' must be a finite number >= 0, got {w!r}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("the composite weights sum to zero; give at least one axis a positive weight")

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(a for a, w in self.weights.items() if w > 0)


def weighted_geometric_mean(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``(prod v_a ** w_a) ** (1 / sum w_a)`` over the keys of ``weights`` with ``w_a > 0``.

    Values must lie in [0, 1]; a zero value with a positive weight gives exactly 0.
    """
    total = 0.0
    log_sum = 0.0
    for axis, w in weights.items():
        if w <= 0:
            continue
        v = float(values[axis])
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"axis '{axis}' has value {v}, outside [0, 1]")
        if v == 0.0:
            return 0.0
        log_sum += w * math.log(v)
        total += w
    if total <= 0:
        raise ValueError("no axis with a positive weight")
    return math.exp(log_sum / total)


def composite(axes: Mapping[str, AxisResult | float | None], spec: CompositeSpec) -> Composite:
    """The composite of one item's axes under ``spec`` (values may be AxisResults, floats or None)."""
    values: dict[str, float] = {}
    missing: list[str] = []
    for axis in spec.axes:
        v = axes.get(axis)
        v = v.value if isinstance(v, AxisResult) else v
        if v is None:
            missing.append(axis)
        else:
            values[axis] = float(v)
    used = [a for a in spec.axes if a in values]
    weights = {a: float(spec.weights[a]) for a in used}
    value = None
    if used and not (missing and spec.require_all):
        value = weighted_geometric_mean(values, weights)
    result = Composite(mode=spec.mode, value=value, axes_used=used, axes_missing=missing, weights=weights,
                       complete=not missing)
    if spec.mode == "filter":
        present = {}
        for axis in spec.thresholds:
            v = axes.get(axis)
            v = v.value if isinstance(v, AxisResult) else v
            if v is not None:
                present[axis] = float(v)
        result.passed, result.failed = passes(present, value, spec)
    return result


def passes(values: Mapping[str, float], value: float | None, spec: CompositeSpec) -> tuple[bool, dict[str, str]]:
    """Filter decision: every thresholded axis present and at or above its threshold (and the
    composite at or above ``min_composite`` when set). A missing axis fails its threshold."""
    failed: dict[str, str] = {}
    for axis, t in spec.thresholds.items():
        if axis not in values:
            failed[axis] = "missing"
        elif values[axis] < t:
            failed[axis] = f"{values[axis]:.3f} < {t:.3f}"
    if spec.min_composite is not None:
        if value is None:
            failed["composite"] = "missing"
        elif value < spec.min_composite:
            failed["composite"] = f"{value:.3f} < {spec.min_composite:.3f}"
    return not failed, failed
