"""The evaluator: the configured models plus Algorithm 2 over one pair or a batch.

>>> ev = Evaluator.from_config(load_config("charis.toml"))
>>> result = ev.score_pair("ref.png", "gen.png", "the cat surfing a wave")
>>> result.composite.value, result.axes["color"].value

Models are injectable (``Evaluator(config, clip=..., iqa=..., segmenter=..., judge=...)``) and the
ones built from the config load lazily on first use. Every axis that fails is reported missing with
its reason; only an unreadable image fails the whole item.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import scoring
from .color import ColorScales
from .composite import CompositeSpec, composite
from .config import CharisConfig
from .images import Picture, load
from .results import AxisResult, PairResult
from .segment import ClusterSegmenter

log = logging.getLogger(__name__)

_UNSET = object()


@dataclass
class Item:
    """One (reference, generated, prompt) to score. Images are paths or Pictures."""

    id: str
    reference: str | Path | Picture
    generated: str | Path | Picture
    prompt: str = ""


class Evaluator:
    def __init__(self, config: CharisConfig | None = None, *, clip=_UNSET, iqa=_UNSET, segmenter=_UNSET,
                 judge=_UNSET):
        self.config = config or CharisConfig()
        self._clip, self._iqa, self._segmenter, self._judge = clip, iqa, segmenter, judge
        c = self.config.color
        self.scales = ColorScales(rgb=c.rgb_scale, hsv=c.hsv_scale, lab=c.lab_scale)
        cc = self.config.composite
        self.spec = CompositeSpec(mode=self.config.mode,
                                  weights=dict(cc.weights) if cc.weights is not None else None,
                                  thresholds=dict(cc.thresholds) if cc.thresholds is not None else None,
                                  min_composite=self.config.composite.min_composite,
                                  require_all=self.config.composite.require_all)

    @classmethod
    def from_config(cls, config: CharisConfig) -> "Evaluator":
        return cls(config)

    # -- lazily built models ---------------------------------------------------------------------
    @property
    def clip(self):
        if self._clip is _UNSET:
            from .clip import ClipModel

            p = self.config.clip
            self._clip = ClipModel(p.path, p.arch, self.config.device) if p.path else None
        return self._clip

    @property
    def iqa(self):
        if self._iqa is _UNSET:
            q = self.config.quality
            if q.backend == "none":
                self._iqa = None
            elif q.backend == "pyiqa":
                from .clip import PyiqaClipIQA

                if not q.path:
                    raise ValueError("quality.path: the pyiqa backend needs a local TorchScript CLIP (e.g. RN50.pt)")
                self._iqa = PyiqaClipIQA(q.path, self.config.device, max_side=q.max_side)
            else:
                from .clip import ClipIQA, ClipModel

                model = ClipModel(q.path, q.arch, self.config.device) if q.path else self.clip
                self._iqa = (ClipIQA(model, native_resolution=q.native_resolution, max_side=q.max_side)
                             if model else None)
        return self._iqa

    @property
    def segmenter(self):
        if self._segmenter is _UNSET:
            c = self.config.color
            if c.segmenter == "grounded-sam":
                from .segment import GroundedSamSegmenter

                if not (c.grounding_dino and c.sam):
                    raise ValueError("color: the grounded-sam segmenter needs grounding_dino and sam model folders")
                self._segmenter = GroundedSamSegmenter(c.grounding_dino, c.sam, self.config.device,
                                                       box_threshold=c.box_threshold)
            else:
                self._segmenter = ClusterSegmenter(work_size=c.work_size, max_regions=c.max_regions)
        return self._segmenter

    @property
    def judge(self):
        if self._judge is _UNSET:
            self._judge = build_judge(self.config)
        return self._judge

    # -- scoring ---------------------------------------------------------------------------------
    def score_pair(self, reference, generated, prompt: str = "", item_id: str | None = None,
                   spec: CompositeSpec | None = None) -> PairResult:
        """All selected axes and the composite (under ``spec``, default the config's) for one pair
        (paths or Pictures)."""
        t0 = time.perf_counter()
        ref_name = reference.source if isinstance(reference, Picture) else str(reference)
        gen_name = generated.source if isinstance(generated, Picture) else str(generated)
        item_id = item_id or Path(str(gen_name or "pair")).stem
        try:
            ref = reference if isinstance(reference, Picture) else load(reference)
            gen = generated if isinstance(generated, Picture) else load(generated)
        except Exception as e:  # noqa: BLE001 - an unreadable image fails this item only
            return PairResult.failure(item_id, f"cannot read the images: {type(e).__name__}: {e}", prompt,
                                      ref_name, gen_name)
        calls_before = self._calls()
        axes = self.axes(ref, gen, prompt, spec)
        result = PairResult(id=item_id, prompt=prompt, axes=axes, composite=composite(axes, spec or self.spec),
                            reference=ref_name, generated=gen_name)
        result.vlm_calls = self._calls() - calls_before
        result.seconds = round(time.perf_counter() - t0, 4)
        return result

    def axes(self, ref: Picture, gen: Picture, prompt: str, spec: CompositeSpec | None = None) -> dict[str, AxisResult]:
        wanted = self.config.selected_axes()
        spec = spec or self.spec
        needed = set(wanted) | set(spec.axes) | set(spec.thresholds)
        out: dict[str, AxisResult] = {}
        attributes: list[dict] = []

        def run(name: str, fn: Callable[[], AxisResult]) -> None:
            try:
                out[name] = fn()
            except Exception as e:  # noqa: BLE001 - one broken axis must not sink the others
                log.exception("CHARIS: the %s axis failed", name)
                out[name] = AxisResult.absent(name, f"{type(e).__name__}: {self._redact(str(e))}")

        if "identity" in needed:
            def _identity():
                nonlocal attributes
                res, attributes = scoring.identity(ref, gen, prompt, self.judge)
                return res
            run("identity", _identity)
        if "color" in needed:
            queries = [a.get("region") or a.get("attribute") for a in attributes] or None
            run("color", lambda: scoring.color(ref, gen, self.segmenter, queries, self.scales))
        if "quality" in needed:
            run("quality", lambda: scoring.quality(gen, self.iqa))
        if "prompt" in needed or "clip_score" in needed:
            rescale = tuple(self.config.clip.rescale) if self.config.clip.rescale else None
            run("clip_score", lambda: scoring.clip_score(gen, prompt, self.clip, rescale))
        if "prompt" in needed:
            run("prompt_vlm", lambda: scoring.vlm_rating("prompt", "prompt_vlm", {"generated": gen}, self.judge,
                                                         prompt=prompt))
            out["prompt"] = scoring.prompt_axis(out.pop("prompt_vlm"), out["clip_score"])
            if "clip_score" not in wanted:
                out.pop("clip_score")
        if "diversity" in needed:
            run("diversity", lambda: scoring.vlm_rating("diversity", "diversity", {"reference": ref, "generated": gen},
                                                        self.judge, prompt=prompt or "(no prompt given)"))
        pics = {"reference": ref, "generated": gen}
        for axis in ("dreambench_cp", "dreambench_pf", "dreambench_cp_debiased", "dreambench_pf_debiased"):
            if axis in needed:
                run(axis, lambda axis=axis: scoring.vlm_rating(axis, axis, pics, self.judge,
                                                               prompt=prompt or "(no prompt given)"))
        order = wanted + [a for a in out if a not in wanted]
        return {a: out[a] for a in order if a in out}

    def _calls(self) -> int:
        try:
            judge = self.judge
        except Exception:  # noqa: BLE001 - reported by the axes that need it
            return 0
        return judge.calls if judge is not None else 0

    def _redact(self, text: str) -> str:
        judge = self._judge if self._judge is not _UNSET else None
        backend = getattr(judge, "backend", None)
        return backend.redact(text) if hasattr(backend, "redact") else text

    def score_batch(self, items: Iterable[Item], workers: int = 1,
                    on_result: Callable[[PairResult], None] | None = None) -> Iterator[PairResult]:
        """Score items (in order); ``workers > 1`` overlaps items (worth it when a remote VLM is the
        bottleneck). A failed item comes back with ``error`` set and scoring goes on."""
        def one(item: Item) -> PairResult:
            try:
                return self.score_pair(item.reference, item.generated, item.prompt, item.id)
            except Exception as e:  # noqa: BLE001
                log.exception("CHARIS: item %s failed", item.id)
                return PairResult.failure(item.id, f"{type(e).__name__}: {self._redact(str(e))}", item.prompt,
                                          str(item.reference), str(item.generated))

        if workers <= 1:
            for item in items:
                r = one(item)
                if on_result:
                    on_result(r)
                yield r
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(one, items):
                if on_result:
                    on_result(r)
                yield r


def build_judge(config: CharisConfig):
    """The VLM judge described by ``config.vlm`` (None for backend "none")."""
    from .vlm import AnswerCache, Judge, OpenAICompatibleBackend, TransformersBackend
    from .vlm.backends import HttpSettings

    v = config.vlm
    if v.backend == "none":
        return None
    if v.backend == "openai":
        backend = OpenAICompatibleBackend(HttpSettings(
            base_url=v.base_url or "", model=v.model or "", api_key_env=v.api_key_env, timeout=v.timeout,
            max_retries=v.max_retries, backoff=v.backoff, max_backoff=v.max_backoff, concurrency=v.concurrency,
            temperature=v.temperature, max_tokens=v.max_tokens, image_max_side=v.image_max_side,
            json_mode=v.json_mode))
    else:
        if not v.path:
            raise ValueError("vlm.path: the transformers backend needs a local model folder")
        backend = TransformersBackend(v.path, device=config.device, dtype=v.dtype, max_new_tokens=v.max_new_tokens,
                                      image_max_side=v.image_max_side)
    cache = AnswerCache(config.cache_dir) if config.cache_dir else None
    return Judge(backend, cache, parse_retries=v.parse_retries)


def score_pair(reference, generated, prompt: str = "", config: CharisConfig | None = None, **models) -> PairResult:
    """One call to score one pair (builds an evaluator from ``config``)."""
    return Evaluator(config, **models).score_pair(reference, generated, prompt)


def score_batch(items: Iterable[Item], config: CharisConfig | None = None, workers: int = 1,
                **models) -> list[PairResult]:
    """One call to score a batch (builds an evaluator from ``config``)."""
    return list(Evaluator(config, **models).score_batch(items, workers=workers))
