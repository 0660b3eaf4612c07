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

from ..core.errors import InputError
from .color import ColorScales
from .composite import CompositeSpec, composite
from .config import CharisConfig
from .images import Picture, load
from .metrics import ORDER, create_metric, requires
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
        self._metrics: dict = {}
        c = self.config.color
        self._scales = ColorScales(rgb=c.rgb_scale, hsv=c.hsv_scale, lab=c.lab_scale)
        self.spec = spec_from_config(self.config)

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
                    raise InputError("quality.path (--quality-model)", "the pyiqa backend needs a local TorchScript CLIP.",
                                     "Give the path of e.g. RN50.pt.")
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
                    raise InputError("color.grounding_dino / color.sam", "the grounded-sam segmenter needs both model "
                                     "folders.", "Give --grounding-dino and --sam, or --segmenter cluster.")
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
        if not isinstance(prompt, str):
            raise InputError("prompt", f"must be text, got {type(prompt).__name__} ({str(prompt)[:40]!r}).",
                             "Give the prompt as a string (quote it in the manifest).")
        try:
            ref = reference if isinstance(reference, Picture) else load(reference, "reference")
            gen = generated if isinstance(generated, Picture) else load(generated, "generated")
        except Exception as e:  # noqa: BLE001 - an unreadable image fails this item only
            return PairResult.failure(item_id, f"cannot read the images: {e}", prompt, ref_name, gen_name)
        calls_before = self._calls()
        spec = spec or self.spec
        axes = self.axes(ref, gen, prompt, spec)
        unasked = {a: AxisResult.absent(a, "not requested (--axes / axes)") for a in (*spec.axes, *spec.thresholds)
                   if a not in axes and a != "composite"}
        result = PairResult(id=item_id, prompt=prompt, axes=axes, composite=composite({**unasked, **axes}, spec),
                            reference=ref_name, generated=gen_name)
        result.vlm_calls = self._calls() - calls_before
        result.seconds = round(time.perf_counter() - t0, 4)
        return result

    def wanted_axes(self, spec: CompositeSpec | None = None) -> list[str]:
        """The axes to compute: the ones asked for (``config.axes`` / ``--axes``) and nothing else; with
        none asked for, the five core axes plus whatever the composite and its thresholds use."""
        spec = spec or self.spec
        wanted = self.config.selected_axes()
        if self.config.axes is None:
            wanted += [a for a in (*spec.axes, *spec.thresholds) if a not in wanted and a != "composite"]
        return wanted

    def metric(self, name: str):
        """The registry's metric for axis ``name``, built once with the models it needs."""
        if name not in self._metrics:
            models = {key: getattr(self, key) for key in requires(name)}
            self._metrics[name] = create_metric(name, **models)
        return self._metrics[name]

    @property
    def scales(self) -> ColorScales:
        return self._scales

    @property
    def rescale(self) -> tuple[float, float] | None:
        return tuple(self.config.clip.rescale) if self.config.clip.rescale else None

    def axes(self, ref: Picture, gen: Picture, prompt: str, spec: CompositeSpec | None = None) -> dict[str, AxisResult]:
        """Every wanted axis, each through its registry metric (:mod:`.metrics`); an axis that fails
        is reported missing with the reason and the others go on."""
        wanted = self.wanted_axes(spec)
        todo = [a for a in ORDER if a in wanted]
        if "prompt" in todo and "clip_score" not in todo:
            todo.insert(todo.index("prompt"), "clip_score")  # the CLIP half of the prompt axis
        context: dict = {"axes": {}}
        for name in todo:
            try:
                result = self.metric(name)(ref, gen, prompt, context)
            except Exception as e:  # noqa: BLE001 - one broken axis must not sink the others
                log.exception("CHARIS: the %s axis failed", name)
                result = AxisResult.absent(name, f"{type(e).__name__}: {self._redact(str(e))}")
            context["axes"][name] = result
        out = context["axes"]
        return {a: out[a] for a in wanted if a in out}
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


def spec_from_config(config: CharisConfig) -> CompositeSpec:
    """The composite spec a config describes (mode, weights, thresholds, partial or not)."""
    cc = config.composite
    thresholds = dict(cc.thresholds) if cc.thresholds is not None else None
    if cc.prompt_threshold is not None:
        if config.mode != "filter":
            raise InputError("composite.prompt_threshold (--min-prompt)", "is a filter-mode criterion.",
                             "Use it with --mode filter.")
        thresholds = dict(thresholds if thresholds is not None else CompositeSpec("filter").thresholds)
        thresholds["prompt"] = float(cc.prompt_threshold)
    return CompositeSpec(mode=config.mode, weights=dict(cc.weights) if cc.weights is not None else None,
                         thresholds=thresholds, min_composite=cc.min_composite, allow_partial=cc.allow_partial)


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
            raise InputError("vlm.path (--vlm-path)", "the transformers backend needs a local model folder.",
                             "Give the folder of a Qwen2-VL-class model.")
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
