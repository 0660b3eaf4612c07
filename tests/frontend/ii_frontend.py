"""Shared pieces of the browser tests (used by conftest.py and test_frontend.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

FRONT = Path(__file__).resolve().parent
REPO = FRONT.parents[1]
ARTIFACTS = Path(os.environ.get("II_ARTIFACTS") or REPO / "artifacts") / "frontend"
CHROMIUM = os.environ.get("II_CHROMIUM", "/usr/bin/chromium")
PACK_URL = "/extensions/instruct-identity/"

# Settings a fresh ComfyUI user starts with that only add pop-ups to a test run. The missing-models
# dialog is off because it fetches download sizes from the internet; missing *nodes* still warn.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.ColorPalette": "dark",
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,   # full detail at any zoom, so whole-graph screenshots stay legible
}

# What the page reports on every start of this ComfyUI (0.3.75 + frontend 1.32.9), with or without
# this pack (checked by blocking the pack's scripts): files a fresh user folder does not have, and a
# TypeError inside the frontend's own settings code.
BASELINE_404 = ("/api/userdata/user.css", "/user.css", "/favicon.ico", "/api/userdata?dir=",
                "/api/userdata/comfy.templates.json")
FRONTEND_OWN_ERROR = ("TypeError: Cannot read properties of undefined (reading 'id')", "at onChange (", "/assets/index-")


def browser_problems() -> list[str]:
    problems = []
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM}")
    if not shutil.which("node"):
        problems.append("no node (Node.js >= 20) on PATH")
    if not (FRONT / "node_modules" / "playwright-core" / "package.json").exists():
        problems.append(f"playwright-core is not installed in {FRONT / 'node_modules'}")
    return problems


def is_external(url: str, base: str) -> bool:
    return url.startswith(("http://", "https://")) and not url.startswith(base)


def unexpected(entries: list[dict], base: str, boot: bool = False) -> list[dict]:
    """Journal entries that are real problems. External requests fail because the test machine has
    no internet (the frontend asks api.comfy.org about node packs); ``boot`` also allows the
    baseline of every page start. Anything that mentions this pack's scripts is always a problem."""
    out = []
    for e in entries:
        text, url, stack = e.get("text", ""), e.get("url", ""), e.get("stack", "")
        blob = f"{text} {url} {stack}"
        if PACK_URL in blob or "instruct-identity" in blob.lower():
            out.append(e)
            continue
        if e["kind"] == "console.warning":
            continue  # the frontend warns about its own deprecations; ours are caught above
        if is_external(url, base):
            continue
        if boot and url and any(url.startswith(base + p) for p in BASELINE_404):
            continue
        if boot and all(p in text for p in FRONTEND_OWN_ERROR):
            continue
        out.append(e)
    return out


def fmt(entries: list[dict]) -> str:
    return "\n".join(f"  [{e['kind']}] {e.get('text', '')[:300]} {e.get('url', '')}" for e in entries)


@dataclass
class Frontend:
    server: object
    artifacts: Path

    @property
    def url(self) -> str:
        return self.server.url

    def run(self, scenario: str, timeout: float = 420, **args) -> dict:
        """Run tests/frontend/scenarios/<scenario>.mjs; returns what it observed (fails with its error)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        out = self.artifacts / f"{scenario}.result.json"
        out.unlink(missing_ok=True)
        args_file = self.artifacts / f"{scenario}.args.json"
        args_file.write_text(json.dumps({"url": self.url, "out": str(out), "artifacts": str(self.artifacts), **args}))
        try:
            proc = subprocess.run(["node", str(FRONT / "run.mjs"), scenario, str(args_file)], cwd=FRONT, check=False,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"browser scenario {scenario} ran over {timeout}s:\n{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}")
        if not out.exists():
            pytest.fail(f"browser scenario {scenario} wrote no result (exit {proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
        if not result["ok"]:
            shot = self.artifacts / f"{scenario}-failure.png"
            journal = unexpected(result.get("journal", []), self.url, boot=True)
            pytest.fail(f"browser scenario {scenario} failed: {result['error']}\n{result.get('stack', '')[:3000]}\n"
                        f"page problems:\n{fmt(journal)}\nscreenshot: {shot}\nserver log tail:\n{self.server.log_text()[-2000:]}")
        return result["observed"] | {"_journal": result.get("journal", []), "_seconds": result.get("seconds")}
