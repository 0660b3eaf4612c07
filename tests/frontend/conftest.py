"""Browser tests: the real ComfyUI server (the ``comfy_server`` fixture) and its real frontend in
Debian's headless Chromium, driven by playwright-core from Node (``tests/frontend/run.mjs``).

Needs ``/usr/bin/chromium`` (or ``II_CHROMIUM``), Node >= 20 and ``tests/frontend/node_modules``:
``scripts/setup_browser.sh`` installs them. When they are missing the tests FAIL (they never skip),
so CI cannot pass without having run them. Screenshots go to ``artifacts/frontend/`` (or
``$II_ARTIFACTS/frontend``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ii_frontend import ARTIFACTS, SETTINGS, Frontend, browser_problems


@pytest.fixture(scope="session")
def browser_ready():
    problems = browser_problems()
    if problems:
        pytest.fail("The browser tests need Debian's chromium and playwright-core: " + "; ".join(problems)
                    + ". Install them with scripts/setup_browser.sh.", pytrace=False)


@pytest.fixture(scope="session")
def frontend(browser_ready, comfy_server):
    status, body = comfy_server.post("/settings", SETTINGS)
    assert status == 200, body
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    return Frontend(comfy_server, ARTIFACTS)
