"""The loss log (CSV, one row per optimizer step) and its curve as a PNG (drawn with Pillow)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from ..core.files import atomic_write_bytes

COLUMNS = ("step", "loss", "lr", "seconds_per_step", "epoch")


class LossLog:
    def __init__(self, directory: Path, name: str):
        self.csv = Path(directory) / f"{name}-loss.csv"
        self.png = Path(directory) / f"{name}-loss.png"
        self.rows: list[dict] = []

    def start(self, step: int) -> None:
        """Open for a run starting after ``step``: rows of later steps (from a run that was killed
        after its last saved state) are dropped, so a resumed run's log has each step once."""
        self.rows = []
        if self.csv.is_file() and step > 0:
            with open(self.csv, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        self._rewrite()

    def add(self, step: int, loss: float, lr: float, seconds: float, epoch: int) -> None:
        row = {"step": step, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}", "seconds_per_step": f"{seconds:.4g}", "epoch": epoch}
        self.rows.append(row)
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerow(row)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.csv, buf.getvalue().encode())

    def plot(self) -> Path | None:
        if not self.rows:
            return None
        steps = [int(r["step"]) for r in self.rows]
        losses = [float(r["loss"]) for r in self.rows]
        atomic_write_bytes(self.png, curve_png(steps, losses))
        return self.png


def sustained_jump(losses: list[float], window: int = 50, factor: float = 10.0, hold: int = 20) -> int | None:
    """The index where the loss jumped above ``factor`` x the median of the ``window`` losses before it
    and stayed there for the last ``hold`` steps (a run that diverged without a NaN), or None."""
    start = len(losses) - hold
    if start < window:
        return None
    ref = statistics.median(losses[start - window:start])
    if ref > 0 and all(v > factor * ref for v in losses[start:]):
        return start
    return None


def ema(values: list[float], beta: float = 0.9) -> list[float]:
    out, m = [], None
    for v in values:
        m = v if m is None else beta * m + (1 - beta) * v
        out.append(m)
    return out


def curve_png(steps: list[int], losses: list[float], width: int = 800, height: int = 450) -> bytes:
    """Loss (grey) and its moving average (blue) against the step, with labelled axes."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 70, width - 20, 20, height - 40
    finite = [v for v in losses if math.isfinite(v)] or [0.0]
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        hi, lo = hi + 1e-3, lo - 1e-3
    s0, s1 = min(steps), max(steps)
    s1 = s1 if s1 > s0 else s0 + 1

    def xy(s, v):
        return (left + (s - s0) / (s1 - s0) * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top))

    d.rectangle([left, top, right, bottom], outline="black")
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = xy(s0, v)[1]
        d.line([left - 4, y, left, y], fill="black")
        d.text((5, y - 6), f"{v:.4g}", fill="black")
    for i in range(5):
        s = s0 + (s1 - s0) * i / 4
        x = xy(s, lo)[0]
        d.line([x, bottom, x, bottom + 4], fill="black")
        d.text((x - 10, bottom + 8), f"{int(round(s))}", fill="black")
    d.text((left, height - 18), "step", fill="black")
    d.text((left + 5, top + 5), "loss (grey), EMA 0.9 (blue)", fill="black")
    pts = [xy(s, v) for s, v in zip(steps, losses) if math.isfinite(v)]
    if len(pts) > 1:
        d.line(pts, fill=(170, 170, 170), width=1)
    sm = [xy(s, v) for s, v in zip(steps, ema(losses)) if math.isfinite(v)]
    if len(sm) > 1:
        d.line(sm, fill=(30, 90, 200), width=2)
    elif sm:
        x, y = sm[0]
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
