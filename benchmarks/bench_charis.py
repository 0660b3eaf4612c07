"""CHARIS throughput benchmark (CPU; no downloads).

1. Pairs per second for the non-VLM axes at 512 x 512:
   * colour only, weight-free segmenter;
   * colour + quality (CLIP-IQA) + CLIP score on a full-size RN50 CLIP with random weights (same
     compute as the real one: its weights cannot be downloaded here, and speed does not depend on them).
2. VLM calls per pair with the answer cache cold and warm, against the loopback fake
   OpenAI-compatible server used by the tests.

    .venv/bin/python benchmarks/bench_charis.py [--pairs 20] [--size 512] [--threads N] [--skip-clip]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "charis"))

import torch  # noqa: E402
from charis_models import character  # noqa: E402
from fake_vlm import FakeVLM  # noqa: E402

from instruct_identity.charis import CharisConfig, Evaluator  # noqa: E402
from instruct_identity.charis.config import CompositeConfig, VLMConfig  # noqa: E402
from instruct_identity.charis.images import from_pil  # noqa: E402


def pairs(n: int, size: int, distinct_refs: bool = True):
    out = []
    for i in range(n):
        ref = character(size=size, dx=i - n // 2 if distinct_refs else 0)
        gen = character(size=size, dx=(i * 7) % 60 - 30, dy=(i * 5) % 20, background=(250, 250 - 3 * (i % 10), 245))
        out.append((from_pil(ref), from_pil(gen), f"the hero, take {i}"))
    return out


def rate(ev: Evaluator, items, warmup: int = 2) -> float:
    for ref, gen, p in items[:warmup]:
        ev.score_pair(ref, gen, p)
    t = time.perf_counter()
    for ref, gen, p in items:
        ev.score_pair(ref, gen, p)
    return len(items) / (time.perf_counter() - t)


def random_rn50(folder: Path) -> Path:
    import open_clip

    model = open_clip.create_model("RN50-quickgelu", pretrained=None)  # random init, nothing downloaded
    path = folder / "RN50-quickgelu.pt"
    torch.save(model.state_dict(), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--skip-clip", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CHARIS benchmark: {args.pairs} pairs at {args.size}x{args.size}, CPU, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    items = pairs(args.pairs, args.size)

    color_only = Evaluator(CharisConfig(axes=["color"], composite=CompositeConfig(weights={"color": 1.0})))
    print(f"  colour axis only (weight-free segmenter):        {rate(color_only, items):6.2f} pairs/s")

    if not args.skip_clip:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = CharisConfig(axes=["color", "quality", "clip_score"],
                               composite=CompositeConfig(weights={"color": 1.0, "quality": 1.0}))
            cfg.clip.path = str(random_rn50(Path(tmp)))
            r = rate(Evaluator(cfg), items[: max(4, args.pairs // 2)], warmup=1)
            print(f"  colour + CLIP-IQA + CLIP score (RN50, random):   {r:6.2f} pairs/s")
            cfg.quality.max_side = 224
            r = rate(Evaluator(cfg), items[: max(4, args.pairs // 2)], warmup=1)
            print(f"  same, CLIP-IQA on a 224 px copy:                 {r:6.2f} pairs/s")

    server = FakeVLM()
    try:
        for label, distinct in (("a different reference per pair", True), ("one shared reference", False)):
            with tempfile.TemporaryDirectory() as cache:
                cfg = CharisConfig(cache_dir=cache, vlm=VLMConfig(backend="openai", base_url=server.base_url,
                                                                  model="fake-vl", api_key_env=None))
                batch = pairs(min(args.pairs, 10), 256, distinct_refs=distinct)
                cold = Evaluator(cfg)
                n0 = len(server.requests)
                for ref, gen, p in batch:
                    cold.score_pair(ref, gen, p)
                cold_calls = (len(server.requests) - n0) / len(batch)
                warm = Evaluator(cfg)  # a new process would see the same: the cache is on disk
                n0 = len(server.requests)
                for ref, gen, p in batch:
                    warm.score_pair(ref, gen, p)
                warm_calls = (len(server.requests) - n0) / len(batch)
                print(f"  VLM calls per pair ({label}): cold {cold_calls:.2f}, warm {warm_calls:.2f}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
