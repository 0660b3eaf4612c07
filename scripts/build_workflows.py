"""Writes the foundation's example workflows (ComfyUI UI format, version 0.4) into workflows/.

    .venv/bin/python scripts/build_workflows.py

The graphs are declared once here so their links and slots stay consistent; the test
``tests/foundation/test_workflows.py`` checks every file in workflows/ against a running server.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "workflows"

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
         ("negative", "CONDITIONING"), ("reference_mask", "MASK")],
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"), ("info", "STRING")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                 [("LATENT", "LATENT")]),
    "InstructIdentityDecodeTarget": ([("samples", "LATENT"), ("vae", "VAE")],
                                     [("target", "IMAGE"), ("comparison", "IMAGE"), ("target_latent", "LATENT")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "MarkdownNote": ([], []),
}


class Graph:
    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, type_: str, pos, widgets=(), size=(320, 120), title=None, models=()):
        node_id = len(self.nodes) + 1
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
        ii = next(i for i, x in enumerate(d["inputs"]) if x["name"] == in_name)
        link_id = len(self.links) + 1
        typ = s["outputs"][oi]["type"]
        self.links.append([link_id, src, oi, dst, ii, typ])
        s["outputs"][oi]["links"].append(link_id)
        d["inputs"][ii]["link"] = link_id

    def to_json(self) -> dict:
        models = {}
        for n in self.nodes:
            for m in n["properties"].get("models", []):
                models[m["name"]] = m
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "models": list(models.values()), "version": 0.4}


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
                [1024 if not fill else 768, 1024 if not fill else 768, "pad", "#ffffff", 1, "auto", -1.0], size=(400, 500))
    g.link(model_src[0], model_src[1], ref, "model")
    g.link(vae, "VAE", ref, "vae")
    g.link(clip, "CLIP", text, "clip")
    g.link(text, "CONDITIONING", ref, "positive")
    g.link(image, "IMAGE", ref, "reference")
    sampler = g.add("KSampler", (830, 0), [42, "fixed", 28, 1.0, "euler", "simple", 1.0], size=(320, 270))
    for out_name, in_name in (("model", "model"), ("positive", "positive"), ("negative", "negative"), ("latent", "latent_image")):
        g.link(ref, out_name, sampler, in_name)
    decode = g.add("InstructIdentityDecodeTarget", (830, 320))
    g.link(sampler, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    save = g.add("SaveImage", (1200, 0), ["instruct_identity" if not fill else "instruct_identity_fill"], size=(400, 420))
    g.link(decode, "target", save, "images")
    preview = g.add("PreviewImage", (1200, 470), size=(400, 300), title="Reference | result")
    g.link(decode, "comparison", preview, "images")
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


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, graph in (("instruct_identity_lora.json", identity_graph(fill=False)),
                        ("instruct_identity_fill_zero_shot.json", identity_graph(fill=True))):
        (OUT / name).write_text(json.dumps(graph, indent=1) + "\n")
        print(f"wrote workflows/{name}")  # noqa: T201 - a build script's report


if __name__ == "__main__":
    main()
