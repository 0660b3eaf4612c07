"""One function per CHARIS axis. Each takes the pictures and the model it needs (injected) and
returns an :class:`AxisResult`: a value in [0, 1] with its details, or ``value=None`` with the
reason it is missing. Nothing here loads a model or reads a file."""

from __future__ import annotations

from .clip import rescale_clip
from .color import DEFAULT_SCALES, ColorScales, color_score_regions
from .images import Picture
from .results import AxisResult
from .segment import alignment, carry_regions
from .vlm.judge import Judge

MIN_COLOR_SIDE = 8  # pictures smaller than this (px, either side) have no regions worth comparing
ALIGN_IOU = 0.85  # silhouettes this similar (after normalising position and size) count as aligned


# --------------------------------------------------------------------------------------------------
# Colour (Algorithm 1)


def color(reference: Picture, generated: Picture, segmenter, queries=None,
          scales: ColorScales = DEFAULT_SCALES, align_iou: float = ALIGN_IOU) -> AxisResult:
    """Region-wise colour fidelity. Both pictures are segmented the same way; then ONE
    correspondence rule, decided from names and silhouettes before any colour is compared:

    * regions named by the segmenter (GroundingDINO + SAM) correspond by name;
    * otherwise, when the two subjects' silhouettes align (soft IoU >= ``align_iou`` after
      normalising position and size, in the better of the direct and mirrored orientations), the
      reference's regions are carried over onto the generated subject (:func:`.segment.carry_regions`)
      and correspond by construction;
    * otherwise regions correspond by where they lie inside their subjects
      (:func:`.color.match_regions`).

    Reference parts with no counterpart and large added parts score 0 over their area (see
    :mod:`.color`)."""
    for side, pic in (("reference", reference), ("generated", generated)):
        h, w = pic.size
        if min(h, w) < MIN_COLOR_SIDE:
            return AxisResult.absent("color", f"the {side} picture is only {w}x{h} px; region colours need at "
                                              f"least {MIN_COLOR_SIDE} px a side")
    seg_ref = segmenter(reference, queries)
    seg_gen = segmenter(generated, queries)
    labelled = all(r.label for r in seg_ref.regions) and all(r.label for r in seg_gen.regions)
    iou, mirrored = alignment(seg_ref.subject, seg_gen.subject)
    rule = "labels" if labelled else "carried" if iou >= align_iou and seg_ref.regions else "geometry"
    if rule == "carried":
        seg_ref, seg_gen = carry_regions(seg_ref, seg_gen, mirrored)
    ra, rb = seg_ref.describe(scales), seg_gen.describe(scales)
    res = color_score_regions(ra, rb, scales)
    notes = seg_ref.notes + [n for n in seg_gen.notes if n not in seg_ref.notes]
    if res.value is None:
        return AxisResult.absent("color", res.missing or "no colour regions to compare",
                                 segmenter=seg_ref.backend, notes=notes)

    def region(r, k, lost):
        return {"label": r.label, "area": round(r.area, 4), **r.color.as_dict(), **({"unmatched": True} if k in lost else {})}

    details = {
        "segmenter": seg_ref.backend if seg_ref.backend == seg_gen.backend else f"{seg_ref.backend}/{seg_gen.backend}",
        "correspondence": rule,
        "orientation": ("mirrored" if mirrored else "direct") if rule == "carried" else res.orientation,
        "silhouette_iou": round(iou, 4),
        "per_space": {k: round(v, 5) for k, v in res.per_space.items()},
        "lost_area": round(res.lost_area, 4),
        "added_area": round(res.added_area, 4),
        "reference_regions": [region(r, k, res.lost) for k, r in enumerate(ra)],
        "generated_regions": [region(r, k, res.added) for k, r in enumerate(rb)],
        "matches": [{"ref": m.ref, "gen": m.gen, "weight": round(m.weight, 4), "direction": m.direction,
                     "similarity": m.similarity} for m in res.matches],
        "notes": notes,
    }
    return AxisResult.ok("color", res.value, **details)


# --------------------------------------------------------------------------------------------------
# CLIP: quality and the CLIP half of the prompt axis


def quality(generated: Picture, iqa) -> AxisResult:
    if iqa is None:
        return AxisResult.absent("quality", "no CLIP-IQA model configured")
    return AxisResult.ok("quality", iqa.score(generated), backend=getattr(iqa, "name", type(iqa).__name__))


def clip_score(generated: Picture, prompt: str, clip, rescale: tuple[float, float] | None = None) -> AxisResult:
    if clip is None:
        return AxisResult.absent("clip_score", "no CLIP model configured")
    if not prompt or not prompt.strip():
        return AxisResult.absent("clip_score", "no prompt given")
    cos = clip.cosine(generated, prompt)
    lo, hi = rescale if rescale else (None, None)
    rule = f"clamp((cos - {lo}) / ({hi} - {lo}), 0, 1)" if rescale else "clamp(2.5 * max(cos, 0), 0, 1)"
    return AxisResult.ok("clip_score", rescale_clip(cos, lo, hi), cosine=round(cos, 5), rescaling=rule,
                         model=getattr(clip, "arch", None))


# --------------------------------------------------------------------------------------------------
# VLM axes


def _vlm_missing(name: str, judge: Judge | None, answer=None) -> AxisResult:
    if judge is None:
        return AxisResult.absent(name, "no VLM configured")
    return AxisResult.absent(name, answer.error or "no answer", vlm=judge.id, calls=answer.calls)


VERDICT_CREDIT = {"match": 1.0, "partial": 0.5, "mismatch": 0.0}  # not_visible: not judged


def combine_identity(vlm_score: float, verdicts: list[dict]) -> dict:
    """The identity rating from the VLM's own two answers: its overall 0-4 ``vlm_score`` and its
    per-attribute ``verdicts``.

    The verdicts imply a rating ``A = 4 * (matches + partials / 2) / visible`` (``not_visible`` ones
    left out). The overall rating is kept when it lies within one rubric step of ``A`` -- and, as the
    rubric defines 4 as "every visible attribute matches", at most 3 when any verdict is partial or a
    mismatch. Otherwise it is moved to the nearest end of that band and the answer is flagged as
    contradicting itself. With no visible verdict the overall rating is used as it is.
    Returns ``{"rating", "attribute_rating", "band", "contradiction", "note"}``."""
    judged = [v["verdict"] for v in verdicts if v.get("verdict") in VERDICT_CREDIT]
    if not judged:
        return {"rating": vlm_score, "attribute_rating": None, "band": [0.0, 4.0], "contradiction": False,
                "note": "no visible attribute was judged: the overall rating is used as given"}
    attr = 4.0 * sum(VERDICT_CREDIT[v] for v in judged) / len(judged)
    hi = min(4.0, attr + 1.0, 3.0 if any(v != "match" for v in judged) else 4.0)
    lo = max(0.0, min(attr - 1.0, hi))
    rating = min(max(vlm_score, lo), hi)
    contradiction = rating != vlm_score
    note = (f"the VLM rated {vlm_score:g}/4 but its verdicts imply {attr:.2f}/4; rating moved to {rating:g}"
            if contradiction else "the overall rating agrees with the verdicts")
    return {"rating": rating, "attribute_rating": round(attr, 4), "band": [round(lo, 4), round(hi, 4)],
            "contradiction": contradiction, "note": note}


def identity(reference: Picture, generated: Picture, prompt: str, judge: Judge | None) -> tuple[AxisResult, list[dict]]:
    """Attribute-level identity: list the reference's attributes, then judge each in the generated
    image; the axis is :func:`combine_identity` of the verdicts and the overall rating, divided by 4.
    Returns the axis and the attribute list (also used as segmentation queries)."""
    if judge is None:
        return _vlm_missing("identity", None), []
    listed = judge.ask("identity_attributes", {"reference": reference})
    if not listed.ok:
        res = _vlm_missing("identity", judge, listed)
        res.details["step"] = "listing the reference's attributes"
        return res, []
    attributes = listed.value["attributes"]
    judged = judge.ask("identity_judge", {"reference": reference, "generated": generated},
                       attributes=attributes, prompt=prompt or "(no prompt given)")
    if not judged.ok:
        res = _vlm_missing("identity", judge, judged)
        res.details.update(step="judging the attributes", attributes=attributes)
        return res, attributes
    verdicts = judged.value["verdicts"]
    counts = {v: sum(1 for x in verdicts if x["verdict"] == v) for v in ("match", "partial", "mismatch", "not_visible")}
    score = judged.value["score"]
    combined = combine_identity(score, verdicts)
    return AxisResult.ok("identity", combined["rating"] / 4.0, vlm_score=score, consistency=combined,
                         contradiction=combined["contradiction"], attributes=attributes, verdicts=verdicts,
                         verdict_counts=counts, vlm=judge.id, cached=listed.cached and judged.cached), attributes


def vlm_rating(task: str, axis: str, pictures: dict[str, Picture], judge: Judge | None, **fields) -> AxisResult:
    """A 0-4 rating task turned into an axis value (score / 4), keeping the VLM's other fields."""
    if judge is None:
        return _vlm_missing(axis, None)
    ans = judge.ask(task, pictures, **fields)
    if not ans.ok:
        return _vlm_missing(axis, judge, ans)
    extra = {k: v for k, v in ans.value.items() if k != "score"}
    return AxisResult.ok(axis, ans.value["score"] / 4.0, vlm_score=ans.value["score"], vlm=judge.id,
                         cached=ans.cached, **extra)


def prompt_axis(vlm: AxisResult, clip: AxisResult) -> AxisResult:
    """S_prompt = (VLM/4 + CLIP) / 2; missing when either half is (the halves stay in the details)."""
    details = {"vlm": vlm.value, "clip": clip.value, "vlm_details": vlm.details, "clip_details": clip.details}
    if vlm.value is None or clip.value is None:
        why = "; ".join(f"{half} half missing: {r.missing}" for half, r in (("VLM", vlm), ("CLIP", clip))
                        if r.value is None)
        return AxisResult.absent("prompt", why, **details)
    return AxisResult.ok("prompt", (vlm.value + clip.value) / 2.0, **details)
