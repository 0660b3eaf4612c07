"""Helpers of the hardening tests (importable as ``hard_helpers``; tests/hardening/conftest.py puts this
folder on the path): hostile files, file-tree snapshots, uploads to a running ComfyUI, CLI runs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, width: int = 12000, height: int = 12000) -> Path:
    """A valid 1-bit PNG of ``width`` x ``height`` (144 MP by default) that is only a few KB on disk."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))
    return path


def rgb_png(path: Path, seed: int = 0, size=(64, 64), **pnginfo) -> Path:
    """A structured random RGB picture (blocks of colour); ``pnginfo`` adds text chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 255, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    info = PngInfo()
    for k, v in pnginfo.items():
        info.add_text(k, v)
    Image.fromarray(small).resize((w, h), Image.NEAREST).save(path, pnginfo=info)
    return path


def gray16_png(path: Path, value: int = 32768, size=(64, 64)) -> Path:
    """A 16-bit grayscale PNG of one value (Pillow's RGB conversion clips it to white)."""
    from PIL import Image

    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16)).save(path)
    return path


def truncated_png(path: Path, seed: int = 0, size=(64, 64), keep: float = 0.5) -> Path:
    full = rgb_png(path, seed, size).read_bytes()
    path.write_bytes(full[: int(len(full) * keep)])
    return path


def grid_sheet(folder: Path, name: str, seed: int = 0, size=(128, 64), cols: int = 2,
               captions=("front view", "back view")) -> Path:
    """A saved character sheet (PNG + .sheet.json) with ``cols`` cells in one row."""
    from instruct_identity.core.regions import grid_layout
    from instruct_identity.curation.sheets import SheetInfo, write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    path = rgb_png(folder / f"{name}.png", seed, size)
    write_sidecar(path, SheetInfo(grid_layout(size[0], size[1], 1, cols, 0, list(captions)[:cols]), character=name))
    return path


# --------------------------------------------------------------------------------------------------
# "no file outside the intended output folder changed"


def snapshot(root: Path, skip=()) -> dict[str, tuple]:
    """(size, mtime_ns, kind) of every entry under ``root`` (symlinks are not followed); ``skip`` are
    relative paths (files or folders) that may change."""
    root = Path(root)
    skip = tuple(str(s).rstrip("/") for s in skip)
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(rel == s or rel.startswith(s + os.sep) for s in skip):
                continue
            st = os.lstat(os.path.join(dirpath, name))
            kind = "dir" if name in dirnames else "file"
            out[rel] = (st.st_size if kind == "file" else 0, st.st_mtime_ns if kind == "file" else 0, kind)
    return out


def changes(before: dict, after: dict) -> list[str]:
    out = [f"new {k}" for k in sorted(after.keys() - before.keys())]
    out += [f"gone {k}" for k in sorted(before.keys() - after.keys())]
    out += [f"changed {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return out


# --------------------------------------------------------------------------------------------------
# ComfyUI server


def upload(server, path: Path, name: str | None = None, subfolder: str = "") -> dict:
    """POST a file to /upload/image (as the browser does; ComfyUI does not look at what is inside)."""
    import urllib.request

    boundary = uuid.uuid4().hex
    name = name or path.name
    parts = []
    for field, value in (("type", "input"), ("subfolder", subfolder), ("overwrite", "true")):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(server.url + "/upload/image", data=b"".join(parts),
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def alive(server) -> bool:
    """The server answers (and its process is still running)."""
    stats = server.get("/system_stats")
    return server.proc.poll() is None and "system" in stats


def outcome(server, prompt: dict, timeout: float = 300.0) -> tuple[str, str]:
    """("refused" | "error" | "success", text): /prompt's validation error, the execution error, or the
    outputs of a successful run as JSON."""
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    if status != 200:
        return "refused", json.dumps(body)
    entry = server.wait(body["prompt_id"], timeout)
    errors = [f"{d.get('node_type')}: {d.get('exception_message')}" for kind, d in entry.get("status", {}).get("messages", [])
              if kind == "execution_error"]
    if errors:
        return "error", "\n".join(errors)
    return "success", json.dumps(entry.get("outputs", {}))


# --------------------------------------------------------------------------------------------------
# command-line tools


def run_cli(module: str, *args, cwd=None, env=None, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """``python -m <module> args`` as a user runs it (one torch thread, ComfyUI from the repo)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                "COMFYUI_PATH": str(REPO / ".comfyui" / "ComfyUI"), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
