"""CHARIS nodes: load the evaluator models, score a generation, filter a batch.

Model folders registered with ComfyUI (all under ``models/``):
``charis/clip`` (open_clip weights files or local-dir folders; CLIP score and CLIP-IQA),
``charis/grounding_dino`` and ``charis/sam`` (transformers model folders), ``charis/vlm`` and ``LLM``
(transformers vision-language model folders, e.g. Qwen2.5-VL). An OpenAI-compatible VLM server is
given by URL and model name; its API key is read from the environment variable named on the node.
"""

from __future__ import annotations

import json
import logging
import os

import torch
from comfy_api.latest import io

from ..charis.axes import CORE_AXES, get_axis
from ..charis.composite import FILTER_THRESHOLDS, FILTER_WEIGHTS, CompositeSpec
from ..charis.config import CharisConfig, ClipConfig, ColorConfig, QualityConfig, VLMConfig, check_key_env
from ..charis.evaluator import Evaluator
from ..charis.images import from_comfy
from ..charis.summary import summarize
from ..core.errors import InputError

log = logging.getLogger(__name__)

CATEGORY = "Instruct Identity/CHARIS"
FOLDERS = {
    "charis_clip": ("charis/clip",),
    "charis_grounding_dino": ("charis/grounding_dino",),
    "charis_sam": ("charis/sam",),
    "charis_vlm": ("charis/vlm", "LLM"),
}
NONE = "none"
SAME = "same as clip"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
MISSING = -1.0  # FLOAT outputs of axes that could not be computed

Evaluator_T = io.Custom("CHARIS_EVALUATOR")


def register_folders() -> None:
    import folder_paths

    for name, subs in FOLDERS.items():
        for sub in subs:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, *sub.split("/")))


register_folders()


def _roots(name: str) -> list[str]:
    import folder_paths

    try:
        return [p for p in folder_paths.get_folder_paths(name) if os.path.isdir(p)]
    except KeyError:
        return []


def model_folders(name: str, marker: str = "config.json") -> list[str]:
    """Subfolders (relative names) of the registered roots that hold ``marker``."""
    out = []
    for root in _roots(name):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            if marker in filenames:
                rel = os.path.relpath(dirpath, root)
                if rel != "." and rel not in out:
                    out.append(rel.replace(os.sep, "/"))
                dirnames[:] = []
    return sorted(out)


def clip_entries() -> list[str]:
    out = model_folders("charis_clip", "open_clip_config.json")
    for root in _roots("charis_clip"):
        for dirpath, _, filenames in os.walk(root, followlinks=True):
            if "open_clip_config.json" in filenames:
                continue
            for f in filenames:
                if f.endswith(WEIGHT_SUFFIXES):
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(set(out))


def resolve(name: str, entry: str) -> str:
    for root in _roots(name):
        path = os.path.join(root, *entry.split("/"))
        if os.path.exists(path):
            return path
    raise InputError(name.replace("charis_", ""), f"'{entry}' is not in models/{FOLDERS[name][0]}.",
                     "Refresh the node list or put the model there.")


def _device(choice: str) -> str:
    if choice == "cpu":
        return "cpu"
    import comfy.model_management

    return str(comfy.model_management.get_torch_device())


class CharisLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        clips = clip_entries()
        vlms = [f"local: {v}" for v in model_folders("charis_vlm")]
        return io.Schema(
            node_id="InstructIdentityCharisLoader",
            display_name="CHARIS Evaluator Loader",
            category=CATEGORY,
            description="Loads the models the CHARIS evaluator uses: CLIP (prompt score), CLIP-IQA (quality), the "
                        "colour segmenter and a VLM judge (identity, prompt, diversity). Every model is optional: an "
                        "axis whose model is missing is reported as missing, never guessed.",
            inputs=[
                io.Combo.Input("clip", options=[NONE, *clips], default=NONE,
                               tooltip="open_clip model from models/charis/clip (file named after its architecture, "
                                       "e.g. ViT-L-14-quickgelu.safetensors, or an open_clip folder). Used for the "
                                       "CLIP half of the prompt axis."),
                io.Combo.Input("quality_model", options=[SAME, NONE, *clips], default=SAME,
                               tooltip="CLIP for CLIP-IQA (the original method uses RN50)."),
                io.Combo.Input("grounding_dino", options=[NONE, *model_folders("charis_grounding_dino")], default=NONE,
                               tooltip="GroundingDINO folder (transformers). With SAM, colour regions are found by "
                                       "part names; without, a weight-free colour clustering is used."),
                io.Combo.Input("sam", options=[NONE, *model_folders("charis_sam")], default=NONE,
                               tooltip="SAM folder (transformers), paired with GroundingDINO."),
                io.Combo.Input("vlm", options=[NONE, "openai-compatible", *vlms], default=NONE,
                               tooltip="VLM judge: an OpenAI-compatible server (Ollama, vLLM, LM Studio, OpenAI) or a "
                                       "local transformers model from models/charis/vlm or models/LLM."),
                io.String.Input("vlm_base_url", default="http://127.0.0.1:11434/v1",
                                tooltip="Base URL of the OpenAI-compatible server (ends in /v1)."),
                io.String.Input("vlm_model", default="", tooltip="Model name on that server, e.g. qwen2.5vl:7b."),
                io.String.Input("api_key_env", default="OPENAI_API_KEY",
                                tooltip="NAME of the environment variable that holds the API key. Never paste the "
                                        "key itself into a workflow (workflows are saved into every image)."),
                io.Boolean.Input("cache_answers", default=True,
                                 tooltip="Keep VLM answers on disk (user/charis-cache) so re-scoring is free."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto"),
            ],
            outputs=[Evaluator_T.Output(display_name="evaluator")],
        )

    @classmethod
    def execute(cls, clip, quality_model, grounding_dino, sam, vlm, vlm_base_url, vlm_model, api_key_env,
                cache_answers, device) -> io.NodeOutput:
        return io.NodeOutput(build_evaluator(clip, quality_model, grounding_dino, sam, vlm, vlm_base_url, vlm_model,
                                             api_key_env, cache_answers, device))


def build_evaluator(clip, quality_model, grounding_dino, sam, vlm, vlm_base_url, vlm_model, api_key_env,
                    cache_answers, device) -> Evaluator:
    import folder_paths

    if (grounding_dino == NONE) != (sam == NONE):
        raise InputError("sam" if sam == NONE else "grounding_dino", "GroundingDINO and SAM work as a pair.",
                         "Pick both, or neither for the weight-free colour segmenter.")
    api_key_env = (api_key_env or "").strip()
    check_key_env(api_key_env, "api_key_env")  # never echoes the value: it may be a pasted key
    dev = _device(device)
    clip_cfg = ClipConfig(path=resolve("charis_clip", clip) if clip != NONE else None)
    if quality_model == NONE:
        quality = QualityConfig(backend="none")
    else:
        quality = QualityConfig(path=resolve("charis_clip", quality_model) if quality_model != SAME else None)
    color = ColorConfig()
    if grounding_dino != NONE:
        color = ColorConfig(segmenter="grounded-sam", grounding_dino=resolve("charis_grounding_dino", grounding_dino),
                            sam=resolve("charis_sam", sam))
    if vlm == NONE:
        vlm_cfg = VLMConfig(backend="none")
    elif vlm == "openai-compatible":
        if not vlm_base_url.strip() or not vlm_model.strip():
            raise InputError("vlm_model", "the OpenAI-compatible VLM needs a base URL and a model name.",
                             "Fill in vlm_base_url and vlm_model, or set vlm to none.")
        vlm_cfg = VLMConfig(backend="openai", base_url=vlm_base_url.strip(), model=vlm_model.strip(),
                            api_key_env=api_key_env or None)
    else:
        vlm_cfg = VLMConfig(backend="transformers", path=resolve("charis_vlm", vlm[len("local: "):]))
    cache_dir = os.path.join(folder_paths.get_user_directory(), "charis-cache") if cache_answers else None
    config = CharisConfig(device=dev, cache_dir=cache_dir, clip=clip_cfg, quality=quality, color=color, vlm=vlm_cfg)
    ev = Evaluator(config)
    ev.judge  # noqa: B018 - fail here (with the reason) rather than on the first score
    return ev


def _pairs(reference: torch.Tensor, generated: torch.Tensor) -> list[tuple[int, int]]:
    r, g = reference.shape[0], generated.shape[0]
    if r not in (1, g):
        raise InputError("reference", f"{r} reference images for {g} generated images.",
                         "Give one reference, or one per generated image.")
    return [(0 if r == 1 else i, i) for i in range(g)]


def score_images(ev: Evaluator, reference, generated, prompt: str, spec: CompositeSpec) -> list:
    import comfy.model_management
    import comfy.utils

    pairs = _pairs(reference, generated)
    bar = comfy.utils.ProgressBar(len(pairs))
    results = []
    for ri, gi in pairs:
        comfy.model_management.throw_exception_if_processing_interrupted()
        ref, gen = from_comfy(reference, ri, f"reference[{ri}]"), from_comfy(generated, gi, f"generated[{gi}]")
        res = ev.score_pair(ref, gen, prompt, item_id=f"image {gi}", spec=spec)
        results.append(res)
        bar.update(1)
    return results


def _mean(results, axis: str | None) -> float:
    """Batch mean of an axis, or of the composite: over complete composites only (a partial one is
    never averaged with a complete one; partial ones only among themselves, when they all cover the
    same axes); MISSING when there is nothing to average."""
    if axis is not None:
        vals = [v for v in (r.value(axis) for r in results) if v is not None]
        return float(sum(vals) / len(vals)) if vals else MISSING
    s = summarize(results)
    if s.complete:
        return float(s.complete.mean)
    if len(s.partial) == 1 and not s.absent:
        return float(s.partial[0].mean)
    return MISSING


def _summary(results) -> str:
    lines = []
    for r in results:
        c = r.composite
        if c is None:
            head = f"{r.id}: CHARIS missing"
        elif c.value is None:
            head = f"{r.id}: CHARIS missing (over {', '.join(c.axes_used) or 'nothing'}; missing {', '.join(c.axes_missing)})"
        else:
            head = f"{r.id}: {c.label} {c.value:.3f}" + (f" (missing {', '.join(c.axes_missing)})" if c.axes_missing else "")
        if c and c.passed is not None:
            head += " PASS" if c.passed else " REJECT (" + "; ".join(f"{k} {v}" for k, v in c.failed.items()) + ")"
        lines.append(head)
        if c and c.value is None and c.reason:
            lines.append(f"  why: {c.reason}")
        for name, a in r.axes.items():
            lines.append(f"  {get_axis(name).title if name in CORE_AXES else name}: "
                         + (f"{a.value:.3f}" if a.value is not None else f"missing ({a.missing})"))
            if name == "identity" and a.details.get("contradiction"):
                lines.append(f"  note: {a.details['consistency']['note']}")
    s = summarize(results)
    if len(results) > 1 or s.partial:
        lines += s.lines()[1:]
    return "\n".join(lines)


def _ui(results, report: str) -> dict:
    """What the node shows (js/charis_scores.js reads it): the summary text, one compact dict per
    image for the bars, and the full report (per-attribute verdicts, colour regions)."""
    compact = [{"id": r.id, "charis": r.composite.value if r.composite else None,
                "axes_used": r.composite.axes_used if r.composite else [],
                "passed": r.composite.passed if r.composite else None,
                **{name: a.value for name, a in r.axes.items()}} for r in results]
    return {"text": [_summary(results)], "charis": compact, "charis_report": [report]}


def _report(results, spec: CompositeSpec) -> str:
    return json.dumps({"mode": spec.mode, "weights": spec.weights, "thresholds": spec.thresholds,
                       "results": [r.to_dict() for r in results]}, ensure_ascii=False, default=str)


class CharisScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        axis_outputs = [io.Float.Output(display_name=get_axis(a).title.lower(),
                                        tooltip=f"{get_axis(a).meaning} Mean over the batch; -1 when missing.")
                        for a in CORE_AXES]
        return io.Schema(
            node_id="InstructIdentityCharisScore",
            display_name="CHARIS Score",
            category=CATEGORY,
            description="Scores generated images against the reference with CHARIS: identity, prompt, colour, "
                        "quality, diversity and their weighted geometric mean. The scores show on the node; the "
                        "report holds every axis with its details (per-attribute verdicts, matched colour regions).",
            is_output_node=True,
            inputs=[
                Evaluator_T.Input("evaluator"),
                io.Image.Input("reference"),
                io.Image.Input("generated", tooltip="One or more generated images (scored one by one)."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The prompt the images were made from."),
                io.Combo.Input("mode", options=["benchmark", "filter"], default="benchmark",
                               tooltip="benchmark: identity, prompt, colour, quality at 0.25 each (the paper). "
                                       "filter: identity, colour, quality, diversity with the filter weights."),
                io.Boolean.Input("allow_partial", default=False, optional=True,
                                 tooltip="When an axis is missing (e.g. no VLM), still give a composite over the "
                                         "others, labelled 'partial CHARIS: <axes>' (not comparable with CHARIS). "
                                         "Off: no composite (-1) and the reason."),
            ],
            outputs=[io.Float.Output(display_name="charis", tooltip="Composite; mean over the batch; -1 when missing."),
                     *axis_outputs,
                     io.String.Output(display_name="report", tooltip="JSON with every axis and its details.")],
        )

    @classmethod
    def execute(cls, evaluator, reference, generated, prompt, mode, allow_partial=False) -> io.NodeOutput:
        spec = CompositeSpec(mode=mode, allow_partial=bool(allow_partial))
        results = score_images(evaluator, reference, generated, prompt, spec)
        floats = [_mean(results, None), *[_mean(results, a) for a in CORE_AXES]]
        report = _report(results, spec)
        return io.NodeOutput(*floats, report, ui=_ui(results, report))


class CharisFilter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        weight_inputs = [io.Float.Input(f"weight_{a}", default=FILTER_WEIGHTS[a], min=0.0, max=10.0, step=0.05,
                                        tooltip=f"Weight of {a} in the composite.") for a in FILTER_WEIGHTS]
        threshold_inputs = [io.Float.Input(f"min_{a}", default=FILTER_THRESHOLDS[a], min=0.0, max=1.0, step=0.01,
                                           tooltip=f"An image passes only if its {a} score is at least this "
                                                   f"(0 switches the check off).") for a in FILTER_THRESHOLDS]
        return io.Schema(
            node_id="InstructIdentityCharisFilter",
            display_name="CHARIS Filter",
            category=CATEGORY,
            description="Keeps the images of a batch that clear the CHARIS thresholds (the paper's data filtering: "
                        "identity, colour, quality, diversity). An axis that cannot be computed fails its threshold.",
            is_output_node=True,
            inputs=[
                Evaluator_T.Input("evaluator"),
                io.Image.Input("reference"),
                io.Image.Input("generated"),
                io.String.Input("prompt", multiline=True, default=""),
                *weight_inputs,
                *threshold_inputs,
                io.Float.Input("min_charis", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Also require the composite to reach this (0 = off)."),
                io.Float.Input("min_prompt", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Also require prompt adherence (VLM + CLIP) to reach this, as the paper's "
                                       "curation does (0 = off; needs the VLM and CLIP)."),
            ],
            outputs=[io.Image.Output(display_name="passed"), io.Image.Output(display_name="rejected"),
                     io.String.Output(display_name="report"), io.Int.Output(display_name="passed_count")],
        )

    @classmethod
    def execute(cls, evaluator, reference, generated, prompt, min_charis, min_prompt=0.0, **kw) -> io.NodeOutput:
        from comfy_execution.graph_utils import ExecutionBlocker

        weights = {a: float(kw[f"weight_{a}"]) for a in FILTER_WEIGHTS}
        thresholds = {a: float(kw[f"min_{a}"]) for a in FILTER_THRESHOLDS if float(kw[f"min_{a}"]) > 0}
        if min_prompt and float(min_prompt) > 0:
            thresholds["prompt"] = float(min_prompt)
        if sum(weights.values()) <= 0:
            raise InputError("weight_identity", "all filter weights are zero.", "Give at least one axis a weight.")
        spec = CompositeSpec(mode="filter", weights=weights, thresholds=thresholds,
                             min_composite=min_charis if min_charis > 0 else None)
        results = score_images(evaluator, reference, generated, prompt, spec)
        keep = [i for i, r in enumerate(results) if r.composite and r.composite.passed]
        drop = [i for i in range(len(results)) if i not in keep]
        passed = generated[keep] if keep else ExecutionBlocker(None)
        rejected = generated[drop] if drop else ExecutionBlocker(None)
        report = _report(results, spec)
        return io.NodeOutput(passed, rejected, report, len(keep), ui=_ui(results, report))


NODES = [CharisLoader, CharisScore, CharisFilter]
