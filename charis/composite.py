"""The CHARIS composite (Algorithm 2): a weighted geometric mean over a mode's axes.

``CHARIS = (prod_a S_a ** w_a) ** (1 / sum_a w_a)``. One poor axis pulls the whole score down and a
zero axis makes it zero. Every composite says which axes it used, in its ``label``:

* ``"CHARIS"``: every axis of the mode (benchmark: identity, prompt, color, quality; filter:
  identity, color, quality, diversity) is present, with the mode's weights or others;
* ``"custom CHARIS: a, b"``: the weights leave some of the mode's axes out (weight 0), all the rest
  present -- a different number, not comparable with the paper's;
* ``"partial CHARIS: a, b"``: some weighted axes are missing and the composite is taken over the
  others -- only when the spec allows it (``allow_partial``); a partial composite is not comparable
  with a complete one and is never averaged with one;
* no value (``value`` None) with ``reason`` naming each missing axis and why it is missing: an axis
  that could not be computed is never replaced by a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import InputError
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
    allow_partial: bool = False  # True: a composite over the axes present when some are missing, labelled partial

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError("mode", f"'{self.mode}' is not a CHARIS mode.", f"Choose one of {', '.join(MODES)}.")
        if self.weights is None:
            self.weights = dict(BENCHMARK_WEIGHTS if self.mode == "benchmark" else FILTER_WEIGHTS)
        if self.thresholds is None:
            self.thresholds = dict(FILTER_THRESHOLDS) if self.mode == "filter" else {}
        for axis, t in self.thresholds.items():
            if isinstance(t, bool) or not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
                raise InputError(f"composite.thresholds.{axis}", f"must be a number in [0, 1], got {t!r}.",
                                 "Use e.g. 0.75, or leave the axis out to not threshold it.")
        for axis, w in self.weights.items():
            if isinstance(w, bool) or not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise InputError(f"composite.weights.{axis}", f"must be a finite number >= 0, got {w!r}.",
                                 "Use e.g. 0.25 (0 leaves the axis out).")
        if sum(self.weights.values()) <= 0:
            raise InputError("composite.weights", "the weights sum to zero.", "Give at least one axis a positive weight.")
        if self.min_composite is not None and not (0.0 <= float(self.min_composite) <= 1.0):
            raise InputError("composite.min_composite", f"must be in [0, 1], got {self.min_composite!r}.",
                             "Use e.g. 0.6, or leave it unset.")

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(a for a, w in self.weights.items() if w > 0)

    @property
    def standard(self) -> bool:
        """Whether the weighted axes are exactly the mode's own (the paper's composite)."""
        return set(self.axes) == set(BENCHMARK_AXES if self.mode == "benchmark" else FILTER_AXES)


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
            raise ValueError(f"axis '{axis}' has value {v}, outside [0, 1]")  # a bug upstream, not user input
        if v == 0.0:
            return 0.0
        log_sum += w * math.log(v)
        total += w
    if total <= 0:
        raise ValueError("no axis with a positive weight")
    return math.exp(log_sum / total)


def composite(axes: Mapping[str, AxisResult | float | None], spec: CompositeSpec) -> Composite:
    """The composite of one item's axes under ``spec`` (values may be AxisResults, floats or None),
    labelled with the axes it used (see the module docstring)."""
    values: dict[str, float] = {}
    missing: list[str] = []
    why: dict[str, str] = {}
    for axis in spec.axes:
        v = axes.get(axis)
        if isinstance(v, AxisResult):
            if v.value is None:
                why[axis] = v.missing or "not computed"
            v = v.value
        if v is None:
            missing.append(axis)
            why.setdefault(axis, "not computed")
        else:
            values[axis] = float(v)
    used = [a for a in spec.axes if a in values]
    weights = {a: float(spec.weights[a]) for a in used}
    value, reason = None, None
    if missing:
        lacking = "; ".join(f"{a}: {why[a]}" for a in missing)
        label = f"partial CHARIS: {', '.join(used)}" if used else "CHARIS"
        if not used:
            reason = f"no axis of the composite could be computed ({lacking})"
        elif spec.allow_partial:
            value = weighted_geometric_mean(values, weights)
            reason = f"partial: missing {lacking}"
        else:
            reason = (f"missing {lacking}. A composite over the other axes is not the {spec.mode} CHARIS; "
                      "ask for a partial one explicitly (allow_partial / --allow-partial) to get it, labelled partial")
    else:
        value = weighted_geometric_mean(values, weights)
        label = "CHARIS" if spec.standard else f"custom CHARIS: {', '.join(used)}"
    result = Composite(mode=spec.mode, value=value, axes_used=used, axes_missing=missing, weights=weights,
                       complete=not missing, label=label, reason=reason)
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
