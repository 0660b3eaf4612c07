"""A tiny OpenAI-compatible VLM on loopback for the browser tests: it recognises which CHARIS task a
request is (by the first line of the task's own prompt template) and answers with fixed JSON whose
attribute names and verdict notes carry HTML, so the page must show them as text."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

XSS = "<img src=x onerror=window.__iiXss=1>"

ATTRIBUTES = [
    {"attribute": "hair colour", "value": "bright red", "region": "hair"},
    {"attribute": f"badge {XSS}", "value": "gold <b>star</b>", "region": "jacket"},
    {"attribute": "eye colour", "value": "green", "region": "eyes"},
]
VERDICTS = [
    {"attribute": "hair colour", "verdict": "match", "note": "same red, same length"},
    {"attribute": f"badge {XSS}", "verdict": "mismatch", "note": f"{XSS} the badge is gone"},
    {"attribute": "eye colour", "verdict": "not_visible", "note": "eyes hidden by the hat"},
]
ANSWERS = {
    "identity_attributes": {"attributes": ATTRIBUTES},
    "identity_judge": {"verdicts": VERDICTS, "score": 3},
    "prompt": {"score": 3, "missing": [], "reason": "waving, but no beach"},
    "diversity": {"score": 2, "changed": ["pose"], "reason": "new pose, same framing"},
}


def _markers() -> dict[str, str]:
    from instruct_identity.charis.vlm.prompts import TASKS

    return {name: task.template.splitlines()[0].split("{")[0].strip() for name, task in TASKS.items()}


class FakeJudge:
    def __init__(self):
        markers = _markers()
        self.tasks: list[str] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, payload: dict, status: int = 200):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "fake-judge", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                text = "\n".join(p.get("text", "") if isinstance(p, dict) else str(p)
                                 for m in body.get("messages", [])
                                 for p in (m.get("content") if isinstance(m.get("content"), list) else [{"text": m.get("content", "")}]))
                task = next((name for name, marker in markers.items() if marker and marker in text), "other")
                judge.tasks.append(task)
                answer = ANSWERS.get(task, {"score": 3, "reason": "fine"})
                self._send({"id": "x", "object": "chat.completion", "model": "fake-judge", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": json.dumps(answer)}, "finish_reason": "stop"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
