"""Writes the example workflows (ComfyUI UI format, version 0.4) into workflows/.

    .venv/bin/python scripts/build_workflows.py

The graphs are declared once here so their links and slots stay consistent; the test
``tests/foundation/test_server.py`` checks every file in workflows/ against a running server.

The built-in demo's graph is also written in ComfyUI's API format (``miniature/demo_prompt.json``),
which ``scripts/bootstrap.sh run`` queues; ``tests/demo`` checks that both say the same.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "workflows"
DEMO_API = REPO / "miniature" / "demo_prompt.json"

HF = "https://huggingface.co"
MODELS = {
    "flux1-dev.safetensors": (f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    "flux1-fill-dev.safetensors": (f"{HF}/black-forest-labs/FLUX.1-Fill-dev/resolve/main/flux1-fill-dev.safetensors", "diffusion_models"),
    "ae.safetensors": (f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors", "vae"),
    "clip_l.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors", "text_encoders"),
}

# node type -> (input sockets [(name, type)], outputs [(name, type)])
SOCKETS = {
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "LoraLoaderModelOnly": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([], [("CLIP", "CLIP")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "InstructIdentityReference": (
        [("model", "MODEL"), ("vae", "VAE"), ("positive", "CONDITIONING"), ("reference", "IMAGE"),
         ("negative", "CONDITIONING"), ("reference_mask", "MASK"), ("more_references", "II_REFERENCES"),
         ("region", "MASK")],
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"), ("info", "STRING")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                 [("LATENT", "LATENT")]),
    "InstructIdentityDecodeTarget": ([("samples", "LATENT"), ("vae", "VAE")],
                                     [("target", "IMAGE"), ("comparison", "IMAGE"), ("target_latent", "LATENT")]),
    "InstructIdentityAddReference": ([("image", "IMAGE"), ("region", "MASK"), ("references", "II_REFERENCES")],
                                     [("references", "II_REFERENCES")]),
    "SolidMask": ([], [("MASK", "MASK")]),
    "MaskComposite": ([("destination", "MASK"), ("source", "MASK")], [("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "ImageScaleBy": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "InstructIdentityDemoModel": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("info", "STRING")]),
    "InstructIdentityDemoReference": ([], [("IMAGE", "IMAGE")]),
    "PreviewImage": ([("images", "IMAGE")], []),
    "MarkdownNote": ([], []),
    "InstructIdentityCharacterSheetBatch": ([], [("name", "STRING"), ("base_prompt", "STRING"), ("cell_prompts", "STRING"),
                                                 ("captions", "STRING"), ("seed", "INT"), ("filename_prefix", "STRING"),
                                                 ("count", "INT")]),
    "InstructIdentityGridLayout": ([], [("layout", "II_REGION_LAYOUT"), ("json", "STRING"), ("region_masks", "MASK"),
                                        ("preview", "IMAGE")]),
    "InstructIdentityRegionalPrompting": ([("model", "MODEL"), ("clip", "CLIP"), ("conditioning", "CONDITIONING"),
                                           ("layout", "II_REGION_LAYOUT")], [("model", "MODEL"), ("conditioning", "CONDITIONING")]),
    "EmptyImage": ([], [("IMAGE", "IMAGE")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "InstructIdentitySaveSheet": ([("images", "IMAGE"), ("layout", "II_REGION_LAYOUT")], [("sheet_path", "STRING")]),
    "InstructIdentitySplitSheet": ([("image", "IMAGE"), ("layout", "II_REGION_LAYOUT")], [("cells", "IMAGE"), ("captions", "STRING")]),
    "InstructIdentityOutpaintBorders": ([("image", "IMAGE")], [("left", "INT"), ("top", "INT"), ("right", "INT"),
                                                              ("bottom", "INT"), ("subject_mask", "MASK"), ("report", "STRING")]),
    "ImagePadForOutpaint": ([("image", "IMAGE")], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SetLatentNoiseMask": ([("samples", "LATENT"), ("mask", "MASK")], [("LATENT", "LATENT")]),
    "InstructIdentityCharisLoader": ([], [("evaluator", "CHARIS_EVALUATOR")]),
    "InstructIdentitySheetsToDataset": ([("charis", "CHARIS_EVALUATOR")], [("report", "STRING"), ("manifest", "STRING")]),
    "PreviewAny": ([("source", "*")], []),
    "ImageCrop": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "InstructIdentityCharisFilter": ([("evaluator", "CHARIS_EVALUATOR"), ("reference", "IMAGE"), ("generated", "IMAGE")],
                                     [("passed", "IMAGE"), ("rejected", "IMAGE"), ("report", "STRING"), ("passed_count", "INT")]),
}


class Graph:
    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.api: dict[int, tuple[str, dict]] = {}

    def add(self, type_: str, pos, widgets=(), size=(320, 120), title=None, models=(), api: dict | None = None,
            seed_control: bool = True):
        """``api``: the widget values by name, for graphs also written in API format (``widgets`` is then
        derived from it, with the seed's "fixed" control value after the seed as the UI stores it, unless
        the node's seed has no control: ``seed_control=False``)."""
        node_id = len(self.nodes) + 1
        if api is not None:
            widgets = [x for k, v in api.items() for x in ((v, "fixed") if k == "seed" and seed_control else (v,))]
            self.api[node_id] = (type_, dict(api))
        ins, outs = SOCKETS[type_]
        node = {
            "id": node_id, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1,
            "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in ins],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outs)],
            "properties": {"Node name for S&R": type_},
            "widgets_values": list(widgets),
        }
        if models:
            node["properties"]["models"] = [{"name": m, "url": MODELS[m][0], "directory": MODELS[m][1]} for m in models]
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def link(self, src: int, out_name: str, dst: int, in_name: str):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        oi = next(i for i, o in enumerate(s["outputs"]) if o["name"] == out_name)
        typ = s["outputs"][oi]["type"]
        ii = next((i for i, x in enumerate(d["inputs"]) if x["name"] == in_name), None)
        if ii is None:  # a widget fed by a link (the UI keeps the widget's value beside the link)
            d["inputs"].append({"name": in_name, "type": typ, "widget": {"name": in_name}, "link": None})
            ii = len(d["inputs"]) - 1
        link_id = len(self.links) + 1
        self.links.append([link_id, src, oi, dst, ii, typ])
        s["outputs"][oi]["links"].append(link_id)
        d["inputs"][ii]["link"] = link_id

    def to_api(self) -> dict:
        """ComfyUI's API format (what /prompt takes) of the nodes declared with ``api``."""
        prompt = {str(i): {"class_type": t, "inputs": dict(values)} for i, (t, values) in self.api.items()}
        for _, src, src_slot, dst, dst_slot, _ in self.links:
            if str(dst) in prompt:
                name = self.nodes[dst - 1]["inputs"][dst_slot]["name"]
                prompt[str(dst)]["inputs"][name] = [str(src), src_slot]
        return prompt

    def to_json(self) -> dict:
        models = {}
        for n in self.nodes:
            for m in n["properties"].get("models", []):
                models[m["name"]] = m
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "models": list(models.values()), "version": 0.4}


def sample_and_save(g: Graph, ref: int, vae: int, x: int, prefix: str, preview_title: str) -> None:
    """KSampler (CFG 1) on the Reference node's outputs -> Decode Target -> Save Image + a comparison preview."""
    sampler = g.add("KSampler", (x, 0), [42, "fixed", 28, 1.0, "euler", "simple", 1.0], size=(320, 270))
    for out_name, in_name in (("model", "model"), ("positive", "positive"), ("negative", "negative"), ("latent", "latent_image")):
        g.link(ref, out_name, sampler, in_name)
    decode = g.add("InstructIdentityDecodeTarget", (x, 320))
    g.link(sampler, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    save = g.add("SaveImage", (x + 370, 0), [prefix], size=(400, 420))
    g.link(decode, "target", save, "images")
    preview = g.add("PreviewImage", (x + 370, 470), size=(400, 300), title=preview_title)
    g.link(decode, "comparison", preview, "images")


def identity_graph(fill: bool) -> dict:
    g = Graph()
    unet = "flux1-fill-dev.safetensors" if fill else "flux1-dev.safetensors"
    loader = g.add("UNETLoader", (0, 0), [unet, "default"], models=[unet])
    model_src = (loader, "MODEL")
    if not fill:
        lora = g.add("LoraLoaderModelOnly", (0, 160), ["instruct_identity_flux1_dev.safetensors", 1.0],
                     title="Instruct Identity LoRA (train it with ii-train)")
        g.link(loader, "MODEL", lora, "model")
        model_src = (lora, "MODEL")
    clip = g.add("DualCLIPLoader", (0, 320), ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"],
                 models=["clip_l.safetensors", "t5xxl_fp16.safetensors"])
    vae = g.add("VAELoader", (0, 480), ["ae.safetensors"], models=["ae.safetensors"])
    image = g.add("LoadImage", (0, 600), ["character.png", "image"], size=(320, 320), title="Reference character")
    prompt = ("the same character sitting on a park bench reading a book, autumn leaves, soft daylight"
              if not fill else
              "a two-panel picture of the same character: on the left the character waving hello in a sunny street, "
              "on the right the character standing, white background")
    text = g.add("CLIPTextEncode", (380, 0), [prompt], size=(400, 180), title="Prompt (what the character does)")
    ref = g.add("InstructIdentityReference", (380, 240),
                [1024 if not fill else 768, 1024 if not fill else 768, "pad", "#ffffff", 1, "auto", -1.0, 1.0], size=(400, 500))
    g.link(model_src[0], model_src[1], ref, "model")
    g.link(vae, "VAE", ref, "vae")
    g.link(clip, "CLIP", text, "clip")
    g.link(text, "CONDITIONING", ref, "positive")
    g.link(image, "IMAGE", ref, "reference")
    sample_and_save(g, ref, vae, 830, "instruct_identity" if not fill else "instruct_identity_fill", "Reference | result")
    note = (
        "## Instruct Identity — " + ("zero-shot with FLUX.1 Fill" if fill else "with an Instruct Identity LoRA") + "\n\n"
        "Load your character in **Reference character**, describe the new pose or scene in **Prompt**, queue.\n\n"
        "Model files: `models/diffusion_models/" + unet + "`, `models/vae/ae.safetensors`, "
        "`models/text_encoders/clip_l.safetensors` and `t5xxl_fp16.safetensors`"
        + ("" if fill else ", and your LoRA in `models/loras/`") + ".\n\n"
        + ("The Fill model sees your reference as the known right half of a diptych (guidance 30 is set for you)."
           if fill else "The Reference node keeps the clean reference to the right of the picture being generated at "
           "every sampling step — exactly how the LoRA was trained.")
    )
    g.add("MarkdownNote", (380, 790), [note], size=(400, 260), title="How to use")
    return g.to_json()


DEMO_TEMPLATE = "instruct_identity_demo_cpu.json"
DEMO_BASE = "ii_demo_base.safetensors"
DEMO_LORA = "ii_demo_identity_lora.safetensors"
DEMO_PROMPT = "the character standing, large, on the left"
DEMO_STEPS = 30
DEMO_SEED = 7
DEMO_PREFIX = "instruct_identity_demo"
DEMO_ZOOM = 8  # the miniature world draws 32 px sprites: shown and saved 8x larger, pixels kept sharp


def demo_reference() -> tuple[str, str]:
    """(reference, prompt) the template starts with: the first of demo/references/*.png, and a pose that
    differs from the reference's (from demo/references/references.json when it suggests some)."""
    folder = REPO / "demo" / "references"
    refs = sorted(p.name for p in folder.glob("*.png"))
    if not refs:
        raise SystemExit("demo/references/*.png is missing: the demo template needs a bundled reference")
    prompt = DEMO_PROMPT
    index = folder / "references.json"
    if index.is_file():
        entry = next((e for e in json.loads(index.read_text()) if e.get("file") == refs[0]), {})
        tries = [t for t in entry.get("try", []) if t != entry.get("pose")]
        large = [t for t in tries if "large" in t]  # a large figure shows the character's colours best
        prompt = (large or tries or [prompt])[0]
    return refs[0], prompt


def demo_graph() -> Graph:
    """The built-in demo: the miniature FLUX and its identity LoRA, then the same path as FLUX.1."""
    g = Graph()
    loader = g.add("InstructIdentityDemoModel", (0, 0), size=(340, 110), title="Demo model (miniature FLUX, CPU)",
                   api={"base": DEMO_BASE})
    lora = g.add("LoraLoaderModelOnly", (0, 160), size=(340, 90), title="Demo identity LoRA",
                 api={"lora_name": DEMO_LORA, "strength_model": 1.0})
    g.link(loader, "MODEL", lora, "model")
    reference, prompt = demo_reference()
    image = g.add("InstructIdentityDemoReference", (0, 300), size=(340, 150), title="Reference character",
                  api={"reference": reference})
    text = g.add("CLIPTextEncode", (390, 0), size=(380, 140), title="Prompt (the new pose)", api={"text": prompt})
    g.link(loader, "CLIP", text, "clip")
    ref = g.add("InstructIdentityReference", (390, 190), size=(380, 420),
                api={"width": 0, "height": 0, "fit": "pad", "pad_color": "#ffffff", "batch_size": 1, "route": "auto",
                     "guidance": 1.0, "strength": 1.0})
    for src, out_name, in_name in ((lora, "MODEL", "model"), (loader, "VAE", "vae"), (text, "CONDITIONING", "positive"),
                                   (image, "IMAGE", "reference")):
        g.link(src, out_name, ref, in_name)
    sampler = g.add("KSampler", (820, 0), size=(320, 270),
                    api={"seed": DEMO_SEED, "steps": DEMO_STEPS, "cfg": 1.0, "sampler_name": "euler",
                         "scheduler": "simple", "denoise": 1.0})
    for out_name, in_name in (("model", "model"), ("positive", "positive"), ("negative", "negative"), ("latent", "latent_image")):
        g.link(ref, out_name, sampler, in_name)
    decode = g.add("InstructIdentityDecodeTarget", (820, 320), size=(320, 100), api={})
    g.link(sampler, "LATENT", decode, "samples")
    g.link(loader, "VAE", decode, "vae")
    zoom = g.add("ImageScaleBy", (820, 470), size=(320, 90), title="Zoom 8x (sharp pixels)",
                 api={"upscale_method": "nearest-exact", "scale_by": float(DEMO_ZOOM)})
    g.link(decode, "target", zoom, "image")
    save = g.add("SaveImage", (1190, 0), size=(300, 350), title="Result", api={"filename_prefix": DEMO_PREFIX})
    g.link(zoom, "IMAGE", save, "images")
    zoom_cmp = g.add("ImageScaleBy", (820, 610), size=(320, 90), title="Zoom 8x",
                     api={"upscale_method": "nearest-exact", "scale_by": float(DEMO_ZOOM)})
    g.link(decode, "comparison", zoom_cmp, "image")
    preview = g.add("PreviewImage", (1190, 400), size=(520, 330), title="Reference | result", api={})
    g.link(zoom_cmp, "IMAGE", preview, "images")
    note = (
        "## Instruct Identity — built-in demo (runs on a CPU in seconds)\n\n"
        "A miniature FLUX (ComfyUI's own FLUX module, a few MB) that draws sprite characters, with an identity "
        "LoRA trained by this pack's trainer. Pick a **Reference character**, write the new pose in **Prompt** "
        "(e.g. `the character lying, small, on the left`; poses: standing / arms up / lying, small / large, "
        "left / center / right), queue.\n\n"
        "Everything after the demo loader is the real FLUX.1 path: *LoraLoaderModelOnly*, *Instruct Identity "
        "Reference* (the clean reference beside the picture being generated), *KSampler*, *Decode Target*. "
        "Bypass the LoRA node to see the base model alone. Train your own demo LoRA with "
        "`ii-train --config training/examples/demo.toml` (it appears in the LoRA list)."
    )
    g.add("MarkdownNote", (0, 520), [note], size=(340, 280), title="How to use")
    return g


MINIATURE_SHEETS = "character_sheet_regional_batch_miniature.json"
MINIATURE_SHEETS_API = REPO / "miniature" / "sheets_prompt.json"
MINIATURE_CELL = 32      # the miniature draws 32 px sprites; a sheet is 1 x 2 cells (two views, as it was trained)
MINIATURE_REPAIR_MULTIPLE = 8  # out-paint padding in steps of 8 px (the miniature's latent is 1/2 scale, patches 2x2)
MINIATURE_ZOOM = 4       # sheets are saved 4x larger (nearest): CHARIS's colour segmentation needs more than 32 px


def miniature_sheets_graph(note: bool = True) -> Graph:
    """Stage I of the paper's curation on the miniature FLUX: the shipped character-sheet batch workflow
    with the demo loader in place of the FLUX loaders (everything else is the FLUX path). ``note``: with
    its how-to note (graphs built on top of it bring their own)."""
    g = Graph()
    loader = g.add("InstructIdentityDemoModel", (0, 0), size=(340, 110), title="Demo model (miniature FLUX, CPU)",
                   api={"base": DEMO_BASE})
    batch = g.add("InstructIdentityCharacterSheetBatch", (0, 160), size=(420, 520), seed_control=False,
                  api={"characters": "c001: a red head, a striped blue torso, green legs, a yellow hat\n"
                                     "c002: a cyan head, a plain orange torso, purple legs",
                       "poses": "the character standing, large, on the left\nthe character lying, small, on the right",
                       "format": "auto", "seed": 0, "base_template": "two views. {description}",
                       "cell_template": "{description}. {pose}", "folder": "character_sheets_miniature"})
    base = g.add("CLIPTextEncode", (480, 0), size=(360, 120), title="Base (identity) prompt", api={"text": ""})
    g.link(batch, "base_prompt", base, "text")
    g.link(loader, "CLIP", base, "clip")
    negative = g.add("CLIPTextEncode", (480, 170), size=(360, 100), title="Negative (empty caption)", api={"text": ""})
    g.link(loader, "CLIP", negative, "clip")
    w, h = 2 * MINIATURE_CELL, MINIATURE_CELL
    grid = g.add("InstructIdentityGridLayout", (480, 320), size=(360, 360),
                 api={"width": w, "height": h, "rows": 1, "cols": 2, "gutter": 0, "prompts": "", "captions": "",
                      "background_prompt": ""})
    g.link(batch, "cell_prompts", grid, "prompts")
    g.link(batch, "captions", grid, "captions")
    regional = g.add("InstructIdentityRegionalPrompting", (890, 0), size=(340, 260),
                     api={"image_attention": "blocked", "base_ratio": 0.0, "start": 0.0, "end": 1.0,
                          "double_blocks": "all", "single_blocks": "all"})
    for src, out_name, in_name in ((loader, "MODEL", "model"), (loader, "CLIP", "clip"), (base, "CONDITIONING", "conditioning"),
                                   (grid, "layout", "layout")):
        g.link(src, out_name, regional, in_name)
    canvas = g.add("EmptyImage", (890, 310), size=(300, 130), title="Canvas (the miniature's latent is 1/2 scale)",
                   api={"width": w, "height": h, "batch_size": 1, "color": 0xFFFFFF})
    encode = g.add("VAEEncode", (890, 480), size=(240, 60), api={})
    g.link(canvas, "IMAGE", encode, "pixels")
    g.link(loader, "VAE", encode, "vae")
    sampler = g.add("KSampler", (1240, 0), size=(320, 270),
                    api={"seed": 0, "steps": 24, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0})
    g.link(regional, "model", sampler, "model")
    g.link(batch, "seed", sampler, "seed")
    g.link(regional, "conditioning", sampler, "positive")
    g.link(negative, "CONDITIONING", sampler, "negative")
    g.link(encode, "LATENT", sampler, "latent_image")
    decode = g.add("VAEDecode", (1240, 320), size=(240, 60), api={})
    g.link(sampler, "LATENT", decode, "samples")
    g.link(loader, "VAE", decode, "vae")
    zoom = g.add("ImageScaleBy", (1240, 420), size=(300, 90), title=f"Zoom {MINIATURE_ZOOM}x (sharp pixels)",
                 api={"upscale_method": "nearest-exact", "scale_by": float(MINIATURE_ZOOM)})
    g.link(decode, "IMAGE", zoom, "image")
    save = g.add("InstructIdentitySaveSheet", (1600, 0), size=(380, 420), seed_control=False,
                 api={"filename_prefix": "character_sheets_miniature/sheet", "character": "", "base_prompt": "", "seed": 0})
    g.link(zoom, "IMAGE", save, "images")
    g.link(grid, "layout", save, "layout")
    for out_name, in_name in (("filename_prefix", "filename_prefix"), ("name", "character"), ("base_prompt", "base_prompt"),
                              ("seed", "seed")):
        g.link(batch, out_name, save, in_name)
    text = (
        "## Character sheets on the miniature FLUX (CPU, seconds)\n\n"
        "Stage I of the paper's data curation with the built-in demo model: one two-view sheet per character "
        "(`name: description` per line; the miniature knows sprite colours, e.g. `a red head, a striped blue torso, "
        "green legs, a yellow hat`), each cell following its own prompt (description + pose) through **Regional "
        "Prompting**, cells isolated (`blocked`) for the whole schedule (on the miniature far more consistent cells "
        "than the FLUX template's `global` for the first 30 % of the steps: `docs/curation-replication.md`). "
        "Sheets land in `output/character_sheets_miniature/` with their layout; **Sheets to Dataset** (or `ii-curate`) "
        "turns them into pairs. Measured end to end in `docs/curation-replication.md`; with FLUX use "
        "`character_sheet_regional_batch.json` (docs/character-sheets.md)."
    )
    if note:
        g.add("MarkdownNote", (0, 720), [text], size=(420, 260), title="How to use")
    return g


MINIATURE_REPAIR = "outpaint_repair_miniature.json"
MINIATURE_REPAIR_API = REPO / "miniature" / "repair_prompt.json"


def add_border_pad(g: Graph, image: int, x: int, y: int) -> int:
    """Find Cut-off Borders -> Pad Image for Outpainting on ``image``: padding on the cut-off sides only."""
    borders = g.add("InstructIdentityOutpaintBorders", (x, y), size=(320, 200),
                    api={"threshold": 0.08, "margin": 2, "min_touch": 0.02, "pad_fraction": 0.25,
                         "multiple": MINIATURE_REPAIR_MULTIPLE})
    g.link(image, "IMAGE", borders, "image")
    pad = g.add("ImagePadForOutpaint", (x + 360, y), size=(300, 180),
                api={"left": 0, "top": 0, "right": 0, "bottom": 0, "feathering": 0})
    g.link(image, "IMAGE", pad, "image")
    for side in ("left", "top", "right", "bottom"):
        g.link(borders, side, pad, side)
    return pad


def add_masked_sampling(g: Graph, loader: int, pad: int, positive: int, negative: int, x: int, y: int,
                        seed: int | None = None) -> int:
    """The padding drawn by the base: VAE Encode -> Set Latent Noise Mask (the pad's mask) -> KSampler ->
    VAE Decode (ComfyUI's inpainting with a plain model); returns the decode node. ``seed``: a node whose
    ``seed`` output feeds the sampler's."""
    encode = g.add("VAEEncode", (x, y), size=(240, 60), api={})
    g.link(pad, "IMAGE", encode, "pixels")
    g.link(loader, "VAE", encode, "vae")
    masked = g.add("SetLatentNoiseMask", (x, y + 100), size=(240, 60), api={})
    g.link(encode, "LATENT", masked, "samples")
    g.link(pad, "MASK", masked, "mask")
    sampler = g.add("KSampler", (x + 280, y), size=(320, 270), title="Repair: masked sampling with the base",
                    api={"seed": 0, "steps": 24, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0})
    links = [(loader, "MODEL", "model"), (positive, "CONDITIONING", "positive"), (negative, "CONDITIONING", "negative"),
             (masked, "LATENT", "latent_image")] + ([(seed, "seed", "seed")] if seed is not None else [])
    for src, out_name, in_name in links:
        g.link(src, out_name, sampler, in_name)
    decode = g.add("VAEDecode", (x + 280, y + 310), size=(240, 60), api={})
    g.link(sampler, "LATENT", decode, "samples")
    g.link(loader, "VAE", decode, "vae")
    return decode


def miniature_repair_graph() -> Graph:
    """Out-paint repair on the miniature FLUX: the FLUX.1 Fill template's path (Find Cut-off Borders ->
    Pad Image for Outpainting) with masked sampling by the base (VAEEncode -> Set Latent Noise Mask ->
    KSampler, as ComfyUI's inpainting with a non-Fill model does), since the miniature has no Fill model."""
    g = Graph()
    loader = g.add("InstructIdentityDemoModel", (0, 0), size=(340, 110), title="Demo model (miniature FLUX, CPU)",
                   api={"base": DEMO_BASE})
    image = g.add("LoadImage", (0, 160), size=(300, 320), title="Cell (32 px, as the miniature draws it)",
                  api={"image": "cell.png"})
    g.nodes[image - 1]["widgets_values"].append("image")
    pad = add_border_pad(g, image, 340, 160)
    positive = g.add("CLIPTextEncode", (340, 400), size=(360, 120), title="The cell's prompt (description + pose)",
                     api={"text": "a red head, a striped blue torso, green legs, a yellow hat. "
                                  "the character standing, large, on the left"})
    g.link(loader, "CLIP", positive, "clip")
    negative = g.add("CLIPTextEncode", (340, 560), size=(360, 100), title="Negative (empty caption)", api={"text": ""})
    g.link(loader, "CLIP", negative, "clip")
    decode = add_masked_sampling(g, loader, pad, positive, negative, 1060, 160)
    save = g.add("SaveImage", (1720, 160), size=(320, 320), api={"filename_prefix": "outpaint_repair_miniature/cell"})
    g.link(decode, "IMAGE", save, "images")
    note = (
        "## Out-paint repair on the miniature FLUX (CPU, a second)\n\n"
        "Load a 32 px cell whose character is cut off by the border (a cell of a Stage I sheet, e.g. cut with **Split "
        "Character Sheet**). **Find Cut-off Borders** finds the sides the character touches and pads only those (a "
        "quarter of the size, in steps of 8 px); the padding is then drawn by masked sampling with the base and the "
        "cell's own prompt: the miniature has no Fill model, so this is ComfyUI's inpainting with a plain model "
        "(Set Latent Noise Mask), not FLUX.1 Fill's conditioning. Nothing cut off: no padding, the cell comes back "
        "redrawn only where the mask says (nowhere). With FLUX use `outpaint_repair_flux_fill.json`; measured in "
        "`docs/curation-replication.md`."
    )
    g.add("MarkdownNote", (0, 700), [note], size=(420, 260), title="How to use")
    return g


MINIATURE_CURATION = "character_sheet_curation_miniature.json"
MINIATURE_CURATION_API = REPO / "miniature" / "curation_prompt.json"
TOY_JUDGE_URL = "http://127.0.0.1:8765/v1"


def node_of(g: Graph, type_: str) -> int:
    return next(n["id"] for n in g.nodes if n["type"] == type_)


def miniature_curation_graph() -> Graph:
    """The miniature curation pipeline in one graph: Stage I sheets (the sheet template), the right-hand
    cell out-paint repaired (the repair template's path), and a CHARIS filter preview of (left cell ->
    repaired right cell) with the miniature's simulated judge, per character of the batch."""
    g = miniature_sheets_graph(note=False)
    loader, batch = node_of(g, "InstructIdentityDemoModel"), node_of(g, "InstructIdentityCharacterSheetBatch")
    decode = node_of(g, "VAEDecode")
    negative = next(n["id"] for n in g.nodes if n.get("title", "").startswith("Negative"))
    x0, y0 = 0, 1100
    cells = {}
    for i, side in enumerate(("left", "right")):
        crop = g.add("ImageCrop", (x0 + 340 * i, y0), size=(300, 150), title=f"{side} cell",
                     api={"width": MINIATURE_CELL, "height": MINIATURE_CELL, "x": MINIATURE_CELL * i, "y": 0})
        g.link(decode, "IMAGE", crop, "image")
        cells[side] = crop
    pad = add_border_pad(g, cells["right"], x0 + 700, y0)
    prompt = g.add("CLIPTextEncode", (x0 + 700, y0 + 260), size=(360, 120), title="Repair prompt (the identity prompt)",
                   api={"text": ""})
    g.link(batch, "base_prompt", prompt, "text")
    g.link(loader, "CLIP", prompt, "clip")
    repaired = add_masked_sampling(g, loader, pad, prompt, negative, x0 + 1100, y0 + 230, seed=batch)
    zoomed = {}
    for i, (label, src) in enumerate((("reference (left cell)", cells["left"]), ("repaired right cell", repaired))):
        z = g.add("ImageScaleBy", (x0 + 1760, y0 + 130 * i), size=(300, 90), title=f"{label}, {MINIATURE_ZOOM}x",
                  api={"upscale_method": "nearest-exact", "scale_by": float(MINIATURE_ZOOM)})
        g.link(src, "IMAGE", z, "image")
        zoomed[i] = z
    charis = g.add("InstructIdentityCharisLoader", (x0, y0 + 460), size=(380, 330),
                   title="CHARIS (the miniature's simulated judge, no CLIP)",
                   api={"clip": "none", "quality_model": "none", "grounding_dino": "none", "sam": "none",
                        "vlm": "openai-compatible", "vlm_base_url": TOY_JUDGE_URL, "vlm_model": "toy-palette-judge",
                        "api_key_env": "", "cache_answers": False, "device": "cpu"})
    filt = g.add("InstructIdentityCharisFilter", (x0 + 420, y0 + 460), size=(380, 520),
                 title="Filter preview (identity, colour, diversity)",
                 api={"prompt": "", "weight_identity": 0.35, "weight_color": 0.25, "weight_quality": 0.0,
                      "weight_diversity": 0.2, "min_identity": 0.9, "min_color": 0.6, "min_quality": 0.0,
                      "min_diversity": 0.5, "min_charis": 0.0, "min_prompt": 0.0})
    g.link(charis, "evaluator", filt, "evaluator")
    g.link(zoomed[0], "IMAGE", filt, "reference")
    g.link(zoomed[1], "IMAGE", filt, "generated")
    g.link(batch, "base_prompt", filt, "prompt")
    for k, (out_name, title) in enumerate((("passed", "Kept (a training pair)"), ("rejected", "Dropped"))):
        preview = g.add("PreviewImage", (x0 + 840 + 340 * k, y0 + 460), size=(300, 300), title=title, api={})
        g.link(filt, out_name, preview, "images")
    report = g.add("PreviewAny", (x0 + 840, y0 + 800), size=(640, 220), title="Why (every axis)", api={})
    g.link(filt, "report", report, "source")
    note = (
        "## The curation pipeline on the miniature FLUX (CPU, seconds per character)\n\n"
        "1. **Sheets**: the Stage I sheet template (regional prompting, one two-view sheet per character; saved to "
        "`output/character_sheets_miniature/`).\n"
        "2. **Repair**: the right-hand cell, where the miniature most often cuts the figure off, goes through "
        "**Find Cut-off Borders** -> **Pad Image for Outpainting** -> masked sampling with the base (no Fill model "
        "in the miniature; with FLUX use `outpaint_repair_flux_fill.json`).\n"
        "3. **Filter preview**: CHARIS in filter mode on (left cell -> repaired right cell): identity and "
        "diversity from the judge, colour fidelity by region. The miniature has no VLM: start its simulated "
        "judge first, `python -m benchmarks.toy.judge --port 8765` (it reads palette colours; it is not a VLM). "
        "With FLUX, point the CHARIS Loader at a real VLM (Ollama, vLLM) and a CLIP for quality.\n\n"
        "For a whole dataset use **Sheets to Dataset** / `ii-curate --filter charis`; measured end to end in "
        "`docs/curation-replication.md`."
    )
    g.add("MarkdownNote", (0, 2100), [note], size=(520, 320), title="How to use")
    return g


def half_mask(g: Graph, side: str, pos, size: int = 1024) -> int:
    """Stock mask nodes: 1 over the left or right half of a size x size target, 0 elsewhere."""
    empty = g.add("SolidMask", pos, [0.0, size, size], size=(240, 110), title="empty target mask")
    half = g.add("SolidMask", (pos[0], pos[1] + 130), [1.0, size // 2, size], size=(240, 110), title=f"{side} half")
    comp = g.add("MaskComposite", (pos[0] + 260, pos[1]), [0 if side == "left" else size // 2, 0, "add"], size=(240, 130),
                 title=f"{side} region")
    g.link(empty, "MASK", comp, "destination")
    g.link(half, "MASK", comp, "source")
    return comp


def multi_graph(kind: str) -> dict:
    """Several views of one character (``views``) or two characters bound to their halves (``two``)."""
    g = Graph()
    loader = g.add("UNETLoader", (0, 0), ["flux1-dev.safetensors", "default"], models=["flux1-dev.safetensors"])
    lora = g.add("LoraLoaderModelOnly", (0, 160), ["instruct_identity_flux1_dev.safetensors", 1.0],
                 title="Instruct Identity LoRA trained with reference_views (docs/trainer.md)")
    g.link(loader, "MODEL", lora, "model")
    clip = g.add("DualCLIPLoader", (0, 320), ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"],
                 models=["clip_l.safetensors", "t5xxl_fp16.safetensors"])
    vae = g.add("VAELoader", (0, 480), ["ae.safetensors"], models=["ae.safetensors"])
    names = (["front.png", "back.png", "detail.png"] if kind == "views" else ["character_a.png", "character_b.png"])
    titles = (["Front view", "Back view", "A detail (e.g. the hat)"] if kind == "views"
              else ["Character A (left)", "Character B (right)"])
    images = [g.add("LoadImage", (0, 600 + 340 * i), [n, "image"], size=(320, 320), title=t)
              for i, (n, t) in enumerate(zip(names, titles))]
    prompt = ("the same character running along a beach at sunset, seen from the side" if kind == "views" else
              "two characters in a cafe: on the left character A sipping coffee, on the right character B reading a "
              "newspaper, warm light")
    text = g.add("CLIPTextEncode", (380, 0), [prompt], size=(400, 180), title="Prompt")
    g.link(clip, "CLIP", text, "clip")
    chain, regions = None, []
    if kind == "two":
        regions = [half_mask(g, "left", (380, 1000)), half_mask(g, "right", (380, 1280))]
    for i, image in enumerate(images[1:], start=1):
        add = g.add("InstructIdentityAddReference", (380, 560 + 150 * i), [1.0], size=(320, 130),
                    title=f"Add Reference ({titles[i]})")
        g.link(image, "IMAGE", add, "image")
        if chain is not None:
            g.link(chain, "references", add, "references")
        if regions:
            g.link(regions[i], "MASK", add, "region")
        chain = add
    ref = g.add("InstructIdentityReference", (830, 240), [1024, 1024, "pad", "#ffffff", 1, "auto", -1.0, 1.0],
                size=(400, 520))
    for src, out_name, in_name in ((lora, "MODEL", "model"), (vae, "VAE", "vae"), (text, "CONDITIONING", "positive"),
                                   (images[0], "IMAGE", "reference"), (chain, "references", "more_references")):
        g.link(src, out_name, ref, in_name)
    if regions:
        g.link(regions[0], "MASK", ref, "region")
    sample_and_save(g, ref, vae, 1280, "instruct_identity_" + ("views" if kind == "views" else "two_characters"),
                    "References | result")
    note = ("## Instruct Identity — " + ("several views of one character" if kind == "views" else
                                         "two characters, each bound to its half") + "\n\n"
            + ("Give the front view to the Reference node and more views through the chained **Add Reference** "
               "nodes: the grid becomes [target | front | back | detail]. A LoRA trained with `reference_views = "
               "[1, 3]` reads them all (docs/trainer.md)." if kind == "views" else
               "Each character's reference is **bound to a region** (a mask over the picture): that region attends only "
               "to its own reference, and the reference only to its region, so A's colours cannot leak into B. "
               "Lower a reference's **strength** (0..1) to give the prompt more freedom, raise it for a stronger identity.")
            + "\n\nModel files as in instruct_identity_lora.json.")
    g.add("MarkdownNote", (830, 800), [note], size=(400, 260), title="How to use")
    return g.to_json()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    demo = demo_graph()
    for name, graph in ((DEMO_TEMPLATE, demo.to_json()),
                        ("instruct_identity_lora.json", identity_graph(fill=False)),
                        ("instruct_identity_fill_zero_shot.json", identity_graph(fill=True)),
                        ("instruct_identity_multi_view.json", multi_graph("views")),
                        ("instruct_identity_two_characters.json", multi_graph("two"))):
        (OUT / name).write_text(json.dumps(graph, indent=1) + "\n")
        print(f"wrote workflows/{name}")
    DEMO_API.write_text(json.dumps(demo.to_api(), indent=1) + "\n")
    print(f"wrote {DEMO_API.relative_to(REPO)}")
    sheets = miniature_sheets_graph()
    (OUT / MINIATURE_SHEETS).write_text(json.dumps(sheets.to_json(), indent=1) + "\n")
    MINIATURE_SHEETS_API.write_text(json.dumps(sheets.to_api(), indent=1) + "\n")
    print(f"wrote workflows/{MINIATURE_SHEETS} and {MINIATURE_SHEETS_API.relative_to(REPO)}")
    repair = miniature_repair_graph()
    (OUT / MINIATURE_REPAIR).write_text(json.dumps(repair.to_json(), indent=1) + "\n")
    MINIATURE_REPAIR_API.write_text(json.dumps(repair.to_api(), indent=1) + "\n")
    print(f"wrote workflows/{MINIATURE_REPAIR} and {MINIATURE_REPAIR_API.relative_to(REPO)}")
    curation = miniature_curation_graph()
    (OUT / MINIATURE_CURATION).write_text(json.dumps(curation.to_json(), indent=1) + "\n")
    MINIATURE_CURATION_API.write_text(json.dumps(curation.to_api(), indent=1) + "\n")
    print(f"wrote workflows/{MINIATURE_CURATION} and {MINIATURE_CURATION_API.relative_to(REPO)}")


if __name__ == "__main__":
    main()
