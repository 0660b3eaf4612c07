"""One-way reference attention, the cache: each reference's per-block keys and values, kept across
queued runs under a memory cap (``II_REFERENCE_CACHE_MB``), least recently used dropped first."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .oneway_blocks import ReferenceKV

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 4096   # one 1024^2 FLUX.1-dev reference in bf16 (2.7 GiB) or five 512^2 ones


# --------------------------------------------------------------------------------------------------
# the cache: per reference, across sampling runs


def weights_fingerprint(dm) -> str:
    """Changes whenever a weight tensor is replaced or modified in place (ComfyUI patching a LoRA in,
    an optimizer step on a trained LoRA): storage address and version counter of every parameter.
    Weights ComfyUI loaded under ``torch.inference_mode`` have no version counter; ComfyUI changes
    those only through its patches, which the ModelPatcher's ``patches_uuid`` in the key covers."""
    h = hashlib.sha1()
    for p in dm.parameters():
        h.update(f"{p.data_ptr()}:{'i' if p.is_inference() else p._version};".encode())
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(repr(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


@dataclass
class _Entry:
    kv: ReferenceKV
    model: weakref.ref
    nbytes: int


class ReferenceCache:
    """Reference K/V by key, least recently used dropped first once their total exceeds
    ``max_bytes`` (the entry just added is always kept, even if it alone is larger; ``max_bytes``
    0 keeps nothing). Entries live on the device they were computed on; ComfyUI's memory manager
    does not see them, which is what the cap is for. On a GPU, recomputing a reference costs about
    one model call of H x W tokens, so the cache saves little more than that per queued run."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key, model) -> ReferenceKV | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.model() is model:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.kv
            if entry is not None:           # the model it was made for is gone (an id was reused)
                del self._entries[key]
            self.misses += 1
            return None

    def put(self, key, model, kv: ReferenceKV) -> None:
        if self.max_bytes <= 0:   # II_REFERENCE_CACHE_MB=0: nothing kept across runs (a run still reuses its own)
            return
        with self._lock:
            for k in [k for k, e in self._entries.items() if e.model() is None]:
                del self._entries[k]                 # made for a model that has been freed
            self._entries[key] = _Entry(kv, weakref.ref(model), kv.nbytes)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                _, entry = self._entries.popitem(last=False)
                log.info("one-way reference cache: dropped a reference (%.0f MiB) to stay under %.0f MiB",
                         entry.nbytes / 2**20, self.max_bytes / 2**20)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = ReferenceCache(int(float(os.environ.get("II_REFERENCE_CACHE_MB", DEFAULT_CACHE_MB)) * 2**20))


