"""The built-in demo in the real ComfyUI frontend (headless Chromium): the first template of the pack
loads with every node known, runs from the Run button and shows its picture (tests/demo/frontend_demo.mjs).

Needs Debian's Chromium and playwright-core (scripts/setup_browser.sh); like tests/frontend it fails,
never skips, when they are missing. The screenshot goes to artifacts/demo/ (II_ARTIFACTS), or to
II_DEMO_SCREENSHOT (how docs/images/demo-frontend.png is made)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("II_ARTIFACTS") or REPO / "artifacts") / "demo"


def test_demo_template_runs_in_the_browser(demo_server):
    chromium = os.environ.get("II_CHROMIUM", "/usr/bin/chromium")
    if not (Path(chromium).exists() and shutil.which("node")
            and (REPO / "tests" / "frontend" / "node_modules" / "playwright-core").is_dir()):
        pytest.fail("the browser test needs Chromium, Node and playwright-core: run scripts/setup_browser.sh",
                    pytrace=False)
    # a fresh user's pop-ups (tutorial, template dialog, ...) off, as the browser tests of tests/frontend do
    sys.path.insert(0, str(REPO / "tests" / "frontend"))
    from ii_frontend import SETTINGS

    status, body = demo_server.post("/settings", SETTINGS)
    assert status == 200, body
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = Path(os.environ.get("II_DEMO_SCREENSHOT") or ARTIFACTS / "demo-frontend.png")
    out = ARTIFACTS / "frontend_demo.result.json"
    args = ARTIFACTS / "frontend_demo.args.json"
    args.write_text(json.dumps({"url": demo_server.url, "out": str(out), "screenshot": str(shot)}))
    out.unlink(missing_ok=True)
    proc = subprocess.run(["node", str(REPO / "tests" / "demo" / "frontend_demo.mjs"), str(args)], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=420)
    assert out.exists(), f"no result (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["ok"], f"{result.get('error')}\n{result.get('stack', '')[:2000]}\n{demo_server.log_text()[-2000:]}"
    seen = result["observed"]
    assert seen["first"] == "instruct_identity_demo_cpu" and seen["missing"] == []
    assert seen["status"] == "success"
    saved = [i for o in seen["outputs"].values() for i in o.get("images", []) if i.get("type") == "output"]
    assert saved and (demo_server.base / "output" / saved[0]["filename"]).is_file()
    ours = [e for e in seen["journal"] if "instruct-identity" in json.dumps(e).lower() and e["kind"] != "console.warning"]
    assert not ours, ours
    assert shot.is_file()
