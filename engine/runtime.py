"""ComfyUI in this process: find it and import it without it parsing our command line.

The one set-up used by the trainer's CLI, the tests, the benchmarks and the toy replication. Inside a
running ComfyUI (the nodes) it is a no-op.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ..core.errors import InputError

PACK = Path(__file__).resolve().parents[1]


def use_cpu() -> bool:
    """Run on the CPU: no GPU here, or ``accelerate launch --cpu`` (ACCELERATE_USE_CPU)."""
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    """ComfyUI's root: ``explicit``, ``$II_COMFYUI_PATH``/``$COMFYUI_PATH``, the ComfyUI this pack is
    installed in (``ComfyUI/custom_nodes/<pack>``), or the pack's bundled copy (``.comfyui/ComfyUI``)."""
    candidates = [explicit, os.environ.get("II_COMFYUI_PATH"), os.environ.get("COMFYUI_PATH"),
                  str(PACK.parents[1]) if PACK.parent.name == "custom_nodes" else None,
                  str(PACK / ".comfyui" / "ComfyUI")]
    for c in candidates:
        if c and (Path(c) / "comfy" / "sd.py").is_file():
            return Path(c).resolve()
    raise InputError("comfyui_path", "ComfyUI was not found.",
                     "Run scripts/bootstrap.sh setup, or set comfyui_path in the config or COMFYUI_PATH to your "
                     "ComfyUI folder.")


def comfyui_loaded() -> bool:
    return "comfy.model_management" in sys.modules


def setup_comfyui(path: str | os.PathLike | None = None, *, cpu: bool | None = None) -> Path:
    """Make ComfyUI importable here (once per process) and return its root folder.

    ``cpu=None`` picks the CPU when torch sees no accelerator (or ACCELERATE_USE_CPU is set)."""
    if comfyui_loaded():
        import folder_paths

        return Path(folder_paths.__file__).resolve().parent
    root = find_comfyui(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = bool(use_cpu() if cpu is None else cpu)
    import comfy.model_management  # noqa: F401  (reads args.cpu once)

    return root
