"""A simulated VLM for the miniature world, honestly labelled: it reads the pictures, not minds.

No VLM weights exist on this machine, so CHARIS's VLM axes (identity, prompt, diversity) are answered
by :class:`PaletteJudge`, a loopback OpenAI-compatible ``/v1/chat/completions`` server. CHARIS talks
to it through its real backend, prompts and parser (``charis.vlm``), unchanged; the judge recognises
which CHARIS task a prompt is and answers it from what is visible in the pictures:

* the figure's pose: the sprite pose (place, size, standing / arms up / lying, hat or not) whose
  silhouette best overlaps the picture's non-white pixels;
* each part's colour: the majority palette colour inside that pose's part region (a pattern's darker
  shade counts as its colour), "not_visible" when the region is empty or off the picture;
* identity: per attribute (head, torso, legs, hat colour) match / mismatch, score = 4 x matches / visible;
* prompt: how well the silhouette fits the pose the prompt names (IoU in fifths), less a point per
  part whose colour the prompt names wrongly;
* diversity: how many of place, size and pose differ between the two pictures (0 = the same picture).

``error_rate`` makes it a worse judge: each answer is, with that probability, replaced by a uniformly
random one (score 0..4; every verdict redrawn), deterministically per (seed, task, pictures). Rate 0 is
the judge a perfect VLM would be on these pictures; it still only sees pixels, so a drifted character
drawn in the right colours passes.

For the miniature's ComfyUI template (``workflows/character_sheet_curation_miniature.json``) it also runs
on its own: ``python -m benchmarks.toy.judge --port 8765`` (CHARIS Loader: vlm = openai-compatible,
``http://127.0.0.1:8765/v1``, model ``toy-palette-judge``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import argparse
import logging
import random
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from instruct_identity.charis.vlm import prompts as P
from instruct_identity.miniature import sprites

from . import evaluate

JUDGED_PARTS = ("head", "torso", "legs", "hat")
SPRITE = 32  # the miniature's picture size; larger pictures are read at this size


def _task_markers() -> dict[str, str]:
    """A phrase that only each CHARIS task's prompt contains (its first line), so a reworded prompt
    breaks loudly in the judge's test rather than silently."""
    return {t.name: t.template.splitlines()[0][:48] for t in
            (P.IDENTITY_ATTRIBUTES, P.IDENTITY_JUDGE, P.PROMPT, P.DIVERSITY)}


def task_of(prompt: str) -> str | None:
    for name, marker in _task_markers().items():
        if marker.replace("{{", "{").replace("}}", "}").split("{")[0] in prompt:
            return name
    if "Write the caption" in prompt:
        return "caption"
    return None


# --------------------------------------------------------------------------------------------------
# what a picture shows


class Reading:
    """What the judge sees in one ``[H, W, 3]`` uint8 picture (one sprite): the best-fitting pose and
    the colour inside each of its part regions."""

    def __init__(self, rgb: np.ndarray):
        if rgb.shape[0] != SPRITE or rgb.shape[1] != SPRITE:  # an enlarged sprite: back to its own grid (box filter)
            rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((SPRITE, SPRITE), Image.Resampling.BOX))
        img = rgb.astype(np.float32) / 255.0
        self.figure = evaluate.figure_mask(img)
        self.pose, masks, self.fit = evaluate.best_pose(img)
        seen = evaluate.part_colours_seen(img, masks)
        self.colours: dict[str, str | None] = {part: seen[part] for part in JUDGED_PARTS}

    def attributes(self) -> list[dict]:
        return [{"attribute": f"{part} colour", "value": self.colours[part] or "unknown", "region": part}
                for part in JUDGED_PARTS]


def pose_words(prompt: str) -> sprites.Pose | None:
    """The pose a miniature prompt names ("... the character lying, small, on the left"), if any."""
    low = prompt.lower()
    pose = next((p for p in sprites.POSES if p in low), None)
    size = next((s for s in sprites.SIZES if s in low), None)
    place = next((p for p in sprites.PLACES if re.search(rf"\b{p}\b", low)), None)
    return sprites.Pose(place, size, pose) if pose and size and place else None


def named_colours(prompt: str) -> dict[str, str]:
    """Part colours a prompt names: "a red head", "a striped blue torso", "green legs", "a yellow hat"."""
    out = {}
    for part in JUDGED_PARTS:
        m = re.search(rf"\b({'|'.join(sprites.PALETTE)})\s+{part}\b", prompt.lower())
        if m:
            out[part] = m.group(1)
    return out


# --------------------------------------------------------------------------------------------------
# answers


def identity_answer(ref: Reading, gen: Reading) -> dict:
    verdicts, visible, matches = [], 0, 0
    for part in JUDGED_PARTS:
        want, got = ref.colours[part], gen.colours[part]
        if want is None or got is None or (part == "hat" and want == "none" and got == "none"):
            verdict = "not_visible" if want is None or got is None else "match"
        else:
            verdict = "match" if want == got else "mismatch"
        if verdict != "not_visible":
            visible += 1
            matches += verdict == "match"
        verdicts.append({"attribute": f"{part} colour", "verdict": verdict, "note": f"{want} -> {got}"})
    score = round(4 * matches / visible) if visible else 0
    return {"verdicts": verdicts, "score": score}


def prompt_answer(prompt: str, gen: Reading) -> dict:
    want = pose_words(prompt)
    missing = []
    if want is None:
        score = 4 if gen.fit > 0.5 else 2
    else:
        sil = sprites.silhouette(sprites.render(evaluate._FIT_CHARS[gen.colours["hat"] == "none"], want, SPRITE)[1])
        score = min(4, int(evaluate.iou(gen.figure, sil) * 5))
        if gen.pose != want:
            missing.append(want.caption())
    for part, colour in named_colours(prompt).items():
        if gen.colours.get(part) != colour:
            score = max(0, score - 1)
            missing.append(f"{colour} {part}")
    return {"score": score, "missing": missing, "reason": f"silhouette fit {gen.fit:.2f}"}


def diversity_answer(ref: Reading, gen: Reading) -> dict:
    changed = [k for k in ("place", "size", "pose") if getattr(ref.pose, k) != getattr(gen.pose, k)]
    score = {0: 0, 1: 2, 2: 3, 3: 4}[len(changed)]
    return {"score": score, "changed": changed, "reason": f"{len(changed)} of place, size, pose changed"}


def corrupt(answer: dict, rng: random.Random) -> dict:
    """A uniformly random answer of the same shape (what an unreliable VLM says on a bad day)."""
    out = dict(answer)
    if "score" in out:
        out["score"] = rng.randint(0, 4)
    if "verdicts" in out:
        out["verdicts"] = [dict(v, verdict=rng.choice(P.ATTRIBUTE_VERDICTS)) for v in out["verdicts"]]
    if "attributes" in out:
        out["attributes"] = [dict(a, value=rng.choice(list(sprites.PALETTE))) for a in out["attributes"]]
    return out


# --------------------------------------------------------------------------------------------------
# the server


def _images(body: dict) -> list[np.ndarray]:
    out = []
    for m in body.get("messages", []):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
            if url.startswith("data:"):
                raw = base64.b64decode(url.split(",", 1)[1])
                out.append(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    return out


def _text(body: dict) -> str:
    parts = []
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return "\n".join(parts)


class PaletteJudge:
    """``with PaletteJudge(error_rate=0.2, seed=0) as judge: ... judge.base_url ...``"""

    MODEL = "toy-palette-judge"

    def __init__(self, error_rate: float = 0.0, seed: int = 0, port: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate {error_rate} is outside [0, 1]")
        self.error_rate, self.seed = float(error_rate), int(seed)
        self.requests = 0
        self.corrupted = 0
        self.by_task: dict[str, int] = {}
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                try:
                    content = judge.answer(_text(body), _images(body))
                    payload = json.dumps({"id": "toy", "object": "chat.completion", "model": judge.MODEL, "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})
                    status = 200
                except Exception as e:  # noqa: BLE001 - a judge bug must reach the client as an error, not hang
                    payload, status = json.dumps({"error": {"message": f"toy judge: {e}"}}), 400
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, prompt: str, images: list[np.ndarray]) -> str:
        task = task_of(prompt)
        readings = [Reading(im) for im in images]
        if task == "identity_attributes" and readings:
            ans = {"attributes": readings[0].attributes()}
        elif task == "identity_judge" and len(readings) >= 2:
            ans = identity_answer(readings[0], readings[1])
        elif task == "prompt" and readings:
            quoted = re.search(r'prompt: "(.*)"', prompt)
            ans = prompt_answer(quoted.group(1) if quoted else prompt, readings[-1])
        elif task == "diversity" and len(readings) >= 2:
            ans = diversity_answer(readings[0], readings[1])
        elif task == "caption" and readings:
            pose = readings[-1].pose
            ans = {"caption": pose.caption() if pose else "a character"}
        else:
            raise ValueError(f"not a CHARIS task this judge knows (task {task}, {len(images)} images)")
        digest = hashlib.sha256(f"{self.seed}:{task}:".encode() + b"".join(im.tobytes() for im in images)).hexdigest()
        rng = random.Random(digest)
        bad = rng.random() < self.error_rate
        if bad and task != "caption":
            ans = corrupt(ans, rng)
        with self._lock:
            self.requests += 1
            self.corrupted += int(bad)
            self.by_task[task] = self.by_task.get(task, 0) + 1
        return json.dumps(ans)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "PaletteJudge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def charis_config(judge: PaletteJudge | None, cache_dir: str | None = None, color_threshold: float = 0.6,
                  identity_threshold: float = 0.9, colour: bool = True) -> dict:
    """The CHARIS filter config of the miniature: colour only without a judge; identity + colour +
    diversity with one (no quality axis: CLIP-IQA needs weights this machine does not have).

    Thresholds: CHARIS's filter-mode defaults (colour 0.6, diversity 0.5), except identity 0.9 instead
    of 0.75, because a sprite has 4 judged parts, so one wrong part is exactly 0.75. Pictures go in 4x
    enlarged (CHARIS's colour segmentation needs more than 32 px). ``colour=False`` (with a judge): identity
    and diversity only."""
    cfg: dict = {"mode": "filter", "device": "cpu", "quality": {"backend": "none"}, "color": {"segmenter": "cluster"}}
    if cache_dir:
        cfg["cache_dir"] = cache_dir
    if judge is None:
        cfg.update(axes=["color"], vlm={"backend": "none"},
                   composite={"weights": {"color": 1.0}, "thresholds": {"color": color_threshold}})
    else:
        weights = {"identity": 0.35, "color": 0.25, "diversity": 0.2}
        thresholds = {"identity": identity_threshold, "color": color_threshold, "diversity": 0.5}
        if not colour:
            del weights["color"], thresholds["color"]
        cfg.update(axes=list(weights),
                   vlm={"backend": "openai", "base_url": judge.base_url, "model": judge.MODEL, "api_key_env": None,
                        "concurrency": 2, "timeout": 30.0, "max_retries": 1},
                   composite={"weights": weights, "thresholds": thresholds})
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The miniature's simulated VLM judge on 127.0.0.1 (until Ctrl+C).")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--error-rate", type=float, default=0.0, help="share of answers replaced by random ones (0..1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        judge = PaletteJudge(args.error_rate, args.seed, args.port)
    except (ValueError, OSError) as e:
        logging.error("toy judge: %s", e)
        return 2
    logging.info("toy judge (%s, error rate %g) at %s", judge.MODEL, judge.error_rate, judge.base_url)
    try:
        judge.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        judge.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
