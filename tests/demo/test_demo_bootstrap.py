"""scripts/bootstrap.sh's device choice (the accelerator torch sees, else the CPU; II_DEVICE forces it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bootstrap.sh"


def device_flag(python: str, device: str | None) -> str:
    """Run bootstrap.sh's device_flag function alone, with ``python`` as the venv's Python."""
    body = SCRIPT.read_text()
    start = body.index("device_flag() {")
    func = body[start:body.index("\n}\n", start) + 3]
    env = {**os.environ, "py": python}
    env.pop("II_DEVICE", None)
    if device is not None:
        env["II_DEVICE"] = device
    out = subprocess.run(["bash", "-c", f'log() {{ :; }}\n{func}\ndevice_flag'], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def fake_python(tmp_path: Path, accelerator: bool) -> str:
    """A stand-in for the venv's Python whose torch does (not) see an accelerator."""
    stub = tmp_path / f"python-{accelerator}"
    stub.write_text(f"#!/bin/sh\nexit {0 if accelerator else 1}\n")
    stub.chmod(0o755)
    return str(stub)


def test_auto_uses_the_accelerator_only_when_torch_sees_one(tmp_path):
    assert device_flag(fake_python(tmp_path, True), None) == ""
    assert device_flag(fake_python(tmp_path, False), None) == "--cpu"
    assert device_flag(fake_python(tmp_path, True), "cpu") == "--cpu"
    assert device_flag(fake_python(tmp_path, False), "gpu") == ""
    # the real check, with this venv's torch: on a machine without CUDA/MPS/XPU it is the CPU
    import torch

    sees = torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    assert device_flag(sys.executable, "auto") == ("" if sees else "--cpu")


def test_unknown_device_is_refused_before_anything_starts():
    env = {**os.environ, "II_DEVICE": "tpu", "II_SETUP": "0", "II_DEMO": "0"}
    out = subprocess.run([str(SCRIPT), "run"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "II_DEVICE=tpu" in out.stderr
