"""Queue the built-in demo on a running ComfyUI and say where its picture was saved.

``scripts/bootstrap.sh run`` starts ComfyUI and then runs (``II_DEMO=0`` turns it off)::

    python miniature/demo_run.py --url http://127.0.0.1:8188 --comfyui .comfyui/ComfyUI -- <ComfyUI args>

It waits for the server, queues ``miniature/demo_prompt.json`` (the API form of
``workflows/instruct_identity_demo_cpu.json``, both written by ``scripts/build_workflows.py``) with the
template itself as the prompt's workflow (so the picture's PNG metadata and the queue history open it
in the frontend), waits for the result and logs the saved file's path. Only the standard library is
used (no ComfyUI, no torch), so it also runs as a plain file; bootstrap.sh runs it beside the server
and stops it when the server exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

log = logging.getLogger("instruct_identity.demo")

HERE = Path(__file__).resolve().parent
PROMPT_FILE = HERE / "demo_prompt.json"
TEMPLATE_FILE = HERE.parent / "workflows" / "instruct_identity_demo_cpu.json"


def client_url(host: str, port: int | str) -> str:
    """The URL a local client uses for a server listening on ``host`` (``0.0.0.0`` / ``::`` -> loopback)."""
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def _post(url: str, payload: dict, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_for_server(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _get(url + "/system_stats", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            time.sleep(0.5)
    raise TimeoutError(f"ComfyUI did not answer at {url} within {timeout:.0f} s")


def load_prompt() -> tuple[dict, dict | None]:
    """(API prompt, UI workflow or None) of the demo."""
    prompt = json.loads(PROMPT_FILE.read_text())
    workflow = json.loads(TEMPLATE_FILE.read_text()) if TEMPLATE_FILE.is_file() else None
    return prompt, workflow


def queue(url: str, prompt: dict, workflow: dict | None) -> str:
    payload = {"prompt": prompt, "client_id": uuid.uuid4().hex}
    if workflow is not None:
        payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    status, body = _post(url + "/prompt", payload)
    if status != 200:
        raise RuntimeError(f"ComfyUI refused the demo graph ({status}): {json.dumps(body)[:2000]}")
    return body["prompt_id"]


def wait_done(url: str, prompt_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = _get(f"{url}/history/{prompt_id}").get(prompt_id)
        status = (entry or {}).get("status", {})
        if status.get("completed") or status.get("status_str") in ("success", "error"):
            if status.get("status_str") == "error":
                errors = [f"{d.get('node_type')}: {d.get('exception_message')}" for k, d in status.get("messages", [])
                          if k == "execution_error"]
                raise RuntimeError("the demo graph failed: " + "; ".join(errors))
            return entry
        time.sleep(0.25)
    raise TimeoutError(f"the demo graph did not finish within {timeout:.0f} s")


def saved_images(entry: dict, prompt: dict) -> list[dict]:
    """The images of the graph's SaveImage nodes in a /history entry."""
    out = []
    for node_id, node in prompt.items():
        if node.get("class_type") == "SaveImage":
            out += [i for i in entry.get("outputs", {}).get(node_id, {}).get("images", []) if i.get("type") == "output"]
    return out


def output_dir(comfyui: Path, comfy_args: list[str]) -> Path:
    """ComfyUI's output folder for these command-line arguments (``--output-directory``, ``--base-directory``)."""
    def arg(name):
        for i, a in enumerate(comfy_args):
            if a == name and i + 1 < len(comfy_args):
                return comfy_args[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None

    if arg("--output-directory"):
        return Path(arg("--output-directory")).resolve()
    return (Path(arg("--base-directory") or comfyui) / "output").resolve()


def run(url: str, comfyui: Path, comfy_args: list[str], timeout: float) -> list[Path]:
    t0 = time.monotonic()
    wait_for_server(url, timeout)
    prompt, workflow = load_prompt()
    prompt_id = queue(url, prompt, workflow)
    log.info("queued the built-in demo (workflows/instruct_identity_demo_cpu.json)")
    entry = wait_done(url, prompt_id, max(10.0, timeout - (time.monotonic() - t0)))
    out = output_dir(comfyui, comfy_args)
    paths = [out / i.get("subfolder", "") / i["filename"] for i in saved_images(entry, prompt)]
    if not paths:
        raise RuntimeError("the demo graph finished but saved no picture")
    for p in paths:
        log.info("demo picture saved: %s", p)
    log.info("open %s : the queue history (Queue sidebar) shows it; the template browser has the demo graph "
             "under Extensions > instruct-identity", url)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    comfy_args = argv[argv.index("--") + 1:] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="demo_run.py", description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--comfyui", type=Path, default=Path("."), help="ComfyUI's folder (for its output folder)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for server start + demo run")
    args = ap.parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="[instruct-identity] %(message)s")
    try:
        run(args.url.rstrip("/"), args.comfyui, comfy_args, args.timeout)
    except (RuntimeError, TimeoutError, OSError, ValueError) as e:
        log.error("the built-in demo did not run: %s (ComfyUI keeps running; II_DEMO=0 skips the demo)", e)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while waiting: the run command stops ComfyUI
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
