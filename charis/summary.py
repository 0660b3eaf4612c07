"""What a set of results adds up to, without mixing what is not comparable.

The mean CHARIS is taken over complete composites only. Partial composites ("partial CHARIS: color,
quality") are averaged only with partial composites over the same axes, in their own line; items
with no composite are counted. Axis coverage says, per axis, how many items have it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .results import PairResult


@dataclass
class Group:
    label: str
    count: int
    mean: float


@dataclass
class Summary:
    items: int = 0
    failed: int = 0
    mode: str = ""
    complete: Group | None = None  # the CHARIS mean over complete composites of the mode's own axes
    partial: list[Group] = field(default_factory=list)  # one per other label (partial or custom axes)
    absent: int = 0  # scored items with no composite
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)  # axis -> (items with it, items scored)

    def lines(self) -> list[str]:
        out = [f"{self.items} results, {self.failed} failed" + (f"; mode {self.mode}" if self.mode else "")]
        if self.complete:
            out.append(f"mean {self.complete.label} {self.complete.mean:.4f} over {self.complete.count} complete item(s)")
        else:
            out.append("mean CHARIS: n/a (no item has every axis of the composite)")
        for g in self.partial:
            kind = "partial" if g.label.startswith("partial") else "custom axes"
            out.append(f"mean {g.label} {g.mean:.4f} over {g.count} item(s) ({kind}: not comparable with CHARIS)")
        if self.absent:
            out.append(f"{self.absent} item(s) without a composite (an axis is missing; see each item)")
        if self.coverage:
            out.append("axis coverage: " + ", ".join(f"{a} {n}/{t}" for a, (n, t) in self.coverage.items()))
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def summarize(results: list[PairResult], axes: list[str] | None = None) -> Summary:
    """The :class:`Summary` of ``results``; ``axes`` orders the coverage (default: as they appear)."""
    s = Summary(items=len(results), failed=sum(1 for r in results if not r.ok))
    scored = [r for r in results if r.ok]
    s.mode = next((r.composite.mode for r in scored if r.composite), "")
    complete: dict[str, list[float]] = {}
    partial: dict[str, list[float]] = {}
    for r in scored:
        c = r.composite
        if c is None or c.value is None:
            s.absent += 1
        elif c.complete:
            complete.setdefault(c.label, []).append(c.value)
        else:
            partial.setdefault(c.label, []).append(c.value)
    vals = complete.pop("CHARIS", None)
    if vals:
        s.complete = Group("CHARIS", len(vals), sum(vals) / len(vals))
    s.partial = [Group(k, len(v), sum(v) / len(v)) for k, v in {**complete, **partial}.items()]
    order = list(axes or [])
    for r in scored:
        order += [a for a in r.axes if a not in order]
    s.coverage = {a: (sum(1 for r in scored if r.value(a) is not None), len(scored)) for a in order}
    return s
