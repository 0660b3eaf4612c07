"""Turning a VLM reply into a validated answer, or a reason why not. Never raises on any text.

``extract_json`` finds the first JSON object in a reply (code fences, prose around it, trailing
commas, single quotes, Python literals are tolerated); ``parse_answer(task, text)`` validates it
against the task's shape and returns ``(answer, None)`` or ``(None, problem)``. Score tasks also
accept a bare ``Score: N`` line (the DreamBench++ convention) when no JSON is present.
"""

from __future__ import annotations

import ast
import json
import math
import re

from .prompts import ATTRIBUTE_VERDICTS, TASKS

MAX_TEXT = 400  # characters kept of any free-text field
MAX_CAPTION = 600  # characters kept of a caption
MAX_ITEMS = 40
MAX_STARTS = 64  # opening brackets tried per candidate text
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_SCORE_LINE = re.compile(r"(?i)\bscore\b\s*(?:is|=|:)?\s*\**\s*(-?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def extract_json(text) -> object | None:
    """The first JSON object (or array) found in ``text``, else None."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        found = _first_object(cand)
        if found is not None:
            return found
    return None


def _first_object(text: str):
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "{["][:MAX_STARTS]
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
            if isinstance(obj, (dict, list)):
                return obj
        except (json.JSONDecodeError, RecursionError):
            pass
        chunk = _balanced(text, start)
        if chunk is None:
            continue
        for attempt in (_TRAILING_COMMA.sub(r"\1", chunk),):
            try:
                obj = json.loads(attempt)
                if isinstance(obj, (dict, list)):
                    return obj
            except (json.JSONDecodeError, RecursionError):
                pass
            try:  # single quotes / True / None (Python-literal answers)
                obj = ast.literal_eval(attempt)
                if isinstance(obj, (dict, list)):
                    return json.loads(json.dumps(obj, default=str))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
    return None


def _balanced(text: str, start: int) -> str | None:
    """The bracketed chunk starting at ``start`` (string-aware), or None if it never closes."""
    stack, quote, escape = [], None, False
    pairs = {"{": "}", "[": "]"}
    for i in range(start, min(len(text), start + 200_000)):
        c = text[i]
        if quote:
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif c in "}]":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return text[start:i + 1]
    return None


def _score_line(m: re.Match) -> tuple[dict | None, str | None]:
    """A ``Score: N`` (or ``N/4``) line: N must be a 0..4 rating; another scale ("3/10") or a value out of
    range ("4.5") is a malformed answer, asked again rather than rescaled or clipped."""
    value, scale = float(m.group(1)), m.group(2)
    if scale is not None and float(scale) != 4.0:
        return None, f"the score is given out of {scale}, not on the 0-4 scale"
    if not 0.0 <= value <= 4.0:
        return None, f"the score {m.group(1)} is outside 0-4"
    return {"score": value}, None


def valid_answer(task: str, value) -> bool:
    """Whether a stored answer still satisfies the task's shape (cache entries are re-checked)."""
    if not isinstance(value, dict) or task not in TASKS:
        return False
    kind = TASKS[task].kind
    if kind in ("score", "verdicts") and as_score(value.get("score")) is None:
        return False
    if kind == "verdicts" and not isinstance(value.get("verdicts"), list):
        return False
    if kind == "attributes" and not (isinstance(value.get("attributes"), list) and value["attributes"]):
        return False
    if kind == "caption" and not (isinstance(value.get("caption"), str) and len(value["caption"]) >= 3):
        return False
    return True


def as_score(v) -> float | None:
    """A 0..4 rating from a number or a numeric string ("3", "3.5", "3/4"); None if it is not one."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-4](?:\.\d+)?)\s*(?:/\s*4(?:\.0+)?)?\s*", v)
        if not m:
            return None
        v = float(m.group(1))
    if not isinstance(v, (int, float)):
        return None
    v = float(v)
    if not math.isfinite(v) or v < 0 or v > 4:
        return None
    return v


def _text(v, limit: int = MAX_TEXT) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        v = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
    return " ".join(v.split())[:limit]


def _score_from(obj) -> float | None:
    if isinstance(obj, dict):
        for key in ("score", "rating", "Score", "SCORE"):
            if key in obj:
                return as_score(obj[key])
    return None


def parse_answer(task: str, text) -> tuple[dict | None, str | None]:
    """Validated answer for ``task`` from the raw reply ``text``: ``(answer, None)`` or ``(None, problem)``."""
    if task not in TASKS:
        return None, f"unknown task {task!r}"
    kind = TASKS[task].kind
    obj = extract_json(text)
    if kind == "score":
        if obj is None:
            m = _SCORE_LINE.search(text) if isinstance(text, str) else None
            if m:
                return _score_line(m)
            return None, "no JSON object and no 'Score: N' line in the reply"
        score = _score_from(obj)
        if score is None:
            return None, "the JSON has no 'score' between 0 and 4"
        out = {"score": score}
        for k, v in obj.items():
            if k in ("score", "rating"):
                continue
            if isinstance(v, list):
                out[k] = [_text(x, 80) for x in v[:MAX_ITEMS]]
            elif isinstance(v, bool):
                out[k] = v
            else:
                out[k] = _text(v)
        return out, None
    if kind == "attributes":
        items = obj.get("attributes") if isinstance(obj, dict) else obj if isinstance(obj, list) else None
        if not isinstance(items, list):
            return None, "the JSON has no 'attributes' list"
        attrs = []
        for it in items[:MAX_ITEMS]:
            if not isinstance(it, dict):
                continue
            name, value = _text(it.get("attribute") or it.get("name"), 80), _text(it.get("value"), 120)
            if not name or not value:
                continue
            attrs.append({"attribute": name, "value": value, "region": _text(it.get("region") or it.get("part"), 40)})
        if not attrs:
            return None, "the 'attributes' list holds no item with an attribute and a value"
        return {"attributes": attrs}, None
    if kind == "verdicts":
        if not isinstance(obj, dict):
            return None, "no JSON object in the reply"
        score = _score_from(obj)
        if score is None:
            return None, "the JSON has no 'score' between 0 and 4"
        raw = obj.get("verdicts")
        if not isinstance(raw, list):
            return None, "the JSON has no 'verdicts' list"
        verdicts = []
        for it in raw[:MAX_ITEMS]:
            if not isinstance(it, dict):
                continue
            verdict = _text(it.get("verdict"), 20).lower().replace(" ", "_").replace("-", "_")
            if verdict not in ATTRIBUTE_VERDICTS:
                continue
            verdicts.append({"attribute": _text(it.get("attribute"), 80), "verdict": verdict,
                             "note": _text(it.get("note") or it.get("reason"), 200)})
        if raw and not verdicts:
            return None, f"no verdict is one of {', '.join(ATTRIBUTE_VERDICTS)}"
        return {"score": score, "verdicts": verdicts}, None
    if kind == "caption":
        raw = obj.get("caption") if isinstance(obj, dict) else None
        if raw is None and obj is None and isinstance(text, str) and "{" not in text:
            raw = text  # a bare sentence is a caption too
        caption = _text(raw, MAX_CAPTION) if isinstance(raw, str) else ""
        if len(caption) < 3:
            return None, "no 'caption' text in the reply"
        return {"caption": caption}, None
    return None, f"task kind {kind!r} has no parser"  # pragma: no cover
