"""Pluggable pair filters. A filter is any callable ``f(reference, target, caption) -> verdict`` on
``[H, W, 3]`` uint8 pictures, where the verdict is a :class:`Verdict`, a bool, or ``(bool, reason)``.

``charis`` wraps the CHARIS evaluator (:mod:`instruct_identity.charis`) in filter mode: identity,
colour, quality and diversity thresholds; see :func:`charis_filter`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.errors import InputError

log = logging.getLogger(__name__)

FILTER_MODES = ("off", "charis")


@dataclass
class Verdict:
    keep: bool
    reason: str = ""
    scores: dict[str, Any] = field(default_factory=dict)


PairFilter = Callable[[np.ndarray, np.ndarray, str], Any]


def as_verdict(value: Any) -> Verdict:
    if isinstance(value, Verdict):
        return value
    if isinstance(value, bool):
        return Verdict(value, "" if value else "rejected by the filter")
    if isinstance(value, tuple) and value and isinstance(value[0], bool):
        return Verdict(value[0], str(value[1]) if len(value) > 1 else "", dict(value[2]) if len(value) > 2 else {})
    keep = getattr(value, "passed", getattr(value, "keep", None))
    if isinstance(keep, bool):
        reason = getattr(value, "reason", "") or ("" if keep else "rejected by the filter")
        scores = getattr(value, "scores", None)
        if scores is None and hasattr(value, "to_dict"):
            scores = value.to_dict()
        return Verdict(keep, str(reason), dict(scores or {}))
    raise TypeError(f"a pair filter returned {type(value).__name__}; return a bool, (bool, reason) or a Verdict")


def _charis():
    """The CHARIS package, or ``None`` where it is not importable."""
    try:
        return importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.charis")
    except Exception as e:  # noqa: BLE001 - not installed, or broken
        log.debug("CHARIS not importable: %s", e)
        return None


def available_modes() -> list[str]:
    charis = _charis()
    return ["off"] + (["charis"] if charis is not None and hasattr(charis, "Evaluator") else [])


def charis_filter(evaluator=None, config_path: str | None = None, spec=None) -> PairFilter:
    """CHARIS in filter mode as a pair filter: a pair is kept when its CHARIS composite passes
    (every filter axis clears its threshold: identity, colour, quality, diversity).

    ``evaluator``: a ready :class:`charis.Evaluator` (e.g. from the CHARIS Loader node); otherwise one
    is built from ``config_path`` (a CHARIS TOML/JSON naming the local models). ``spec``: a
    :class:`charis.CompositeSpec` (default: filter mode's weights and thresholds)."""
    charis = _charis()
    if charis is None or not hasattr(charis, "Evaluator"):
        raise InputError("filter", "CHARIS filtering is not available in this installation.",
                         "Update Instruct Identity (the charis package provides it), or set the filter to 'off'.")
    from PIL import Image

    from ..charis.images import from_pil

    if evaluator is None:
        evaluator = charis.Evaluator(charis.load_config(config_path, {"mode": "filter"}))
    if spec is None:  # the evaluator's own composite settings (weights, thresholds, prompt criterion) in filter mode
        own = getattr(evaluator, "spec", None)
        spec = own if own is not None and getattr(own, "mode", None) == "filter" else charis.CompositeSpec(mode="filter")

    def run(reference: np.ndarray, target: np.ndarray, caption: str) -> Verdict:
        result = evaluator.score_pair(from_pil(Image.fromarray(reference), "reference"),
                                      from_pil(Image.fromarray(target), "target"), caption, spec=spec)
        if not result.ok:
            return Verdict(False, f"CHARIS could not score the pair ({result.error})")
        scores = {a: result.value(a) for a in result.axes}
        comp = result.composite
        if comp is None:
            missing = ", ".join(f"{a}: {r.missing}" for a, r in result.axes.items() if r.missing) or "no axis"
            return Verdict(False, f"CHARIS gave no score ({missing})", scores)
        scores["charis"] = comp.value
        if comp.passed:
            return Verdict(True, "", scores)
        why = "; ".join(f"{a} {why}" for a, why in (comp.failed or {}).items()) or f"composite {comp.value}"
        return Verdict(False, f"CHARIS: {why}", scores)

    return run


def make_filter(mode: str, evaluator=None, config_path: str | None = None) -> PairFilter | None:
    if mode not in FILTER_MODES:
        raise InputError("filter", f"'{mode}' is not a filter mode.", f"Choose one of {', '.join(FILTER_MODES)}.")
    return None if mode == "off" else charis_filter(evaluator, config_path)
