"""Plain result dataclasses (-> JSON and back). A missing axis has ``value=None`` and a reason."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

RESULT_VERSION = 1


@dataclass
class AxisResult:
    name: str
    value: float | None
    missing: str | None = None  # why there is no value (None when there is one)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, name: str, value: float, **details) -> "AxisResult":
        value = float(value)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            return cls(name, None, f"the {name} score came out as {value}, not a number in [0, 1]", details)
        return cls(name, value, None, details)

    @classmethod
    def absent(cls, name: str, reason: str, **details) -> "AxisResult":
        return cls(name, None, reason, details)

    @property
    def available(self) -> bool:
        return self.value is not None


@dataclass
class Composite:
    mode: str
    value: float | None
    axes_used: list[str]
    axes_missing: list[str]
    weights: dict[str, float]
    complete: bool
    passed: bool | None = None  # filter mode only
    failed: dict[str, str] = field(default_factory=dict)  # axis -> why it failed its threshold
    label: str = "CHARIS"  # "CHARIS", "custom CHARIS: <axes>" or "partial CHARIS: <axes>"
    reason: str | None = None  # why there is no value, or why it is partial

    @property
    def partial(self) -> bool:
        """A value over some of the axes only (never to be averaged with complete ones)."""
        return self.value is not None and not self.complete

    def headline(self) -> str:
        """One line: "CHARIS 0.712", "partial CHARIS: color 0.843" or "CHARIS absent: <reason>"."""
        if self.value is None:
            return f"CHARIS absent: {self.reason or 'no axis computed'}"
        return f"{self.label} {self.value:.3f}"


@dataclass
class PairResult:
    id: str
    prompt: str
    axes: dict[str, AxisResult]
    composite: Composite | None
    reference: str | None = None
    generated: str | None = None
    error: str | None = None  # the whole item failed (unreadable image, ...)
    seconds: float | None = None
    vlm_calls: int = 0
    version: int = RESULT_VERSION

    @property
    def ok(self) -> bool:
        return self.error is None

    def value(self, axis: str) -> float | None:
        a = self.axes.get(axis)
        return a.value if a else None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """One line of ASCII JSON: every non-ASCII character escaped, so no line separator other than
        ``\n`` (U+2028, U+0085, ...) can ever appear raw in a results file."""
        return json.dumps(self.to_dict(), ensure_ascii=True, allow_nan=False, default=_jsonable)

    @classmethod
    def from_dict(cls, d: dict) -> "PairResult":
        d = dict(d)
        axes = {k: AxisResult(**v) for k, v in (d.pop("axes", None) or {}).items()}
        comp = d.pop("composite", None)
        if comp and not comp.get("complete", True) and "label" not in comp:  # written before labels existed
            comp["label"] = "partial CHARIS: " + ", ".join(comp.get("axes_used") or [])
        return cls(axes=axes, composite=Composite(**comp) if comp else None, **d)

    @classmethod
    def failure(cls, item_id: str, error: str, prompt: str = "", reference: str | None = None,
                generated: str | None = None) -> "PairResult":
        return cls(id=item_id, prompt=prompt, axes={}, composite=None, reference=reference, generated=generated,
                   error=error)


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
