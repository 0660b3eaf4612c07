"""GroundingDINO + SAM segmenter for the colour axis (transformers, local folders only): text-queried
parts whose regions carry the query as label and are matched by label. Falls back to the weight-free
:class:`~.segment.ClusterSegmenter` (and says so) when nothing is found."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .images import Picture, resize_max
from .segment import DEFAULT_PARTS, ClusterSegmenter, Region, Segmentation


class GroundedSamSegmenter:
    """Text-queried parts: GroundingDINO boxes -> SAM masks. Both models load from local folders."""

    name = "grounded-sam"

    def __init__(self, grounding_dino: str | Path, sam: str | Path, device: str | torch.device = "cpu",
                 box_threshold: float = 0.3, work_size: int = 512, default_parts=DEFAULT_PARTS, max_queries: int = 12):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, SamModel, SamProcessor

        self.device = torch.device(device)
        self.gd_processor = AutoProcessor.from_pretrained(str(grounding_dino), local_files_only=True)
        self.gd_model = AutoModelForZeroShotObjectDetection.from_pretrained(
            str(grounding_dino), local_files_only=True).to(self.device).eval()
        self.sam_processor = SamProcessor.from_pretrained(str(sam), local_files_only=True)
        self.sam_model = SamModel.from_pretrained(str(sam), local_files_only=True).to(self.device).eval()
        self.box_threshold = box_threshold
        self.work_size = work_size
        self.default_parts = tuple(default_parts)
        self.max_queries = max_queries
        self.fallback = ClusterSegmenter()

    def queries(self, queries=None) -> list[str]:
        out: list[str] = []
        for q in list(queries or []) or list(self.default_parts):
            q = " ".join(str(q).lower().replace(".", " ").split())
            if q and q not in out:
                out.append(q)
        return out[: self.max_queries]

    @torch.no_grad()
    def detect(self, picture: Picture, queries: list[str]) -> list[tuple[str, float, list[float]]]:
        """Best box per query: (query, score, [x0, y0, x1, y1] in pixels of ``picture``)."""
        image = picture.pil(self.work_size)
        text = ". ".join(queries) + "."
        inputs = self.gd_processor(images=image, text=text, return_tensors="pt").to(self.device)
        out = self.gd_model(**inputs)
        probs = out.logits[0].sigmoid()  # [queries, text tokens]
        spans = _phrase_spans(inputs["input_ids"][0].tolist(), self.gd_processor.tokenizer, len(queries))
        h, w = picture.size
        boxes = out.pred_boxes[0].float()  # cx, cy, w, h normalised
        found = []
        for q, span in zip(queries, spans):
            if not span:
                continue
            score_per_box = probs[:, span].max(dim=1).values
            best = int(score_per_box.argmax())
            score = float(score_per_box[best])
            if score < self.box_threshold:
                continue
            cx, cy, bw, bh = boxes[best].tolist()
            box = [max(0.0, (cx - bw / 2) * w), max(0.0, (cy - bh / 2) * h), min(w, (cx + bw / 2) * w),
                   min(h, (cy + bh / 2) * h)]
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                found.append((q, score, box))
        return found

    @torch.no_grad()
    def masks(self, picture: Picture, boxes: list[list[float]]) -> torch.Tensor:
        image = picture.pil()
        inputs = self.sam_processor(images=image, input_boxes=[boxes], return_tensors="pt").to(self.device)
        out = self.sam_model(**inputs, multimask_output=False)
        masks = self.sam_processor.image_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0]
        return masks[:, 0].bool()  # [boxes, H, W]

    def __call__(self, picture: Picture, queries=None) -> Segmentation:
        qs = self.queries(queries)
        found = self.detect(picture, qs) if qs else []
        if not found:
            seg = self.fallback(picture)
            seg = replace(seg, backend=f"{self.name}->cluster", notes=seg.notes + [
                "GroundingDINO found none of the queried parts; used the weight-free segmenter"])
            return seg
        masks = self.masks(picture, [b for _, _, b in found])
        rgb = resize_max(picture.rgb.float(), self.work_size)
        size = rgb.shape[-2:]
        masks = F.interpolate(masks.float()[:, None], size=size, mode="nearest")[:, 0] > 0.5
        regions, taken = [], torch.zeros(size, dtype=torch.bool)
        for (q, score, _), m in sorted(zip(found, masks), key=lambda t: int(t[1].sum())):
            own = m & ~taken  # smaller parts first, so a face is not swallowed by a body mask
            if int(own.sum()) == 0:
                continue
            taken |= own
            regions.append(Region(mask=own, label=q, score=score))
        if not regions:
            seg = self.fallback(picture)
            seg = replace(seg, backend=f"{self.name}->cluster", notes=seg.notes + [
                "SAM returned empty masks; used the weight-free segmenter"])
            return seg
        return Segmentation(rgb=rgb, subject=taken, regions=regions, backend=self.name,
                            notes=[f"parts found: {', '.join(r.label for r in regions)}"])


def _phrase_spans(ids: list[int], tokenizer, n: int) -> list[list[int]]:
    """Token positions of each '.'-separated phrase in GroundingDINO's text input."""
    dot = tokenizer.convert_tokens_to_ids(".")
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    spans, cur = [], []
    for pos, t in enumerate(ids):
        if t == dot:
            spans.append(cur)
            cur = []
        elif t not in specials:
            cur.append(pos)
    if cur:
        spans.append(cur)
    spans = spans[:n]
    return spans + [[] for _ in range(n - len(spans))]


