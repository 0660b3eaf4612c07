"""From checked pairs to micro-batches: caching (latents, text embeddings) and the data order.

The order is a pure function of (seed, epoch, world size): each epoch, every bucket's items (repeated
``num_repeats`` times) are shuffled and cut into *global* batches of ``batch_size x processes`` items of
one bucket (a short last batch is filled from the start of the same bucket), and the global batches
are shuffled. Micro-step ``m`` is global batch ``m mod n`` of epoch ``m div n``; process ``r`` takes its
slice. So the data position of a run is one integer, and a resumed run continues exactly where the
saved one stopped. The noise and timestep of a sample depend on (seed, micro-step, index in the global
batch) only, which makes one process with batch 2 see what two processes with batch 1 see.

Several references: a pair with K references joins the batches of K (buckets are (dataset, size, K));
with ``reference_views = [lo, hi]`` its bucket is (dataset, size, lo..hi) and each global batch draws one
K in that range, then each of its pairs draws which K of its references (functions of (seed, epoch,
batch) and (seed, epoch, pair, K)), so the grid ``[target | ref_1 | ... | ref_K]`` varies between epochs
while the number of batches per epoch, and so the meaning of a micro-step, stays fixed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .cache import TensorCache
from .dataset import DatasetSpec, Pair, choose_bucket, load_image, make_buckets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    target: str              # latent cache key
    reference: str | None    # latent cache key (identity mode): the first reference
    text: str                # text cache key
    bucket: tuple[int, int]  # (width, height) in pixels
    dataset: int
    repeats: int
    source: str
    extra_references: tuple[str, ...] = ()   # latent cache keys of references 2..K
    views: tuple[int, int] | None = None     # draw lo..hi references per epoch (None: all)

    @property
    def references(self) -> tuple[str, ...]:
        return ((self.reference,) if self.reference is not None else ()) + tuple(self.extra_references)


@dataclass
class MicroBatch:
    target: torch.Tensor             # [B, C, h, w] VAE-space latents
    reference: torch.Tensor | list | None   # [B, C, h, w]; K > 1 references: a list of K such tensors
    context: torch.Tensor            # [B, T, D]
    pooled: torch.Tensor | None      # [B, D]
    sample_ids: list[int]            # index of each sample in its global batch
    epoch: int

    @property
    def references(self) -> int:
        return len(self.reference) if isinstance(self.reference, list) else 1


class Encoders:
    """VAE and text encoder, loaded only if a cache miss (or sampling) needs them."""

    def __init__(self, vae_identity: str, text_identity: str, load_vae, load_text):
        self.vae_identity, self.text_identity = vae_identity, text_identity
        self._load_vae, self._load_text = load_vae, load_text
        self._vae = self._text = None

    @classmethod
    def of(cls, vae, text_encoder) -> Encoders:
        enc = cls(getattr(vae, "identity", ""), getattr(text_encoder, "identity", ""), lambda: vae, lambda: text_encoder)
        return enc

    @property
    def vae(self):
        if self._vae is None:
            self._vae = self._load_vae()
            if self._vae is None:
                raise RuntimeError("a VAE is needed (cache miss or samples) but none was given")
        return self._vae

    @property
    def text(self):
        if self._text is None:
            self._text = self._load_text()
            if self._text is None:
                raise RuntimeError("a text encoder is needed (cache miss) but none was given")
        return self._text

    def drop_text(self) -> None:
        self._text = None

    def drop_vae(self) -> None:
        self._vae = None


def latent_key(content_hash: str, bucket: tuple[int, int], vae_identity: str) -> str:
    return TensorCache.key("latent", content_hash, f"{bucket[0]}x{bucket[1]}", vae_identity)


def text_key(caption: str, text_identity: str) -> str:
    return TensorCache.key("text", caption, text_identity)


def build_items(pairs: list[Pair], specs: list[DatasetSpec], encoders: Encoders, hashes, latents: TensorCache,
                texts: TensorCache, *, progress=None) -> list[Item]:
    """Cache keys of every pair, encoding what the caches lack (VAE and text encoder load lazily)."""
    buckets = [make_buckets(s) for s in specs]
    items: list[Item] = []
    todo_latent: dict[str, tuple[Path, tuple[int, int]]] = {}
    todo_text: dict[str, str] = {}
    for pair in pairs:
        bucket = choose_bucket(pair.size, specs[pair.dataset], buckets[pair.dataset])
        tk = latent_key(hashes(pair.target), bucket, encoders.vae_identity)
        rks = [latent_key(hashes(r), bucket, encoders.vae_identity) for r in pair.references]
        ck = text_key(pair.caption, encoders.text_identity)
        for key, path in [(tk, pair.target), *zip(rks, pair.references)]:
            if not latents.valid(key):
                todo_latent[key] = (path, bucket)
        if not texts.valid(ck):
            todo_text[ck] = pair.caption
        items.append(Item(tk, rks[0] if rks else None, ck, bucket, pair.dataset, pair.repeats, pair.source,
                          tuple(rks[1:]), pair.views))
    n_lat, n_txt = len(todo_latent), len(todo_text)
    log.info("cache: %d latents and %d captions to encode (%d items; the rest reused)", n_lat, n_txt, len(items))
    if todo_text:
        te = encoders.text
        for key, caption in _progress(todo_text.items(), progress, "encoding captions"):
            cond, pooled = te.encode(caption)
            tensors = {"cond": cond}
            if pooled is not None:
                tensors["pooled"] = pooled
            texts.put(key, tensors, keep_in_memory=True)
    if todo_latent:
        vae = encoders.vae
        for key, (path, bucket) in _progress(todo_latent.items(), progress, "encoding images"):
            with torch.no_grad():
                z = vae.encode(load_image(path, bucket))
            latents.put(key, {"latent": z[0].float()}, keep_in_memory=True)
    return items


def _progress(iterable, progress, desc):
    if progress is None:
        return iterable
    return progress(list(iterable), desc=desc)


class TrainData:
    def __init__(self, items: list[Item], specs: list[DatasetSpec], latents: TensorCache, texts: TensorCache, *,
                 seed: int, world: int):
        if not items:
            raise ValueError("no training items")
        self.items, self.specs, self.latents, self.texts = items, specs, latents, texts
        self.seed, self.world = int(seed), int(world)
        self._plans: dict[int, tuple[list[list[int]], list[int]]] = {}
        self.batches_per_epoch = len(self.plan(0))

    def global_batch(self, dataset: int) -> int:
        return self.specs[dataset].batch_size * self.world

    def view_range(self, index: int) -> tuple[int, int]:
        """How few and how many of item ``index``'s references one of its grids holds (0, 0 in grid mode)."""
        it = self.items[index]
        n = len(it.references)
        return (n, n) if it.views is None else (min(it.views[0], n), min(it.views[1], n))

    @property
    def reference_range(self) -> tuple[int, int]:
        """The fewest and most references a training grid holds (0, 0 in grid mode)."""
        ranges = [self.view_range(i) for i in range(len(self.items))]
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)

    def views(self, epoch: int, index: int, k: int | None = None) -> tuple[int, ...]:
        """Which ``k`` of item ``index``'s references (in order) a grid of ``epoch`` uses (all without views)."""
        it = self.items[index]
        if it.views is None:
            return tuple(range(len(it.references)))
        lo, hi = self.view_range(index)
        k = hi if k is None else int(k)
        if not lo <= k <= hi:
            raise ValueError(f"item {index} takes {lo}..{hi} references, not {k}")
        rng = random.Random(f"{self.seed}:{epoch}:views:{index}:{k}")
        return tuple(sorted(rng.sample(range(len(it.references)), k)))

    def plan(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s global batches (item indices); as many every epoch."""
        return self._plan(epoch)[0]

    def batch_views(self, epoch: int) -> list[int]:
        """How many references each global batch of ``epoch`` puts in its grids."""
        return self._plan(epoch)[1]

    def _plan(self, epoch: int) -> tuple[list[list[int]], list[int]]:
        if epoch in self._plans:
            return self._plans[epoch]
        groups: dict[tuple, list[int]] = {}
        for i, it in enumerate(self.items):
            groups.setdefault((it.dataset, it.bucket, self.view_range(i)), []).extend([i] * it.repeats)
        batches: list[tuple[list[int], int]] = []
        for (d, bucket, (lo, hi)), idx in sorted(groups.items()):
            tag = "" if hi <= 1 else (f":{hi}" if lo == hi else f":{lo}-{hi}")
            rng = random.Random(f"{self.seed}:{epoch}:{d}:{bucket}{tag}")
            idx = idx[:]
            rng.shuffle(idx)
            size = self.global_batch(d)
            for start in range(0, len(idx), size):
                chunk = idx[start:start + size]
                j = 0
                while len(chunk) < size:  # fill a short last batch from the same bucket
                    chunk.append(idx[j % len(idx)])
                    j += 1
                batches.append((chunk, lo if lo == hi else rng.randint(lo, hi)))
        random.Random(f"{self.seed}:{epoch}").shuffle(batches)
        plan = ([c for c, _ in batches], [k for _, k in batches])
        self._plans = {epoch: plan}  # one epoch at a time
        return plan

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_epoch

    def micro_batch(self, micro_step: int, rank: int, device=None) -> MicroBatch:
        epoch = self.epoch_of(micro_step)
        position = micro_step % self.batches_per_epoch
        chunk, k = self.plan(epoch)[position], self.batch_views(epoch)[position]
        per = len(chunk) // self.world
        ids = list(range(rank * per, (rank + 1) * per))
        items = [self.items[chunk[i]] for i in ids]
        target = torch.stack([self.latents.get(it.target)["latent"] for it in items])
        reference = None
        if items[0].reference is not None:
            chosen = [[it.references[v] for v in self.views(epoch, chunk[i], k)] for it, i in zip(items, ids)]
            panels = [torch.stack([self.latents.get(keys[j])["latent"] for keys in chosen]) for j in range(len(chosen[0]))]
            reference = panels[0] if len(panels) == 1 else panels
        texts = [self.texts.get(it.text) for it in items]
        context = _pad_stack([t["cond"] for t in texts])
        pooled = torch.stack([t["pooled"] for t in texts]) if "pooled" in texts[0] else None
        mb = MicroBatch(target, reference, context, pooled, ids, epoch)
        if device is not None:
            mb.target = mb.target.to(device)
            if isinstance(mb.reference, list):
                mb.reference = [r.to(device) for r in mb.reference]
            elif mb.reference is not None:
                mb.reference = mb.reference.to(device)
            mb.context = mb.context.to(device)
            mb.pooled = mb.pooled.to(device) if mb.pooled is not None else None
        return mb


def _pad_stack(conds: list[torch.Tensor]) -> torch.Tensor:
    """Text embeddings of one batch; a longer caption pads the others with zero tokens (rare: ComfyUI's
    T5 pads every caption to 256 tokens already)."""
    n = max(c.shape[0] for c in conds)
    if all(c.shape[0] == n for c in conds):
        return torch.stack(conds)
    return torch.stack([torch.cat([c, c.new_zeros(n - c.shape[0], c.shape[1])]) for c in conds])


def sample_generator(seed: int, micro_step: int, sample_id: int) -> torch.Generator:
    """The CPU generator for one sample's timestep and noise: a function of its place in training only."""
    mixed = (int(seed) * 0x9E3779B1 + int(micro_step) * 0x85EBCA77 + int(sample_id) * 0xC2B2AE3D) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)
