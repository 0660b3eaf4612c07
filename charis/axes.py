"""The CHARIS axis registry: one metadata table for every score the evaluator can produce.

Each axis has a value range, a direction, whether it needs a VLM judge, whether it needs the
reference image and the prompt, and a one-line meaning (shown in reports and node tooltips).
:func:`get_axis` rejects unknown names and suggests the nearest registered one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import closest


@dataclass(frozen=True)
class AxisInfo:
    name: str
    title: str
    meaning: str
    low: float = 0.0
    high: float = 1.0
    higher_is_better: bool = True
    needs_vlm: bool = False
    needs_reference: bool = True
    needs_prompt: bool = False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_REGISTRY: dict[str, AxisInfo] = {}


def register(info: AxisInfo) -> AxisInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"CHARIS axis '{info.name}' is registered twice")
    if not info.low < info.high:
        raise ValueError(f"CHARIS axis '{info.name}': empty range [{info.low}, {info.high}]")
    _REGISTRY[info.name] = info
    return info


def get_axis(name: str) -> AxisInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        near = closest(name, _REGISTRY)
        hint = f" Did you mean '{near}'?" if near else ""
        raise KeyError(f"unknown CHARIS axis '{name}'.{hint} Known axes: {', '.join(_REGISTRY)}") from None


def all_axes() -> dict[str, AxisInfo]:
    return dict(_REGISTRY)


IDENTITY = register(AxisInfo(
    "identity", "Identity",
    "Attribute-level identity: the VLM lists the reference's identity attributes, then judges each in the "
    "generated image; 0-4 divided by 4.", needs_vlm=True))
PROMPT = register(AxisInfo(
    "prompt", "Prompt",
    "Prompt adherence: (VLM prompt score 0-4 / 4 + rescaled CLIP text-image similarity) / 2.",
    needs_vlm=True, needs_reference=False, needs_prompt=True))
COLOR = register(AxisInfo(
    "color", "Color",
    "Region-wise colour fidelity (Algorithm 1): matched regions compared by mean colour in RGB, HSV and LAB."))
QUALITY = register(AxisInfo(
    "quality", "Quality",
    "Visual quality of the generated image: CLIP-IQA (antonym prompt pairs, softmax per pair, mean).",
    needs_reference=False))
DIVERSITY = register(AxisInfo(
    "diversity", "Diversity",
    "How far the generated image transforms the reference (pose, viewpoint, scene, expression) rather than "
    "copying it; VLM 0-4 divided by 4.", needs_vlm=True))
CLIP_SCORE = register(AxisInfo(
    "clip_score", "CLIP score",
    "CLIP text-image cosine of the generated image and the prompt, rescaled to [0, 1] (the CLIP half of the "
    "prompt axis).", needs_reference=False, needs_prompt=True))
CP = register(AxisInfo(
    "dreambench_cp", "DreamBench++ CP",
    "DreamBench++-style concept preservation: VLM 0-4 / 4.", needs_vlm=True))
PF = register(AxisInfo(
    "dreambench_pf", "DreamBench++ PF",
    "DreamBench++-style prompt following: VLM 0-4 / 4.", needs_vlm=True, needs_reference=False, needs_prompt=True))
CP_DEB = register(AxisInfo(
    "dreambench_cp_debiased", "Debiased CP",
    "Concept preservation that penalises copy-paste of the reference: VLM 0-4 / 4.", needs_vlm=True))
PF_DEB = register(AxisInfo(
    "dreambench_pf_debiased", "Debiased PF",
    "Prompt following that penalises copy-paste of the reference: VLM 0-4 / 4.", needs_vlm=True, needs_prompt=True))

CORE_AXES = ("identity", "prompt", "color", "quality", "diversity")
DREAMBENCH_AXES = ("dreambench_cp", "dreambench_pf", "dreambench_cp_debiased", "dreambench_pf_debiased")
