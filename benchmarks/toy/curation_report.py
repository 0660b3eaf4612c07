"""``docs/curation-replication.md`` from ``docs/curation-replication.json`` (never edited by hand).

    .venv/bin/python -m benchmarks.toy.curation_report [docs/curation-replication.json]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]



def _sides(r: dict, key: str) -> str:
    """Per-cell shares, left / right (results without them: n/a)."""
    cells = r.get("by_cell") or []
    return " / ".join(_f(c.get(key)) for c in cells) if cells else "n/a"

def _f(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}"


def _pm(cell: dict | None, nd: int = 3) -> str:
    if not cell:
        return "–"
    se = cell.get("se")
    return _f(cell["mean"], nd) + ("" if se is None or (isinstance(se, float) and math.isnan(se)) else f" ± {_f(se, nd)}")


def _img(results: dict, key: str, out: Path, alt: str) -> str:
    path = (results.get("pictures") or {}).get(key)
    if not path:
        return ""
    p = Path(path)
    p = p if p.is_absolute() else REPO / p
    try:
        rel = p.relative_to(out.parent.resolve()) if p.is_relative_to(out.parent.resolve()) else Path("..") / p.relative_to(REPO)
    except ValueError:
        rel = p
    return f"![{alt}]({rel.as_posix()})\n"


def _row(label: str, c: dict) -> str:
    return (f"| {label} | {c['sheets']} | {_f(c['cells_consistent'])} | {_f(c['sheets_consistent'])} | "
            f"{_f(c['part_colour_acc'])} | {_f(c['sil_iou'])} | {_f(c['speckle'])} |")


def curation_table(curation: dict) -> list[str]:
    lines = ["| filter | pairs kept / candidates | good pairs before | precision | recall | dropped (reason × n) |",
             "|---|---|---|---|---|---|"]
    for name, c in curation.items():
        reasons = ", ".join(f"{k} × {v}" for k, v in sorted(c.get("dropped_by_reason", {}).items())) or "–"
        lines.append(f"| {name} | {c['kept']} / {c['candidates']} | {_f(c['good_share_before'])} | {_f(c['precision'])} | "
                     f"{_f(c['recall'])} | {reasons} |")
    return lines


def repair_section(results: dict, out: Path) -> list[str]:
    r = results["stages"].get("stage1_repaired")
    if not r:
        return []
    rep, eff, st = r["repair"], r["repaired_cells"], r["repair"]["settings"]
    sides = ", ".join(f"{k} × {v}" for k, v in sorted(rep["sides"].items())) or "none"
    lines = [
        "## Out-paint repair",
        "",
        f"Every Stage I cell goes through **Find Cut-off Borders** (threshold {st['threshold']}, margin {st['margin']} px, "
        f"min touch {st['min_touch']}); a cell whose figure touches a side is padded there by {st['pad_fraction']:g} of its "
        "size (`ImagePadForOutpaint`) and the padding drawn by masked sampling with the base and the cell's own prompt "
        "(`workflows/outpaint_repair_miniature.json` on the same ComfyUI server: VAEEncode -> Set Latent Noise Mask -> "
        "KSampler, ComfyUI's inpainting with a plain model; the miniature has no Fill model). The larger picture is then "
        "cut back to the cell's size around the figure, so the sheet keeps its layout.",
        "",
        f"Cells repaired: **{rep['repaired']}** of {rep['cells']} (sides: {sides}); still touching a side after repair: "
        f"{rep['still_cut_off']}"
        + (f"; of the repaired cells, {eff['touching_by_design']} ask for a pose the renderer itself draws touching "
           "that side (a figure placed at the edge, which the border test cannot tell from a cut-off one)"
           if "touching_by_design" in eff else "")
        + f". On the repaired cells only ({eff['cells']}):",
        "",
        "| repaired cells | consistent | on prompt | speckle |",
        "|---|---|---|---|",
        *[f"| {label} | {_f(eff[k]['cells_consistent'])} | {_f(eff[k]['cells_on_prompt'])} | {_f(eff[k]['speckle'])} |"
          for label, k in (("before repair", "before"), ("after repair", "after"))],
        "",
        _img(results, "repaired_cells", out, "Repaired cells"),
        "Repaired cells (4x), each pair: the Stage I cell | after repair.",
        "",
        "All Stage I sheets after repair:",
        "",
        "| stage | sheets | cells consistent | sheets with every cell consistent | part colour | silhouette IoU | speckle |",
        "|---|---|---|---|---|---|---|",
        _row("I", results["stages"]["stage1"]["consistency"]),
        _row("I + repair", r["consistency"]),
        "",
        *curation_table(r["curation"]),
        "",
    ]
    return lines


def speckle_section(results: dict) -> list[str]:
    sp = results.get("speckle_probe")
    if not sp:
        return []
    return [
        "## Where the speckle comes from",
        "",
        f"The base on held-out characters ({sp['samples']} pictures, full captions). Text-to-image by sampler:",
        "",
        "| sampler | steps | CFG | part colour | speckle |",
        "|---|---|---|---|---|",
        *[f"| {r['sampler']} | {r['steps']} | {r['cfg']:g} | {_f(r['part_color_acc'])} | {_pm({'mean': r['speckle'], 'se': r['speckle_se']})} |"
          for r in sp["samplers"]],
        "",
        "The model's one-step clean estimate x0 = x_t − σ·v of a renderer picture noised to σ:",
        "",
        "| σ | part colour | speckle |",
        "|---|---|---|",
        *[f"| {r['sigma']:g} | {_f(r['part_color_acc'])} | {_pm({'mean': r['speckle'], 'se': r['speckle_se']})} |"
          for r in sp["one_step_x0"]],
        "",
        *speckle_reading(sp),
        "",
    ]


def speckle_reading(sp: dict, target: float = 0.05) -> list[str]:
    """What the probe says, from its numbers (the target: speckle <= 0.05)."""
    best = min(sp["samplers"], key=lambda r: r["speckle"])
    low = min(sp["one_step_x0"], key=lambda r: r["sigma"])
    clean = [r["sigma"] for r in sp["one_step_x0"] if r["speckle"] <= target]
    text = (f"Lowest text-to-image speckle over these settings: {_f(best['speckle'])} ({best['sampler']}, {best['steps']} "
            f"steps, CFG {best['cfg']:g}); the one-step estimate from σ = {low['sigma']:g}: {_f(low['speckle'])}.")
    if best["speckle"] > target and clean:
        text += (f" No setting reaches {target:g}, while the estimate is within it up to σ = {max(clean):g}: the speckle is "
                 "decided at middle and high noise and later steps keep it, so it is the base's, not the sampler's.")
    return [text]


TARGET_LABELS = {"curated_within_ground_truth": "best curated-data LoRA within {target:g} part colour of the "
                                                "ground-truth-pairs LoRA ({steps} steps: `{run}`; gap per split)",
                 "filtered_above_unfiltered": "every filtered configuration above `{reference}` (part colour, paired by seed)",
                 "base_speckle": "base, text to image: speckle at most {target:g}",
                 "lora_speckle": "final identity LoRA (`{run}`): speckle at most {target:g}, per split",
                 "pipeline_wall": "the pipeline within {target:g} s on this machine (recorded stage walls)"}


def _target_value(key: str, t: dict) -> str:
    v = t["value"]
    if key == "filtered_above_unfiltered":
        return "; ".join(f"{name}: " + ", ".join(f"{split} {_pm(d)}" for split, d in per.items()) for name, per in v.items())
    if isinstance(v, dict):
        return ", ".join(f"{split} {_f(x)}" for split, x in v.items())
    return _f(v, 0) if key == "pipeline_wall" else _f(v)


def yields_section(results: dict) -> list[str]:
    """Sheets -> cells -> candidate pairs -> kept pairs per stage, with the downstream filter: what to plan for."""
    chosen = results.get("downstream_filter")
    lines = ["## Yields", "", f"With the downstream filter (`{chosen}`); *good*: both cells show the character asked for.",
             "", "| stage | sheets | cells | candidate pairs | good candidates | pairs kept | kept per sheet | precision | recall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, key in (("I", "stage1"), ("I + repair", "stage1_repaired"), ("II", "stage2")):
        c = (results["stages"].get(key) or {}).get("curation", {}).get(chosen)
        if c:
            lines.append(f"| {label} | {c['sheets']} | {c['cells']} | {c['candidates']} | {c['good_candidates']} | "
                         f"{c['kept']} | {_f(c['kept'] / c['sheets'] if c['sheets'] else None, 2)} | "
                         f"{_f(c['precision'])} | {_f(c['recall'])} |")
    return lines + [""] if len(lines) > 5 else []


def targets_section(results: dict) -> list[str]:
    ts = results.get("targets") or {}
    if not ts:
        return []
    lines = ["## Targets (issue 20)", "", "| target | measured | met |", "|---|---|---|"]
    for key, t in ts.items():
        label = next(v for k, v in TARGET_LABELS.items() if key.startswith(k)).format(**t)
        lines.append(f"| {label} | {_target_value(key, t)} | {'yes' if t['met'] else '**no**'} |")
    w = results.get("pipeline_wall") or {}
    if w:
        lines += ["", "Pipeline wall by stage (s, as recorded when each stage ran; identity LoRAs: summed job walls / "
                  f"{w.get('workers')} workers): " + ", ".join(f"{k} {_f(v, 0)}" for k, v in w.items()
                                                            if k not in ("total_s", "workers")) + "."]
    return lines + [""]


def render(results: dict, out: Path) -> str:
    out = Path(out).resolve()
    p = results["profile"]
    s1, s2 = results["stages"]["stage1"], results["stages"]["stage2"]
    c1, c2 = s1["consistency"], s2.get("consistency")
    lines = [
        "# The paper's data curation in the miniature world",
        "",
        f"Generated by `{results.get('generated_by')}` from `{out.name}` (profile **{p['name']}**, seed {results['seed']}, "
        f"this invocation {_f(results.get('wall_s', 0) / 60, 1)} min on {results.get('machine', {}).get('cores', '?')} "
        "CPU cores, most stages from the cache). Do not edit by hand.",
        "",
        f"A text-only base (`{results['base']}`) makes its own training data: {results['characters']} training characters "
        f"given only as text, {results['sheets_per_character']} pose pairs each, drawn per character "
        f"({results['distinct_pose_pairs']} distinct pairs in all), one two-view sheet per pair through the "
        "character-sheet batch workflow on a real ComfyUI server (regional prompting: "
        + ", ".join(f"{k} = {v}" for k, v in (results.get("regional_settings") or p["regional"]).items()) + "), then `ii-curate` with and without "
        "`--filter charis`. Every cell is checked against the character it was asked to draw: *consistent* = every "
        "part has the character's colour; a pair is *good* when both its cells are.",
        "",
        "**The VLM is simulated** (no VLM weights exist here): `benchmarks/toy/judge.py` answers CHARIS's own identity / "
        "prompt / diversity prompts through CHARIS's real OpenAI-compatible backend and parser, reading each sprite's pose "
        "and part colours from the pixels; at error rate *e* each answer is replaced by a random one with probability *e*. "
        "The quality axis is left out (CLIP-IQA needs CLIP weights), so the filter's composite is a *custom CHARIS* over "
        "identity, colour and diversity (colour alone without the judge).",
        "",
        *targets_section(results),
        *yields_section(results),
        "## Sheets",
        "",
        "| stage | sheets | cells consistent | sheets with every cell consistent | part colour | silhouette IoU | speckle |",
        "|---|---|---|---|---|---|---|",
        _row("I (base + regional prompting)", c1),
        (_row(f"II (grid LoRA, preset {s2['grid_lora'].get('preset', '?')}, rank {s2['grid_lora'].get('rank', '?')}, "
              f"{s2['grid_lora']['steps']} steps, on {s2['grid_lora']['sheets']} kept Stage I sheets; one caption per "
              "sheet, no regional prompting)", c2)) if c2 else f"| II | skipped: {s2.get('skipped')} | | | | | |",
        *([_row("I, characters with a sheet in the grid LoRA's data", s2["stage1_seen"]),
           _row("II, the same characters", s2["consistency_seen"]),
           _row("I, the other characters", s2["stage1_unseen"]),
           _row("II, the other characters", s2["consistency_unseen"])] if c2 and "consistency_seen" in s2 else []),
        "",
        (lambda b: f"For scale, the base's own single pictures (full captions, held-out characters, {b['samples']} samples): "
                   f"part colour {_f(b['part_color_acc'])}, silhouette IoU {_f(b['sil_iou'])}, speckle {_f(b['speckle'])}.")(
            results["base_text_to_image"]) if results.get("base_text_to_image") else "",
        "",
        "Speckle: share of pixels inside the ground-truth part masks (eroded by one pixel) whose nearest palette colour "
        "is not the part's majority colour (`evaluate.speckle`, defined before any result was read). A figure drawn off "
        "its true place or size counts too (background or another part inside the mask), so a low silhouette IoU "
        "raises it.",
        "",
        _img(results, "stage1_sheets", out, "Stage I sheets"),
        f"Stage I sheets (4x). Frame: the `{results.get('downstream_filter')}` filter's decision (green = the cell is in a "
        "kept pair, red = dropped). Corner square: the ground truth (filled = the cell shows the character asked for, "
        "hollow = it drifted).",
        "",
        _img(results, "stage2_sheets", out, "Stage II sheets"),
        "Stage II sheets (same characters and poses, with the grid LoRA, one caption per sheet), marked the same way.",
        "",
        "### Which Stage I settings mattered",
        "",
        f"The same first {p['sweep_characters']} characters and first 2 pose pairs, one change at a time:",
        "",
        "| settings | cells consistent | sheets with every cell consistent | cells on prompt | speckle "
        "| consistent, left / right cell | on prompt, left / right cell |",
        "|---|---|---|---|---|---|---|",
        *[f"| {label} | {_f(r['cells_consistent'])} | {_f(r['sheets_consistent'])} | {_f(r.get('cells_on_prompt'))} | "
          f"{_f(r['speckle'])} | {_sides(r, 'cells_consistent')} | {_sides(r, 'cells_on_prompt')} |"
          for label, r in (results.get("regional_sweep") or {}).items()],
        *([(lambda r: f"| Stage II: the grid LoRA, one caption naming both poses | {_f(r['cells_consistent'])} | "
                      f"{_f(r['sheets_consistent'])} | {_f(r.get('cells_on_prompt'))} | {_f(r['speckle'])} | "
                      f"{_sides(r, 'cells_consistent')} | {_sides(r, 'cells_on_prompt')} |")(
            s2["consistency_sweep_subset"])] if c2 and s2.get("consistency_sweep_subset", {}).get("cells") else []),
        "",
        *repair_section(results, out),
        "## The filter as a detector of good pairs",
        "",
        "### Stage I",
        "",
        *curation_table(s1["curation"]),
        "",
        f"The later stages (grid LoRA data, Stage II curation, the identity LoRAs' filtered data) use "
        f"**{results.get('downstream_filter')}**: the better detector (F1) of the judge at error 0 with or without the "
        "colour axis. That choice reads the ground truth, which a real run does not have.",
        "",
        "### Stage II",
        "",
        *(curation_table(s2["curation"]) if c2 else [f"Skipped: {s2.get('skipped')}."]),
        "",
    ]
    lines += speckle_section(results)
    ident = results.get("identity")
    if ident:
        b = ident["budget"]
        lines += ["## Identity LoRAs on curated data only", "",
                  f"Preset B, masked loss, {b['steps']} steps, batch {b['batch']}, rank {b['rank']}, lr {b['lr']}, "
                  f"{b['seeds']} seed(s) each; evaluated on held-out characters exactly as the toy replication "
                  "(distinct and near splits); differences are paired by seed against the ground-truth-pairs LoRA"
                  + (f"; rows ending in -{b['long_steps']} trained for {b['long_steps']} steps (the toy replication's "
                     f"B-masked-{b['long_steps']} budget) and paired against ground-truth-pairs-{b['long_steps']}"
                     if b.get("long_steps") else "") + ".", "",
                  "| training data | pairs | split | part colour | silhouette IoU | speckle | part colour − ground-truth pairs |",
                  "|---|---|---|---|---|---|---|"]
        for name, splits in ident["summary"].items():
            for split, row in splits.items():
                diff = (row.get("minus_reference") or {}).get("part_color_acc")
                lines.append(f"| {name} | {results['identity_data'].get(name, '–')} | {split} | {_pm(row['part_color_acc'])} | "
                             f"{_pm(row['sil_iou'])} | {_pm(row['speckle'])} | {_pm(diff) if diff else '(reference)'} |")
        lines.append("")
        lines += gap_reading(results)
        if results.get("pictures", {}).get("beside"):
            steps = f"{b['long_steps']} steps" if b.get("long_steps") else f"{b['steps']} steps"
            lines += [_img(results, "beside", out, "curated-data LoRA above the ground-truth-pairs LoRA"),
                      f"Above: the LoRA trained on curated Stage I pairs; below: the one trained on ground-truth pairs "
                      f"({steps}, seed {min(r['seed'] for r in ident['runs'])}, the same held-out items); each triplet "
                      "reference | ground truth | output.", ""]
        for key in sorted(k for k in results.get("pictures", {}) if k.startswith("identity_")):
            lines.append(_img(results, key, out, key))
            lines.append(f"{key[len('identity_'):]}: each triplet reference | ground truth | output.")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def gap_reading(results: dict, curated: str = "stage1-filtered", matched: str = "ground-truth-matched",
                sized: str = "ground-truth-sized", reference: str = "ground-truth-pairs") -> list[str]:
    """The curated LoRA's gap to the ground-truth-pairs LoRA, split by the controls into pair count
    (reference - sized: fewer renderer pairs), pose coverage (sized - matched: the curated pairs' own poses
    instead of poses drawn per pair) and data quality (matched - curated: the same pairs drawn clean and right)."""
    from .curation import seed_difference

    ident, sizes = results["identity"], results.get("identity_data", {})
    if not all(n in ident["summary"] for n in (curated, matched, sized, reference)):
        return []
    lines = [f"**Where the gap comes from** (part colour, paired by seed). `{matched}`: the renderer's drawing of the "
             f"{sizes.get(matched, '?')} pairs of `{curated}` (same characters and poses, clean pixels, every pair "
             f"right); `{sized}`: as many renderer pairs with poses drawn per pair, as `{reference}`'s "
             f"{sizes.get(reference, '?')}. The gap = *count* (`{reference}` − `{sized}`) + *pose coverage* "
             f"(`{sized}` − `{matched}`) + *quality* (`{matched}` − `{curated}`).", "",
             "| split | gap | count | pose coverage | quality |", "|---|---|---|---|---|"]
    for split in ident["summary"][reference]:
        d = [seed_difference(ident["runs"], x, y, split)
             for x, y in ((reference, curated), (reference, sized), (sized, matched), (matched, curated))]
        lines.append(f"| {split} | " + " | ".join(_pm(x) for x in d) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else REPO / "docs" / "curation-replication.json"
    results = json.loads(src.read_text())
    src.with_suffix(".md").write_text(render(results, src))
    return 0


if __name__ == "__main__":
    sys.exit(main())
