"""Tell users which model file goes in which ``models/`` folder when a queued graph needs one that
is missing (ComfyUI itself only says "value not in list")."""

from __future__ import annotations

import logging
import os

import folder_paths

log = logging.getLogger(__name__)

# stock loader node -> {input: model folder name}
LOADER_INPUTS = {
    "UNETLoader": {"unet_name": "diffusion_models"},
    "VAELoader": {"vae_name": "vae"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "LoraLoader": {"lora_name": "loras"},
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
}
OUR_PREFIX = "InstructIdentity"


def missing_models(prompt: dict) -> list[str]:
    """One sentence per model file the API ``prompt`` names that no model folder holds."""
    out = []
    for node_id, node in prompt.items():
        inputs = LOADER_INPUTS.get(node.get("class_type", ""), {})
        for name, folder in inputs.items():
            value = node.get("inputs", {}).get(name)
            if not isinstance(value, str) or folder_paths.get_full_path(folder, value) is not None:
                continue
            paths = folder_paths.get_folder_paths(folder) or [os.path.join(folder_paths.models_dir, folder)]
            out.append(f"model file '{value}' ({node['class_type']} node {node_id}, input {name}) is missing: "
                       f"put it in {paths[0]}" + (f" (also searched: {', '.join(paths[1:])})" if len(paths) > 1 else ""))
    return out


def on_prompt(json_data: dict) -> dict:
    prompt = json_data.get("prompt") or {}
    if any(str(n.get("class_type", "")).startswith(OUR_PREFIX) for n in prompt.values() if isinstance(n, dict)):
        for line in missing_models(prompt):
            log.warning("Instruct Identity: %s", line)
    return json_data


def install() -> None:
    """Register the on-prompt check with the running server (no-op without one)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and on_prompt not in server.on_prompt_handlers:
        server.add_on_prompt_handler(on_prompt)
