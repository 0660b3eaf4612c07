"""On-disk cache of validated VLM answers, keyed by (backend, task, prompt text, image hashes).

One small JSON file per answer under ``<root>/<key[:2]>/<key>.json``, written atomically by the
pack's one atomic write (:mod:`instruct_identity.core.files`), so concurrent workers and interrupted
runs never leave a torn entry; temporary files a killed run left behind are removed when the cache
is next opened. Only validated answers are stored (the judge re-checks what it reads, too); failures
are always asked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from ...core.files import atomic_write_text, clean_stale_temporaries

log = logging.getLogger(__name__)


class AnswerCache:
    def __init__(self, root: str | Path, stale_after_s: float = 3600.0):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        removed = 0
        if self.root.is_dir():
            for sub in [self.root, *(p for p in self.root.iterdir() if p.is_dir())]:
                removed += len(clean_stale_temporaries(sub, stale_after_s))
        if removed:
            log.info("VLM cache %s: removed %d half-written temporary file(s)", self.root, removed)

    @staticmethod
    def key(backend_id: str, task: str, prompt: str, image_hashes: list[str]) -> str:
        payload = json.dumps([backend_id, task, prompt, list(image_hashes)], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            record = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.misses += 1
            return None
        if not isinstance(record, dict) or "answer" not in record:
            self.misses += 1
            return None
        self.hits += 1
        return record

    def put(self, key: str, record: dict) -> None:
        atomic_write_text(self.path(key), json.dumps({**record, "created": time.time()}, ensure_ascii=False),
                          fsync=False)
