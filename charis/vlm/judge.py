"""The judge: render a task's prompt, look the answer up in the cache, otherwise ask the backend,
validate the reply (asking again with a hint when it is malformed) and report a missing answer with
its reason instead of inventing one."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

from ..images import Picture
from .backends import VLMError
from .cache import AnswerCache
from .parse import parse_answer, valid_answer
from .prompts import RETRY_HINT, SYSTEM, TASKS, render

log = logging.getLogger(__name__)


@dataclass
class Answer:
    task: str
    value: dict | None
    error: str | None = None
    cached: bool = False
    calls: int = 0  # backend calls made for this answer
    raw: str | None = None
    attempts: list[str] = field(default_factory=list)  # problems of rejected replies

    @property
    def ok(self) -> bool:
        return self.value is not None


class Judge:
    def __init__(self, backend, cache: AnswerCache | None = None, parse_retries: int = 2, system: str = SYSTEM):
        self.backend = backend
        self.cache = cache
        self.parse_retries = max(0, int(parse_retries))
        self.system = system
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def id(self) -> str:
        return self.backend.id

    def _redact(self, text: str) -> str:
        redact = getattr(self.backend, "redact", None)
        return redact(text) if redact else text

    def ask(self, task: str, pictures: dict[str, Picture], **fields) -> Answer:
        """Ask ``task`` about ``pictures`` (keys "reference"/"generated", as the task needs)."""
        spec = TASKS[task]
        missing = [name for name in spec.images if pictures.get(name) is None]
        if missing:
            return Answer(task, None, f"no {' and no '.join(missing)} image to show the VLM")
        shown = [pictures[name] for name in spec.images]
        prompt = render(task, **fields)
        key = None
        if self.cache is not None:
            key = AnswerCache.key(self.id, task, prompt, [p.hash for p in shown])
            hit = self.cache.get(key)
            if hit is not None and valid_answer(task, hit["answer"]):
                value = json.loads(self._redact(json.dumps(hit["answer"])))  # entries of older versions, too
                return Answer(task, value, cached=True, raw=self._redact(hit.get("raw") or "") or None)
            if hit is not None:  # written by an older, laxer version: asked again, then overwritten
                log.info("VLM cache: stored %s answer no longer valid; asking again", task)
        images = [p.pil() for p in shown]
        answer = Answer(task, None)
        text = prompt
        for _ in range(1 + self.parse_retries):
            try:
                reply = self.backend.complete(text, images, system=self.system)
            except VLMError as e:
                answer.error = self._redact(str(e))
                return answer
            finally:
                answer.calls += 1
                with self._lock:
                    self.calls += 1
            reply = self._redact(reply)  # an answer that echoes the key never reaches a result, report or cache
            value, problem = parse_answer(task, reply)
            if value is not None:
                answer.value, answer.raw = value, reply[:4000]
                if self.cache is not None:
                    self.cache.put(key, {"task": task, "backend": self.id, "answer": value, "raw": answer.raw})
                return answer
            answer.attempts.append(problem)
            log.info("VLM %s: malformed answer for %s (%s)", self.id, task, problem)
            text = prompt + RETRY_HINT.format(problem=problem)
        answer.error = f"the VLM gave no usable answer in {1 + self.parse_retries} tries: {answer.attempts[-1]}"
        return answer
