"""A real ComfyUI server for the miniature pipelines: the user's path, not an in-process shortcut.

``ComfyServer(base).start()`` runs ``main.py --cpu --base-directory base`` of the ComfyUI found by
``engine.runtime.find_comfyui`` (``.comfyui/ComfyUI`` from ``scripts/bootstrap.sh``, or ``COMFYUI_PATH``)
with this pack linked into ``base/custom_nodes``; ``run(prompt)`` queues an API-format graph and waits
for it (the queue/wait helpers are the built-in demo's, ``miniature/demo_run.py``).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from instruct_identity.engine.runtime import find_comfyui
from instruct_identity.miniature import demo_run

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path, threads: int = 1):
        self.base, self.threads = Path(base), int(threads)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def loras(self) -> Path:
        return self.base / "models" / "loras"

    def start(self, timeout: float = 240.0) -> "ComfyServer":
        for d in ("custom_nodes", "input", "output", "temp", "user", "models/loras"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / "instruct-identity"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        root = find_comfyui()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.threads)}
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch"]
        self._log = open(self.base / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {self.base / 'server.log'}")
            try:
                demo_run.wait_for_server(self.url, 2.0)
                log.info("ComfyUI at %s (base %s)", self.url, self.base)
                return self
            except TimeoutError:
                continue
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s; see {self.base / 'server.log'}")

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 3600.0) -> dict:
        """Queue ``prompt`` and return its /history entry (RuntimeError with the node's message if it failed)."""
        return demo_run.wait_done(self.url, demo_run.queue(self.url, prompt, workflow), timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
