"""Test and benchmark helpers that ship with CHARIS (no model files, nothing downloaded).

* :func:`character`: a flat-colour synthetic character (red head, blue body, yellow and green legs,
  dark eyes) -- asymmetric colours, so mirroring and part swaps are visible;
* :class:`FakeVLM`: an OpenAI-compatible chat-completions server on loopback that recognises which
  CHARIS task a prompt is and answers it, and can be scripted to misbehave:
  ``server.script = ["429", "ok"]`` makes the next request get a 429 and the one after a normal answer.
  Behaviours: ok, 429, 500, 401, timeout (sleeps past the client's timeout), badjson (HTTP body not
  JSON), malformed (valid completion whose text is not usable JSON), echo (error body that echoes the
  Authorization header back), echo_ok (a usable answer whose reason quotes the Authorization header),
  ``reply:<text>`` (a completion whose text is exactly <text>). Every request's headers and body are
  kept in ``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

ATTRIBUTES = {"attributes": [
    {"attribute": "hair colour", "value": "bright red", "region": "hair"},
    {"attribute": "jacket", "value": "blue denim jacket", "region": "jacket"},
    {"attribute": "eye colour", "value": "green", "region": "eyes"},
]}


def answer_for(prompt: str, scores: dict) -> str:
    if "List the visual attributes" in prompt:
        return json.dumps(ATTRIBUTES)
    if "For each attribute" in prompt:
        verdicts = [{"attribute": a["attribute"], "verdict": v, "note": "<b>bold</b> & <script>alert(1)</script>"}
                    for a, v in zip(ATTRIBUTES["attributes"], ("match", "partial", "not_visible"))]
        return "Here you go:\n```json\n" + json.dumps({"verdicts": verdicts, "score": scores.get("identity", 3)}) + "\n```"
    if "Rate how completely" in prompt:
        return json.dumps({"score": scores.get("prompt", 4), "missing": [], "reason": "all there"})
    if "Write the caption" in prompt:
        return json.dumps({"caption": scores.get("caption", "the hero waving, seen from the side, plain background")})
    if "transforms the reference" in prompt:
        return json.dumps({"score": scores.get("diversity", 2), "changed": ["pose"], "reason": "new pose"})
    return json.dumps({"score": scores.get("other", 3), "reason": "ok"})


class FakeVLM:
    def __init__(self, delay: float = 0.0):
        self.script: list[str] = []
        self.requests: list[dict] = []
        self.scores: dict = {}
        self.delay = delay
        self.timeout_sleep = 2.0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    behaviour = server.script.pop(0) if server.script else "ok"
                if server.delay:
                    time.sleep(server.delay)
                if behaviour == "timeout":
                    time.sleep(server.timeout_sleep)
                    behaviour = "ok"
                if behaviour in ("429", "500", "401"):
                    payload = json.dumps({"error": {"message": f"scripted {behaviour}"}}).encode()
                    self.send_response(int(behaviour))
                    if behaviour == "429":
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if behaviour == "echo":
                    payload = json.dumps({"error": f"bad key {self.headers.get('Authorization')}"}).encode()
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if behaviour == "badjson":
                    payload = b"<html>gateway hiccup</html>"
                else:
                    text = _prompt_text(body)
                    content = "I think it looks nice!" if behaviour == "malformed" else answer_for(text, server.scores)
                    if behaviour.startswith("reply:"):
                        content = behaviour[len("reply:"):]
                    elif behaviour == "echo_ok":
                        answer = json.loads(content) if content.lstrip().startswith("{") else {"score": 3}
                        answer["reason"] = f"your header was {self.headers.get('Authorization')}"
                        content = json.dumps(answer)
                    payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _prompt_text(body: dict) -> str:
    out = []
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return "\n".join(out)


def character(size: int = 256, background=(255, 255, 255), dx: int = 0, dy: int = 0, scale: float = 1.0) -> Image.Image:
    """A flat-colour character: red head, blue body, yellow and green legs, dark eyes (asymmetric colours)."""
    img = Image.new("RGB", (size, size), tuple(background))
    d = ImageDraw.Draw(img)
    s = size / 256 * scale
    cx, top = size // 2 + dx, int(size * 0.5 - 110 * s) + dy

    def box(x0, y0, x1, y1):
        return [cx + x0 * s, top + y0 * s, cx + x1 * s, top + y1 * s]

    d.ellipse(box(-40, 0, 40, 80), fill=(200, 60, 40))
    d.ellipse(box(-22, 28, -10, 40), fill=(30, 30, 40))
    d.ellipse(box(10, 28, 22, 40), fill=(30, 30, 40))
    d.rectangle(box(-50, 80, 50, 160), fill=(40, 90, 200))
    d.rectangle(box(-45, 160, -10, 210), fill=(240, 200, 40))
    d.rectangle(box(10, 160, 45, 210), fill=(30, 160, 80))
    return img
