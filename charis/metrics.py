"""The CHARIS metric registry: the ONE path from an axis name to its score.

Thin metric classes over :mod:`.scoring`, one per axis, torchmetrics-style: the metadata comes from
the axis registry (:mod:`.axes`) as class attributes, the models are injected, ``__call__`` returns
an :class:`AxisResult`. :func:`create_metric` builds one by axis name (pyiqa-style)::

    color = create_metric("color")                      # weight-free segmenter
    color(reference, generated).value
    identity = create_metric("identity", judge=judge)   # needs a VLM judge

The :class:`~.evaluator.Evaluator` scores every axis through :func:`create_metric` too, with
:data:`REQUIRES` telling which of its (lazily built) models each axis takes, and in
:data:`ORDER`, so an axis can use what an earlier one found (``context``): the identity attributes
become the colour segmenter's part queries, the CLIP score is the CLIP half of the prompt axis.
"""

from __future__ import annotations

from .axes import all_axes, get_axis
from .color import DEFAULT_SCALES
from .images import Picture
from .results import AxisResult
from .segment import ClusterSegmenter
from . import scoring

#: Evaluation order: an axis may read the context left by the ones before it.
ORDER = ("identity", "color", "quality", "clip_score", "prompt", "diversity", "dreambench_cp", "dreambench_pf",
         "dreambench_cp_debiased", "dreambench_pf_debiased")

#: The models (constructor keywords) each axis's metric takes; VLM rating axes take the judge.
REQUIRES = {
    "color": ("segmenter", "scales"),
    "quality": ("iqa",),
    "clip_score": ("clip", "rescale"),
    "identity": ("judge",),
    "prompt": ("judge", "clip", "rescale"),
}


def requires(axis: str) -> tuple[str, ...]:
    return REQUIRES.get(axis, ("judge",) if get_axis(axis).needs_vlm else ())


class Metric:
    axis: str = ""

    @classmethod
    def info(cls):
        return get_axis(cls.axis)

    @property
    def higher_is_better(self) -> bool:
        return self.info().higher_is_better

    @property
    def value_range(self) -> tuple[float, float]:
        i = self.info()
        return i.low, i.high

    def __call__(self, reference: Picture | None, generated: Picture, prompt: str = "",
                 context: dict | None = None) -> AxisResult:
        raise NotImplementedError


class ColorMetric(Metric):
    axis = "color"

    def __init__(self, segmenter=None, scales=DEFAULT_SCALES):
        self.segmenter = segmenter or ClusterSegmenter()
        self.scales = scales

    def __call__(self, reference, generated, prompt="", context=None, queries=None):
        if queries is None and context:
            queries = [a.get("region") or a.get("attribute") for a in context.get("attributes", [])] or None
        return scoring.color(reference, generated, self.segmenter, queries, self.scales)


class QualityMetric(Metric):
    axis = "quality"

    def __init__(self, iqa):
        self.iqa = iqa

    def __call__(self, reference, generated, prompt="", context=None):
        return scoring.quality(generated, self.iqa)


class ClipScoreMetric(Metric):
    axis = "clip_score"

    def __init__(self, clip, rescale: tuple[float, float] | None = None):
        self.clip, self.rescale = clip, rescale

    def __call__(self, reference, generated, prompt="", context=None):
        return scoring.clip_score(generated, prompt, self.clip, self.rescale)


class IdentityMetric(Metric):
    axis = "identity"

    def __init__(self, judge):
        self.judge = judge

    def __call__(self, reference, generated, prompt="", context=None):
        result, attributes = scoring.identity(reference, generated, prompt, self.judge)
        if context is not None:
            context["attributes"] = attributes
        return result


class PromptMetric(Metric):
    axis = "prompt"

    def __init__(self, judge, clip, rescale: tuple[float, float] | None = None):
        self.judge, self.clip, self.rescale = judge, clip, rescale

    def __call__(self, reference, generated, prompt="", context=None):
        clip = (context or {}).get("axes", {}).get("clip_score")
        if clip is None:
            clip = scoring.clip_score(generated, prompt, self.clip, self.rescale)
        vlm = scoring.vlm_rating("prompt", "prompt_vlm", {"generated": generated}, self.judge, prompt=prompt)
        return scoring.prompt_axis(vlm, clip)


class RatingMetric(Metric):
    """A VLM 0-4 rating axis: diversity and the DreamBench++-style ones."""

    def __init__(self, axis: str, judge):
        get_axis(axis)
        self.axis = axis
        self.judge = judge

    def info(self):  # type: ignore[override]  # per instance: one class serves several axes
        return get_axis(self.axis)

    def __call__(self, reference, generated, prompt="", context=None):
        return scoring.vlm_rating(self.axis, self.axis, {"reference": reference, "generated": generated}, self.judge,
                                  prompt=prompt or "(no prompt given)")


_FACTORIES = {
    "color": ColorMetric,
    "quality": QualityMetric,
    "clip_score": ClipScoreMetric,
    "identity": IdentityMetric,
    "prompt": PromptMetric,
}


def create_metric(name: str, **kwargs) -> Metric:
    """The metric for axis ``name`` (unknown names raise with the nearest valid one)."""
    get_axis(name)
    if name in _FACTORIES:
        return _FACTORIES[name](**kwargs)
    return RatingMetric(name, **kwargs)


assert set(ORDER) == set(all_axes()), "every registered axis needs a place in metrics.ORDER"
