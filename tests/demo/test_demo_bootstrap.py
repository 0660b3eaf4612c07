"""scripts/bootstrap.sh's device choice (the accelerator torch sees, else the CPU; II_DEVICE forces it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bootstrap.sh"


def _function(name: str) -> str:
    body = SCRIPT.read_text()
    start = body.index(f"{name}() {{")
    return body[start:body.index("\n}\n", start) + 3]


def device_flag(python: str, device: str | None) -> str:
    """Run bootstrap.sh's device_flag function alone, with ``python`` as the venv's Python."""
    func = _function("device_flag")
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


def test_a_short_disk_is_named_and_pip_keeps_no_cache(tmp_path):
    """check_disk with a stand-in ``df``: short of 8 GB it says how much is free and turns pip's cache off."""
    def run(free_kb: int):
        (tmp_path / "df").write_text(f"#!/bin/sh\necho 'Filesystem 1024-blocks Used Available'\necho 'x 1 1 {free_kb}'\n")
        (tmp_path / "df").chmod(0o755)
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "here": str(tmp_path)}
        env.pop("PIP_NO_CACHE_DIR", None)
        script = f'log() {{ echo "$*" >&2; }}\n{_function("check_disk")}\ncheck_disk\necho "cache=${{PIP_NO_CACHE_DIR:-on}}"'
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)

    short = run(300 * 1024)
    assert "only 300 MB free" in short.stderr and short.stdout.strip() == "cache=1"
    roomy = run(80 * 1024 * 1024)
    assert roomy.stderr == "" and roomy.stdout.strip() == "cache=on"
